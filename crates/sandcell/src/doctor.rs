//! `sandcell doctor`: which isolation layers this machine supports, verified where
//! possible by looking from inside a real session.

use sandcell_sandbox::probe::{probe, LayerReport};
use sandcell_session::{
    Allowlist, ExecOptions, Isolation, NetPolicy, Runtime, RuntimeOptions, SessionConfig, Status,
};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Only probe the kernel; do not start a session to verify from inside.
    #[arg(long)]
    no_session: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    layers: Vec<LayerReport>,
    python: Option<PythonReport>,
    /// What a real sandboxed session observed about itself, when one could be started.
    inside: Option<serde_json::Value>,
    /// Why the in-session check could not run.
    inside_error: Option<String>,
    /// What the runtime said when it started for that check (weaker isolation).
    warnings: Vec<String>,
    network: NetworkReport,
}

/// Which network policy is active where `doctor` can tell.
#[derive(Debug, Serialize)]
struct NetworkReport {
    /// What `run`, `chat` and `mcp` sessions get without `--allow-net`, and `serve`'s
    /// sessions that ask for nothing.
    default_policy: String,
    /// `serve`'s ceiling from the config file (`allow_net`), when `--allow-net` is not given.
    serve_ceiling: String,
    /// `serve`'s package index from the config file (`pip_index`), when `--pip-index` is
    /// not given.
    serve_package_index: String,
}

#[derive(Debug, Serialize)]
struct PythonReport {
    version: String,
    prefix: String,
    packages: usize,
}

/// Run inside a session: what the sandbox looks like from within.
const SELF_CHECK: &str = r#"
import json, os, socket, sys
disk = os.statvfs("/mnt/data")
KNOWN = ("/", "/tmp", "/mnt/data", "/proc", "/etc", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
def host_paths():
    seen = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4]
        if not (point in KNOWN or point.startswith(("/etc/", "/dev/", "/run/sandcell"))):
            seen.append(point)
    return seen
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def readable(path):
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False
def writable(path):
    try:
        with open(os.path.join(path, ".sandcell-doctor"), "w"):
            pass
        os.unlink(os.path.join(path, ".sandcell-doctor"))
        return True
    except OSError:
        return False
def route_out():
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=2).close()
        return "a connection went out"
    except OSError as e:
        return f"none ({e.strerror or type(e).__name__})"
