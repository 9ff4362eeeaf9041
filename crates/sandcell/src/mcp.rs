//! `sandcell mcp`: the Model Context Protocol over stdio, for clients that start a process.

use crate::session_args::{prepare_workdir, LimitArgs};
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
    /// Limits of every session; a model may ask `create_session` for lower ones.
    #[command(flatten)]
    limits: LimitArgs,
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
    let config = ServiceConfig {
        // Sessions are at most what the flags say; a model may ask for less.
        max_limits: limits.clone(),
        output_mib: output_mib.unwrap_or(ServiceConfig::new(&data_dir).output_mib),
        warm_sessions: 1,
        ..ServiceConfig::new(&data_dir)
    };
    let store = Store::open(&config.database())?;
    let user = store.local_user().await?;
    let env = crate::environment()?;
    let runtime = Runtime::start(
        &env,
        RuntimeOptions {
            sandbox: !args.no_sandbox,
            ..RuntimeOptions::default()
        },
    )
    .await?;
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
