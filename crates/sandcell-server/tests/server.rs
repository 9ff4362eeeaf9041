//! The HTTP API end to end: a real server on a loopback port, a real SQLite file, real
//! sandboxed Python sessions.

mod common;

use common::{assert_error, config, eventually, json, python, raw_request, Api, TestServer};
use reqwest::{Method, StatusCode};
use sandcell_server::{create_key, ServerConfig, ServerError, SessionLimits, Store};
use serde_json::{json, Value};
use std::time::Duration;

async fn server() -> (TestServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    (server, data)
}

fn text_result(execution: &Value) -> &str {
    execution["results"][0]["text/plain"]
        .as_str()
        .unwrap_or_else(|| panic!("no text/plain result: {execution}"))
}

#[tokio::test]
async fn sessions_are_created_listed_and_keep_their_state() {
    let (server, _data) = server().await;
    let api = server.api();
    let response = api
        .request(Method::POST, "/api/v1/sessions")
        .json(&json!({ "limits": { "memory_mib": 512, "timeout_secs": 30 } }))
        .send()
        .await
        .unwrap();
    let (status, created) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "idle");
    assert_eq!(created["limits"]["memory_mib"], 512);
    assert_eq!(created["limits"]["timeout_secs"], 30.0);
    assert_eq!(created["limits"]["processes"], 256);
    let id = created["id"].as_str().unwrap();

    let second = api.create_session().await;
    let (_, list) = json(api.get("/api/v1/sessions").await).await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id, second.as_str()]);

    let first = api.execute(id, "x = 41").await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first["restarted"], false);
    assert!(first.get("notice").is_none(), "{first}");
    let next = api.execute(id, "x + 1").await;
    assert_eq!(text_result(&next), "42");
    // The other session has its own state.
    let other = api.execute(&second, "'x' in globals()").await;
    assert_eq!(text_result(&other), "False");

    // ?stream=false answers with JSON too.
    let response = api
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{id}/execute?stream=false"),
        )
        .json(&json!({ "code": "x" }))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_result(&body), "41");
    server.stop().await;
}

#[tokio::test]
async fn an_execution_streams_its_events_in_order() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    let code = "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\ndisplay(7)\nopen('out.txt', 'w').write('hi')\n6 * 7";
    let events = api.execute_stream(&id, code).await.rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["stdout", "stderr", "result", "result", "files", "end"]
    );
    assert_eq!(events[0].data, json!({ "text": "one\n" }));
    assert_eq!(events[1].data, json!({ "text": "two\n" }));
    assert_eq!(events[2].data["text/plain"], "7");
    assert_eq!(events[3].data["text/plain"], "42");
    assert_eq!(events[4].data[0]["path"], "out.txt");
    assert_eq!(events[4].data[0]["size"], 2);
    // `end` is the whole Execution, exactly as the runtime serializes it.
    let end = &events[5].data;
    let mut keys: Vec<&str> = end
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "duration_ms",
            "error",
            "files",
            "restarted",
            "results",
            "status",
            "stderr",
            "stdout",
            "truncated"
        ]
    );
    assert_eq!(end["status"], "ok");
    assert_eq!(end["stdout"], "one\n");
    assert_eq!(end["results"].as_array().unwrap().len(), 2);

    // An exception comes as an `error` event, and the status says so.
    let events = api.execute_stream(&id, "1 / 0").await.rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["error", "files", "end"]);
    assert_eq!(events[0].data["ename"], "ZeroDivisionError");
    assert_eq!(events[2].data["status"], "error");
    server.stop().await;
}

#[tokio::test]
async fn one_execution_at_a_time_and_an_interrupt_keeps_the_variables() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    api.execute(&id, "kept = 'yes'").await;
    let mut stream = api
        .execute_stream(
            &id,
            "import time\nprint('started', flush=True)\ntime.sleep(120)",
        )
        .await;
    let first = stream.next().await.unwrap();
    assert_eq!(
        (first.name.as_str(), &first.data["text"]),
        ("stdout", &json!("started\n"))
    );
    assert_eq!(api.session_state(&id).await, "busy");

    let busy = api
        .request(Method::POST, &format!("/api/v1/sessions/{id}/execute"))
        .json(&json!({ "code": "1" }))
        .send()
        .await
        .unwrap();
    assert_error(busy, StatusCode::CONFLICT, "session_busy").await;
    let restart = api
        .request(Method::POST, &format!("/api/v1/sessions/{id}/restart"))
        .send()
        .await
        .unwrap();
    assert_error(restart, StatusCode::CONFLICT, "session_busy").await;

    let (status, body) = json(
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/interrupt"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({ "interrupted": true }))
    );
    let rest = stream.rest().await;
    let end = rest.last().unwrap();
    assert_eq!(end.name, "end");
    assert_eq!(end.data["status"], "interrupted");
    assert_eq!(end.data["error"]["ename"], "KeyboardInterrupt");

    assert_eq!(text_result(&api.execute(&id, "kept").await), "'yes'");
    let (_, body) = json(
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/interrupt"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body, json!({ "interrupted": false }));
    server.stop().await;
}

