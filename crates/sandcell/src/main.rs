//! The `sandcell` command: thin glue between the command line and the library crates.

mod bench;
mod chat;
mod chat_render;
mod doctor;
mod interrupt;
mod kept_files;
mod mcp;
mod model_settings;
mod render;
mod run;
mod serve;
mod session_args;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// A self-hosted code interpreter: stateful Python sessions in a Linux sandbox.
#[derive(Debug, Parser)]
#[command(name = "sandcell", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or check) the Python environment sessions run in, and the environments the config file adds.
    Setup(SetupArgs),
    /// Run Python files and code snippets as cells of one fresh session.
    Run(Box<run::RunArgs>),
    /// Ask a model: it writes Python, sandcell runs it, until the answer is found.
    Chat(Box<chat::ChatArgs>),
    /// Show which isolation layers are active on this machine, and how to fix the others.
    Doctor(doctor::DoctorArgs),
    /// Measure session start, cell latency, throughput and density beside stock Jupyter.
    Bench(bench::BenchArgs),
    /// Serve sessions over HTTP (JSON, Server-Sent Events); `--create-key NAME` makes an API key.
    Serve(Box<serve::ServeArgs>),
    /// Serve sessions to an MCP client (Claude Desktop, Claude Code, Cursor, VS Code) over stdio.
    Mcp(Box<mcp::McpArgs>),
}

#[derive(Debug, clap::Args)]
struct SetupArgs {
    /// List the base environment and each configured one (built or not, where, their requirements and preload) without building anything.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDCELL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Setup(args) if args.list => list_environments().map(|()| ExitCode::SUCCESS),
            Command::Setup(_) => setup().map(|()| ExitCode::SUCCESS),
            Command::Run(args) => {
                let run_matches = matches.subcommand_matches("run").unwrap_or(&matches);
                run::run(*args, run_matches).await
            }
            Command::Chat(args) => chat::chat(*args).await,
            Command::Doctor(args) => doctor::doctor(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Serve(args) => serve::serve(*args).await,
            Command::Mcp(args) => mcp::mcp(*args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn setup() -> anyhow::Result<()> {
    let home = sandcell_pyenv::Home::from_env()?;
    let started = std::time::Instant::now();
    let env =
        sandcell_pyenv::Environment::ensure(&home, &mut |step| eprintln!("sandcell: {step}"))?;
    eprintln!(
        "sandcell: Python {} environment ready in {} ({} packages; checked in {:.1} s)",
        env.info().python_version,
        env.info().prefix.display(),
        env.info().packages.len(),
        started.elapsed().as_secs_f64()
    );
    for layer in configured_environments(&env)? {
        eprintln!(
            "sandcell: environment {} ready in {} ({})",
            layer.name(),
            layer.dir().display(),
            layer.spec().requirements.join(", ")
        );
    }
    let uids = sandcell_sandbox::probe::session_uids();
    eprintln!("sandcell: {}: {}", uids.title, uids.detail);
    if let Some(fix) = uids.fix {
        eprintln!("sandcell: {fix}");
    }
    let earlier = home.earlier_environment();
    if !earlier.is_empty() {
        let shown: Vec<String> = earlier.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "sandcell: {} hold(s) the environment of an earlier sandcell version, which this one does not use; delete it once no earlier sandcell process runs",
            shown.join(" and ")
        );
    }
    Ok(())
}

/// `sandcell setup --list`: each environment, whether it is built and where, and what it
/// holds; builds nothing.
fn list_environments() -> anyhow::Result<()> {
    let home = sandcell_pyenv::Home::from_env()?;
    let base = sandcell_pyenv::Environment::existing(&home);
    match &base {
        Some(env) => println!(
            "base: built in {} (Python {}, {} packages)",
            env.dir().display(),
            env.info().python_version,
            env.info().packages.len()
        ),
        None => println!("base: not built (`sandcell setup` builds it)"),
    }
    for (name, spec) in config_environments()? {
        let built = match &base {
            Some(env) => {
                let layer = sandcell_pyenv::Layer::planned(env, &name, &spec)?;
                if layer.is_ready() {
                    format!("built in {}", layer.dir().display())
                } else {
                    "not built (`sandcell setup` builds it)".into()
                }
            }
            None => "not built (`sandcell setup` builds it, after the base)".into(),
        };
        println!(
            "{name}: {built}; requirements: {}; preload: {}",
            listed(&spec.requirements),
            listed(&spec.preload)
        );
    }
    Ok(())
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The environments the config file names (`[environments.NAME]`).
pub(crate) fn config_environments(
) -> anyhow::Result<std::collections::BTreeMap<String, sandcell_pyenv::LayerSpec>> {
    Ok(model_settings::ModelSettings::load(None)?
        .config
        .environments)
}

/// The environments the config file names, each built on top of `env` if it is not yet.
pub(crate) fn configured_environments(
    env: &sandcell_pyenv::Environment,
) -> anyhow::Result<Vec<sandcell_pyenv::Layer>> {
    config_environments()?
        .iter()
        .map(|(name, spec)| build_environment(env, name, spec))
        .collect()
}

/// The configured environment `name`, built on top of `env` if it is not yet.
pub(crate) fn build_environment(
    env: &sandcell_pyenv::Environment,
    name: &str,
    spec: &sandcell_pyenv::LayerSpec,
) -> anyhow::Result<sandcell_pyenv::Layer> {
    Ok(sandcell_pyenv::Layer::ensure(
        env,
        name,
        spec,
        &mut |step| eprintln!("sandcell: {step}"),
    )?)
}

/// The Python environment, set up on first use.
pub(crate) fn environment() -> anyhow::Result<sandcell_pyenv::Environment> {
    let home = sandcell_pyenv::Home::from_env()?;
    Ok(sandcell_pyenv::Environment::ensure(&home, &mut |step| {
        eprintln!("sandcell: {step}")
    })?)
}

/// One sentence on stderr, no backtrace.
fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("sandcell: error: {error:#}");
    ExitCode::from(2)
}