print(json.dumps({
    "uid": os.getuid(),
    "pid": os.getpid(),
    "visible_processes": sum(1 for p in os.listdir("/proc") if p.isdigit()),
    "network_interfaces": [name for _, name in socket.if_nameindex()],
    "no_new_privs": status["NoNewPrivs"].strip() == "1",
    "seccomp_filter": status["Seccomp"].strip() == "2",
    "capabilities_effective": status["CapEff"].strip(),
    "hostname": socket.gethostname(),
    "root_writable": writable("/"),
    "usr_writable": writable("/usr"),
    "workdir_writable": writable("/mnt/data"),
    "workdir_filesystem_mib": disk.f_blocks * disk.f_frsize >> 20,
    "workdir_filesystem_inodes": disk.f_files,
    "etc_shadow_readable": readable("/etc/shadow"),
    "network_route_out": route_out(),
    "python_prefix": sys.prefix,
    "mounts_at_host_paths": host_paths(),
}))
"#;

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let layers = probe();
    let env = sandcell_pyenv::Home::from_env()
        .ok()
        .and_then(|home| sandcell_pyenv::Environment::existing(&home));
    let python = env.as_ref().map(|env| PythonReport {
        version: env.info().python_version.clone(),
        prefix: env.info().prefix.display().to_string(),
        packages: env.info().packages.len(),
    });
    let mut warnings = Vec::new();
    let (inside, inside_error) = match (&env, args.no_session) {
        (_, true) => (None, Some("skipped (--no-session)".to_string())),
        (None, false) => (
            None,
            Some("the Python environment is not set up yet; run `sandcell setup`".to_string()),
        ),
        (Some(env), false) => match look_inside(env, &mut warnings).await {
            Ok(value) => (Some(value), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        },
    };
    let report = Report {
        layers,
        python,
        inside,
        inside_error,
        warnings,
        network: network_report(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn look_inside(
    env: &sandcell_pyenv::Environment,
    warnings: &mut Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::start(env, RuntimeOptions::default()).await?;
    warnings.extend(runtime.warnings().iter().cloned());
    if matches!(runtime.isolation(), Isolation::None) {
        anyhow::bail!("the sandbox is off");
    }
    // A directory of the session's own, on its own filesystem where the kernel enforces
    // the quota: the filesystem's size and inodes are then the quota's.
    let mut session = runtime
        .create_session(SessionConfig {
            workdir: None,
            limits: Default::default(),
            network: NetPolicy::None,
            environment: None,
        })
        .await?;
    let execution = session
        .execute(SELF_CHECK, &ExecOptions::default(), &mut |_| {})
        .await?;
    session.shutdown().await?;
    if execution.status != Status::Ok {
        anyhow::bail!(
            "the check failed inside the session: {}",
            execution.error.map(|e| e.evalue).unwrap_or_default()
        );
    }
    Ok(serde_json::from_str(execution.stdout.trim())?)
}

fn network_report() -> NetworkReport {
    let config =
        sandcell_agent::Config::default_path().map(|path| sandcell_agent::Config::load(&path));
    let (serve_ceiling, serve_package_index) = match config {
        None => ("none".to_string(), "none".to_string()),
        Some(Err(e)) => (format!("unknown: {e}"), format!("unknown: {e}")),
        Some(Ok(config)) => (
            match Allowlist::parse(config.allow_net.as_deref().unwrap_or_default()) {
                Ok(list) => NetPolicy::from_allowlist(list).describe(),
                Err(e) => format!("unknown: allow_net in the config file: {e}"),
            },
            config.pip_index.unwrap_or_else(|| "none".to_string()),
        ),
    };
    NetworkReport {
        default_policy: NetPolicy::None.describe(),
        serve_ceiling,
        serve_package_index,
    }
}

fn print_human(report: &Report) {
    println!("Isolation layers on this machine:");
    for layer in &report.layers {
        let mark = if layer.active { "active  " } else { "MISSING " };
        println!("  {mark} {:<28} {}", layer.title, layer.detail);
        if let Some(fix) = &layer.fix {
            println!("           fix: {fix}");
        }
    }
    match &report.python {
        Some(python) => println!(
            "\nPython environment: {} in {} ({} packages)",
            python.version, python.prefix, python.packages
        ),
        None => println!("\nPython environment: not set up yet (run `sandcell setup`)"),
    }
    let prefix = report
        .inside
        .as_ref()
        .and_then(|inside| inside["python_prefix"].as_str());
    match prefix {
        Some("/run/sandcell/env") => println!(
            "  inside sessions: at /run/sandcell, on filesystems of its own (no host path shows)"
        ),
        Some(prefix) => println!(
            "  inside sessions: at its host path {prefix}, which /proc/self/mountinfo shows \
             (sessions see it at /run/sandcell only when sandcell runs as root with loop devices)"
        ),
        None => {}
    }
    for warning in &report.warnings {
        println!("  warning: {warning}");
    }
    match (&report.inside, &report.inside_error) {
        (Some(inside), _) => {
            println!("\nSeen from inside a sandboxed session:");
            if let Some(map) = inside.as_object() {
                for (key, value) in map {
                    println!("  {key:<24} {value}");
                }
            }
        }
        (None, Some(why)) => println!("\nNot verified from inside a session: {why}"),
        (None, None) => {}
    }
    println!(
        "\nNetwork: {} by default (each session's own network namespace, loopback only); \
         --allow-net ENTRY opens HTTP and HTTPS to the listed hosts through sandcell's proxy.\n  \
         serve's ceiling from the config file: {}\n  \
         serve's package index from the config file: {} (--pip-index URL gives %pip install one)",
        report.network.default_policy,
        report.network.serve_ceiling,
        report.network.serve_package_index
    );
}
