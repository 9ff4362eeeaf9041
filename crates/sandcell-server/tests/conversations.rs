//! Conversations end to end: a real server with a real SQLite file and real sessions, the
//! model played by the replay server in Anthropic's wire format.

mod common;

use common::{
    assert_error, config, eventually, json, python, replay, with_model, Api, Event, EventStream,
    TestServer, MODEL,
};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, StatusCode};
use sandcell_llm_replay::ReplayServer;
use sandcell_server::ServerConfig;
use sandcell_service::create_key;
use serde_json::{json, Value};

/// A server on a fresh data directory whose default model is played by `model`.
async fn server_with(model: &ReplayServer) -> (TestServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(with_model(data.path(), model), python().await).await;
    (server, data)
}

fn reply_code(text: &str, code: &str) -> Value {
    json!({"reply": {"text": text, "tool_calls": [{"code": code}], "chunk_size": 7}})
}

fn reply_text(text: &str) -> Value {
    json!({"reply": {"text": text, "chunk_size": 7}})
}

async fn create_conversation(api: &Api) -> Value {
    let response = api
        .request(Method::POST, "/api/v1/conversations")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn send(api: &Api, conversation: &str, text: &str) -> Vec<Event> {
    message(api, conversation, text).await.rest().await
}

async fn message(api: &Api, conversation: &str, text: &str) -> EventStream {
    let response = post_message(api, conversation, json!({ "text": text })).await;
    assert_eq!(response.status(), StatusCode::OK);
    EventStream::new(response)
}

async fn post_message(api: &Api, conversation: &str, body: Value) -> Response {
    api.request(
        Method::POST,
        &format!("/api/v1/conversations/{conversation}/messages"),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

fn names(events: &[Event]) -> Vec<&str> {
    let mut names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    names.dedup();
    names
}

fn find<'a>(events: &'a [Event], name: &str) -> &'a Value {
    &events
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} event in {:?}", names(events)))
        .data
}

