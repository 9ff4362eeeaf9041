//! `sandcell serve`: the HTTP API of `sandcell-server`, and creating its API keys.

use crate::model_settings::ModelSettings;
use crate::session_args::NetArgs;
use anyhow::{bail, Context};
use sandcell_server::{Server, ServerConfig, DEFAULT_LISTEN, MCP_PATH};
use sandcell_service::{
    create_key, DatabaseLocation, FilesLocation, LimitNames, LimitsRequest, Models, ServiceConfig,
    SessionLimits, MODEL_HINT,
};
use sandcell_session::{Allowlist, Runtime, RuntimeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Any address but loopback needs API keys (--create-key).
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Where the database and the sessions' files are kept (default: the data
    /// directory, $SANDCELL_HOME or $XDG_DATA_HOME/sandcell).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where sessions' files are kept: `local` (their directories in the data directory),
    /// or `s3://BUCKET/PREFIX`, an S3-compatible bucket they are written back to after
    /// each execution and fetched from when a session starts on a node without them
    /// (credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION and AWS_ENDPOINT_URL). Nodes that share a database share a bucket.
    #[arg(long, value_name = "LOCATION", env = "SANDCELL_FILES", default_value = "local", value_parser = FilesLocation::parse)]
    files: FilesLocation,
    /// Where the database is: `local` (`sandcell.db` in the data directory), or a
    /// PostgreSQL server (postgres://USER:PASSWORD@HOST:PORT/DATABASE) that several nodes
    /// share; its schema is created and kept up to date by sandcell.
    #[arg(long, value_name = "LOCATION", env = "SANDCELL_DATABASE_URL", hide_env_values = true, default_value = "local", value_parser = DatabaseLocation::parse)]
    database: DatabaseLocation,
    /// Where the other nodes sharing the database reach this one, to forward it the
    /// requests for the sessions it runs (default: http:// and the listening address, or
    /// the host name when listening on every address).
    #[arg(long, value_name = "URL", env = "SANDCELL_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The model conversations talk to unless they name another: PROVIDER:MODEL as for
    /// `sandcell chat`. Default: $SANDCELL_MODEL, else `model` in the config file.
    #[arg(short, long, value_name = "PROVIDER:MODEL")]
    model: Option<String>,
    /// The default model's provider's base URL (as its SDK takes it, e.g.
    /// http://localhost:8000/v1), as for `sandcell chat`.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Create an API key for user NAME, print it (it is shown only once) and exit.
    #[arg(long, value_name = "NAME")]
    create_key: Option<String>,
    /// Stop a session's Python process after this long without executions (files and
    /// metadata stay), e.g. 20m, 90s.
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Sessions whose Python process may run at once (idle ones are stopped to make room).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_sessions: usize,
    /// Sessions of one user whose Python process may run at once.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_sessions_per_user: usize,
    /// Sessions kept started ahead of demand (with the default limits), so that creating
    /// one does not wait for a fork; they count among --max-sessions.
    #[arg(long, value_name = "N", default_value_t = 2)]
    warm_sessions: usize,
    /// Output (stdout and stderr) one execution keeps, in MiB: its head and tail, with a
    /// marker of what was dropped.
    #[arg(long, value_name = "MIB", default_value_t = 4)]
    max_output: u64,
    /// Largest upload, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_upload: u64,
    /// Largest body of any other request, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    max_request: u64,
    /// Most memory a session may ask for, in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u64>,
    /// Longest execution time limit a session may ask for, in seconds [default: 120].
    #[arg(long, value_name = "SECS")]
    max_timeout: Option<f64>,
    /// Most processes a session may ask for [default: 256].
    #[arg(long, value_name = "N")]
    max_processes: Option<u64>,
    /// Largest file-size limit a session may ask for, in MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    max_file_size: Option<u64>,
    /// Largest working-directory quota a session may ask for, in MiB [default: 4096].
    #[arg(long, value_name = "MIB")]
    max_disk_quota: Option<u64>,
    /// A host name (or HOST:PORT) clients reach this server by, accepted by /mcp in `Host`
    /// and `Origin` besides loopback and the listening address; repeatable.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// The most network a session may ask for (`allow_net` when it is created); a session
    /// that asks for nothing has none. Without the flags, `allow_net` and `pip_index` in
    /// the config file.
    #[command(flatten)]
    network: NetArgs,
    /// Run sessions without any isolation (the code gets this user's full access). Not recommended.
    #[arg(long)]
    no_sandbox: bool,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => sandcell_pyenv::Home::from_env()?.root().to_path_buf(),
    };
    let mut models = ModelSettings::load(args.model.as_deref())?;
    if let Some(base_url) = &args.base_url {
        models.set_base_url(base_url)?;
    }
    let default_model = models.model.clone();
    let network_ceiling = if args.network.is_empty() {
        Allowlist::parse(models.config.allow_net.as_deref().unwrap_or_default())
            .context("allow_net in the config file")?
    } else {
        args.network.allowlist()?
    };
    let package_index = args
        .network
        .package_index(models.config.pip_index.as_deref())
        .context("the package index")?;
    let config = ServerConfig {
        listen: args.listen,
        max_upload_bytes: args.max_upload.saturating_mul(MIB),
        max_request_bytes: usize::try_from(args.max_request.saturating_mul(MIB))
            .unwrap_or(usize::MAX),
        allowed_hosts: args.allowed_hosts.clone(),
        service: ServiceConfig {
            idle_timeout: args.idle_timeout,
            max_sessions: args.max_sessions,
            max_sessions_per_user: args.max_sessions_per_user,
            warm_sessions: args.warm_sessions,
            output_mib: args.max_output,
            files: args.files.clone(),
            database: args.database.clone(),
            advertise_url: advertise_url(args.advertise_url.as_deref())?,
            max_limits: max_limits(&args)?,
            network_ceiling,
            models: Models {
                config: models.config,
                default: models.model,
            },
            ..ServiceConfig::new(data_dir)
        },
    };
    if let Some(name) = &args.create_key {
        let data_dir = &config.service.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let store = config.service.open_store().await?;
        let key = create_key(&store, name).await?;
        println!("{key}");
        eprintln!(
            "sandcell: this is {name}'s API key; it is not shown again. Send it as `Authorization: Bearer KEY`."
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.max_output == 0 {
        bail!("--max-output must be at least 1 MiB");
    }
    if args.max_sessions == 0 || args.max_sessions_per_user == 0 {
        bail!("--max-sessions and --max-sessions-per-user must be at least 1");
    }

    let server = Server::bind(config).await?;
    let address = server.local_addr()?;
    let env = crate::environment()?;
    let environments = crate::configured_environments(&env)?;
    let runtime = Runtime::start(
        &env,
        RuntimeOptions {
            sandbox: !args.no_sandbox,
            package_index,
            environments,
            ..RuntimeOptions::default()
        },
    )
    .await?;
    for warning in runtime.warnings() {
        eprintln!("sandcell: warning: {warning}");
    }
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("sandcell: stopping: running executions are interrupted");
    };
    let keys = if server.requires_keys() {
        "API keys required"
    } else {
        "no API keys: local use only"
    };
    eprintln!("sandcell: listening on http://{address} ({keys})");
    eprintln!(
        "sandcell: other nodes sharing the database reach this one at {}",
        server.advertise_url()
    );
    eprintln!("sandcell: MCP clients connect to http://{address}{MCP_PATH} (Streamable HTTP)");
    match &default_model {
        Some(spec) => eprintln!("sandcell: conversations talk to {spec} unless they name another"),
        None => eprintln!(
            "sandcell: no model is configured, so the web app offers notebooks only: {MODEL_HINT}"
        ),
    }
    server.run(runtime, env.info().clone(), shutdown).await?;
    eprintln!("sandcell: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The highest limits a session may ask for: the standard ones, raised or lowered by flags.
fn max_limits(args: &ServeArgs) -> anyhow::Result<SessionLimits> {
    let asked = LimitsRequest {
        memory_mib: args.max_memory,
        processes: args.max_processes,
        timeout_secs: args.max_timeout,
        file_size_mib: args.max_file_size,
        disk_quota_mib: args.max_disk_quota,
    };
    let names = LimitNames {
        memory: "--max-memory",
        processes: "--max-processes",
        timeout: "--max-timeout",
        file_size: "--max-file-size",
        disk_quota: "--max-disk-quota",
    };
    Ok(asked.resolve_named(&SessionLimits::unbounded(), &names)?)
}

/// `--advertise-url` checked: an http(s) URL with a host and nothing after it but a path
/// prefix; empty when not given (the server derives it from its address).
fn advertise_url(given: Option<&str>) -> anyhow::Result<String> {
    let Some(url) = given.map(str::trim).filter(|url| !url.is_empty()) else {
        return Ok(String::new());
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !url.contains(['?', '#']) => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => bail!("--advertise-url {url:?} is not an address other nodes can reach: give http://HOST:PORT"),
    }
}
