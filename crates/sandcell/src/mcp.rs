//! `sandcell mcp`: the Model Context Protocol over stdio, for clients that start a process.

use crate::session_args::{copy_inputs, prepare_workdir, EnvironmentArg, LimitArgs, NetArgs};
use anyhow::Context;
use sandcell_mcp::{McpConfig, SandcellMcp};
use sandcell_service::{Auth, Service, ServiceConfig, Store};
use sandcell_session::{Runtime, RuntimeOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Where the sessions' files and their database are kept, so that they outlive this
    /// process (default: a temporary directory removed when the client disconnects).
    #[arg(long, value_name = "DIR", conflicts_with = "workdir")]
    data_dir: Option<PathBuf>,
    /// Directory to use as /mnt/data of the client's default session (kept afterwards;
    /// default: a directory of the session's own, removed with it).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Copy a file into the default session's /mnt/data before serving (into --workdir
    /// when given); repeatable.
    #[arg(long = "file", value_name = "PATH", conflicts_with = "data_dir")]
    input_files: Vec<PathBuf>,
    /// Modules the session template imports before forking, comma-separated (default:
    /// numpy, pandas, matplotlib, matplotlib.pyplot, IPython).
    #[arg(long, value_name = "MODULES", value_delimiter = ',')]
    preload: Option<Vec<String>>,
    /// Stop a session's Python process after this long without executions (its files
    /// stay), e.g. 20m, 90s.
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = humantime::parse_duration)]
    idle_timeout: std::time::Duration,
    /// Limits of every session; a model may ask `create_session` for lower ones.
    #[command(flatten)]
    limits: LimitArgs,
    /// The network of every session; a model may ask `create_session` for less.
    #[command(flatten)]
    network: NetArgs,
    /// The environment of the default session; `create_session` names its own.
    #[command(flatten)]
    environment: EnvironmentArg,
    /// Largest file `upload_file` accepts, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    max_upload: u64,
    /// Run sessions without any isolation (the code gets your user's full access). Not recommended.
    #[arg(long)]
    no_sandbox: bool,
}

/// Serves one client on stdin and stdout until it disconnects (or SIGINT/SIGTERM), then
/// stops every session. Nothing but protocol messages is written to stdout.
pub async fn mcp(args: McpArgs) -> anyhow::Result<ExitCode> {
    let limits = args.limits.session_limits()?;
    let network = args.network.allowlist()?;
    let default_environment = args.environment.configured()?.map(|(name, _)| name);
    let workdir =
        match &args.workdir {
            Some(dir) => {
                prepare_workdir(dir)?;
                Some(std::fs::canonicalize(dir).with_context(|| {
                    format!("cannot find the working directory {}", dir.display())
                })?)
            }
            None => None,
        };
    let output_mib = args.limits.output_mib()?;
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("sandcell-mcp-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Input files go to the default session's directory: --workdir, else one in the
    // temporary data directory (`--file` and `--data-dir` exclude each other).
    let workdir = match workdir {
        None if !args.input_files.is_empty() => {
            let dir = data_dir.join("workdir");
            prepare_workdir(&dir)?;
            Some(dir)
        }
        given => given,
    };
    if let Some(dir) = &workdir {
        copy_inputs(&args.input_files, dir)?;
    }
    let config = ServiceConfig {
        // Sessions are at most what the flags say; a model may ask for less.
        max_limits: limits.clone(),
        output_mib: output_mib.unwrap_or(ServiceConfig::new(&data_dir).output_mib),
        warm_sessions: 1,
        idle_timeout: args.idle_timeout,
        // The operator is the one user: sessions get the whole list unless a model asks
        // `create_session` for less.
        network_ceiling: network.clone(),
        network_default: network,
        ..ServiceConfig::new(&data_dir)
    };
    let store = Store::open(&config.sqlite_file())?;
    let user = store.local_user().await?;
    let env = crate::environment()?;
    let mut options = RuntimeOptions {
        sandbox: !args.no_sandbox,
        package_index: args.network.package_index(None)?,
        environments: crate::configured_environments(&env)?,
        ..RuntimeOptions::default()
    };
    if let Some(modules) = &args.preload {
        options.template_modules = modules.clone();
    }
    let runtime = Runtime::start(&env, options).await?;
    for warning in runtime.warnings() {
        eprintln!("sandcell: warning: {warning}");
    }
    let service = Service::start(
        config,
        store,
        Auth::Local(user.clone()),
        runtime,
        env.info().clone(),
    )
    .await?;
    let sessions = service.sessions.clone();
    let background = [sessions.spawn_idle_reaper(), sessions.spawn_warm_refill()];
    let server = SandcellMcp::new(
        service,
        user,
        McpConfig {
            default_limits: Some(limits),
            max_upload_bytes: args.max_upload.saturating_mul(MIB),
            default_workdir: workdir,
            default_environment,
        },
    );
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let outcome = tokio::select! {
        served = sandcell_mcp::serve_stdio(server) => served.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    sessions.begin_shutdown();
    for task in background {
        task.abort();
    }
    sessions.stop_all().await;
    drop(temporary);
    outcome.map(|()| ExitCode::SUCCESS)
}
