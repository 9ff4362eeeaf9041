//! The loop against a local server that speaks the providers' real wire formats, with
//! real Python sessions in the real sandbox.

use sandcell_agent::{
    notebook, Agent, AgentError, AgentEvent, AgentOptions, Config, ModelChoice, ModelClient,
    ModelError, Record, RetryPolicy, Transcript, TurnEnd,
};
use sandcell_llm_replay::{recorded_fixtures, RecordedRequest, ReplayServer, Script};
use sandcell_pyenv::{Environment, Home};
use sandcell_session::{Limits, Runtime, RuntimeOptions, Session, SessionConfig, Status};
use serde_json::{json, Value};
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

async fn replay(steps: Value) -> ReplayServer {
    let script: Script = serde_json::from_value(steps).expect("a valid script");
    ReplayServer::start(script, recorded_fixtures())
        .await
        .expect("the replay server starts")
}

/// `provider:model` against the replay server, retrying fast.
fn client(provider: &str, server: &ReplayServer) -> ModelClient {
    let base_url = match provider {
        "openai" | "openai-responses" => format!("{}/v1", server.base_url()),
        _ => server.base_url(),
    };
    let env = |name: &str| name.ends_with("_API_KEY").then(|| "test-key".to_owned());
    let choice = ModelChoice::resolve(
        &format!("{provider}:test-model"),
        Some(&base_url),
        &Config::default(),
        &env,
    )
    .expect("the model resolves");
    ModelClient::new(choice)
        .expect("a client")
        .with_retry(RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(5),
        })
}

fn environment() -> Environment {
    let home = Home::from_env().expect("a data directory");
    Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up")
}

/// An agent and the session its code runs in.
struct Chat {
    agent: Agent,
    session: Session,
}

impl Chat {
    fn transcript(&self) -> &Transcript {
        self.agent.transcript()
    }
}

/// An agent whose session runs in a fresh working directory.
async fn agent(client: ModelClient) -> (Chat, TempDir, Runtime) {
    let env = environment();
    let runtime = Runtime::start(&env, RuntimeOptions::default())
        .await
        .expect("the template starts");
    let workdir = tempfile::Builder::new()
        .prefix("sandcell-agent-test-")
        .tempdir()
        .unwrap();
    let session = runtime
        .create_session(SessionConfig {
            workdir: Some(workdir.path().to_path_buf()),
            limits: Limits::default(),
            network: sandcell_session::NetPolicy::None,
            environment: None,
        })
        .await
        .expect("a session starts");
    let transcript = Transcript::in_memory(&client.choice().spec());
    let agent = Agent::new(
        client,
        env.info().clone(),
        transcript,
        AgentOptions::default(),
    );
    (Chat { agent, session }, workdir, runtime)
}

async fn send(chat: &mut Chat, text: &str) -> (Result<TurnEnd, AgentError>, Vec<AgentEvent>) {
    let mut events = Vec::new();
    let end = chat
        .agent
        .send(
            &mut chat.session,
            text,
            &mut |e| events.push(e),
            &CancellationToken::new(),
        )
        .await;
    (end, events)
}

fn reply_code(code: &str) -> Value {
    json!({"reply": {"tool_calls": [{"code": code}], "chunk_size": 5}})
}

fn reply_text(text: &str) -> Value {
    json!({"reply": {"text": text}})
}

/// The tool results (as the protocol carries them) in a recorded request body.
fn request_text(request: &RecordedRequest) -> String {
    request.body.to_string()
}

