//! A runtime: one Python environment, one launcher of session processes (the template
//! process), the isolation policy every session it creates follows, and the pool.
//!
//! Layers within this crate: `runtime` → `pool` → `session` → (`isolation`, `launcher`
//! and its implementations `template` and `fake`, `protocol`, `outputs`); no module
//! imports one above it.

use crate::disks::Disks;
use crate::error::SessionError;
use crate::isolation::{remove_leftover_sessions, Isolation, SandboxPolicy};
use crate::launcher::Launcher;
use crate::limits::Limits;
use crate::pool::Pool;
use crate::runtime_files::RuntimeFiles;
use crate::session::{Session, SessionConfig, SessionFactory};
use crate::template::{TemplateCommand, TemplateLauncher};
use sandcell_netproxy::{NetPolicy, PackageIndex};
use sandcell_pyenv::Environment;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Modules the template imports before it forks, unless configured otherwise.
pub const DEFAULT_TEMPLATE_MODULES: &[&str] = &[
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "IPython",
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
    /// The package index `%pip install` uses (`--pip-index`); `None`: `%pip install`
    /// says how to configure one. Sandboxed sessions only.
    pub package_index: Option<PackageIndex>,
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
            package_index: None,
        }
    }
}

/// Creates sessions. Cheap to clone; all clones share one launcher (template process).
#[derive(Clone)]
pub struct Runtime {
    factory: Arc<SessionFactory>,
    pool: Option<Arc<Pool>>,
    warnings: Arc<[String]>,
}

impl Runtime {
    /// Starts the template process (importing the data stack) and decides the isolation.
    pub async fn start(env: &Environment, options: RuntimeOptions) -> Result<Self, SessionError> {
        let files = RuntimeFiles::install(&env.home().runtime())?;
        let mut warnings = Vec::new();
        let isolation = if options.sandbox {
            let policy = SandboxPolicy::detect(env, &files, &mut warnings);
            if let Some(parent) = policy.cgroup.clone() {
                let removed =
                    tokio::task::spawn_blocking(move || remove_leftover_sessions(&parent))
                        .await
                        .unwrap_or(0);
                if removed > 0 {
                    tracing::info!(
                        "removed {removed} session cgroups (and what ran in them) left by sandcell processes that are gone"
                    );
                }
            }
            Isolation::Sandbox(policy)
        } else {
            warnings.push(
                "the sandbox is off (--no-sandbox): code runs with your user's full access to this machine and its network"
                    .into(),
            );
            if options.package_index.is_some() {
                warnings.push(
                    "--pip-index is not used without the sandbox: the package proxy reaches a session only through its own network namespace"
                        .into(),
                );
            }
            Isolation::None
        };
        let template_command = TemplateCommand {
            python: env.info().python.clone(),
            env: template_env(env, &files, &options.template_modules),
        };
        let (launcher, failed_modules) = TemplateLauncher::start(template_command).await?;
        if !failed_modules.is_empty() {
            let failed: Vec<String> = failed_modules
                .iter()
                .map(|(module, why)| format!("{module} ({why})"))
                .collect();
            warnings.push(format!(
                "these modules could not be pre-imported: {}",
                failed.join(", ")
            ));
        }
        let runtime = Self::assemble(
            Arc::new(launcher),
            Some(env.clone()),
            isolation,
            options.package_index,
            options.pool_size,
            warnings,
        );
        let factory = runtime.factory.clone();
        let removed = tokio::task::spawn_blocking(move || factory.disks.remove_leftovers())
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                "unmounted {removed} session disks left mounted by sandcell processes that are gone"
            );
        }
        Ok(runtime)
    }

    /// A runtime whose session processes come from `launcher`, without a sandbox (such as
    /// the fake launcher of tests, feature `fake`). With `pool_size > 0` it must be
    /// called within a Tokio runtime (the pool is refilled by a task).
    pub fn with_launcher(launcher: Arc<dyn Launcher>, pool_size: usize) -> Self {
        Self::assemble(launcher, None, Isolation::None, None, pool_size, Vec::new())
    }

    fn assemble(
        launcher: Arc<dyn Launcher>,
        environment: Option<Environment>,
        isolation: Isolation,
        package_index: Option<PackageIndex>,
        pool_size: usize,
        warnings: Vec<String>,
    ) -> Self {
        let disks = match isolation {
            Isolation::Sandbox(_) => Disks::detect(),
            Isolation::None => Disks::measured("sessions run without a sandbox"),
        };
        let factory = Arc::new(SessionFactory {
            launcher,
            environment,
            isolation,
            disks,
            package_index,
        });
        let pool = (pool_size > 0)
            .then(|| Arc::new(Pool::start(factory.clone(), pool_size, Limits::default())));
        Self {
            factory,
            pool,
            warnings: warnings.into(),
        }
    }

    /// Sentences the user should see: isolation that is weaker than the default, or
    /// modules that failed to load.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn isolation(&self) -> &Isolation {
        &self.factory.isolation
    }

    /// How the working-directory quota is enforced, and the filesystems of the
    /// directories that sessions own.
    pub fn disks(&self) -> &Disks {
        &self.factory.disks
    }

    /// The index sessions install packages from (`%pip install`): the operator's, for
    /// sandboxed sessions only (without the sandbox no proxy reaches it).
    pub fn package_index(&self) -> Option<&PackageIndex> {
        match self.factory.isolation {
            Isolation::Sandbox(_) => self.factory.package_index.as_ref(),
            Isolation::None => None,
        }
    }

    /// The Python environment this runtime's sessions run, whatever setups happen later
    /// (none for a runtime on another launcher).
    pub fn environment(&self) -> Option<&Environment> {
        self.factory.environment.as_ref()
    }

    /// A new session, from the pool when it asks for no particular directory and the
    /// pool's limits.
    pub async fn create_session(&self, config: SessionConfig) -> Result<Session, SessionError> {
        match &self.pool {
            Some(pool)
                if config.workdir.is_none()
                    && config.limits == pool.limits
                    && config.network == NetPolicy::None =>
            {
                pool.take().await
            }
            _ => self.factory.create(config).await,
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