#[tokio::test]
async fn restart_clears_variables_and_delete_removes_everything() {
    let (server, data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    api.execute(&id, "x = 1\nopen('kept.txt', 'w').write('k')")
        .await;
    let (status, body) = json(
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/restart"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "idle");
    let after = api
        .execute(&id, "print(open('kept.txt').read())\n'x' in globals()")
        .await;
    assert_eq!(after["stdout"], "k\n");
    assert_eq!(text_result(&after), "False");
    // A restart asked for is not a surprise: no notice.
    assert_eq!(after["restarted"], false);

    let workdir = data.path().join("sessions").join(&id);
    assert!(workdir.join("kept.txt").exists());
    let deleted = api
        .request(Method::DELETE, &format!("/api/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(!workdir.exists());
    assert_error(
        api.get(&format!("/api/v1/sessions/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let (_, list) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(list["sessions"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn limits_are_kept_within_the_maxima() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_limits: SessionLimits {
            timeout_secs: 5.0,
            ..SessionLimits::standard()
        },
        ..config(data.path())
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let too_much = api
        .request(Method::POST, "/api/v1/sessions")
        .json(&json!({ "limits": { "memory_mib": 1_000_000 } }))
        .send()
        .await
        .unwrap();
    let message = assert_error(
        too_much,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(message.contains("memory_mib"), "{message}");

    // The default timeout is the standard one, capped by the server's maximum.
    let (_, created) = json(
        api.request(Method::POST, "/api/v1/sessions")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created["limits"]["timeout_secs"], 5.0);
    let id = created["id"].as_str().unwrap();

    let execute = |timeout: f64| {
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/execute"))
            .header("accept", "application/json")
            .json(&json!({ "code": "import time\ntime.sleep(30)", "timeout": timeout }))
            .send()
    };
    assert_error(
        execute(6.0).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let (status, timed_out) = json(execute(0.5).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(timed_out["status"], "timeout", "{timed_out}");
    server.stop().await;
}

#[tokio::test]
async fn the_live_sessions_are_limited() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_sessions: 1,
        ..config(data.path())
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let first = api.create_session().await;
    let refused = api
        .request(Method::POST, "/api/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_sessions",
    )
    .await;
    api.request(Method::DELETE, &format!("/api/v1/sessions/{first}"))
        .send()
        .await
        .unwrap();
    let second = api.create_session().await;
    assert_eq!(text_result(&api.execute(&second, "1").await), "1");
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sandcell_sessions_live 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn files_are_uploaded_listed_downloaded_and_deleted() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    let files = format!("/api/v1/sessions/{id}/files");

    let put = api
        .request(Method::PUT, &format!("{files}/data/table.csv"))
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    let (status, stored) = json(put).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(
        (&stored["path"], &stored["size"], &stored["mime"]),
        (&json!("data/table.csv"), &json!(8), &json!("text/csv"))
    );

    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{\"k\": 1}".to_vec()).file_name("config.json"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0u8, 1, 2, 255]).file_name("bin/blob.dat"),
        );
    let (status, uploaded) = json(
        api.request(Method::POST, &files)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    assert_eq!(uploaded["files"].as_array().unwrap().len(), 2);

    // The code sees the uploads, and its own files are listed with them.
    let seen = api
        .execute(
            &id,
            "import json\nopen('made.txt', 'w').write('m')\n(open('data/table.csv').read(), json.load(open('config.json'))['k'], list(open('bin/blob.dat', 'rb').read()))",
        )
        .await;
    assert_eq!(text_result(&seen), "('a,b\\n1,2\\n', 1, [0, 1, 2, 255])");
    let (_, listed) = json(api.get(&files).await).await;
    let listed: Vec<(&str, u64)> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("bin/blob.dat", 4),
            ("config.json", 8),
            ("data/table.csv", 8),
            ("made.txt", 1)
        ]
    );

    let download = api.get(&format!("{files}/data/table.csv")).await;
    assert_eq!(download.status(), StatusCode::OK);
    let headers = download.headers().clone();
    assert_eq!(headers["content-type"], "text/csv");
    assert_eq!(headers["content-length"], "8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"table.csv\"; filename*=UTF-8''table.csv"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(download.text().await.unwrap(), "a,b\n1,2\n");
    let blob = api.get(&format!("{files}/bin/blob.dat")).await;
    assert_eq!(blob.headers()["content-type"], "application/octet-stream");
    assert_eq!(blob.bytes().await.unwrap().as_ref(), [0u8, 1, 2, 255]);

    let deleted = api
        .request(Method::DELETE, &format!("{files}/data/table.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_error(
        api.get(&format!("{files}/data/table.csv")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        api.get(&format!("{files}/data")).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn paths_out_of_the_working_directory_are_refused() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    let files = format!("/api/v1/sessions/{id}/files");
    let outside = tempfile::tempdir().unwrap();
    let code = format!(
        "import os\nos.symlink('/etc/passwd', 'passwd')\nos.symlink('/etc', 'etc')\nos.symlink({:?}, 'out')",
        outside.path().display().to_string()
    );
    assert_eq!(api.execute(&id, &code).await["status"], "ok");

    // Written literally, with no client to normalise them away.
    let through = [
        format!("{files}/../../../../etc/passwd"),
        format!("{files}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
        format!("{files}/..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("{files}//etc/passwd"),
        format!("{files}/%2Fetc%2Fpasswd"),
        format!("{files}/etc/passwd"),
    ];
    let requests = through
        .iter()
        .flat_map(|target| ["GET", "PUT", "DELETE"].map(|method| (method, target.clone())))
        .chain(["GET", "PUT"].map(|method| (method, format!("{files}/passwd"))));
    for (method, target) in requests {
        {
            let (status, body) = raw_request(server.addr, method, &target).await;
            assert!(
                status == 400 && body.contains("\"invalid_path\""),
                "{method} {target}: {status} {body}"
            );
            assert!(!body.contains("root:"), "{body}");
        }
    }
    // Uploading through a planted link does not write outside.
    let planted = api
        .request(Method::PUT, &format!("{files}/out/planted.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(planted, StatusCode::BAD_REQUEST, "invalid_path").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("out/planted.txt"),
    );
    let planted = api
        .request(Method::POST, &files)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(planted, StatusCode::BAD_REQUEST, "invalid_path").await;
    assert!(!outside.path().join("planted.txt").exists());
    // Links are not listed; the link itself can be deleted, its target stays.
    let (_, listed) = json(api.get(&files).await).await;
    assert_eq!(listed["files"], json!([]));
    std::fs::write(outside.path().join("target"), "t").unwrap();
    let deleted = api
        .request(Method::DELETE, &format!("{files}/out"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(outside.path().join("target").exists());
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_upload_is_refused_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        max_upload_bytes: 1024 * 1024,
        max_request_bytes: 64 * 1024,
        ..config(data.path())
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let id = api.create_session().await;
    let files = format!("/api/v1/sessions/{id}/files");
    let big = vec![b'x'; 2 * 1024 * 1024];

    let declared = api
        .request(Method::PUT, &format!("{files}/big.bin"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_error(declared, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Without a length up front, the server counts as the body arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = api
        .request(Method::PUT, &format!("{files}/big.bin"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(streamed, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(big.clone()).file_name("big.bin"),
    );
    let multipart = api
        .request(Method::POST, &files)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(
        multipart,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // Any other body has its own, smaller limit.
    let code = "x = 1\n".repeat(20_000);
    let long_code = api
        .request(Method::POST, &format!("/api/v1/sessions/{id}/execute"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_error(
        long_code,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // Nothing was left behind, and the server still works.
    let (_, listed) = json(api.get(&files).await).await;
    assert_eq!(listed["files"], json!([]));
    assert_eq!(
        std::fs::read_dir(data.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    let (status, health) = json(api.get("/healthz").await).await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let small = api
        .request(Method::PUT, &format!("{files}/small.bin"))
        .body(vec![b'y'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_never_a_server_error() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    let execute = format!("/api/v1/sessions/{id}/execute");
    let post = |path: &str, body: &'static str, content_type: &'static str| {
        api.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        (
            post(&execute, "{\"code\": ", "application/json")
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            post(&execute, "", "application/json").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            post(&execute, "{}", "application/json").await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(&execute, "{\"code\": 1}", "application/json")
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(
                &execute,
                "{\"code\": \"1\", \"tiemout\": 1}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(
                &execute,
                "{\"code\": \"1\", \"timeout\": -1}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(&execute, "code=1", "application/x-www-form-urlencoded")
                .await
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post(
                &format!("{execute}?stream=maybe"),
                "{\"code\": \"1\"}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            post("/api/v1/sessions", "[1]", "application/json")
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(
                "/api/v1/sessions",
                "{\"limits\": {\"memory_mib\": -5}}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post(
                "/api/v1/sessions/nope/execute",
                "{\"code\": \"1\"}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            post(&format!("/api/v1/sessions/{id}/files"), "x", "text/plain")
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.get("/api/v1/nowhere").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            api.request(Method::PATCH, "/api/v1/sessions")
                .send()
                .await
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (response, status, code) in cases {
        assert_error(response, status, code).await;
    }
    // An empty body or `null` creates a session with every default.
    let (status, _) = json(
        post("/api/v1/sessions", "null", "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("sandcell_errors_total{code=\"invalid_request\"} 6"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn users_never_see_each_others_sessions_or_files() {
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path());
    std::fs::create_dir_all(data.path()).unwrap();
    let store = Store::open(&config.database()).unwrap();
    let alice_key = create_key(&store, "alice").await.unwrap();
    let bob_key = create_key(&store, "bob").await.unwrap();
    assert_ne!(alice_key, bob_key);
    drop(store);
    let server = TestServer::start(config, python().await).await;
    let alice = server.api_as(&alice_key);
    let bob = server.api_as(&bob_key);

    let id = alice.create_session().await;
    let put = alice
        .request(
            Method::PUT,
            &format!("/api/v1/sessions/{id}/files/secret.txt"),
        )
        .body("alice's")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let session = format!("/api/v1/sessions/{id}");
    let file = format!("{session}/files/secret.txt");
    for (method, path) in [
        (Method::GET, session.clone()),
        (Method::DELETE, session.clone()),
        (Method::POST, format!("{session}/interrupt")),
        (Method::POST, format!("{session}/restart")),
        (Method::GET, format!("{session}/files")),
        (Method::GET, file.clone()),
        (Method::DELETE, file.clone()),
        (Method::PUT, file.clone()),
    ] {
        let response = bob
            .request(method.clone(), &path)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let execute = bob
        .request(Method::POST, &format!("{session}/execute"))
        .json(&json!({ "code": "1" }))
        .send()
        .await
        .unwrap();
    assert_error(execute, StatusCode::NOT_FOUND, "not_found").await;
    let (_, list) = json(bob.get("/api/v1/sessions").await).await;
    assert_eq!(list["sessions"], json!([]));

    // Alice's things are untouched, and hers.
    let (status, listed) = json(alice.get(&format!("{session}/files")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["files"][0]["path"], "secret.txt");
    assert_eq!(alice.get(&file).await.text().await.unwrap(), "alice's");

    // No key, or a wrong one: 401.
    let anonymous = server.api();
    let response = anonymous.get("/api/v1/sessions").await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let forged = server.api_as("sandcell_0000");
    assert_error(
        forged.get("/api/v1/sessions").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    // Health and metrics need no key.
    assert_eq!(anonymous.get("/healthz").await.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn keys_are_required_beyond_loopback() {
    let data = tempfile::tempdir().unwrap();
    let open = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..config(data.path())
    };
    let refused = sandcell_server::Server::bind(open.clone()).await;
    let Err(error @ ServerError::KeysRequired { .. }) = refused else {
        panic!("a server without keys must not listen beyond loopback");
    };
    assert!(
        error
            .to_string()
            .contains("sandcell serve --create-key NAME"),
        "{error}"
    );

    let store = Store::open(&open.database()).unwrap();
    let key = create_key(&store, "admin").await.unwrap();
    let server = TestServer::start(open, python().await).await;
    // Only loopback traffic: the server listens on every address, the test uses 127.0.0.1.
    let local = |api: Api| Api {
        base: format!("http://127.0.0.1:{}", server.addr.port()),
        ..api
    };
    assert_error(
        local(server.api()).get("/api/v1/sessions").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let response = local(server.api_as(&key)).get("/api/v1/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn sessions_and_files_outlive_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let python = python().await;
    let first = TestServer::start(config(data.path()), python.clone()).await;
    let api = first.api();
    let id = api.create_session().await;
    api.execute(&id, "x = 1\nopen('notes.txt', 'w').write('remembered')")
        .await;
    first.stop().await;

    let second = TestServer::start(config(data.path()), python).await;
    let api = second.api();
    let (_, list) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    assert_eq!(list["sessions"][0]["state"], "stopped");
    let (_, files) = json(api.get(&format!("/api/v1/sessions/{id}/files")).await).await;
    assert_eq!(files["files"][0]["path"], "notes.txt");

    // The first execution says plainly that the variables are gone; the files are there.
    let events = api
        .execute_stream(&id, "print(open('notes.txt').read())\nx")
        .await
        .rest()
        .await;
    assert_eq!(events[0].name, "notice");
    assert_eq!(events[0].data["code"], "session_restarted");
    let notice = events[0].data["message"].as_str().unwrap();
    assert!(
        notice.contains("variables") && notice.contains("files"),
        "{notice}"
    );
    let end = &events.last().unwrap().data;
    assert_eq!(end["restarted"], true);
    assert_eq!(end["stdout"], "remembered\n");
    assert_eq!(end["error"]["ename"], "NameError");
    // Only the first one.
    let next = api.execute(&id, "y = 2").await;
    assert_eq!(next["restarted"], false);
    second.stop().await;
}

#[tokio::test]
async fn an_idle_session_is_stopped_and_comes_back_restarted() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(500),
        ..config(data.path())
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let id = api.create_session().await;
    api.execute(&id, "x = 1").await;
    eventually("the idle session's stop", || async {
        api.session_state(&id).await == "stopped"
    })
    .await;
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sandcell_sessions_live 0"), "{metrics}");
    let after = api.execute(&id, "'x' in globals()").await;
    assert_eq!(after["restarted"], true);
    assert_eq!(text_result(&after), "False");
    assert_eq!(after["notice"], sandcell_server::RESTARTED_NOTICE);
    server.stop().await;
}

#[tokio::test]
async fn a_shutdown_interrupts_running_executions_and_ends_cleanly() {
    let (mut server, data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    let mut stream = api
        .execute_stream(
            &id,
            "import time\nprint('started', flush=True)\ntime.sleep(120)",
        )
        .await;
    assert_eq!(stream.next().await.unwrap().name, "stdout");
    server.begin_stop();
    let rest = stream.rest().await;
    let end = rest.last().unwrap();
    assert_eq!(end.name, "end");
    assert_eq!(end.data["status"], "interrupted");
    server.wait().await.expect("the server stops cleanly");
    // Everything was written: the session is there for the next server.
    let next = TestServer::start(config(data.path()), python().await).await;
    let (_, list) = json(next.api().get("/api/v1/sessions").await).await;
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    next.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let (server, _data) = server().await;
    let api = server.api();
    let (status, document) = json(api.get("/api/v1/openapi.json").await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut routes: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /api/v1/conversations/{id}",
            "DELETE /api/v1/sessions/{id}",
            "DELETE /api/v1/sessions/{id}/files/{path}",
            "GET /api/v1/conversations",
            "GET /api/v1/conversations/{id}",
            "GET /api/v1/conversations/{id}/notebook",
            "GET /api/v1/models",
            "GET /api/v1/openapi.json",
            "GET /api/v1/sessions",
            "GET /api/v1/sessions/{id}",
            "GET /api/v1/sessions/{id}/files",
            "GET /api/v1/sessions/{id}/files/{path}",
            "GET /healthz",
            "GET /metrics",
            "POST /api/v1/conversations",
            "POST /api/v1/conversations/{id}/cancel",
            "POST /api/v1/conversations/{id}/messages",
            "POST /api/v1/sessions",
            "POST /api/v1/sessions/{id}/execute",
            "POST /api/v1/sessions/{id}/files",
            "POST /api/v1/sessions/{id}/interrupt",
            "POST /api/v1/sessions/{id}/restart",
            "PUT /api/v1/sessions/{id}/files/{path}",
        ]
    );
    // Every operation documents its responses, and every error is the one error body.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // The schema of the result is the runtime's own type: its properties are exactly the
    // keys of a real result.
    let id = api.create_session().await;
    let execution = api.execute(&id, "1").await;
    let mut keys: Vec<&String> = execution.as_object().unwrap().keys().collect();
    let schema = &document["components"]["schemas"]["Execution"]["properties"];
    let mut properties: Vec<&String> = schema.as_object().unwrap().keys().collect();
    keys.sort();
    properties.sort();
    assert_eq!(keys, properties);
    server.stop().await;
}