#[tokio::test]
async fn a_multi_turn_conversation_reuses_variables_and_feeds_results_back() {
    let server = replay(json!([
        reply_code("x = 41\nprint('set')"),
        reply_text("I set x."),
        reply_code("print(x + 1)"),
        reply_text("x + 1 is 42."),
    ]))
    .await;
    let (mut agent, _dir, _rt) = agent(client("openai", &server)).await;
    let (end, events) = send(&mut agent, "set x to 41").await;
    assert_eq!(
        end.unwrap(),
        TurnEnd::Answered {
            text: "I set x.".into()
        }
    );
    let codes: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::CodeDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes, "x = 41\nprint('set')",
        "the code streams as it arrives"
    );
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::CodeDelta { .. }))
            .count()
            > 2,
        "in several pieces"
    );

    let (end, _) = send(&mut agent, "add one").await;
    assert_eq!(
        end.unwrap(),
        TurnEnd::Answered {
            text: "x + 1 is 42.".into()
        }
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let last = &requests[3].body;
    let tool_message = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .expect("the tool result is sent back");
    assert_eq!(tool_message["content"], "42");
    let system = last["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("/mnt/data") && system.contains("pandas=="),
        "{system}"
    );
    assert_eq!(
        requests[0].headers.get("authorization").map(String::as_str),
        Some("Bearer test-key")
    );
}

