//! The options every command that starts a session shares (`run`, `chat`): the working
//! directory, input files, limits (`LimitArgs`, which `mcp` shares too), the network
//! (`NetArgs`, which `mcp` and `serve` share too), the configured environment
//! (`EnvironmentArg`, which `mcp` shares too) and the sandbox switch, and starting that
//! session.

use anyhow::{bail, Context};
use sandcell_pyenv::{Environment, LayerSpec};
use sandcell_safedir::{Create, SafeDir, SafePath};
use sandcell_service::{LimitNames, LimitsRequest, SessionLimits};
use sandcell_session::{
    Allowlist, Limits, NetPolicy, PackageIndex, Runtime, RuntimeOptions, Session, SessionConfig,
    SessionError,
};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// Directory to use as the session's /mnt/data (kept afterwards; default: a
    /// temporary directory removed after the run).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Copy a file into the working directory before the session starts; repeatable.
    #[arg(long = "file", value_name = "PATH")]
    input_files: Vec<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    network: NetArgs,
    #[command(flatten)]
    environment: EnvironmentArg,
    /// Modules the session template imports before forking, comma-separated (default:
    /// numpy, pandas, matplotlib, matplotlib.pyplot, IPython).
    #[arg(long, value_name = "MODULES", value_delimiter = ',')]
    preload: Option<Vec<String>>,
    /// Run without any isolation (the code gets your user's full access). Not recommended.
    #[arg(long)]
    no_sandbox: bool,
}

/// The network sessions may reach, as flags (`run`, `chat`, `mcp`, `serve`).
#[derive(Debug, clap::Args)]
pub struct NetArgs {
    /// Let sessions reach ENTRY over HTTP and HTTPS through sandcell's proxy: a host name,
    /// *.domain, an IP address or a CIDR, each with an optional :PORT; repeatable. Names
    /// leading to loopback, private, link-local or metadata addresses are refused unless
    /// that address is listed. Default: no network.
    #[arg(long = "allow-net", value_name = "ENTRY")]
    allow_net: Vec<String>,
    /// The package index `%pip install` uses in sessions (PyPI's simple format, e.g.
    /// https://pypi.example.org/simple/); packages go into the session's own directory.
    /// Its host is reachable for pip alone. Default: none, and `%pip install` says so.
    #[arg(long, value_name = "URL")]
    pip_index: Option<String>,
}

impl NetArgs {
    /// The entries given, read; empty when there are none.
    pub fn allowlist(&self) -> anyhow::Result<Allowlist> {
        Ok(Allowlist::parse(&self.allow_net)?)
    }

    pub fn is_empty(&self) -> bool {
        self.allow_net.is_empty()
    }

    /// `--pip-index`, read, else `config_file`'s (the config file's `pip_index`).
    pub fn package_index(&self, config_file: Option<&str>) -> anyhow::Result<Option<PackageIndex>> {
        match self.pip_index.as_deref().or(config_file) {
            Some(url) => Ok(Some(PackageIndex::parse(url)?)),
            None => Ok(None),
        }
    }
}

/// The configured environment a session runs in, as a flag (`run`, `chat`, and `mcp`'s
/// default session).
#[derive(Debug, clap::Args)]
pub struct EnvironmentArg {
    /// Run the session (for mcp: the default session) in the environment NAME of the
    /// config file ([environments.NAME]), built first if it is not yet. Default: the base
    /// environment.
    #[arg(long, value_name = "NAME")]
    environment: Option<String>,
}

impl EnvironmentArg {
    /// The environment named, with what the config file says of it (`None`: the base
    /// one); a name the config file does not configure is refused with the ones it does.
    pub fn configured(&self) -> anyhow::Result<Option<(String, LayerSpec)>> {
        let Some(name) = &self.environment else {
            return Ok(None);
        };
        let mut configured = crate::config_environments()?;
        match configured.remove(name) {
            Some(spec) => Ok(Some((name.clone(), spec))),
            None => Err(SessionError::UnknownEnvironment {
                name: name.clone(),
                configured: configured.into_keys().collect(),
            }
            .into()),
        }
    }
}

/// The limits of a session, as flags (`run`, `chat`, `mcp`).
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Time limit of each execution, in seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Memory limit of the session, in MiB.
    #[arg(long, value_name = "MIB")]
    memory: Option<u64>,
    /// Largest single file the code may write, in MiB.
    #[arg(long, value_name = "MIB")]
    max_file_size: Option<u64>,
    /// Total size the working directory may reach, in MiB.
    #[arg(long, value_name = "MIB")]
    disk_quota: Option<u64>,
    /// Output (stdout and stderr) each execution keeps, in MiB: its head and tail, with a
    /// marker of what was dropped [default: 4].
    #[arg(long, value_name = "MIB")]
    max_output: Option<u64>,
    /// Processes and threads the session may run at once.
    #[arg(long, value_name = "N")]
    max_processes: Option<u64>,
}

