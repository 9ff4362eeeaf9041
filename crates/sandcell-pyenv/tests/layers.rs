//! Configured environments: package layers built with the base environment's pip from a
//! package index on the host's loopback (no other network), found ready again, and a
//! failed build that names its environment and leaves nothing ready.

// The session runtime's own helpers for a local package index.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod local_index;

use sandcell_pyenv::{Environment, Home, Layer, LayerSpec, PyenvError};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

fn spec(requirements: &[&str]) -> LayerSpec {
    LayerSpec {
        requirements: requirements.iter().map(|r| r.to_string()).collect(),
        preload: Vec::new(),
    }
}

/// A wheel of one pure-Python package `name` at `version` that requires `requires`,
/// built with the environment's Python. Returns its file name and bytes.
fn wheel_requiring(
    env: &Environment,
    dir: &Path,
    name: &str,
    version: &str,
    requires: &[&str],
) -> (String, Vec<u8>) {
    let file = format!("{name}-{version}-py3-none-any.whl");
    let path = dir.join(&file);
    let script = r#"
import sys, zipfile
name, version, path, requires = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
info = f"{name}-{version}.dist-info"
metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
files = {
    f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
    f"{info}/METADATA": metadata.encode(),
    f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
with zipfile.ZipFile(path, "w") as wheel:
    for n, data in files.items():
        wheel.writestr(n, data)
    wheel.writestr(f"{info}/RECORD", record)
"#;
    let status = Command::new(&env.info().python)
        .args(["-c", script, name, version])
        .arg(&path)
        .args(requires)
        .status()
        .unwrap();
    assert!(status.success());
    (file, std::fs::read(&path).unwrap())
}

/// Removes what an earlier run of this test left, so that the build below really builds.
fn start_afresh(layer: &Layer) {
    if layer.dir().exists() {
        std::fs::remove_dir_all(layer.dir()).unwrap();
    }
}

// One test: pip reads the index from this process's environment (PIP_INDEX_URL).
#[tokio::test(flavor = "multi_thread")]
async fn a_layer_is_built_from_the_index_once_and_a_failed_build_is_never_ready() {
    let home = Home::from_env().expect("a data directory");
    let env = Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up");
    let build = tempfile::tempdir().unwrap();
    let wheel = local_index::wheel(&env, build.path(), "sandcell_layer_probe", 16);
    // A package that needs one the base has (packaging), which the index also serves, at
    // the base's version: the layer must not keep a copy of it.
    let base_packaging = env
        .info()
        .packages
        .iter()
        .find(|p| p.name == "packaging")
        .expect("the base environment has packaging")
        .version
        .clone();
    let dependent = wheel_requiring(
        &env,
        build.path(),
        "sandcell_layer_dependent",
        "1.0",
        &["packaging"],
    );
    let packaging = wheel_requiring(&env, build.path(), "packaging", &base_packaging, &[]);
    let index = local_index::package_index(vec![wheel, dependent, packaging]).await;
    std::env::set_var(
        "PIP_INDEX_URL",
        format!("http://127.0.0.1:{}/simple/", index.port),
    );
    std::env::set_var("PIP_NO_CACHE_DIR", "1");

    let wanted = spec(&["sandcell-layer-probe", "sandcell-layer-dependent"]);
    let planned = Layer::planned(&env, "layer-test", &wanted).unwrap();
    start_afresh(&planned);
    assert!(!planned.is_ready());

    let (built, steps) = tokio::task::spawn_blocking({
        let env = env.clone();
        let wanted = wanted.clone();
        move || {
            let mut steps = Vec::new();
            let built = Layer::ensure(&env, "layer-test", &wanted, &mut |step| {
                steps.push(step.to_owned())
            });
            (built, steps)
        }
    })
    .await
    .unwrap();
    let built = built.expect("the layer builds from the local index");
    assert!(
        steps
            .iter()
            .any(|s| s.contains("1 package(s) the base environment already has")),
        "pip installed packaging, and it was left out: {steps:?}"
    );
    assert_eq!(built.dir(), planned.dir());
    assert!(built.is_ready());
    assert!(built.dir().starts_with(env.dir()), "it lives with the base");
    assert!(
        env.read_only_paths()
            .iter()
            .any(|p| built.dir().starts_with(p)),
        "the sandbox shows it read-only"
    );
    // The base interpreter imports it with the layer at the end of sys.path.
    let import = Command::new(&env.info().python)
        .args(["-c", "import sys; sys.path.append(sys.argv[1]); import sandcell_layer_probe; print(sandcell_layer_probe.GREETING)"])
        .arg(built.site())
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    assert_eq!(
        String::from_utf8_lossy(&import.stdout).trim(),
        "installed at run time"
    );

    // The dependency the base has was installed by pip, then left out of the layer.
    let site_entries: Vec<String> = std::fs::read_dir(built.site())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        site_entries.iter().any(|e| e == "sandcell_layer_dependent"),
        "{site_entries:?}"
    );
    assert!(
        !site_entries.iter().any(|e| e.starts_with("packaging")),
        "{site_entries:?}"
    );
    // What the layer adds, as the base's own packages are listed: packaging is not one.
    let added: Vec<String> = built
        .packages(&env)
        .expect("the layer's packages can be read")
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    assert_eq!(
        added,
        ["sandcell-layer-probe==1.0", "sandcell_layer_dependent==1.0"]
    );
    let dependency = Command::new(&env.info().python)
        .args(["-c", "import sys; sys.path.append(sys.argv[1]); import sandcell_layer_dependent, packaging; print(packaging.__file__.startswith(sys.prefix))"])
        .arg(built.site())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dependency.stdout).trim(),
        "True",
        "{dependency:?}"
    );

    // Found ready again: pip asks the index nothing more.
    let asked = index.hits.load(Ordering::SeqCst);
    assert!(asked > 0, "the build used the local index");
    let again = Layer::ensure(&env, "layer-test", &wanted, &mut |_| {}).unwrap();
    assert_eq!(again, built);
    assert_eq!(index.hits.load(Ordering::SeqCst), asked, "no rebuild");

    // Other requirements, another directory.
    let pinned = Layer::planned(&env, "layer-test", &spec(&["sandcell-layer-probe==1.0"])).unwrap();
    assert_ne!(pinned.dir(), built.dir());
    assert!(!pinned.is_ready());

    // A failing build names its environment and pip's reason, and is not ready.
    let missing = spec(&["sandcell-no-such-package"]);
    let broken = Layer::planned(&env, "layer-broken", &missing).unwrap();
    start_afresh(&broken);
    let error = tokio::task::spawn_blocking({
        let env = env.clone();
        move || Layer::ensure(&env, "layer-broken", &missing, &mut |_| {})
    })
    .await
    .unwrap()
    .expect_err("there is no such package");
    assert!(matches!(error, PyenvError::LayerFailed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("layer-broken"), "{message}");
    assert!(
        message.contains("sandcell-no-such-package"),
        "pip's reason: {message}"
    );
    assert!(!broken.is_ready());
    assert!(!broken.dir().exists(), "what the build left is gone");

    // A name that cannot be a directory's is refused before anything is built.
    assert!(matches!(
        Layer::planned(&env, "../up", &wanted),
        Err(PyenvError::BadLayerName { .. })
    ));

    for layer in [&built, &broken] {
        start_afresh(layer);
    }
}