#[tokio::test]
async fn a_plot_goes_back_to_a_vision_model_as_an_image_and_is_described_to_others() {
    let plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()";
    for (provider, vision) in [("anthropic", true), ("ollama", false)] {
        let server = replay(json!([reply_code(plot), reply_text("Here is the plot.")])).await;
        let (mut agent, dir, _rt) = agent(client(provider, &server)).await;
        let (end, events) = send(&mut agent, "plot").await;
        assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
        let images = events
            .iter()
            .find_map(|e| match e {
                AgentEvent::Execution { images, .. } => Some(images.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(images, vec!["/mnt/data/figure_1.png".to_owned()]);
        assert!(dir.path().join("figure_1.png").is_file());
        let second = request_text(&server.requests()[1]);
        assert!(
            second.contains("saved as /mnt/data/figure_1.png"),
            "{provider}: described in the tool result"
        );
        let sent_image = match provider {
            "anthropic" => second.contains("\"type\":\"image\""),
            _ => second.contains("\"images\""),
        };
        assert_eq!(
            sent_image, vision,
            "{provider}: image input only for vision models"
        );
    }
}

#[tokio::test]
async fn several_tool_calls_in_one_turn_all_run_in_order() {
    let server = replay(json!([
        {"reply": {"tool_calls": [{"code": "a = 1\nprint('first')"}, {"code": "print('second', a)"}]}},
        reply_text("Both ran."),
    ]))
    .await;
    let (mut agent, _dir, _rt) = agent(client("openai-responses", &server)).await;
    let (end, events) = send(&mut agent, "two things").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    let outputs: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Execution { execution, .. } => Some(execution.stdout.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, vec!["first\n", "second 1\n"]);
    let input = server.requests()[1].body["input"]
        .as_array()
        .unwrap()
        .clone();
    let outputs: Vec<&Value> = input
        .iter()
        .filter(|item| item["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[1]["output"], "second 1");
}

#[tokio::test]
async fn huge_output_is_cut_for_the_model_and_saved_whole() {
    let server = replay(json!([
        reply_code("for i in range(50000):\n    print('row', i)"),
        reply_text("Long."),
    ]))
    .await;
    let (mut agent, dir, _rt) = agent(client("openai", &server)).await;
    let (end, _) = send(&mut agent, "print a lot").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    let body = &server.requests()[1].body;
    let content = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.len() < 20_000, "cut to {} bytes", content.len());
    assert!(content.starts_with("row 0\n"));
    assert!(content.ends_with("row 49999"));
    assert!(content.contains("the full output is in /mnt/data/outputs/call_1.txt"));
    let saved = std::fs::read_to_string(dir.path().join("outputs/call_1.txt")).unwrap();
    assert_eq!(saved.lines().count(), 50000);
}

#[tokio::test]
async fn links_the_code_plants_never_lead_the_agent_outside_the_working_directory() {
    let host = tempfile::tempdir().unwrap();
    let canary = host.path().join("canary.csv");
    std::fs::write(&canary, "CANARY_COLUMN\n1\n").unwrap();
    let canary_modified = std::fs::metadata(&canary).unwrap().modified().unwrap();
    let plant = format!(
        "import os\n\
         os.symlink({canary:?}, 'figure_1.png')\n\
         os.symlink({canary:?}, 'table.csv')\n\
         os.symlink('/etc/shadow', 'shadow.csv')\n\
         os.symlink({host:?}, 'outputs')\n\
         import matplotlib.pyplot as plt\n\
         plt.plot([1, 2]); plt.show()",
        canary = canary.display().to_string(),
        host = host.path().display().to_string(),
    );
    let server = replay(json!([
        reply_code(&plant),
        reply_code("for i in range(50000):\n    print('row', i)"),
        reply_text("Done."),
        reply_text("Still here."),
    ]))
    .await;
    let (mut agent, dir, _rt) = agent(client("openai", &server)).await;
    let (end, events) = send(&mut agent, "plant links").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    let images: Vec<Vec<String>> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Execution { images, .. } => Some(images.clone()),
            _ => None,
        })
        .collect();
    // The plot takes the next free name; the cut output cannot be saved, and says why.
    assert_eq!(images[0], ["/mnt/data/figure_2.png"]);
    assert!(std::fs::read(dir.path().join("figure_2.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let tool_results = request_text(&server.requests()[2]);
    assert!(
        tool_results.contains("outputs/call_2.txt goes through a symbolic link"),
        "{tool_results}"
    );
    // The next turn's file list shows neither the links nor what they point at.
    let (end, _) = send(&mut agent, "list").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    let system = server.requests()[3].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(system.contains("/mnt/data/figure_2.png"), "{system}");
    for leaked in ["CANARY_COLUMN", "table.csv", "shadow", "root:"] {
        assert!(!system.contains(leaked), "{leaked} in {system}");
    }
    assert_eq!(
        std::fs::read_to_string(&canary).unwrap(),
        "CANARY_COLUMN\n1\n"
    );
    assert_eq!(
        std::fs::metadata(&canary).unwrap().modified().unwrap(),
        canary_modified
    );
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn cancelling_stops_the_code_and_keeps_session_and_conversation() {
    let server = replay(json!([
        reply_code("y = 7\nimport time\ntime.sleep(60)"),
        {"delay_ms": 30000, "reply": {"text": "too late"}},
        reply_code("print(y)"),
        reply_text("y is 7."),
    ]))
    .await;
    let (mut agent, _dir, _rt) = agent(client("openai", &server)).await;

    // Cancelled while the code runs.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let mut events = Vec::new();
    let end = agent
        .agent
        .send(
            &mut agent.session,
            "sleep",
            &mut |e| {
                if matches!(e, AgentEvent::Code { .. }) {
                    let trigger = trigger.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        trigger.cancel();
                    });
                }
                events.push(e);
            },
            &cancel,
        )
        .await;
    assert_eq!(end.unwrap(), TurnEnd::Cancelled);
    let status = events.iter().find_map(|e| match e {
        AgentEvent::Execution { execution, .. } => Some(execution.status),
        _ => None,
    });
    assert_eq!(status, Some(Status::Interrupted));

    // Cancelled while the model is answering.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let end = agent
        .agent
        .send(&mut agent.session, "again", &mut |_| {}, &cancel)
        .await;
    assert_eq!(end.unwrap(), TurnEnd::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "did not wait for the model"
    );

    // The session kept its state; the conversation goes on.
    let (end, _) = send(&mut agent, "what is y?").await;
    assert_eq!(
        end.unwrap(),
        TurnEnd::Answered {
            text: "y is 7.".into()
        }
    );
    let last = server.requests().last().unwrap().body.clone();
    let tool_contents: Vec<String> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(tool_contents.last().map(String::as_str), Some("7"));
    assert!(
        tool_contents[0].contains("interrupted"),
        "the cancelled call has its result: {tool_contents:?}"
    );
}

#[tokio::test]
async fn the_conversation_exports_to_a_notebook_jupyter_accepts() {
    let server = replay(json!([
        reply_code("import matplotlib.pyplot as plt\nprint('hi')\nplt.plot([3, 1, 2])"),
        reply_code("1 / 0"),
        reply_text("Done."),
    ]))
    .await;
    let (mut agent, dir, _rt) = agent(client("openai", &server)).await;
    let (end, _) = send(&mut agent, "plot then fail").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    let notebook = notebook::to_notebook(agent.transcript().records());
    let cells = notebook["cells"].as_array().unwrap();
    let kinds: Vec<&str> = cells
        .iter()
        .map(|c| c["cell_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["markdown", "code", "code", "markdown"]);
    let outputs = cells[1]["outputs"].as_array().unwrap();
    assert!(outputs
        .iter()
        .any(|o| o["output_type"] == "display_data" && o["data"]["image/png"].is_string()));
    // `plt.plot(…)` is the cell's last expression: its value is the cell's result.
    let values: Vec<&serde_json::Value> = outputs
        .iter()
        .filter(|o| o["output_type"] == "execute_result")
        .collect();
    assert_eq!(values.len(), 1, "{outputs:?}");
    assert!(values[0]["data"]["text/plain"]
        .as_str()
        .unwrap()
        .contains("Line2D"));
    assert_eq!(values[0]["execution_count"], cells[1]["execution_count"]);
    assert_eq!(cells[1]["execution_count"], 1);
    assert_eq!(cells[2]["execution_count"], 2);
    assert_eq!(cells[2]["outputs"][0]["ename"], "ZeroDivisionError");

    let path = dir.path().join("conversation.ipynb");
    std::fs::write(&path, serde_json::to_string(&notebook).unwrap()).unwrap();
    let env = environment();
    env.ensure_extra(
        "notebook-check",
        include_str!("../../../python/notebook-check/requirements.txt"),
        &mut |step| eprintln!("setup: {step}"),
    )
    .expect("nbformat installs");
    let check = std::process::Command::new(&env.info().python)
        .args([
            "-c",
            "import nbformat, sys; nbformat.validate(nbformat.read(sys.argv[1], as_version=4)); print('valid')",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "valid",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(agent
        .transcript()
        .records()
        .iter()
        .any(|r| matches!(r, Record::Tool { .. })));
}

/// Model failures, without a session: only the client is needed.
mod client_errors {
    use super::*;
    use sandcell_agent::ClientEvent;
    use sandcell_llm::{Conversation, Message, Tool};

    fn hello() -> Conversation {
        Conversation {
            system: Some("be brief".into()),
            messages: vec![Message::User {
                text: "hello".into(),
                images: vec![],
            }],
        }
    }

    async fn ask(provider: &str, steps: Value) -> (Result<String, ModelError>, Vec<String>) {
        let server = replay(steps).await;
        let client = client(provider, &server);
        let mut retries = Vec::new();
        let result = client
            .turn(&hello(), &[Tool::python()], None, &mut |e| {
                if let ClientEvent::Retrying { reason, .. } = e {
                    retries.push(reason);
                }
            })
            .await
            .map(|turn| turn.text);
        (result, retries)
    }

    #[tokio::test]
    async fn rate_limits_are_retried_after_the_time_the_provider_asks() {
        let (result, retries) = ask(
            "anthropic",
            json!([
                {"status": 429, "headers": {"retry-after": "1"}, "fixture": "anthropic-error-429-rate-limit.json"},
                reply_text("hi"),
            ]),
        )
        .await;
        assert_eq!(result.unwrap(), "hi");
        assert_eq!(retries.len(), 1);
        assert!(retries[0].contains("HTTP 429"), "{retries:?}");
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_reported() {
        let (result, retries) = ask(
            "openai",
            json!([
                {"status": 500, "body": {"error": {"message": "boom", "type": "server_error"}}},
                {"status": 503, "body": "upstream down"},
                {"status": 502, "body": "bad gateway"},
            ]),
        )
        .await;
        let error = result.unwrap_err();
        assert_eq!(retries.len(), 2);
        assert!(
            matches!(error, ModelError::Unavailable { attempts: 3, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("try again later"), "{error}");
    }

    #[tokio::test]
    async fn a_refused_key_an_unknown_model_and_a_long_context_are_said_plainly() {
        let (result, retries) = ask(
            "openai",
            json!([{"status": 401, "body": {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}}]),
        )
        .await;
        let error = result.unwrap_err().to_string();
        assert!(retries.is_empty(), "401 is not retried");
        assert!(
            error.contains("refused the API key") && error.contains("OPENAI_API_KEY"),
            "{error}"
        );

        let (result, _) = ask(
            "ollama",
            json!([{"status": 404, "fixture": "ollama-error.json"}]),
        )
        .await;
        let error = result.unwrap_err();
        assert!(matches!(error, ModelError::UnknownModel { .. }), "{error}");

        let (result, _) = ask(
            "anthropic",
            json!([{"status": 400, "body": {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}}}]),
        )
        .await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, ModelError::ContextTooLong { .. }),
            "{error}"
        );

        let (result, _) = ask(
            "anthropic",
            json!([{"status": 400, "fixture": "anthropic-error-400-invalid-request.json"}]),
        )
        .await;
        assert!(matches!(
            result.unwrap_err(),
            ModelError::Rejected { status: 400, .. }
        ));
    }

    #[tokio::test]
    async fn a_cut_stream_and_malformed_json_are_errors_not_answers() {
        let (result, _) = ask(
            "openai",
            json!([{"reply": {"text": "a long answer that will not arrive whole"}, "cut_after_bytes": 200}]),
        )
        .await;
        let error = result.unwrap_err();
        assert!(matches!(error, ModelError::Cut { .. }), "{error}");
        assert!(error.to_string().contains("send the message again"));

        let (result, _) = ask("anthropic", json!([{"malformed": true}])).await;
        assert!(matches!(result.unwrap_err(), ModelError::Malformed { .. }));
    }

    #[tokio::test]
    async fn recorded_streams_of_every_protocol_assemble() {
        for (provider, fixture, expected_call) in [
            (
                "openai",
                "openai-chat-stream-tool-call-single.sse",
                "get_weather",
            ),
            (
                "openai-responses",
                "openai-responses-stream-function-call.sse",
                "get_capital",
            ),
            (
                "anthropic",
                "anthropic-messages-stream-tool-use.sse",
                "get_weather",
            ),
            (
                "ollama",
                "ollama-chat-stream-tool-calls.ndjson",
                "get_weather",
            ),
        ] {
            let server = replay(json!([{"fixture": fixture}])).await;
            let turn = client(provider, &server)
                .turn(&hello(), &[Tool::python()], None, &mut |_| {})
                .await
                .unwrap_or_else(|e| panic!("{fixture}: {e}"));
            assert_eq!(turn.tool_calls[0].name, expected_call, "{fixture}");
        }
    }
}

#[tokio::test]
async fn a_symlink_planted_by_the_code_does_not_redirect_sandcells_writes() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let code = format!(
        "import os\nos.makedirs('/mnt/data/outputs', exist_ok=True)\n\
         os.symlink({:?}, '/mnt/data/outputs/call_1.txt')\nprint('x' * 30000)",
        victim.display().to_string()
    );
    let server = replay(json!([reply_code(&code), reply_text("Done.")])).await;
    let (mut agent, _dir, _rt) = agent(client("openai", &server)).await;
    let (end, _) = send(&mut agent, "go").await;
    assert!(matches!(end.unwrap(), TurnEnd::Answered { .. }));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let second = request_text(&server.requests()[1]);
    assert!(
        second.contains("could not prepare the output of this call"),
        "the call still has a result: {second}"
    );
}