impl LimitArgs {
    /// The limits the flags ask for (the standard ones where a flag is left out), checked
    /// by the same rules as every other way of starting a session.
    pub fn session_limits(&self) -> anyhow::Result<SessionLimits> {
        let asked = LimitsRequest {
            memory_mib: self.memory,
            processes: self.max_processes,
            timeout_secs: self.timeout,
            file_size_mib: self.max_file_size,
            disk_quota_mib: self.disk_quota,
        };
        let names = LimitNames {
            memory: "--memory",
            processes: "--max-processes",
            timeout: "--timeout",
            file_size: "--max-file-size",
            disk_quota: "--disk-quota",
        };
        Ok(asked.resolve_named(&SessionLimits::unbounded(), &names)?)
    }

    /// The output each execution keeps, in MiB, if `--max-output` was given.
    pub fn output_mib(&self) -> anyhow::Result<Option<u64>> {
        match self.max_output {
            Some(0) => bail!("--max-output must be at least 1 MiB"),
            output_mib => Ok(output_mib),
        }
    }

    /// The session's limits for the runtime, output included.
    pub fn runtime_limits(&self) -> anyhow::Result<Limits> {
        let limits = self.session_limits()?.to_runtime();
        Ok(match self.output_mib()? {
            Some(output_mib) => Limits {
                output_mib,
                ..limits
            },
            None => limits,
        })
    }
}

/// A started session, with what it needs to stay alive.
pub struct StartedSession {
    pub session: Session,
    pub env: Environment,
    /// The host directory mounted at `/mnt/data`.
    pub workdir: PathBuf,
    /// Keep it until the session is shut down.
    pub keep_alive: KeepAlive,
}

/// The template the session came from.
pub struct KeepAlive {
    _runtime: Runtime,
}

impl SessionArgs {
    /// The session's limits: the standard ones, changed by the flags.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        self.limits.runtime_limits()
    }

    /// Prepares the working directory (input files copied in) and starts the session.
    pub async fn start(&self) -> anyhow::Result<StartedSession> {
        let limits = self.limits()?;
        let network = NetPolicy::from_allowlist(self.network.allowlist()?);
        let environment = self.environment.configured()?;
        if let Some(dir) = &self.workdir {
            prepare_workdir(dir)?;
            copy_inputs(&self.input_files, dir)?;
        }
        let env = crate::environment()?;
        // Only the environment the session runs in: its template is the one started.
        let layer = environment
            .map(|(name, spec)| crate::build_environment(&env, &name, &spec))
            .transpose()?;
        let mut options = RuntimeOptions {
            sandbox: !self.no_sandbox,
            package_index: self.network.package_index(None)?,
            environments: layer.iter().cloned().collect(),
            ..RuntimeOptions::default()
        };
        if let Some(modules) = &self.preload {
            options.template_modules = modules.clone();
        }
        let runtime = Runtime::start(&env, options).await?;
        for warning in runtime.warnings() {
            eprintln!("sandcell: warning: {warning}");
        }
        // Without --workdir the session makes a temporary directory of its own (on a
        // filesystem of its own, when the kernel enforces the disk quota), removed with it.
        let session = runtime
            .create_session(SessionConfig {
                workdir: self.workdir.clone(),
                limits,
                network,
                environment: layer.map(|layer| layer.name().to_owned()),
            })
            .await?;
        if session.network_policy() != &NetPolicy::None {
            eprintln!(
                "sandcell: network: {} (HTTP and HTTPS through sandcell's proxy, at $HTTP_PROXY in the session)",
                session.network_policy().describe()
            );
        }
        let workdir = session.workdir().to_path_buf();
        if self.workdir.is_none() {
            copy_inputs(&self.input_files, &workdir)?;
        }
        Ok(StartedSession {
            session,
            env,
            workdir,
            keep_alive: KeepAlive { _runtime: runtime },
        })
    }
}

/// Makes `dir` (a `--workdir`) if missing, and checks that it is a readable directory.
pub fn prepare_workdir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--workdir {} is not a directory", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the working directory {}", dir.display()))?;
    std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the working directory {}", dir.display()))?;
    Ok(())
}

/// Copies `file` into the working directory under its own name, replacing a file of
/// that name; a link there (a cell of an earlier run may have planted one) is refused,
/// never written through.
/// Copies each `--file` into `workdir` (through `SafeDir`: a link planted at a name there
/// is replaced, never written through).
pub fn copy_inputs(files: &[PathBuf], workdir: &Path) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let dir = SafeDir::open(workdir)
        .with_context(|| format!("cannot open the working directory {}", workdir.display()))?;
    for file in files {
        copy_input(file, &dir)?;
    }
    Ok(())
}

fn copy_input(file: &Path, workdir: &SafeDir) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("--file {} does not name a file", file.display()))?;
    if !file.is_file() {
        bail!("--file {}: no such file", file.display());
    }
    workdir
        .copy_in(file, &SafePath::parse(name)?, Create::Replace)
        .with_context(|| format!("cannot copy {} into the working directory", file.display()))?;
    Ok(())
}
