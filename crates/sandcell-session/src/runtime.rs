//! A runtime: one Python environment, one template process, and the isolation policy
//! every session it creates follows.

use crate::error::SessionError;
use crate::limits::Limits;
use crate::pool::Pool;
use crate::runtime_files::RuntimeFiles;
use crate::session::{Session, SessionConfig};
use crate::template::{SpawnRequest, Spawned, Template, TemplateCommand};
use sandcell_pyenv::Environment;
use sandcell_sandbox::{CgroupParent, Identity, RlimitSpec, SandboxSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Modules the template imports before it forks, unless configured otherwise.
pub const DEFAULT_TEMPLATE_MODULES: &[&str] = &[
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "IPython",
];

/// Where the working directory appears inside a sandbox.
pub const SANDBOX_WORKDIR: &str = "/mnt/data";

/// Host directories every sandbox exposes read-only (those that exist).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Host files under `/etc` a Python process reasonably reads.
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
];

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Isolate sessions (the default). `false` is `--no-sandbox`.
    pub sandbox: bool,
    /// Modules the template imports once, so sessions start with them loaded.
    pub template_modules: Vec<String>,
    /// Sessions kept forked and ready (for requests with no directory and the default
    /// limits); 0 forks every session on request.
    pub pool_size: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            sandbox: true,
            template_modules: DEFAULT_TEMPLATE_MODULES
                .iter()
                .map(|m| m.to_string())
                .collect(),
            pool_size: 0,
        }
    }
}

/// How the sessions of a runtime are isolated; decided once, when the runtime starts.
#[derive(Debug)]
pub enum Isolation {
    Sandbox(SandboxPolicy),
    /// `--no-sandbox`: sessions are plain processes of the host user.
    None,
}

/// The parts of every session's [`SandboxSpec`] that do not depend on the session.
#[derive(Debug)]
pub struct SandboxPolicy {
    pub identity: Identity,
    /// `None` when no cgroup can be used; limits then fall back to rlimits.
    pub cgroup: Option<CgroupParent>,
    pub landlock: bool,
    read_only_paths: Vec<PathBuf>,
}

/// Creates sessions. Cheap to clone; all clones share one template process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
    pool: Option<Arc<Pool>>,
}

pub(crate) struct RuntimeInner {
    /// Held for as long as the runtime or any of its sessions lives, so that no setup
    /// removes the environment under them.
    environment: Environment,
    template_command: TemplateCommand,
    template: tokio::sync::Mutex<Option<Template>>,
    pub(crate) isolation: Isolation,
    warnings: Vec<String>,
}

/// Numbers sessions across all runtimes of this process: their cgroups share a parent.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl Runtime {
    /// Starts the template process (importing the data stack) and decides the isolation.
    pub async fn start(env: &Environment, options: RuntimeOptions) -> Result<Self, SessionError> {
        let files = RuntimeFiles::install(&env.home().runtime())?;
        let mut warnings = Vec::new();
        let isolation = if options.sandbox {
            Isolation::Sandbox(SandboxPolicy::detect(env, &files, &mut warnings))
        } else {
            warnings.push(
                "the sandbox is off (--no-sandbox): code runs with your user's full access to this machine and its network"
                    .into(),
            );
            Isolation::None
        };
        let template_command = TemplateCommand {
            python: env.info().python.clone(),
            env: template_env(env, &files, &options.template_modules),
        };
        let template = Template::start(&template_command).await?;
        if !template.failed_modules.is_empty() {
            let failed: Vec<String> = template
                .failed_modules
                .iter()
                .map(|(module, why)| format!("{module} ({why})"))
                .collect();
            warnings.push(format!(
                "these modules could not be pre-imported: {}",
                failed.join(", ")
            ));
        }
        let inner = Arc::new(RuntimeInner {
            environment: env.clone(),
            template_command,
            template: tokio::sync::Mutex::new(Some(template)),
            isolation,
            warnings,
        });
        let pool = (options.pool_size > 0).then(|| {
            Arc::new(Pool::start(
                inner.clone(),
                options.pool_size,
                Limits::default(),
            ))
        });
        Ok(Self { inner, pool })
    }

    /// Sentences the user should see: isolation that is weaker than the default, or
    /// modules that failed to load.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// The Python environment this runtime's sessions run, whatever setups happen later.
    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// A new session, from the pool when it asks for no particular directory and the
    /// pool's limits.
    pub async fn create_session(&self, config: SessionConfig) -> Result<Session, SessionError> {
        match &self.pool {
            Some(pool) if config.workdir.is_none() && config.limits == pool.limits => {
                pool.take().await
            }
            _ => self.inner.new_session(config).await,
        }
    }
}

impl RuntimeInner {
    pub(crate) async fn new_session(
        self: &Arc<Self>,
        config: SessionConfig,
    ) -> Result<Session, SessionError> {
        let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let name = format!("s{}-{n}", std::process::id());
        Session::create(self.clone(), name, config).await
    }

