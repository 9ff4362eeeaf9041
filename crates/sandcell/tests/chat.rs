//! `sandcell chat` end to end: the real binary, a real sandboxed session, and a local
//! server playing each provider in its real wire format.

mod common;

use sandcell_llm_replay::{recorded_fixtures, ReplayServer, Script};
use serde_json::{json, Value};
use std::path::Path;

async fn replay(steps: Value) -> ReplayServer {
    let script: Script = serde_json::from_value(steps).expect("a valid script");
    ReplayServer::start(script, recorded_fixtures())
        .await
        .expect("the replay server starts")
}

/// Runs `sandcell chat --json --workdir WORKDIR ARGS…` against `server` as `provider`;
/// returns the exit code, the events and stderr.
async fn chat(
    server: &ReplayServer,
    provider: &str,
    workdir: &Path,
    args: &[&str],
) -> (Option<i32>, Vec<Value>, String) {
    let mut command = chat_command(server, provider, workdir);
    command.arg("--workdir").arg(workdir).args(args);
    json_output(command).await
}

/// `sandcell chat --json` against `server` as `provider`, with no config file (`dir` holds
/// none).
fn chat_command(server: &ReplayServer, provider: &str, dir: &Path) -> tokio::process::Command {
    let base_url = match provider {
        "openai" | "openai-responses" => format!("{}/v1", server.base_url()),
        _ => server.base_url(),
    };
    let mut command = tokio::process::Command::from(common::sandcell());
    command
        .arg("chat")
        .arg("--json")
        .args(["--model", &format!("{provider}:test-model")])
        .args(["--base-url", &base_url])
        .env("OPENAI_API_KEY", "test-key")
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("SANDCELL_CONFIG", dir.join("no-config.toml"));
    command
}

