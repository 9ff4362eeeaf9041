//! Configured environments through `/api/v1`: a session names one and imports its
//! packages, a default session does not have them, an unknown name is refused with the
//! configured ones, a conversation's own session runs in the one it names (and its model
//! is told what that environment adds), and a session comes back in its environment after
//! a server restart.
//! Real sandboxed sessions; the layer is built from a package index on the host's
//! loopback (no other network).

mod common;
// The session runtime's own helpers for a local package index.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod local_index;

use common::{
    assert_error, config, eventually, json, replay, with_model, EventStream, Python, TestServer,
};
use reqwest::{Method, StatusCode};
use sandcell_pyenv::{Environment, Layer, LayerSpec};
use sandcell_session::{Runtime, RuntimeOptions};
use serde_json::{json, Value};

/// The environment `extra`: the base plus the wheel `sandcell_test_extra`, preloaded.
async fn extra_layer(env: &Environment) -> Layer {
    let build = tempfile::tempdir().unwrap();
    let wheel = local_index::wheel(env, build.path(), "sandcell_test_extra", 16);
    let index = local_index::package_index(vec![wheel]).await;
    // pip reads the operator's index from its own environment variables.
    std::env::set_var(
        "PIP_INDEX_URL",
        format!("http://127.0.0.1:{}/simple/", index.port),
    );
    std::env::set_var("PIP_NO_CACHE_DIR", "1");
    let spec = LayerSpec {
        requirements: vec!["sandcell-test-extra".into()],
        preload: vec!["sandcell_test_extra".into()],
    };
    let env = env.clone();
    tokio::task::spawn_blocking(move || Layer::ensure(&env, "extra", &spec, &mut |_| {}))
        .await
        .unwrap()
        .expect("the environment builds from the local index")
}

