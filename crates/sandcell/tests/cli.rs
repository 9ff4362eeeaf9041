//! The `sandcell` command line: its JSON contract, human output and bad input.

mod common;
// The session runtime's own helpers for a local package index.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod local_index;

use common::{assert_build_failed, first_text, run_json, sandcell, with_unreachable_index};
use sandcell_pyenv::{Environment, Home, Layer, LayerSpec};

#[test]
fn json_lines_carry_state_between_cells() {
    let (cells, output) = run_json(&["-c", "x = 41", "-c", "x + 1"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(cells.len(), 2);
    assert_eq!(cells[0]["status"], "ok");
    assert_eq!(cells[0]["results"].as_array().unwrap().len(), 0);
    assert_eq!(first_text(&cells[1]), "42");
    for field in [
        "stdout",
        "stderr",
        "results",
        "error",
        "files",
        "duration_ms",
    ] {
        assert!(
            cells[1].get(field).is_some(),
            "missing {field}: {}",
            cells[1]
        );
    }
    assert!(cells[1]["error"].is_null());
    // IPython's count, as in `In [2]`.
    assert_eq!(cells[1]["execution_count"], 2);
}

#[test]
fn files_and_snippets_run_in_the_order_given() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.py");
    let last = dir.path().join("last.py");
    std::fs::write(&first, "order = ['first']").unwrap();
    std::fs::write(&last, "order.append('last')\norder").unwrap();
    let (cells, output) = run_json(&[
        first.to_str().unwrap(),
        "-c",
        "order.append('middle')",
        last.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    assert_eq!(cells.len(), 3);
    assert_eq!(first_text(&cells[2]), "['first', 'middle', 'last']");
}

#[test]
fn a_failing_cell_gives_a_non_zero_exit_and_its_traceback() {
    let (cells, output) = run_json(&["-c", "raise ValueError('bad value')", "-c", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(cells[0]["status"], "error");
    assert_eq!(cells[0]["error"]["ename"], "ValueError");
    assert_eq!(cells[0]["error"]["evalue"], "bad value");
    assert_eq!(cells[1]["status"], "ok", "later cells still run");
}

#[test]
fn a_plot_comes_back_as_a_png_result() {
    let (cells, output) = run_json(&[
        "-c",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
    ]);
    assert!(output.status.success());
    let png = cells[0]["results"][0]["image/png"]
        .as_str()
        .expect("image/png");
    assert!(png.starts_with("iVBORw0KGgo"), "base64 of a PNG signature");
}

#[test]
fn human_output_streams_text_and_saves_images() {
    let out = tempfile::tempdir().unwrap();
    let output = sandcell()
        .args(["run", "--out"])
        .arg(out.path())
        .args([
            "-c",
            "print('hello')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n6 * 7",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("hello\n"), "{stdout}");
    assert!(stdout.contains("42"), "{stdout}");
    let saved = out.path().join("cell1-output1.png");
    assert!(stdout.contains(&saved.display().to_string()), "{stdout}");
    assert!(std::fs::read(&saved).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn human_output_labels_each_cell() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("first.py");
    std::fs::write(&script, "print('from the file')").unwrap();
    let output = sandcell()
        .arg("run")
        .arg(&script)
        .args(["-c", "print('from a snippet')", "-c", "6 * 7"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!(
        "[1] {}\nfrom the file\n[2] -c #1\nfrom a snippet\n[3] -c #2\n42\n",
        script.display()
    );
    assert_eq!(stdout, expected);
}

#[test]
fn workdir_and_input_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data.csv");
    std::fs::write(&input, "a,b\n1,2\n3,4\n").unwrap();
    let workdir = dir.path().join("work");
    let (cells, output) = run_json(&[
        "--workdir",
        workdir.to_str().unwrap(),
        "--file",
        input.to_str().unwrap(),
        "-c",
        "import pandas as pd\ndf = pd.read_csv('/mnt/data/data.csv')\ndf.to_json('out.json')\nint(df['b'].sum())",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(first_text(&cells[0]), "6");
    assert_eq!(cells[0]["files"][0]["path"], "out.json");
    assert_eq!(cells[0]["files"][0]["mime"], "application/json");
    assert!(workdir.join("out.json").exists(), "--workdir is kept");
}

/// Host files a hostile cell points links at; each test checks they are untouched.
struct Canaries {
    dir: tempfile::TempDir,
}

impl Canaries {
    fn new() -> Self {
        let canaries = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for name in ["first", "second"] {
            std::fs::write(canaries.dir.path().join(name), format!("canary {name}")).unwrap();
        }
        canaries
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Every file in the directory with its content and modification time.
    fn state(&self) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
        let mut state: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                (
                    path.display().to_string(),
                    std::fs::read(&path).unwrap(),
                    std::fs::metadata(&path).unwrap().modified().unwrap(),
                )
            })
            .collect();
        state.sort();
        state
    }
}

/// A cell that plants links where the host will write its images, swaps `plots` for a
/// link to the canaries' directory, then draws two plots.
fn hostile_plotting_cell(canaries: &Canaries) -> String {
    format!(
        "import os\n\
         os.symlink({first:?}, 'cell1-output1.png')\n\
         os.symlink({second:?}, 'cell1-output2.png')\n\
         if os.path.isdir('plots'):\n    os.rename('plots', 'plots_moved')\n\
         os.symlink({dir:?}, 'plots')\n\
         os.symlink('/etc/shadow', 'shadow')\n\
         import matplotlib.pyplot as plt\n\
         plt.figure(); plt.plot([1, 2]); plt.show()\n\
         plt.figure(); plt.plot([2, 1]); plt.show()\n\
         print('planted')",
        first = canaries.path("first"),
        second = canaries.path("second"),
        dir = canaries.dir.path().display().to_string(),
    )
}

#[test]
fn images_are_never_written_through_links_a_cell_planted_in_the_workdir() {
    let canaries = Canaries::new();
    let before = canaries.state();
    let workdir = tempfile::tempdir().unwrap();
    let output = sandcell()
        .args(["run", "--workdir"])
        .arg(workdir.path())
        .args(["-c", &hostile_plotting_cell(&canaries)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("planted"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cell1-output1.png goes through a symbolic link"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cell1-output2.png goes through a symbolic link"),
        "{stderr}"
    );
    assert_eq!(canaries.state(), before);
    // The files the cell made are reported; nothing behind its links is.
    assert!(
        !stdout.contains("canary") && !stdout.contains("shadow"),
        "{stdout}"
    );
}

#[test]
fn an_out_directory_swapped_for_a_link_gets_the_images_in_the_real_one() {
    let canaries = Canaries::new();
    let before = canaries.state();
    let workdir = tempfile::tempdir().unwrap();
    let plots = workdir.path().join("plots");
    let output = sandcell()
        .args(["run", "--workdir"])
        .arg(workdir.path())
        .arg("--out")
        .arg(&plots)
        .args(["-c", &hostile_plotting_cell(&canaries)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(canaries.state(), before);
    for image in ["cell1-output1.png", "cell1-output2.png"] {
        let saved = workdir.path().join("plots_moved").join(image);
        assert!(
            std::fs::read(&saved).unwrap().starts_with(b"\x89PNG"),
            "{saved:?}"
        );
    }
}

#[test]
fn an_input_file_is_never_copied_through_a_planted_link() {
    let canaries = Canaries::new();
    let before = canaries.state();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data.csv");
    std::fs::write(&input, "a,b\n1,2\n").unwrap();
    // What a cell of an earlier run with this working directory left behind.
    let workdir = dir.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    std::os::unix::fs::symlink(canaries.path("first"), workdir.join("data.csv")).unwrap();
    assert_clear_failure(
        &[
            "run",
            "--workdir",
            workdir.to_str().unwrap(),
            "--file",
            input.to_str().unwrap(),
            "-c",
            "1",
        ],
        "data.csv goes through a symbolic link",
    );
    assert_eq!(canaries.state(), before);
}

/// Bad input gets one sentence and exit status 2, never a panic.
fn assert_clear_failure(args: &[&str], expected: &str) {
    let output = sandcell().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_input_gets_a_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    assert_clear_failure(
        &["run", "/nonexistent/script.py"],
        "cannot read /nonexistent/script.py",
    );
    assert_clear_failure(&["run", "--bogus-flag", "-c", "1"], "--bogus-flag");
    assert_clear_failure(&["run"], "nothing to run");
    assert_clear_failure(
        &["run", "--workdir", not_a_dir.to_str().unwrap(), "-c", "1"],
        "is not a directory",
    );
    assert_clear_failure(
        &["run", "--file", "/nonexistent.csv", "-c", "1"],
        "no such file",
    );
    assert_clear_failure(&["run", "--timeout", "0", "-c", "1"], "--timeout");
}

#[test]
fn setup_is_idempotent() {
    for _ in 0..2 {
        let output = sandcell().arg("setup").output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("environment ready"));
    }
}

#[test]
fn setup_lists_the_configured_environments_and_names_the_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[environments.unbuilt]\nrequirements = [\"sandcell-never-published==1.0\", \"other>=2\"]\npreload = [\"other\"]\n",
    )
    .unwrap();
    let output = sandcell()
        .args(["setup", "--list"])
        .env("SANDCELL_CONFIG", &config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("base: "), "{listed}");
    assert_eq!(
        lines[1],
        "unbuilt: not built (`sandcell setup` builds it); requirements: sandcell-never-published==1.0, other>=2; preload: other"
    );

    // Building it fails (no index answers): the error names the environment and pip's
    // reason, and setup exits non-zero.
    let output = with_unreachable_index(sandcell().arg("setup").env("SANDCELL_CONFIG", &config))
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    assert_build_failed(&output, "unbuilt", "sandcell-never-published");
}

#[test]
fn an_unknown_environment_is_refused_with_the_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[environments.geo]\nrequirements = [\"sandcell-never-published\"]\n\n[environments.ml]\nrequirements = [\"other\"]\n",
    )
    .unwrap();
    for args in [
        &["run", "--environment", "nope", "-c", "1"][..],
        &[
            "chat",
            "--model",
            "openai:test-model",
            "--environment",
            "nope",
            "hi",
        ],
        &["mcp", "--environment", "nope"],
    ] {
        let output = sandcell()
            .args(args)
            .env("SANDCELL_CONFIG", &config)
            .env("OPENAI_API_KEY", "test-key")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim(),
            "sandcell: error: there is no environment named \"nope\"; the configured ones are geo, ml",
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_builds_the_environment_it_is_given_and_its_session_imports_from_it() {
    let home = Home::from_env().expect("a data directory");
    let env = Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up");
    let build = tempfile::tempdir().unwrap();
    let wheel = local_index::wheel(&env, build.path(), "sandcell_cli_extra", 16);
    let index = local_index::package_index(vec![wheel]).await;
    let spec = LayerSpec {
        requirements: vec!["sandcell-cli-extra".into()],
        preload: Vec::new(),
    };
    // Whatever an earlier run of this test built goes, so that `run` really builds it.
    let planned = Layer::planned(&env, "cliextra", &spec).unwrap();
    if planned.dir().exists() {
        std::fs::remove_dir_all(planned.dir()).unwrap();
    }
    let config = build.path().join("config.toml");
    std::fs::write(
        &config,
        "[environments.cliextra]\nrequirements = [\"sandcell-cli-extra\"]\n",
    )
    .unwrap();
    let mut run = sandcell();
    run.args(["run", "--json", "--environment", "cliextra", "-c"])
        .arg("import sandcell_cli_extra; sandcell_cli_extra.GREETING")
        .env("SANDCELL_CONFIG", &config)
        .env(
            "PIP_INDEX_URL",
            format!("http://127.0.0.1:{}/simple/", index.port),
        )
        .env("PIP_NO_CACHE_DIR", "1");
    // The index answers on this test's runtime while the command waits.
    let output = tokio::task::spawn_blocking(move || run.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(planned.is_ready(), "run built the environment");
    let cell: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
    assert_eq!(first_text(&cell), "'installed at run time'", "{cell}");
    // Without the flag, the base environment: the package is not there.
    let (cells, output) = run_json(&["-c", "import sandcell_cli_extra"]);
    assert!(!output.status.success());
    assert_eq!(
        cells[0]["error"]["ename"], "ModuleNotFoundError",
        "{}",
        cells[0]
    );
}

#[test]
fn doctor_reports_every_layer_and_what_a_session_sees() {
    let output = sandcell().args(["doctor", "--json"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let layers = report["layers"].as_array().unwrap();
    let ids: Vec<&str> = layers.iter().filter_map(|l| l["layer"].as_str()).collect();
    for expected in [
        "seccomp",
        "landlock",
        "no_new_privs",
        "network_namespace",
        "pid_namespace",
    ] {
        assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
    }
    for layer in layers {
        if layer["active"] == false {
            assert!(
                layer["fix"].is_string(),
                "an inactive layer says how to fix it: {layer}"
            );
        }
    }
    // What the probe claims matches what a real session observes.
    let inside = &report["inside"];
    let active = |id: &str| {
        layers
            .iter()
            .any(|l| l["layer"] == id && l["active"] == true)
    };
    assert_eq!(inside["no_new_privs"], active("no_new_privs"));
    assert_eq!(inside["seccomp_filter"], active("seccomp"));
    if active("network_namespace") {
        assert_eq!(inside["network_interfaces"], serde_json::json!(["lo"]));
    }
}

#[test]
fn no_sandbox_runs_but_says_so() {
    let output = sandcell()
        .args([
            "run",
            "--no-sandbox",
            "--json",
            "-c",
            "import os\nos.getpid() != 1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: the sandbox is off"), "{stderr}");
    let cell: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(
        first_text(&cell),
        "True",
        "not PID 1 of a namespace: no sandbox"
    );
    assert_eq!(
        cell["network"],
        serde_json::json!({ "type": "host", "allow": [] }),
        "the result says the code had the host's network"
    );
}

#[test]
fn the_preload_list_decides_what_sessions_start_with() {
    let probe = "import sys\n('pandas' in sys.modules, 'json' in sys.modules)";
    let (cells, output) = run_json(&["--preload", "json", "-c", probe]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(first_text(&cells[0]), "(False, True)");
    assert_eq!(
        cells[0]["network"],
        serde_json::json!({ "type": "none", "allow": [] }),
        "a sandboxed session has no network unless asked"
    );
    let (cells, _) = run_json(&["-c", probe]);
    assert_eq!(
        first_text(&cells[0]),
        "(True, True)",
        "pandas is preloaded by default"
    );
}

#[test]
fn ctrl_c_interrupts_the_running_cell_and_the_next_one_still_runs() {
    let workdir = tempfile::tempdir().unwrap();
    let child = sandcell()
        .args(["run", "--json", "--workdir"])
        .arg(workdir.path())
        .args([
            "-c",
            "kept = 'yes'\nopen('started', 'w').close()\nimport time\ntime.sleep(60)",
            "-c",
            "kept",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the cell is sleeping, press Ctrl-C once.
    let started = workdir.path().join("started");
    for _ in 0..600 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{output:?}");
    assert_eq!(lines[0]["status"], "interrupted");
    assert_eq!(first_text(&lines[1]), "'yes'");
    assert_eq!(
        output.status.code(),
        Some(1),
        "an interrupted cell is not a success"
    );
}
