//! `sandcell setup` while sessions run: another path to the same interpreter finds the
//! same environment, and changed requirements build a new one beside it; either way the
//! running session keeps importing every package from the environment it started with.
//!
//! Each test builds real environments in a data directory of its own (never the shared
//! one), from the pinned package lines a session with numpy, pandas and matplotlib needs:
//! a real build, without the slowest packages to install (scipy, scikit-learn, sympy).

use sandcell_pyenv::{EnvSpec, Environment, Home, REQUIREMENTS};
use sandcell_session::{
    ExecOptions, Execution, Runtime, RuntimeOptions, Session, SessionConfig, Status,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const SESSION_PACKAGES: &[&str] = &[
    "asttokens",
    "contourpy",
    "cycler",
    "decorator",
    "executing",
    "fonttools",
    "ipython",
    "ipython-pygments-lexers",
    "jedi",
    "kiwisolver",
    "matplotlib",
    "matplotlib-inline",
    "numpy",
    "packaging",
    "pandas",
    "parso",
    "pexpect",
    "pillow",
    "prompt-toolkit",
    "ptyprocess",
    "pure-eval",
    "pygments",
    "pyparsing",
    "python-dateutil",
    "pytz",
    "six",
    "stack-data",
    "traitlets",
    "typing-extensions",
    "tzdata",
    "wcwidth",
];

/// The pinned lines (every Python-version variant) of these packages.
fn pinned(names: &[&str]) -> String {
    REQUIREMENTS
        .lines()
        .filter(|line| {
            line.split("==")
                .next()
                .is_some_and(|name| names.contains(&name.trim()))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn session_spec() -> EnvSpec {
    EnvSpec {
        requirements: pinned(SESSION_PACKAGES),
        ..EnvSpec::from_env().expect("these tests need python3 (or SANDCELL_PYTHON)")
    }
}

/// A data directory of this test's own.
fn temp_home() -> (TempDir, Home) {
    let dir = tempfile::Builder::new()
        .prefix("sandcell-home-")
        .tempdir()
        .unwrap();
    // Sessions run as an unprivileged user when the tests run as root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = Home::at(dir.path()).unwrap();
    (dir, home)
}

/// Runs a setup on a blocking thread; returns the environment and what it reported.
fn setup(home: &Home, spec: &EnvSpec) -> tokio::task::JoinHandle<(Environment, Vec<String>)> {
    let (home, spec) = (home.clone(), spec.clone());
    tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        let env = Environment::ensure_for(&home, &spec, &mut |step| {
            eprintln!("setup: {step}");
            steps.push(step.to_string());
        })
        .expect("the environment can be set up");
        (env, steps)
    })
}

async fn session_on(env: &Environment) -> (Runtime, Session, TempDir) {
    let runtime = Runtime::start(env, RuntimeOptions::default())
        .await
        .expect("the template starts");
    for warning in runtime.warnings() {
        eprintln!("warning: {warning}");
    }
    let workdir = tempfile::Builder::new()
        .prefix("sandcell-test-")
        .tempdir()
        .unwrap();
    let session = runtime
        .create_session(SessionConfig {
            workdir: Some(workdir.path().to_path_buf()),
            limits: Default::default(),
            network: sandcell_session::NetPolicy::None,
            environment: None,
        })
        .await
        .expect("a session starts");
    (runtime, session, workdir)
}

async fn run(session: &mut Session, code: &str) -> Execution {
    let execution = session
        .execute(code, &ExecOptions::default(), &mut |_| {})
        .await
        .expect("the session can be driven");
    assert_eq!(execution.status, Status::Ok, "{execution:?}");
    execution
}

fn text(execution: &Execution) -> &str {
    execution.results[0]["text/plain"]
        .as_str()
        .expect("a text/plain result")
}

/// Imports the packages from disk, in the session (modules the template did not
/// pre-import) and in a fresh interpreter started by the session, and reports where
/// that interpreter's environment is.
const IMPORT_EVERYTHING: &str = r#"
import subprocess, sys
import matplotlib.backends.backend_svg, pandas.io.stata, numpy.polynomial.hermite
fresh = subprocess.run(
    [sys.executable, "-c", "import sys, numpy, pandas, matplotlib.pyplot; print(sys.prefix)"],
    capture_output=True, text=True,
)
# (matplotlib warns on stderr that its configuration directory is read-only.)
(fresh.returncode, fresh.stdout.strip(), fresh.stderr[-2000:] if fresh.returncode else "")
"#;

async fn imports_everything(session: &mut Session, env: &Environment) {
    let checked = run(session, IMPORT_EVERYTHING).await;
    // A root host with loop devices shows sessions the environment at a neutral path.
    let neutral = nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists();
    let prefix = if neutral {
        "/run/sandcell/env".to_owned()
    } else {
        env.info().prefix.display().to_string()
    };
    assert_eq!(text(&checked), format!("(0, '{prefix}', '')"));
}

/// Keeps importing everything in `session` until `setup` has finished (at least once).
async fn imports_everything_throughout<T>(
    session: &mut Session,
    env: &Environment,
    setup: tokio::task::JoinHandle<T>,
) -> T {
    loop {
        imports_everything(session, env).await;
        if setup.is_finished() {
            break;
        }
    }
    imports_everything(session, env).await;
    setup.await.expect("the setup thread finishes")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    entries
}

#[tokio::test]
async fn setup_through_another_path_to_the_same_interpreter_keeps_the_running_session() {
    let (_dir, home) = temp_home();
    let spec = session_spec();
    // Two setups at once: one builds, the other waits for it and finds its environment.
    let (first, second) = (setup(&home, &spec), setup(&home, &spec));
    let ((env, first_steps), (again, second_steps)) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(env.dir(), again.dir());
    assert!(
        first_steps.is_empty() != second_steps.is_empty(),
        "exactly one of them builds: {first_steps:?} {second_steps:?}"
    );
    let (_runtime, mut session, _workdir) = session_on(&env).await;
    imports_everything(&mut session, &env).await;

    // Two other ways to the same interpreter: a symlink named python3 in a directory of
    // its own (as if that directory came first on PATH), and the binary itself.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("python3");
    std::os::unix::fs::symlink(&spec.python, &link).unwrap();
    let binary = std::fs::canonicalize(&env.info().python).unwrap();
    for python in [link, binary] {
        let other = EnvSpec {
            python: python.clone(),
            ..spec.clone()
        };
        let (found, steps) =
            imports_everything_throughout(&mut session, &env, setup(&home, &other)).await;
        assert_eq!(found.dir(), env.dir(), "{python:?} is the same interpreter");
        assert_eq!(
            steps,
            Vec::<String>::new(),
            "nothing was built for {python:?}"
        );
    }
    assert_eq!(entries(&home.envs()), vec![env.dir().to_path_buf()]);
}

#[tokio::test]
async fn changed_requirements_build_beside_the_environment_running_sessions_use() {
    let (_dir, home) = temp_home();
    // An environment as earlier sandcell versions left it: never touched.
    let earlier = home.root().join("env");
    std::fs::create_dir_all(earlier.join("bin")).unwrap();
    std::fs::write(earlier.join("sandcell-stamp"), "earlier").unwrap();
    std::fs::write(earlier.join("bin/python"), "earlier").unwrap();

    let spec = session_spec();
    let (old_env, _) = setup(&home, &spec).await.unwrap();
    let (old_runtime, mut old_session, _old_workdir) = session_on(&old_env).await;
    let old_dir = old_env.dir().to_path_buf();
    // Only the runtime (and its session) hold the environment from here on.
    drop(old_env);
    let old_env = old_runtime.environment().unwrap().clone();

    let changed = EnvSpec {
        requirements: format!("{}{}", spec.requirements, pinned(&["mpmath"])),
        ..spec.clone()
    };
    let (new_env, steps) =
        imports_everything_throughout(&mut old_session, &old_env, setup(&home, &changed)).await;

    assert_ne!(new_env.dir(), old_dir);
    let mut both = vec![old_dir.clone(), new_env.dir().to_path_buf()];
    both.sort();
    assert_eq!(entries(&home.envs()), both);
    assert!(
        steps.iter().any(|step| step
            .contains("kept 1 older environment(s) that running sandcell processes still use")),
        "{steps:?}"
    );
    // The running session is on its environment as it was: without the new package.
    let without = run(
        &mut old_session,
        "import importlib.util\nimportlib.util.find_spec('mpmath') is None",
    )
    .await;
    assert_eq!(text(&without), "True");

    // A new runtime runs the new environment.
    let (new_runtime, mut new_session, _new_workdir) = session_on(&new_env).await;
    assert_eq!(new_runtime.environment().unwrap().dir(), new_env.dir());
    imports_everything(&mut new_session, &new_env).await;
    let with = run(&mut new_session, "import mpmath\nmpmath.__version__").await;
    assert_eq!(text(&with), "'1.3.0'");
    imports_everything(&mut old_session, &old_env).await;

    assert_eq!(
        std::fs::read_to_string(earlier.join("bin/python")).unwrap(),
        "earlier"
    );
}