    /// Forks a session from the template, starting a new template if the old one died.
    pub(crate) async fn spawn(&self, request: &SpawnRequest) -> Result<Spawned, SessionError> {
        let mut template = self.template.lock().await;
        let alive = template.as_mut().is_some_and(Template::is_alive);
        if !alive {
            tracing::warn!("the template process is gone; starting a new one");
            *template = Some(Template::start(&self.template_command).await?);
        }
        match template.as_ref() {
            Some(template) => template.spawn(request).await,
            None => Err(SessionError::Closed),
        }
    }

    /// The spawn request for a session with this working directory and these limits.
    pub(crate) fn spawn_request(
        &self,
        workdir: &Path,
        limits: &Limits,
        cgroup_procs: Vec<PathBuf>,
    ) -> SpawnRequest {
        match &self.isolation {
            Isolation::Sandbox(policy) => SpawnRequest {
                spec: Some(policy.spec(workdir, limits, cgroup_procs)),
                cwd: PathBuf::from(SANDBOX_WORKDIR),
                env: BTreeMap::new(),
            },
            Isolation::None => SpawnRequest {
                spec: None,
                cwd: workdir.to_path_buf(),
                env: BTreeMap::new(),
            },
        }
    }
}

impl SandboxPolicy {
    fn detect(env: &Environment, files: &RuntimeFiles, warnings: &mut Vec<String>) -> Self {
        let identity = Identity::for_current_process();
        let cgroup = match CgroupParent::detect() {
            Ok(parent) => Some(parent),
            Err(why) => {
                warnings.push(format!(
                    "{why}; memory is limited with RLIMIT_AS and processes with RLIMIT_NPROC instead, and CPU time is not limited (see `sandcell doctor`)"
                ));
                None
            }
        };
        let landlock = sandcell_sandbox::landlock_supported();
        if !landlock {
            warnings.push(
                "this kernel has no Landlock; the filesystem view relies on mount namespaces alone (see `sandcell doctor`)"
                    .into(),
            );
        }
        let mut read_only_paths: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        read_only_paths.extend(env.read_only_paths());
        read_only_paths.push(env.home().ipython());
        read_only_paths.push(files.dir.clone());
        Self {
            identity,
            cgroup,
            landlock,
            read_only_paths,
        }
    }

    fn spec(&self, workdir: &Path, limits: &Limits, cgroup_procs: Vec<PathBuf>) -> SandboxSpec {
        let cgroup_enforces = !cgroup_procs.is_empty();
        SandboxSpec {
            workdir: workdir.to_path_buf(),
            mount_point: PathBuf::from(SANDBOX_WORKDIR),
            read_only_paths: self.read_only_paths.clone(),
            etc_files: ETC_FILES.iter().map(PathBuf::from).collect(),
            identity: self.identity,
            cgroup_procs,
            limits: RlimitSpec {
                file_size_bytes: limits.file_size_bytes(),
                open_files: limits.open_files,
                tmp_size_bytes: limits.tmp_bytes(),
                address_space_bytes: (!cgroup_enforces).then(|| limits.memory_bytes()),
                processes: (!cgroup_enforces).then_some(limits.processes),
            },
            hostname: "sandcell".into(),
            landlock: self.landlock,
        }
    }
}

/// The complete environment of the template process, and so of every session.
fn template_env(
    env: &Environment,
    files: &RuntimeFiles,
    modules: &[String],
) -> BTreeMap<String, String> {
    let venv = env.info().prefix.display().to_string();
    let vars = [
        ("PATH", format!("{venv}/bin:/usr/local/bin:/usr/bin:/bin")),
        ("HOME", "/tmp".into()),
        ("TMPDIR", "/tmp".into()),
        ("LANG", "C.UTF-8".into()),
        ("PYTHONPATH", files.dir.display().to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONNOUSERSITE", "1".into()),
        (
            "MPLBACKEND",
            "module://matplotlib_inline.backend_inline".into(),
        ),
        ("MPLCONFIGDIR", env.mplconfig().display().to_string()),
        // IPython's profile directory, created when the template builds its shell.
        ("IPYTHONDIR", env.home().ipython().display().to_string()),
        // One BLAS/OpenMP thread per session: the template must not have threads when
        // it forks, and hundreds of sessions share a few cores.
        ("OPENBLAS_NUM_THREADS", "1".into()),
        ("OMP_NUM_THREADS", "1".into()),
        ("MKL_NUM_THREADS", "1".into()),
        ("PAGER", "cat".into()),
        ("TERM", "dumb".into()),
        (
            "SANDCELL_ENTER_LIB",
            files.enter_library.display().to_string(),
        ),
        ("SANDCELL_TEMPLATE_MODULES", modules.join(",")),
    ];
    vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
