//! Notebooks end to end: a real server with a real SQLite file and real sessions; the
//! exported `.ipynb` checked by Jupyter's own validator (nbformat).

mod common;

use common::{assert_error, config, json, python, Api, EventStream, TestServer};
use reqwest::{Method, StatusCode};
use sandcell_pyenv::{Environment, Home};
use sandcell_service::create_key;
use serde_json::{json, Value};
use std::path::Path;

async fn send(api: &Api, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    json(api.request(method, path).json(&body).send().await.unwrap()).await
}

async fn create_notebook(api: &Api, body: Value) -> Value {
    let (status, notebook) = send(api, Method::POST, "/api/v1/notebooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{notebook}");
    notebook
}

async fn notebook(api: &Api, id: &str) -> Value {
    let (status, body) = json(api.get(&format!("/api/v1/notebooks/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Saves as the page does: every cell, and what else is given.
async fn save(api: &Api, id: &str, change: Value) -> Value {
    let (status, body) = send(
        api,
        Method::PATCH,
        &format!("/api/v1/notebooks/{id}"),
        change,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The outputs of an execution as Jupyter writes them, as the page saves them.
fn outputs_of(execution: &Value, count: u64) -> Vec<Value> {
    let mut outputs = Vec::new();
    for name in ["stdout", "stderr"] {
        if let Some(text) = execution[name].as_str().filter(|text| !text.is_empty()) {
            outputs.push(json!({"output_type": "stream", "name": name, "text": text}));
        }
    }
    for (index, bundle) in execution["results"].as_array().unwrap().iter().enumerate() {
        if execution["execute_result"] == json!(index) {
            outputs.push(json!({"output_type": "execute_result", "execution_count": count, "data": bundle, "metadata": {}}));
        } else {
            outputs.push(json!({"output_type": "display_data", "data": bundle, "metadata": {}}));
        }
    }
    if !execution["error"].is_null() {
        let error = &execution["error"];
        outputs.push(json!({"output_type": "error", "ename": error["ename"], "evalue": error["evalue"], "traceback": error["traceback"]}));
    }
    outputs
}

/// Asserts that nbformat's validator takes the notebook.
fn assert_valid_ipynb(notebook: &Value, dir: &Path) {
    let home = Home::from_env().expect("a data directory");
    let env = Environment::ensure(&home, &mut |step| eprintln!("setup: {step}"))
        .expect("the Python environment can be set up");
    env.ensure_extra(
        "notebook-check",
        include_str!("../../../python/notebook-check/requirements.txt"),
        &mut |step| eprintln!("setup: {step}"),
    )
    .expect("nbformat installs");
    let path = dir.join("exported.ipynb");
    std::fs::write(&path, serde_json::to_string(notebook).unwrap()).unwrap();
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
}

#[tokio::test]
async fn a_notebook_is_saved_as_it_is_worked_on_exported_and_opened_again() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let (_, empty) = json(api.get("/api/v1/notebooks").await).await;
    assert_eq!(empty, json!({"data": [], "next": null}));

    let created = create_notebook(&api, json!({})).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["title"], "Untitled notebook");
    assert_eq!(created["cells"], json!([]));
    assert!(created["session_id"].is_null());

    // The page makes a session, runs cells in it and saves after each step.
    let session = api.create_session().await;
    save(&api, id, json!({"session_id": session})).await;
    let first = api
        .execute(
            &session,
            "import sys\nprint('hello')\nprint('warn', file=sys.stderr)\ndisplay(1)\n6 * 7",
        )
        .await;
    let second = api.execute(&session, "1 / 0").await;
    let cells = json!([
        {"cell_type": "markdown", "source": "# Sums\nThe answer."},
        {"cell_type": "code", "source": "6 * 7", "execution_count": 1, "outputs": outputs_of(&first, 1)},
        {"cell_type": "code", "source": "1 / 0", "execution_count": 2, "outputs": outputs_of(&second, 2)},
        {"cell_type": "code", "source": "not run yet"},
    ]);
    let saved = save(&api, id, json!({"cells": cells})).await;
    assert_eq!(saved["session_id"], session.as_str());
    assert!(saved["updated_at"].as_str() >= created["updated_at"].as_str());
    let renamed = save(&api, id, json!({"title": "  Sums / answers  "})).await;
    assert_eq!(renamed["title"], "Sums / answers");

    // Read back (a reload): the same cells, outputs and counts.
    let read = notebook(&api, id).await;
    assert_eq!(read["title"], "Sums / answers");
    assert_eq!(read["session_id"], session.as_str());
    let read_cells = read["cells"].as_array().unwrap();
    assert_eq!(read_cells.len(), 4);
    assert_eq!(read_cells[1]["outputs"], json!(outputs_of(&first, 1)));
    assert_eq!(read_cells[2]["execution_count"], 2);
    assert_eq!(read_cells[3]["execution_count"], Value::Null);
    let (_, list) = json(api.get("/api/v1/notebooks").await).await;
    assert_eq!(list["data"][0]["id"], id);
    assert_eq!(list["data"][0]["title"], "Sums / answers");

    // Exported as Jupyter writes it.
    let response = api.get(&format!("/api/v1/notebooks/{id}/ipynb")).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ipynb+json"
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains("Sums _ answers.ipynb"),
        "{disposition}"
    );
    let (_, exported) = json(response).await;
    let kinds: Vec<&str> = exported["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cell_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["markdown", "code", "code", "code"]);
    let outputs = exported["cells"][1]["outputs"].as_array().unwrap();
    let types: Vec<&str> = outputs
        .iter()
        .map(|o| o["output_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["stream", "stream", "display_data", "execute_result"]
    );
    assert_eq!(outputs[3]["execution_count"], 1);
    assert_eq!(outputs[3]["data"]["text/plain"], "42");
    assert_eq!(
        exported["cells"][2]["outputs"][0]["ename"],
        "ZeroDivisionError"
    );
    assert_valid_ipynb(&exported, data.path());

    // Opened again (uploaded): the same cells, and it runs.
    let (status, imported) = send(
        &api,
        Method::POST,
        "/api/v1/notebooks/import",
        json!({"name": "sums.ipynb", "notebook": exported}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported["title"], "sums");
    assert_ne!(imported["id"], id);
    assert!(imported["session_id"].is_null());
    for (got, want) in imported["cells"].as_array().unwrap().iter().zip(read_cells) {
        for key in ["cell_type", "source", "execution_count", "outputs"] {
            assert_eq!(got[key], want[key], "{key}");
        }
    }
    let fresh = api.create_session().await;
    let source = imported["cells"][1]["source"].as_str().unwrap();
    assert_eq!(
        api.execute(&fresh, source).await["results"][0]["text/plain"],
        "42"
    );

    // Deleted with its session.
    let response = api
        .request(Method::DELETE, &format!("/api/v1/notebooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = api.get(&format!("/api/v1/notebooks/{id}")).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = api.get(&format!("/api/v1/sessions/{session}")).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn what_is_not_a_notebook_is_refused_with_a_sentence() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let id = create_notebook(&api, json!({"title": "Mine"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/notebooks/{id}");
    for (method, path, body, code) in [
        (
            Method::PATCH,
            path.as_str(),
            json!({"title": " "}),
            "invalid_request",
        ),
        (
            Method::PATCH,
            &path,
            json!({"cells": [{"cell_type": "code", "outputs": [{"output_type": "x"}]}]}),
            "invalid_request",
        ),
        (
            Method::PATCH,
            &path,
            json!({"cells": [{"cell_type": "raw"}]}),
            "invalid_request",
        ),
        (
            Method::PATCH,
            &path,
            json!({"session_id": "nope"}),
            "not_found",
        ),
        (
            Method::PATCH,
            &path,
            json!({"colour": "red"}),
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/notebooks/import",
            json!({"notebook": {"nbformat": 3}}),
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/notebooks/import",
            json!({"notebook": []}),
            "invalid_request",
        ),
    ] {
        let (status, body) = send(&api, method, path, body.clone()).await;
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(status.is_client_error(), "{status} {body}");
    }
    assert_eq!(notebook(&api, &id).await["title"], "Mine");
    server.stop().await;
}

#[tokio::test]
async fn users_never_see_each_others_notebooks() {
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path());
    let store = config.service.open_store().await.unwrap();
    let alice_key = create_key(&store, "alice").await.unwrap();
    let bob_key = create_key(&store, "bob").await.unwrap();
    drop(store);
    let server = TestServer::start(config, python().await).await;
    let (alice, bob) = (server.api_as(&alice_key), server.api_as(&bob_key));
    let alice_session = alice.create_session().await;
    let id = create_notebook(
        &alice,
        json!({"title": "Alice's", "session_id": alice_session}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_, list) = json(bob.get("/api/v1/notebooks").await).await;
    assert_eq!(list, json!({"data": [], "next": null}));
    for (method, path) in [
        (Method::GET, format!("/api/v1/notebooks/{id}")),
        (Method::GET, format!("/api/v1/notebooks/{id}/ipynb")),
        (Method::DELETE, format!("/api/v1/notebooks/{id}")),
    ] {
        let response = bob.request(method, &path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let (status, body) = send(
        &bob,
        Method::PATCH,
        &format!("/api/v1/notebooks/{id}"),
        json!({"title": "Bob's"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    // Nor can Bob's notebook run in Alice's session.
    let (status, body) = send(
        &bob,
        Method::POST,
        "/api/v1/notebooks",
        json!({"session_id": alice_session}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    assert_eq!(notebook(&alice, &id).await["title"], "Alice's");
    server.stop().await;
}

#[tokio::test]
async fn a_session_names_its_running_execution_for_a_page_to_follow() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let session = api.create_session().await;
    let (_, idle) = json(api.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert!(idle["execution_id"].is_null(), "{idle}");

    let mut running = api
        .execute_stream(
            &session,
            "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b', flush=True)",
        )
        .await;
    let execution = running.execution_id.clone().unwrap();
    assert_eq!(running.next().await.unwrap().name, "stdout");
    let (_, busy) = json(api.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert_eq!(busy["execution_id"], execution.as_str(), "{busy}");
    // A reloaded page follows it from the start.
    let response = api
        .get(&format!(
            "/api/v1/sessions/{session}/executions/{execution}/events"
        ))
        .await;
    let events = EventStream::new(response).rest().await;
    let stdout: Vec<&Value> = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| &e.data["text"])
        .collect();
    assert_eq!(stdout, ["a\n", "b\n"]);
    assert_eq!(events.last().unwrap().name, "end");
    drop(running);
    let (_, done) = json(api.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert!(done["execution_id"].is_null(), "{done}");
    server.stop().await;
}

#[tokio::test]
async fn a_save_on_a_stale_revision_is_refused_and_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let created = create_notebook(&api, json!({"title": "Shared"})).await;
    assert_eq!(created["revision"], 0);
    let id = created["id"].as_str().unwrap();
    let cell = |source: &str| json!([{"cell_type": "code", "source": source}]);

    // Two tabs read revision 0; the first saves, then the second's save is stale.
    let first = save(&api, id, json!({"cells": cell("a = 1"), "revision": 0})).await;
    assert_eq!(first["revision"], 1);
    let response = api
        .request(Method::PATCH, &format!("/api/v1/notebooks/{id}"))
        .json(&json!({"cells": cell("b = 2"), "revision": 0}))
        .send()
        .await
        .unwrap();
    let message = assert_error(response, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains("saved elsewhere"), "{message}");
    // A revision no notebook can have is stale too, not a failure of the server.
    let response = api
        .request(Method::PATCH, &format!("/api/v1/notebooks/{id}"))
        .json(&json!({"cells": cell("c = 3"), "revision": u64::MAX}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::CONFLICT, "conflict").await;
    let kept = notebook(&api, id).await;
    assert_eq!(kept["cells"][0]["source"], "a = 1");
    assert_eq!(kept["revision"], 1);

    // On the revision it read again, the second tab's save goes through.
    let second = save(&api, id, json!({"cells": cell("b = 2"), "revision": 1})).await;
    assert_eq!(second["revision"], 2);
    // A rename without a revision is written whatever came before.
    let renamed = save(&api, id, json!({"title": "Renamed"})).await;
    assert_eq!(renamed["revision"], 3);
    assert_eq!(notebook(&api, id).await["cells"][0]["source"], "b = 2");
    server.stop().await;
}
