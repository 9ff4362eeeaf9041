//! A runtime: one Python environment and the configured environments layered on it, one
//! launcher of session processes (a template process) per environment, the isolation
//! policy every session it creates follows, and the pool (of the base environment).
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
use crate::session::{LayerTemplate, Session, SessionConfig, SessionFactory};
use crate::template::{TemplateCommand, TemplateLauncher};
use crate::view::NeutralView;
use sandcell_netproxy::{NetPolicy, PackageIndex};
use sandcell_pyenv::{Environment, Layer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// The configured environments, built: each gets a template of its own, which imports
    /// `template_modules` and the environment's preload with its layer at the end of
    /// `sys.path`.
    pub environments: Vec<Layer>,
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
            environments: Vec::new(),
        }
    }
}

/// Creates sessions. Cheap to clone; all clones share the launchers (template processes).
#[derive(Clone)]
pub struct Runtime {
    factory: Arc<SessionFactory>,
    pool: Option<Arc<Pool>>,
    warnings: Arc<[String]>,
    environments: Arc<[Layer]>,
}

impl Runtime {
    /// Starts the template processes (importing the data stack), one for the base
    /// environment and one for each configured one, and decides the isolation once for
    /// all of them.
    pub async fn start(env: &Environment, options: RuntimeOptions) -> Result<Self, SessionError> {
        let files = RuntimeFiles::install(&env.home().runtime())?;
        let mut warnings = Vec::new();
        let view = if options.sandbox && nix::unistd::geteuid().is_root() {
            let (env, files, layers) = (env.clone(), files.clone(), options.environments.clone());
            let prepared =
                tokio::task::spawn_blocking(move || NeutralView::prepare(&env, &files, &layers))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|prepared| prepared);
            match prepared {
                Ok(view) => Some(Arc::new(view)),
                Err(why) => {
                    warnings.push(format!(
                        "sessions see where this machine keeps the Python environment (its host paths show in /proc/self/mountinfo): {why}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        let isolation = if options.sandbox {
            let policy = SandboxPolicy::detect(env, &files, view.is_some(), &mut warnings);
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
        let launcher = start_template(
            env,
            &files,
            &options.template_modules,
            None,
            view.as_ref(),
            &mut warnings,
        )
        .await?;
        let mut layer_launchers = BTreeMap::new();
        for layer in &options.environments {
            let modules: Vec<String> = options
                .template_modules
                .iter()
                .chain(&layer.spec().preload)
                .cloned()
                .collect();
            let launcher = start_template(
                env,
                &files,
                &modules,
                Some(layer),
                view.as_ref(),
                &mut warnings,
            )
            .await?;
            // One short run of the interpreter per environment, once: what the layer adds
            // never changes while it is ready.
            let packages = layer.packages(env)?;
            layer_launchers.insert(
                layer.name().to_owned(),
                LayerTemplate {
                    launcher,
                    packages: packages.into(),
                },
            );
        }
        let mut runtime = Self::assemble(
            launcher,
            layer_launchers,
            Some(env.clone()),
            isolation,
            options.package_index,
            options.pool_size,
            warnings,
        );
        runtime.environments = options.environments.into();
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
        Self::assemble(
            launcher,
            BTreeMap::new(),
            None,
            Isolation::None,
            None,
            pool_size,
            Vec::new(),
        )
    }

    fn assemble(
        launcher: Arc<dyn Launcher>,
        layer_launchers: BTreeMap<String, LayerTemplate>,
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
            layer_launchers,
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
            environments: Arc::new([]),
        }
    }

    /// The configured environments sessions may name, besides the base one.
    pub fn environments(&self) -> &[Layer] {
        &self.environments
    }

    /// The configured environment `name`; refused, with the configured names, if there is
    /// none of that name.
    pub fn layer(&self, name: &str) -> Result<&Layer, SessionError> {
        self.environments
            .iter()
            .find(|layer| layer.name() == name)
            .ok_or_else(|| SessionError::UnknownEnvironment {
                name: name.to_owned(),
                configured: self
                    .environments
                    .iter()
                    .map(|layer| layer.name().to_owned())
                    .collect(),
            })
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

    /// A new session, from the pool when it asks for no particular directory, the pool's
    /// limits and the base environment.
    pub async fn create_session(&self, config: SessionConfig) -> Result<Session, SessionError> {
        match &self.pool {
            Some(pool)
                if config.workdir.is_none()
                    && config.limits == pool.limits
                    && config.network == NetPolicy::None
                    && config.environment.is_none() =>
            {
                pool.take().await
            }
            _ => self.factory.create(config).await,
        }
    }
}

/// Starts the template of the base environment (`layer: None`) or of a configured one;
/// modules it could not import become a warning.
async fn start_template(
    env: &Environment,
    files: &RuntimeFiles,
    modules: &[String],
    layer: Option<&Layer>,
    view: Option<&Arc<NeutralView>>,
    warnings: &mut Vec<String>,
) -> Result<Arc<dyn Launcher>, SessionError> {
    let command = TemplateCommand {
        python: path_in(view, &env.info().python),
        env: template_env(env, files, modules, layer, view),
        view: view.cloned(),
    };
    let (launcher, failed_modules) = TemplateLauncher::start(command).await?;
    if !failed_modules.is_empty() {
        let failed: Vec<String> = failed_modules
            .iter()
            .map(|(module, why)| format!("{module} ({why})"))
            .collect();
        let whose = layer.map_or_else(String::new, |l| format!(" in the environment {}", l.name()));
        warnings.push(format!(
            "these modules could not be pre-imported{whose}: {}",
            failed.join(", ")
        ));
    }
    Ok(Arc::new(launcher))
}

/// The complete environment of a template process, and so of every session it forks.
fn template_env(
    env: &Environment,
    files: &RuntimeFiles,
    modules: &[String],
    layer: Option<&Layer>,
    view: Option<&Arc<NeutralView>>,
) -> BTreeMap<String, String> {
    let path = |host: &Path| path_in(view, host).display().to_string();
    let venv = path(&env.info().prefix);
    let vars = [
        ("PATH", format!("{venv}/bin:/usr/local/bin:/usr/bin:/bin")),
        ("HOME", "/tmp".into()),
        ("TMPDIR", "/tmp".into()),
        ("LANG", "C.UTF-8".into()),
        ("PYTHONPATH", path(&files.dir)),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONNOUSERSITE", "1".into()),
        (
            "MPLBACKEND",
            "module://matplotlib_inline.backend_inline".into(),
        ),
        ("MPLCONFIGDIR", path(&env.mplconfig())),
        // IPython's profile directory, created when the template builds its shell.
        ("IPYTHONDIR", path(&env.home().ipython())),
        // One BLAS/OpenMP thread per session: the template must not have threads when
        // it forks, and hundreds of sessions share a few cores.
        ("OPENBLAS_NUM_THREADS", "1".into()),
        ("OMP_NUM_THREADS", "1".into()),
        ("MKL_NUM_THREADS", "1".into()),
        ("PAGER", "cat".into()),
        ("TERM", "dumb".into()),
        ("SANDCELL_ENTER_LIB", path(&files.enter_library)),
        ("SANDCELL_TEMPLATE_MODULES", modules.join(",")),
    ];
    let mut vars: BTreeMap<String, String> =
        vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(layer) = layer {
        // The template appends it to `sys.path` before the imports.
        vars.insert("SANDCELL_LAYER".into(), path(&layer.site()));
    }
    if let Some(library) = view.and_then(|view| view.library_path()) {
        vars.insert("LD_LIBRARY_PATH".into(), library.display().to_string());
    }
    vars
}

/// Where the host's `path` is for a template in `view` (the same path without one).
fn path_in(view: Option<&Arc<NeutralView>>, path: &Path) -> PathBuf {
    view.map_or_else(|| path.to_path_buf(), |view| view.path(path))
}