async fn python_with(env: &Environment, environments: Vec<Layer>) -> Python {
    let options = RuntimeOptions {
        template_modules: Vec::new(),
        environments,
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::start(env, options)
        .await
        .expect("the templates start");
    Python {
        runtime,
        info: env.info().clone(),
    }
}

async fn execute(api: &common::Api, id: &str, code: &str) -> (StatusCode, Value) {
    json(
        api.post_json(
            &format!("/api/v1/sessions/{id}/execute"),
            &json!({ "code": code }),
        )
        .await,
    )
    .await
}

fn text(result: &Value) -> String {
    result["results"][0]["text/plain"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_runs_in_the_environment_it_names_across_restarts() {
    let env = common::environment();
    let layer = extra_layer(&env).await;
    let data = tempfile::tempdir().unwrap();

    let model =
        replay(json!([{"reply": {"text": "You have sandcell-test-extra.", "chunk_size": 7}}]))
            .await;
    let mut first_config = with_model(data.path(), &model);
    first_config.service.warm_sessions = 1;
    let server =
        TestServer::start(first_config, python_with(&env, vec![layer.clone()]).await).await;
    let api = server.api();
    // One warm session for the base environment and one for `extra`.
    eventually("a warm session per environment", || {
        let api = api.clone();
        async move {
            let metrics = api.get("/metrics").await.text().await.unwrap();
            metrics
                .lines()
                .any(|line| line == "sandcell_sessions_live 2")
        }
    })
    .await;

    let (status, listed) = json(api.get("/api/v1/environments").await).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed,
        json!([{"name": "extra", "requirements": ["sandcell-test-extra"], "preload": ["sandcell_test_extra"]}])
    );

    let (status, created) = json(
        api.post_json("/api/v1/sessions", &json!({ "environment": "extra" }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["environment"], "extra");
    let id = created["id"].as_str().unwrap().to_owned();
    // Preloaded by the environment's template, before any cell ran.
    let (status, preloaded) = execute(
        &api,
        &id,
        "import sys; 'sandcell_test_extra' in sys.modules",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preloaded}");
    assert_eq!(text(&preloaded), "True", "{preloaded}");
    let (_, imported) = execute(
        &api,
        &id,
        "import sandcell_test_extra; sandcell_test_extra.GREETING",
    )
    .await;
    assert_eq!(text(&imported), "'installed at run time'", "{imported}");
    // The sandbox shows the layer read-only.
    let (_, write) = execute(
        &api,
        &id,
        "import os\nopen(os.path.join(os.path.dirname(os.path.dirname(sandcell_test_extra.__file__)), 'written'), 'w')",
    )
    .await;
    assert_eq!(write["error"]["ename"], "OSError", "{write}");
    assert!(
        write["error"]["evalue"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{write}"
    );
    // The base environment's packages are there too, at the base's versions.
    let (_, numpy) = execute(
        &api,
        &id,
        "import numpy; numpy.__file__.startswith(sys.prefix)",
    )
    .await;
    assert_eq!(text(&numpy), "True", "{numpy}");

    let default = api.create_session().await;
    let (status, info) = json(api.get(&format!("/api/v1/sessions/{default}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(info["environment"].is_null(), "{info}");
    let (_, missing) = execute(&api, &default, "import sandcell_test_extra").await;
    assert_eq!(
        missing["error"]["ename"], "ModuleNotFoundError",
        "{missing}"
    );

    let unknown = api
        .post_json("/api/v1/sessions", &json!({ "environment": "nope" }))
        .await;
    let message = assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        message.contains("\"nope\"") && message.contains("extra"),
        "{message}"
    );

    // A conversation's own session runs in the environment it names, and its model is
    // told what that environment adds to the base.
    let create_conversation = |body: Value| {
        api.request(Method::POST, "/api/v1/conversations")
            .json(&body)
            .send()
    };
    let (status, conversation) = json(
        create_conversation(json!({ "environment": "extra" }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{conversation}");
    let session = conversation["session_id"].as_str().unwrap();
    let (_, info) = json(api.get(&format!("/api/v1/sessions/{session}")).await).await;
    assert_eq!(info["environment"], "extra", "{info}");
    let turn = api
        .request(
            Method::POST,
            &format!(
                "/api/v1/conversations/{}/messages",
                conversation["id"].as_str().unwrap()
            ),
        )
        .json(&json!({ "text": "Which packages do I have?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(turn.status(), StatusCode::OK);
    let events = EventStream::new(turn).rest().await;
    assert_eq!(events.last().map(|e| e.name.as_str()), Some("end"));
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let sent = requests[0].body.to_string();
    assert!(
        sent.contains("runs in the environment extra, which adds: sandcell-test-extra==1.0"),
        "{sent}"
    );
    // The same refusal as for a session; and a given session has its environment already.
    let unknown = create_conversation(json!({ "environment": "nope" }))
        .await
        .unwrap();
    let message = assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        message.contains("\"nope\"") && message.contains("extra"),
        "{message}"
    );
    let both = create_conversation(json!({ "session_id": default, "environment": "extra" }))
        .await
        .unwrap();
    let message = assert_error(both, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(message.contains("session_id"), "{message}");

    let document = api.get("/api/v1/openapi.json").await.text().await.unwrap();
    let document: Value = serde_json::from_str(&document).unwrap();
    assert!(
        document["components"]["schemas"]["CreateSession"]["properties"]["environment"].is_object(),
        "the OpenAPI document describes the field"
    );
    assert!(
        document["components"]["schemas"]["CreateConversation"]["properties"]["environment"]
            .is_object(),
        "the OpenAPI document describes the conversation's field"
    );
    server.stop().await;

    // A new server on the same data: the session comes back, restarted, in `extra`.
    let server = TestServer::start(config(data.path()), python_with(&env, vec![layer]).await).await;
    let api = server.api();
    let (_, info) = json(api.get(&format!("/api/v1/sessions/{id}")).await).await;
    assert_eq!(info["environment"], "extra", "{info}");
    assert_eq!(info["state"], "stopped", "{info}");
    let (status, back) = execute(
        &api,
        &id,
        "import sandcell_test_extra; sandcell_test_extra.GREETING",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["restarted"], true, "{back}");
    assert_eq!(text(&back), "'installed at run time'", "{back}");
    server.stop().await;

    // A server that no longer configures `extra`: that session's execution says so, the
    // rest works.
    let server = TestServer::start(config(data.path()), python_with(&env, Vec::new()).await).await;
    let api = server.api();
    let gone = api
        .post_json(
            &format!("/api/v1/sessions/{id}/execute"),
            &json!({ "code": "1" }),
        )
        .await;
    let message = assert_error(gone, StatusCode::CONFLICT, "conflict").await;
    assert!(
        message.contains("\"extra\"") && message.contains("no longer"),
        "{message}"
    );
    let (status, info) = json(api.get(&format!("/api/v1/sessions/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let (status, fine) = execute(&api, &default, "1 + 1").await;
    assert_eq!(status, StatusCode::OK, "{fine}");
    assert_eq!(text(&fine), "2");
    server.stop().await;
}