/// Runs `command`; returns the exit code, the JSON events and stderr.
async fn json_output(mut command: tokio::process::Command) -> (Option<i32>, Vec<Value>, String) {
    let output = command.output().await.expect("sandcell runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    (
        output.status.code(),
        events,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

const ANALYSIS: &str = "import pandas as pd\nimport matplotlib.pyplot as plt\n\
df = pd.read_csv('/mnt/data/data.csv')\nprint(df['amount'].sum())\n\
df.plot(x='month', y='amount')\nplt.show()";

#[tokio::test(flavor = "multi_thread")]
async fn a_full_loop_runs_for_every_protocol() {
    for provider in ["openai", "openai-responses", "anthropic", "ollama"] {
        let server = replay(json!([
            {"reply": {"text": "Let me look.", "tool_calls": [{"code": ANALYSIS}], "chunk_size": 7}},
            {"reply": {"text": "The total is 60; the plot is in /mnt/data/figure_1.png."}},
        ]))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("data.csv");
        std::fs::write(&input, "month,amount\n1,10\n2,20\n3,30\n").unwrap();
        let workdir = dir.path().join("work");
        let notebook = dir.path().join("conversation.ipynb");
        let (code, events, stderr) = chat(
            &server,
            provider,
            &workdir,
            &[
                "What is the total amount? Plot it.",
                "--file",
                input.to_str().unwrap(),
                "--save",
                notebook.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(code, Some(0), "{provider}: {stderr}\n{events:?}");

        let executions = of_type(&events, "execution");
        assert_eq!(executions.len(), 1, "{provider}: {events:?}");
        let execution = &executions[0]["execution"];
        assert_eq!(execution["status"], "ok", "{provider}: {execution}");
        assert_eq!(execution["stdout"], "60\n");
        assert_eq!(
            executions[0]["images"],
            json!([workdir.join("figure_1.png").display().to_string()]),
            "{provider}: figures are shown where the host has them"
        );
        assert!(workdir.join("figure_1.png").is_file(), "{provider}");
        let code: String = of_type(&events, "code_delta")
            .iter()
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        assert_eq!(code, ANALYSIS, "{provider}: the code streamed whole");
        let finals = of_type(&events, "final");
        assert_eq!(
            finals[0]["text"],
            "The total is 60; the plot is in /mnt/data/figure_1.png."
        );
        let end = events.last().unwrap();
        assert_eq!(end["type"], "end");
        assert_eq!(end["outcome"], "answered");
        assert!(
            end["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{provider}: {end}"
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 2, "{provider}");
        let first = requests[0].body.to_string();
        assert!(
            first.contains("/mnt/data/data.csv (28 B); columns: month, amount"),
            "{provider}: the prompt lists the file and its columns: {first}"
        );
        let second = requests[1].body.to_string();
        assert!(second.contains("60"), "{provider}: the output went back");
        assert!(
            second.contains("saved as /mnt/data/figure_1.png"),
            "{provider}"
        );

        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&notebook).unwrap()).unwrap();
        assert_eq!(saved["nbformat"], 4);
        let code_cell = saved["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cell_type"] == "code")
            .unwrap();
        assert_eq!(code_cell["source"], ANALYSIS);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_chat_keeps_the_files_it_made_in_the_current_directory() {
    let server = replay(json!([
        {"reply": {"tool_calls": [{"code": "open('/mnt/data/result.txt', 'w').write('new')\n\
            open('/mnt/data/fresh.txt', 'w').write('made')"}]}},
        {"reply": {"text": "Written."}},
    ]))
    .await;
    let here = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("result.txt"), "old").unwrap();
    let mut command = chat_command(&server, "openai", here.path());
    command.current_dir(here.path()).arg("Write the files.");
    let (code, events, stderr) = json_output(command).await;
    assert_eq!(code, Some(0), "{stderr}\n{events:?}");

    let read = |name: &str| std::fs::read_to_string(here.path().join(name)).unwrap();
    assert_eq!(
        read("result.txt"),
        "old",
        "an existing file is not overwritten"
    );
    assert_eq!(read("result-1.txt"), "new");
    assert_eq!(read("fresh.txt"), "made");
    let executions = of_type(&events, "execution");
    let mut shown: Vec<&str> = executions[0]["execution"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["path"].as_str().unwrap())
        .collect();
    shown.sort();
    let expected = [
        here.path().join("fresh.txt"),
        here.path().join("result-1.txt"),
    ];
    assert_eq!(
        shown,
        expected
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>(),
        "the JSON shows the host paths"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_is_one_sentence_and_a_failure_status() {
    let server = replay(json!([
        {"status": 401, "body": {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}}
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, events, _) = chat(&server, "anthropic", dir.path(), &["hello"]).await;
    assert_eq!(code, Some(1));
    let end = events.last().unwrap();
    assert_eq!(end["outcome"], "error");
    let message = end["message"].as_str().unwrap();
    assert!(
        message.contains("refused the API key") && message.contains("ANTHROPIC_API_KEY"),
        "{message}"
    );
}

#[test]
fn without_a_model_it_says_how_to_configure_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::sandcell()
        .args(["chat", "hello"])
        .env_remove("SANDCELL_MODEL")
        .env("SANDCELL_CONFIG", dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no model is configured") && stderr.contains("--model PROVIDER:MODEL"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
}

const DOUBLE: &str = "print(z * 2)\nopen('/mnt/data/doubled.txt', 'w').write(str(z * 2))";

#[tokio::test(flavor = "multi_thread")]
async fn the_interactive_chat_keeps_state_across_turns_and_answers_commands() {
    let server = replay(json!([
        {"reply": {"tool_calls": [{"code": "z = 5\nprint(z)"}]}},
        {"reply": {"text": "z is 5."}},
        {"reply": {"tool_calls": [{"code": DOUBLE}]}},
        {"reply": {"text": "Doubled: 10."}},
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "a,b\n").unwrap();
    let notebook = dir.path().join("saved.ipynb");
    let mut child = tokio::process::Command::from(common::sandcell())
        .args(["chat", "--model", "openai:test-model", "--base-url"])
        .arg(format!("{}/v1", server.base_url()))
        .arg("--file")
        .arg(&input)
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "test-key")
        .env("SANDCELL_CONFIG", dir.path().join("no-config.toml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "set z\n/files\n/bogus\ndouble it\n/save {}\n/quit\n",
        notebook.display()
    );
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("z is 5.") && stdout.contains("Doubled: 10."),
        "{stdout}"
    );
    assert!(stdout.contains("\n10\n"), "z survived the turn: {stdout}");
    assert!(
        stdout.contains("/mnt/data/in.csv (4 B); columns: a, b"),
        "{stdout}"
    );
    assert!(stderr.contains("unknown command /bogus"), "{stderr}");
    assert!(stderr.contains("conversation saved to"), "{stderr}");
    // The temporary /mnt/data is gone; the file the code wrote is kept where the chat ran.
    let kept = dir.path().join("doubled.txt");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "10");
    assert!(
        stdout.contains(&format!("[file {} (2 bytes)]", kept.display())),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "files the code makes are saved to {}",
            dir.path().display()
        )),
        "{stderr}"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&notebook).unwrap()).unwrap();
    let sources: Vec<&str> = saved["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| c["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, vec!["z = 5\nprint(z)", DOUBLE]);
}
