//! Configured environments: package layers built with the base environment's pip from a
//! package index on the host's loopback (no other network), found ready again, and a
//! failed build that names its environment and leaves nothing ready.

// The session runtime's own helpers for a local package index.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod local_index;

use sandcell_pyenv::{Environment, Home, Layer, LayerSpec, PyenvError};
use std::process::Command;
use std::sync::atomic::Ordering;

fn spec(requirements: &[&str]) -> LayerSpec {
    LayerSpec {
        requirements: requirements.iter().map(|r| r.to_string()).collect(),
        preload: Vec::new(),
    }
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
    let index = local_index::package_index(vec![wheel]).await;
    std::env::set_var(
        "PIP_INDEX_URL",
        format!("http://127.0.0.1:{}/simple/", index.port),
    );
    std::env::set_var("PIP_NO_CACHE_DIR", "1");

    let wanted = spec(&["sandcell-layer-probe"]);
    let planned = Layer::planned(&env, "layer-test", &wanted).unwrap();
    start_afresh(&planned);
    assert!(!planned.is_ready());

    let built = tokio::task::spawn_blocking({
        let env = env.clone();
        let wanted = wanted.clone();
        move || Layer::ensure(&env, "layer-test", &wanted, &mut |_| {})
    })
    .await
    .unwrap()
    .expect("the layer builds from the local index");
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
