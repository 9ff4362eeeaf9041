//! Installing packages through `/api/v1`: real sandboxed sessions, and a package index on
//! the host's loopback serving a wheel built on the spot (no other network).

mod common;
// The session runtime's own helpers for a local package index.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod local_index;

use common::{assert_error, config, json, python, python_with_index, Api, TestServer};
use reqwest::{Method, Response, StatusCode};
use sandcell_session::PackageIndex;
use serde_json::json;

async fn install(api: &Api, session: &str, packages: serde_json::Value) -> Response {
    api.request(
        Method::POST,
        &format!("/api/v1/sessions/{session}/packages"),
    )
    .json(&json!({ "packages": packages }))
    .send()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_come_from_the_index_into_the_session_only() {
    let env = common::environment();
    let build = tempfile::tempdir().unwrap();
    let wheel = local_index::wheel(&env, build.path(), "sandcell_api_pkg", 16);
    let index = local_index::package_index(vec![wheel]).await;
    let url = format!("http://127.0.0.1:{}/simple/", index.port);
    let python = python_with_index(Some(PackageIndex::parse(&url).unwrap())).await;
    assert!(
        python.runtime.package_index().is_some(),
        "sessions should be sandboxed, and so reach the index: {:?}",
        python.runtime.warnings()
    );
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python).await;
    let api = server.api();
    let session = api.create_session().await;

    let response = install(&api, &session, json!(["sandcell-api-pkg==1.0"])).await;
    let location = response.headers().get("location").cloned();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        location.unwrap().to_str().unwrap(),
        format!("/api/v1/sessions/{session}/executions/{id}")
    );
    let imported = api
        .execute(
            &session,
            "import sandcell_api_pkg\nprint(sandcell_api_pkg.GREETING)",
        )
        .await;
    assert_eq!(imported["stdout"], "installed at run time\n", "{imported}");

    // pip's failure is the execution's.
    let missing = install(&api, &session, json!(["sandcell-no-such-pkg"])).await;
    let (status, body) = json(missing).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["ename"], "InstallFailed", "{body}");

    // Nothing but names and version specifiers reaches pip.
    for refused in [
        json!([]),
        json!(["--index-url=http://127.0.0.1:9/simple/"]),
        json!([format!("sandcell-api-pkg @ {url}")]),
        json!(["./sandcell_api_pkg-1.0-py3-none-any.whl"]),
    ] {
        let response = install(&api, &session, refused.clone()).await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    let other = install(&api, "no-such-session", json!(["sandcell-api-pkg"])).await;
    assert_error(other, StatusCode::NOT_FOUND, "not_found").await;

    // Another session has only the shared environment.
    let fresh = api.create_session().await;
    let absent = api
        .execute(
            &fresh,
            "import importlib.util\nprint(importlib.util.find_spec('sandcell_api_pkg'))",
        )
        .await;
    assert_eq!(absent["stdout"], "None\n", "{absent}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_index_installing_is_refused_with_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let session = api.create_session().await;
    let response = install(&api, &session, json!(["requests"])).await;
    let message = assert_error(response, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(message, sandcell_service::NO_INDEX);
    server.stop().await;
}