async fn conversation(api: &Api, id: &str) -> Value {
    let (status, body) = json(api.get(&format!("/api/v1/conversations/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn record_types(conversation: &Value) -> Vec<&str> {
    conversation["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_turn_streams_runs_code_on_uploaded_files_and_is_stored() {
    let model = replay(json!([
        reply_code(
            "Let me add them up.",
            "import csv\nrows = list(csv.DictReader(open('/mnt/data/data.csv')))\ntotal = sum(int(r['amount']) for r in rows)\nprint(total)\nopen('/mnt/data/total.txt', 'w').write(str(total))"
        ),
        reply_text("The total is 60."),
    ]))
    .await;
    let (server, _data) = server_with(&model).await;
    let api = server.api();

    let (status, models) = json(api.get("/api/v1/models").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["default"], MODEL);

    // A conversation made with its file; a bad path makes nothing at all.
    let with_file = |name: &str| {
        let file =
            Part::bytes(b"month,amount\n1,10\n2,20\n3,30\n".to_vec()).file_name(name.to_owned());
        Form::new().text("model", MODEL).part("file", file)
    };
    let response = api
        .request(Method::POST, "/api/v1/conversations")
        .multipart(with_file("../data.csv"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_path").await;
    let (_, sessions) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(sessions["data"], json!([]));
    let response = api
        .request(Method::POST, "/api/v1/conversations")
        .multipart(with_file("data.csv"))
        .send()
        .await
        .unwrap();
    let (status, created) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let session = created["session_id"].as_str().unwrap();
    assert_eq!(created["model"], MODEL);

    let events = send(&api, id, "What is the total amount?").await;
    let order: Vec<usize> = [
        "text_delta",
        "code_delta",
        "code",
        "stdout",
        "execution",
        "final",
        "end",
    ]
    .iter()
    .map(|name| {
        events
            .iter()
            .position(|e| e.name == *name)
            .unwrap_or_else(|| panic!("no {name} event in {:?}", names(&events)))
    })
    .collect();
    assert!(order.is_sorted(), "in order: {:?}", names(&events));
    assert_eq!(events.last().unwrap().name, "end");
    assert_eq!(find(&events, "stdout")["text"], "60\n");
    assert_eq!(find(&events, "execution")["execution"]["status"], "ok");
    assert_eq!(find(&events, "final")["text"], "The total is 60.");
    let end = find(&events, "end");
    assert_eq!(end["outcome"], "answered", "{end}");
    assert!(end["usage"]["output_tokens"].as_u64().unwrap() > 0, "{end}");

    // The model saw the file in the system prompt and the code's output in the result.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].body.to_string().contains("data.csv"));
    assert!(requests[1].body.to_string().contains("60"));

    // Everything is in the database: the message, the reply with its call, the result.
    let stored = conversation(&api, id).await;
    assert_eq!(stored["title"], "What is the total amount?");
    assert_eq!(
        record_types(&stored),
        ["start", "user", "assistant", "tool", "assistant"]
    );
    let tool = &stored["records"][3];
    assert_eq!(tool["execution"]["stdout"], "60\n");
    assert!(tool["code"].as_str().unwrap().contains("csv.DictReader"));
    let (_, files) = json(api.get(&format!("/api/v1/sessions/{session}/files")).await).await;
    let paths: Vec<&str> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"total.txt"), "{files}");

    let (status, list) = json(api.get("/api/v1/conversations").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["data"][0]["title"], "What is the total amount?");
    assert_eq!(list["next"], Value::Null);

    // Its session goes only with it: deleting the session alone is refused.
    let session = list["data"][0]["session_id"].as_str().unwrap().to_owned();
    let (_, info) = json(api.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert_eq!(info["conversation_id"], id);
    let refused = api
        .request(Method::DELETE, &format!("/api/v1/sessions/{session}"))
        .send()
        .await
        .unwrap();
    let message = assert_error(refused, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains("delete the conversation"), "{message}");
    assert_eq!(conversation(&api, id).await["id"], id);

    // Exported as a notebook: the code cell carries its output.
    let response = api
        .get(&format!("/api/v1/conversations/{id}/notebook"))
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ipynb+json"
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains("What is the total amount_.ipynb"),
        "{disposition}"
    );
    let (_, notebook) = json(response).await;
    assert_eq!(notebook["nbformat"], 4);
    let code_cell = notebook["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cell_type"] == "code")
        .expect("a code cell");
    assert_eq!(code_cell["outputs"][0]["text"], "60\n");
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_outlives_a_server_restart_and_the_model_is_told_of_lost_state() {
    let model = replay(json!([
        reply_code(
            "Setting x.",
            "x = 41\nopen('/mnt/data/kept.txt', 'w').write('kept')"
        ),
        reply_text("x is set."),
        reply_code(
            "Reading x.",
            "print(open('/mnt/data/kept.txt').read())\nprint(x)"
        ),
        reply_text("x is gone, the file is kept."),
    ]))
    .await;
    let data = tempfile::tempdir().unwrap();
    let python = python().await;
    let first = TestServer::start(with_model(data.path(), &model), python.clone()).await;
    let created = create_conversation(&first.api()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let events = send(&first.api(), &id, "set x").await;
    assert_eq!(find(&events, "end")["outcome"], "answered");
    let before = conversation(&first.api(), &id).await;
    first.stop().await;

    let second = TestServer::start(with_model(data.path(), &model), python).await;
    let api = second.api();
    assert_eq!(conversation(&api, &id).await, before);
    let events = send(&api, &id, "what is x?").await;
    let execution = &find(&events, "execution")["execution"];
    assert_eq!(execution["restarted"], true, "{execution}");
    assert_eq!(execution["stdout"], "kept\n");
    assert_eq!(execution["error"]["ename"], "NameError");
    assert_eq!(find(&events, "end")["outcome"], "answered");
    // The model read, in the tool result, that the variables are gone.
    let last = model.requests().last().unwrap().body.to_string();
    assert!(last.contains("The Python session was restarted"), "{last}");
    // The whole conversation went to the model, the first turn included.
    assert!(
        last.contains("set x") && last.contains("x is set."),
        "{last}"
    );
    assert_eq!(
        record_types(&conversation(&api, &id).await),
        [
            "start",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    second.stop().await;
}

#[tokio::test]
async fn a_turn_can_be_cancelled_and_one_runs_at_a_time() {
    let model = replay(json!([
        reply_code(
            "Sleeping.",
            "x = 7\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)"
        ),
        reply_text("x is 7."),
    ]))
    .await;
    let (server, _data) = server_with(&model).await;
    let api = server.api();
    let created = create_conversation(&api).await;
    let id = created["id"].as_str().unwrap();
    let session = created["session_id"].as_str().unwrap();

    let mut stream = message(&api, id, "sleep").await;
    while stream.next().await.expect("the turn goes on").name != "stdout" {}
    // Busy: no second message, and no cell from the notebook in the middle of the turn.
    let response = post_message(&api, id, json!({"text": "again"})).await;
    assert_error(response, StatusCode::CONFLICT, "session_busy").await;
    let response = api
        .request(Method::POST, &format!("/api/v1/sessions/{session}/execute"))
        .json(&json!({"code": "1"}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::CONFLICT, "session_busy").await;

    let response = api
        .request(Method::POST, &format!("/api/v1/conversations/{id}/cancel"))
        .send()
        .await
        .unwrap();
    let (status, cancelled) = json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["cancelled"], true);
    let rest = stream.rest().await;
    assert_eq!(
        find(&rest, "execution")["execution"]["status"],
        "interrupted"
    );
    assert_eq!(find(&rest, "end")["outcome"], "cancelled");
    // The model's cell was the kernel's first.
    assert_eq!(find(&rest, "execution")["execution"]["execution_count"], 1);

    // The variables survived the interrupt; the conversation goes on, and the kernel
    // counts on: its cells are numbered as their tracebacks name them.
    let after = api.execute(session, "x").await;
    assert_eq!(after["results"][0]["text/plain"], "7");
    assert_eq!(after["execution_count"], 2);
    let failed = api.execute(session, "1 / 0").await;
    assert_eq!(failed["execution_count"], 3);
    let traceback = failed["error"]["traceback"].to_string();
    assert!(traceback.contains("In[3]"), "{traceback}");
    let stored = conversation(&api, id).await;
    let records = record_types(&stored);
    assert_eq!(records.last(), Some(&"note"), "{records:?}");
    server.stop().await;
}

/// The events of the turn under way, from a client other than the one that sent it.
async fn follow(api: &Api, id: &str, last_event_id: Option<&str>) -> EventStream {
    let mut request = api.request(Method::GET, &format!("/api/v1/conversations/{id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    EventStream::new(response)
}

#[tokio::test]
async fn a_second_client_follows_a_turn_under_way_and_cancels_it() {
    let model = replay(json!([
        reply_code(
            "Counting.",
            "import time\nprint('one', flush=True)\ntime.sleep(1)\nprint('two', flush=True)\ntime.sleep(120)"
        ),
        reply_text("Stopped."),
    ]))
    .await;
    let (server, _data) = server_with(&model).await;
    let api = server.api();
    let created = create_conversation(&api).await;
    let id = created["id"].as_str().unwrap();
    let before = conversation(&api, id).await;
    assert!(before["turn"].is_null(), "{before}");
    let response = api.get(&format!("/api/v1/conversations/{id}/events")).await;
    assert_error(response, StatusCode::CONFLICT, "conflict").await;

    let mut first = message(&api, id, "count").await;
    let mut seen = Vec::new();
    loop {
        let event = first.next().await.expect("the turn goes on");
        let done = event.name == "stdout";
        seen.push(event);
        if done {
            break;
        }
    }
    // The conversation, opened now (a reload, a second tab), names its turn.
    let opened = conversation(&api, id).await;
    assert_eq!(opened["turn"]["text"], "count", "{opened}");
    let records_before = opened["turn"]["records_before"].as_u64().unwrap() as usize;
    assert_eq!(records_before, 1, "only the start came before: {opened}");

    // A second client gets everything so far, then the events as they come.
    let mut second = follow(&api, id, None).await;
    for earlier in &seen {
        let event = second.next().await.expect("an earlier event");
        assert_eq!((&event.name, &event.data), (&earlier.name, &earlier.data));
        assert_eq!(event.id, earlier.id);
    }
    let live = loop {
        let event = second.next().await.expect("the turn goes on");
        if event.name == "stdout" {
            break event;
        }
    };
    assert_eq!(live.data["text"], "two\n");
    // One that lost its connection resumes after the last event it saw.
    let resumed = follow(&api, id, live.id.as_deref()).await;

    // The second client cancels; every stream ends with the turn.
    let response = api
        .request(Method::POST, &format!("/api/v1/conversations/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await.1["cancelled"], true);
    for rest in [first.rest().await, second.rest().await] {
        assert_eq!(find(&rest, "end")["outcome"], "cancelled");
        assert_eq!(
            find(&rest, "execution")["execution"]["status"],
            "interrupted"
        );
    }
    let rest = resumed.rest().await;
    assert!(
        rest.iter().all(|e| e.name != "stdout"),
        "{:?}",
        names(&rest)
    );
    assert_eq!(find(&rest, "end")["outcome"], "cancelled");
    eventually("the turn is no longer under way", || async {
        conversation(&api, id).await["turn"].is_null()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_failing_model_ends_the_turn_with_a_sentence_and_keeps_the_conversation() {
    let model = replay(json!([
        {"status": 401, "body": {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}},
    ]))
    .await;
    let (server, _data) = server_with(&model).await;
    let api = server.api();
    let id = create_conversation(&api).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = send(&api, &id, "hello").await;
    let end = find(&events, "end");
    assert_eq!(end["outcome"], "error");
    let message = end["message"].as_str().unwrap();
    assert!(
        message.contains("API key") && message.ends_with('.'),
        "{message}"
    );
    assert_eq!(
        record_types(&conversation(&api, &id).await),
        ["start", "user"]
    );

    // Bad requests are refused before anything is recorded.
    let response = post_message(&api, &id, json!({"text": "  "})).await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let response = post_message(&api, &id, json!({"text": "hi", "model": "nowhere:model"})).await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(
        record_types(&conversation(&api, &id).await),
        ["start", "user"]
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_model_conversations_are_refused_with_how_to_configure_one() {
    let data = tempfile::tempdir().unwrap();
    let small_requests = ServerConfig {
        max_request_bytes: 1024,
        ..config(data.path())
    };
    let server = TestServer::start(small_requests, python().await).await;
    let api = server.api();
    // The route takes uploads, but its JSON is held to the request limit.
    let response = api
        .request(Method::POST, "/api/v1/conversations")
        .json(&json!({ "model": "x".repeat(2000) }))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let (status, models) = json(api.get("/api/v1/models").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["default"], Value::Null);
    let hint = models["hint"].as_str().unwrap();
    assert!(hint.contains("SANDCELL_MODEL"), "{hint}");
    let response = api
        .request(Method::POST, "/api/v1/conversations")
        .send()
        .await
        .unwrap();
    let message = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(message.contains("SANDCELL_MODEL"), "{message}");
    // Nothing was left behind.
    let (_, sessions) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(sessions["data"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn users_never_see_each_others_conversations() {
    let model = replay(json!([reply_text("Hello, Alice.")])).await;
    let data = tempfile::tempdir().unwrap();
    let config = with_model(data.path(), &model);
    let store = config.service.open_store().await.unwrap();
    let alice_key = create_key(&store, "alice").await.unwrap();
    let bob_key = create_key(&store, "bob").await.unwrap();
    drop(store);
    let server = TestServer::start(config, python().await).await;
    let (alice, bob) = (server.api_as(&alice_key), server.api_as(&bob_key));
    let created = create_conversation(&alice).await;
    let id = created["id"].as_str().unwrap();
    let session = created["session_id"].as_str().unwrap();
    assert_eq!(
        find(&send(&alice, id, "hi").await, "end")["outcome"],
        "answered"
    );

    let (_, list) = json(bob.get("/api/v1/conversations").await).await;
    assert_eq!(list, json!({ "data": [], "next": null }));
    for (method, path) in [
        (Method::GET, format!("/api/v1/conversations/{id}")),
        (Method::GET, format!("/api/v1/conversations/{id}/notebook")),
        (Method::GET, format!("/api/v1/conversations/{id}/events")),
        (Method::POST, format!("/api/v1/conversations/{id}/cancel")),
        (Method::DELETE, format!("/api/v1/conversations/{id}")),
        (Method::GET, format!("/api/v1/sessions/{session}/files")),
    ] {
        let response = bob.request(method.clone(), &path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = post_message(&bob, id, json!({"text": "mine now"})).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    // Alice's conversation is untouched, and she can delete it with its session.
    assert_eq!(
        record_types(&conversation(&alice, id).await),
        ["start", "user", "assistant"]
    );
    let response = alice
        .request(Method::DELETE, &format!("/api/v1/conversations/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = alice.get(&format!("/api/v1/conversations/{id}")).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = alice.get(&format!("/api/v1/sessions/{session}")).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(!data.path().join("sessions").join(session).exists());
    server.stop().await;
}

async fn create_conversation_on(api: &Api, session: &str) -> Response {
    api.request(Method::POST, "/api/v1/conversations")
        .json(&json!({ "session_id": session }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_conversation_started_on_a_notebooks_session_shares_its_kernel_never_at_once() {
    let model = replay(json!([
        reply_code("Your x plus one:", "print(x + 1)"),
        reply_text("It is 42."),
    ]))
    .await;
    let data = tempfile::tempdir().unwrap();
    let config = with_model(data.path(), &model);
    let store = config.service.open_store().await.unwrap();
    let alice_key = create_key(&store, "alice").await.unwrap();
    let bob_key = create_key(&store, "bob").await.unwrap();
    drop(store);
    let server = TestServer::start(config, python().await).await;
    let (alice, bob) = (server.api_as(&alice_key), server.api_as(&bob_key));

    // The person's notebook: a variable and a file in its session.
    let session = alice.create_session().await;
    alice
        .execute(
            &session,
            "x = 41\nopen('/mnt/data/mine.txt', 'w').write('hi')",
        )
        .await;
    let response = alice
        .request(Method::POST, "/api/v1/notebooks")
        .json(&json!({"title": "Mine", "session_id": session}))
        .send()
        .await
        .unwrap();
    let (status, notebook) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{notebook}");

    // Not Bob's to talk about, and not while a cell runs in it.
    assert_error(
        create_conversation_on(&bob, &session).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let mut running = alice
        .execute_stream(
            &session,
            "import time\nprint('busy', flush=True)\ntime.sleep(60)",
        )
        .await;
    while running.next().await.expect("the cell runs").name != "stdout" {}
    let message = assert_error(
        create_conversation_on(&alice, &session).await,
        StatusCode::CONFLICT,
        "session_busy",
    )
    .await;
    assert!(message.contains("running code"), "{message}");
    let response = alice
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{session}/interrupt"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    running.rest().await;

    let response = create_conversation_on(&alice, &session).await;
    let (status, created) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["session_id"], session.as_str());
    let id = created["id"].as_str().unwrap();
    // One conversation per session.
    assert_error(
        create_conversation_on(&alice, &session).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // The model's code sees the person's variable.
    let events = send(&alice, id, "what is x + 1?").await;
    assert_eq!(find(&events, "execution")["execution"]["stdout"], "42\n");
    assert_eq!(find(&events, "end")["outcome"], "answered");
    let (_, info) = json(alice.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert_eq!(info["conversation_id"], id);

    // Deleting the conversation leaves the notebook its session, variables and files.
    let response = alice
        .request(Method::DELETE, &format!("/api/v1/conversations/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = alice.get(&format!("/api/v1/conversations/{id}")).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let after = alice
        .execute(&session, "x, open('/mnt/data/mine.txt').read()")
        .await;
    assert_eq!(after["results"][0]["text/plain"], "(41, 'hi')");
    let (_, info) = json(alice.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert_eq!(info["conversation_id"], Value::Null);
    let (_, kept) = json(
        alice
            .get(&format!(
                "/api/v1/notebooks/{}",
                notebook["id"].as_str().unwrap()
            ))
            .await,
    )
    .await;
    assert_eq!(kept["session_id"], session.as_str());
    server.stop().await;
}
