//! The HTTP API end to end: a real server on a loopback port, a real SQLite file, real
//! sandboxed Python sessions.

mod common;
// The session runtime's own helper for an HTTP server on the host's loopback.
#[path = "../../sandcell-session/tests/common/mod.rs"]
mod host;

use common::{
    assert_error, config, eventually, json, python, raw_request, Api, EventStream, TestServer,
};
use reqwest::{Method, StatusCode};
use sandcell_server::{ServerConfig, ServerError};
use sandcell_service::{create_key, ServiceConfig, SessionLimits};
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
    let ids: Vec<&str> = list["data"]
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
    // The last expression's value is the second result.
    assert_eq!(events[5].data["execute_result"], 1);
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
            "execute_result",
            "execution_count",
            "files",
            "network",
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
async fn completion_offers_the_kernels_names_and_waits_for_a_running_cell() {
    let (server, _data) = server().await;
    let api = server.api();
    let id = api.create_session().await;
    api.execute(
        &id,
        "import os, pandas\ndf = pandas.DataFrame({'revenue': [1], 'region': ['n']})",
    )
    .await;
    let complete = |code: &str, cursor_pos: usize| {
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/complete"))
            .json(&json!({ "code": code, "cursor_pos": cursor_pos }))
            .send()
    };
    let (status, body) = json(complete("os.pa", 5).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["matches"].as_array().unwrap().contains(&json!("path")),
        "{body}"
    );
    assert_eq!(
        (&body["cursor_start"], &body["cursor_end"]),
        (&json!(3), &json!(5))
    );
    // A DataFrame's columns, from the live object.
    let (_, body) = json(complete("df.re", 5).await.unwrap()).await;
    let matches = body["matches"].as_array().unwrap();
    assert!(
        matches.contains(&json!("revenue")) && matches.contains(&json!("region")),
        "{body}"
    );

    let (status, body) = json(complete("df", 3).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");

    let running = keep_busy(&api, &id).await;
    assert_error(
        complete("os.pa", 5).await.unwrap(),
        StatusCode::CONFLICT,
        "session_busy",
    )
    .await;
    api.request(Method::POST, &format!("/api/v1/sessions/{id}/interrupt"))
        .send()
        .await
        .unwrap();
    running.await.unwrap();
    let (status, _) = json(complete("os.pa", 5).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    let unknown = api
        .request(Method::POST, "/api/v1/sessions/0123456789abcdef/complete")
        .json(&json!({ "code": "os.pa", "cursor_pos": 5 }))
        .send()
        .await
        .unwrap();
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
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
    assert_eq!(list["data"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn limits_are_kept_within_the_maxima() {
    let data = tempfile::tempdir().unwrap();
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            max_limits: SessionLimits {
                timeout_secs: 5.0,
                ..SessionLimits::standard()
            },
            ..base.service.clone()
        },
        ..base
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
            .json(&json!({ "code": "import time\ntime.sleep(30)", "timeout_secs": timeout }))
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

/// Starts a cell that runs until interrupted, and waits until the session is busy.
async fn keep_busy(api: &Api, session: &str) -> tokio::task::JoinHandle<Value> {
    let running = {
        let api = api.clone();
        let session = session.to_owned();
        tokio::spawn(async move { api.execute(&session, "import time\ntime.sleep(60)").await })
    };
    eventually("the session to be busy", || async {
        api.session_state(session).await == "busy"
    })
    .await;
    running
}

#[tokio::test]
async fn a_full_server_stops_idle_sessions_to_make_room_and_refuses_only_when_all_are_busy() {
    let data = tempfile::tempdir().unwrap();
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            max_sessions: 1,
            ..base.service.clone()
        },
        ..base
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let first = api.create_session().await;
    api.execute(&first, "x = 1").await;
    // The first session is idle: it is stopped to make room, its files kept.
    let second = api.create_session().await;
    assert_eq!(api.session_state(&first).await, "stopped");
    assert_eq!(text_result(&api.execute(&second, "1").await), "1");

    let running = keep_busy(&api, &second).await;
    let refused = api
        .request(Method::POST, "/api/v1/sessions")
        .send()
        .await
        .unwrap();
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_sessions",
    )
    .await;
    let seconds: u64 = retry_after
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds >= 1, "{seconds}");
    api.request(
        Method::POST,
        &format!("/api/v1/sessions/{second}/interrupt"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(running.await.unwrap()["status"], "interrupted");
    // The first session comes back (restarted) in the place of the idle second one.
    let back = api.execute(&first, "1 + 1").await;
    assert_eq!(back["restarted"], true, "{back}");
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sandcell_sessions_live 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_user_at_their_quota_gets_429_and_others_are_not_locked_out() {
    let data = tempfile::tempdir().unwrap();
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            max_sessions_per_user: 1,
            ..base.service.clone()
        },
        ..base
    };
    std::fs::create_dir_all(data.path()).unwrap();
    let store = config.service.open_store().await.unwrap();
    let alice_key = create_key(&store, "alice").await.unwrap();
    let bob_key = create_key(&store, "bob").await.unwrap();
    drop(store);
    let server = TestServer::start(config, python().await).await;
    let alice = server.api_as(&alice_key);
    let bob = server.api_as(&bob_key);
    let first = alice.create_session().await;
    let running = keep_busy(&alice, &first).await;
    let refused = alice
        .request(Method::POST, "/api/v1/sessions")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    let message = assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "session_quota").await;
    assert!(message.contains("1 sessions"), "{message}");
    // Bob is not affected by Alice's quota.
    let bobs = bob.create_session().await;
    assert_eq!(text_result(&bob.execute(&bobs, "2 + 2").await), "4");
    alice
        .request(Method::POST, &format!("/api/v1/sessions/{first}/interrupt"))
        .send()
        .await
        .unwrap();
    running.await.unwrap();
    // Idle now: Alice's next session takes its place.
    alice.create_session().await;
    assert_eq!(alice.session_state(&first).await, "stopped");
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
    assert_eq!(uploaded["data"].as_array().unwrap().len(), 2);

    // The code sees the uploads, and its own files are listed with them.
    let seen = api
        .execute(
            &id,
            "import json\nopen('made.txt', 'w').write('m')\n(open('data/table.csv').read(), json.load(open('config.json'))['k'], list(open('bin/blob.dat', 'rb').read()))",
        )
        .await;
    assert_eq!(text_result(&seen), "('a,b\\n1,2\\n', 1, [0, 1, 2, 255])");
    let (_, listed) = json(api.get(&files).await).await;
    let listed: Vec<(&str, u64)> = listed["data"]
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
    let canary = outside.path().join("canary");
    std::fs::write(&canary, "canary-content").unwrap();
    let canary_modified = std::fs::metadata(&canary).unwrap().modified().unwrap();
    let code = format!(
        "import os\nos.symlink('/etc/passwd', 'passwd')\nos.symlink('/etc', 'etc')\nos.symlink({:?}, 'out')\n\
         os.symlink('/etc/shadow', 'shadow')\nos.symlink({:?}, 'figure_1.png')",
        outside.path().display().to_string(),
        canary.display().to_string()
    );
    assert_eq!(api.execute(&id, &code).await["status"], "ok");
    // A link to a host file is neither served nor written through.
    for target in ["shadow", "figure_1.png", "out/canary"] {
        for method in ["GET", "PUT"] {
            let (status, body) =
                raw_request(server.addr, method, &format!("{files}/{target}")).await;
            assert!(
                status == 400 && body.contains("\"invalid_path\""),
                "{method} {target}: {status} {body}"
            );
            assert!(
                !body.contains("canary-content") && !body.contains("root:"),
                "{body}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "canary-content");
    assert_eq!(
        std::fs::metadata(&canary).unwrap().modified().unwrap(),
        canary_modified
    );

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
    assert_eq!(listed["data"], json!([]));
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
    assert_eq!(listed["data"], json!([]));
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
    let store = config.service.open_store().await.unwrap();
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
    assert_eq!(list["data"], json!([]));

    // Alice's things are untouched, and hers.
    let (status, listed) = json(alice.get(&format!("{session}/files")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["path"], "secret.txt");
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

    let store = open.service.open_store().await.unwrap();
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
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["state"], "stopped");
    let (_, files) = json(api.get(&format!("/api/v1/sessions/{id}/files")).await).await;
    assert_eq!(files["data"][0]["path"], "notes.txt");

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
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            idle_timeout: Duration::from_millis(500),
            // No warm sessions: the live count below is the idle session's alone.
            warm_sessions: 0,
            ..base.service.clone()
        },
        ..base
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
    assert_eq!(after["notice"], sandcell_service::RESTARTED_NOTICE);
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
    assert_eq!(end.data["status"], "interrupted", "{rest:?}");
    server.wait().await.expect("the server stops cleanly");
    // Everything was written: the session is there for the next server.
    let next = TestServer::start(config(data.path()), python().await).await;
    let (_, list) = json(next.api().get("/api/v1/sessions").await).await;
    assert_eq!(list["data"][0]["id"], id.as_str());
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
            "DELETE /api/v1/notebooks/{id}",
            "DELETE /api/v1/sessions/{id}",
            "DELETE /api/v1/sessions/{id}/files/{path}",
            "GET /api/v1/conversations",
            "GET /api/v1/conversations/{id}",
            "GET /api/v1/conversations/{id}/events",
            "GET /api/v1/conversations/{id}/notebook",
            "GET /api/v1/environments",
            "GET /api/v1/models",
            "GET /api/v1/notebooks",
            "GET /api/v1/notebooks/{id}",
            "GET /api/v1/notebooks/{id}/ipynb",
            "GET /api/v1/openapi.json",
            "GET /api/v1/sessions",
            "GET /api/v1/sessions/{id}",
            "GET /api/v1/sessions/{id}/executions/{execution_id}",
            "GET /api/v1/sessions/{id}/executions/{execution_id}/events",
            "GET /api/v1/sessions/{id}/files",
            "GET /api/v1/sessions/{id}/files/{path}",
            "GET /healthz",
            "GET /metrics",
            "PATCH /api/v1/notebooks/{id}",
            "POST /api/v1/conversations",
            "POST /api/v1/conversations/{id}/cancel",
            "POST /api/v1/conversations/{id}/messages",
            "POST /api/v1/notebooks",
            "POST /api/v1/notebooks/import",
            "POST /api/v1/sessions",
            "POST /api/v1/sessions/{id}/complete",
            "POST /api/v1/sessions/{id}/execute",
            "POST /api/v1/sessions/{id}/files",
            "POST /api/v1/sessions/{id}/interrupt",
            "POST /api/v1/sessions/{id}/packages",
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
    // keys of a real result, besides the execution's `id` that the response adds.
    let id = api.create_session().await;
    let execution = api.execute(&id, "1").await;
    assert!(execution["id"].as_str().unwrap().starts_with("exec_"));
    let mut keys: Vec<&String> = execution
        .as_object()
        .unwrap()
        .keys()
        .filter(|key| *key != "id")
        .collect();
    let schema = &document["components"]["schemas"]["Execution"]["properties"];
    let mut properties: Vec<&String> = schema.as_object().unwrap().keys().collect();
    keys.sort();
    properties.sort();
    assert_eq!(keys, properties);
    server.stop().await;
}

#[tokio::test]
async fn lists_page_through_with_a_cursor() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(api.create_session().await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/sessions?limit=2".to_owned();
    loop {
        let (status, page) = json(api.get(&path).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["data"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/sessions?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, created, "every session once, oldest first");
    let unknown = api.get("/api/v1/sessions?after=nope").await;
    assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    server.stop().await;
}

#[tokio::test]
async fn execute_answers_json_unless_a_stream_is_asked_for_and_executions_can_be_re_attached() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(data.path()), python().await).await;
    let api = server.api();
    let id = api.create_session().await;
    let execute = |accept: &'static str, code: &'static str| {
        api.request(Method::POST, &format!("/api/v1/sessions/{id}/execute"))
            .header("accept", accept)
            .json(&json!({ "code": code }))
            .send()
    };
    // What curl and requests send: JSON, not a stream.
    let response = execute("*/*", "print('a')\n1 + 1").await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, result) = json(response).await;
    let execution_id = result["id"].as_str().unwrap().to_owned();
    assert!(
        location.ends_with(&format!("/executions/{execution_id}")),
        "{location}"
    );
    assert_eq!(result["stdout"], "a\n");
    let (status, kept) = json(api.get(&location).await).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["state"], "finished");
    assert_eq!(kept["result"]["stdout"], "a\n");

    // A stream that the client drops after its first output; the execution goes on, and
    // the client re-attaches after the last event it saw.
    let mut stream = api
        .execute_stream(
            &id,
            "print('one', flush=True)\nimport time\ntime.sleep(1)\nprint('two')",
        )
        .await;
    let stream_id = stream.execution_id.clone().unwrap();
    let one = stream.next().await.unwrap();
    assert_eq!(
        (one.name.as_str(), one.data["text"].as_str()),
        ("stdout", Some("one\n"))
    );
    let seen = one.id.clone().expect("events carry ids");
    drop(stream);
    let events = api
        .request(
            Method::GET,
            &format!("/api/v1/sessions/{id}/executions/{stream_id}/events"),
        )
        .header("last-event-id", seen)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let rest = EventStream::new(events).rest().await;
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["stdout", "files", "end"], "{rest:?}");
    assert_eq!(rest[0].data["text"], "two\n");
    assert_eq!(rest[2].data["stdout"], "one\ntwo\n");

    let missing = api
        .get(&format!("/api/v1/sessions/{id}/executions/exec_nothing"))
        .await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn warm_sessions_are_taken_by_new_sessions_and_count_among_the_live_ones() {
    let data = tempfile::tempdir().unwrap();
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            max_sessions: 2,
            warm_sessions: 2,
            ..base.service.clone()
        },
        ..base
    };
    let server = TestServer::start(config, python().await).await;
    let api = server.api();
    let live = |api: Api| async move {
        let metrics = api.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("sandcell_sessions_live "))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    eventually("two warm sessions", || {
        let api = api.clone();
        async move { live(api).await == 2 }
    })
    .await;
    // Both new sessions are warm ones: the server still runs two processes.
    let first = api.create_session().await;
    let second = api.create_session().await;
    assert_eq!(live(api.clone()).await, 2);
    let result = api.execute(&first, "import os\nos.listdir('.')").await;
    assert_eq!(result["restarted"], false, "{result}");
    assert_eq!(api.session_state(&second).await, "idle");
    // Full: the least recently used idle session gives way to the third.
    let third = api.create_session().await;
    assert_eq!(api.session_state(&second).await, "stopped");
    assert_eq!(api.session_state(&first).await, "idle");
    assert_eq!(text_result(&api.execute(&third, "3").await), "3");
    let (_, list) = json(api.get("/api/v1/sessions").await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    server.stop().await;
}

#[tokio::test]
async fn sessions_choose_their_network_within_the_operators_ceiling() {
    let port = host::host_server("from the host").await.port;
    let allowed = format!("127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let base = config(data.path());
    let config = ServerConfig {
        service: ServiceConfig {
            network_ceiling: sandcell_session::Allowlist::parse(&[allowed.as_str()]).unwrap(),
            ..base.service.clone()
        },
        ..base
    };
    let python = python().await;
    let server = TestServer::start(config.clone(), python.clone()).await;
    let api = server.api();
    let create = |body: Value| {
        api.request(Method::POST, "/api/v1/sessions")
            .json(&body)
            .send()
    };
    for (asked, says) in [
        (json!(["example.org"]), "outside what the operator allows"),
        (
            json!([format!("127.0.0.1:{}", port + 1)]),
            "outside what the operator allows",
        ),
        (json!(["not a host"]), "is not a host name"),
    ] {
        let message = assert_error(
            create(json!({ "allow_net": asked })).await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
        assert!(message.contains(says), "{message}");
    }

    let fetch = format!(
        "import urllib.request\ntry:\n    print(urllib.request.urlopen('http://{allowed}/', timeout=20).read().decode())\nexcept Exception as e:\n    print(type(e).__name__)"
    );
    let (status, open) = json(create(json!({ "allow_net": [allowed] })).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{open}");
    assert_eq!(
        open["network"],
        json!({ "type": "allowlist", "allow": [allowed] })
    );
    let open = open["id"].as_str().unwrap().to_owned();
    let fetched = api.execute(&open, &fetch).await;
    assert_eq!(fetched["stdout"], "from the host\n");
    // The result says what the code could reach.
    assert_eq!(
        fetched["network"],
        json!({ "type": "allowlist", "allow": [allowed] })
    );

    // Asking for nothing is no network, as with no ceiling at all.
    let (_, closed) = json(create(json!({})).await.unwrap()).await;
    assert_eq!(closed["network"], json!({ "type": "none", "allow": [] }));
    let closed = closed["id"].as_str().unwrap().to_owned();
    let refused = api.execute(&closed, &fetch).await;
    assert_eq!(refused["stdout"], "URLError\n");
    assert_eq!(refused["network"], json!({ "type": "none", "allow": [] }));

    // OpenAI's containers ask with `network_policy`, within the same ceiling.
    let container = |policy: Value| {
        api.request(Method::POST, "/v1/containers")
            .json(&json!({ "name": "c", "network_policy": policy }))
            .send()
    };
    let refused = container(json!({ "type": "allowlist", "allowed_domains": ["example.org"] }))
        .await
        .unwrap();
    let (status, body) = json(refused).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("outside what the operator allows")),
        "{body}"
    );
    for policy in [
        json!({ "type": "disabled" }),
        json!({ "type": "allowlist", "allowed_domains": [allowed] }),
    ] {
        let (status, body) = json(container(policy).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, listed) = json(api.get("/api/v1/sessions?limit=100").await).await;
    let kinds: Vec<&str> = listed["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {listed}"))
        .iter()
        .map(|session| session["network"]["type"].as_str().unwrap_or("?"))
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    // The two sessions above and one container each.
    assert_eq!((count("allowlist"), count("none")), (2, 2), "{listed}");
    server.stop().await;

    // The policy is the session's record: a restarted server gives it the same.
    let server = TestServer::start(config.clone(), python.clone()).await;
    let api = server.api();
    let (_, info) = json(api.get(&format!("/api/v1/sessions/{open}")).await).await;
    assert_eq!(info["network"]["allow"], json!([allowed]));
    let fetched = api.execute(&open, &fetch).await;
    assert_eq!(fetched["stdout"], "from the host\n");
    // The result says what the code could reach.
    assert_eq!(
        fetched["network"],
        json!({ "type": "allowlist", "allow": [allowed] })
    );
    let refused = api.execute(&closed, &fetch).await;
    assert_eq!(refused["stdout"], "URLError\n");
    assert_eq!(refused["network"], json!({ "type": "none", "allow": [] }));
    server.stop().await;

    // A ceiling narrowed since narrows the sessions that had more.
    let narrowed = ServerConfig {
        service: ServiceConfig {
            network_ceiling: sandcell_session::Allowlist::default(),
            ..config.service.clone()
        },
        ..config
    };
    let server = TestServer::start(narrowed, python).await;
    let api = server.api();
    let (_, info) = json(api.get(&format!("/api/v1/sessions/{open}")).await).await;
    assert_eq!(info["network"], json!({ "type": "none", "allow": [] }));
    assert_eq!(api.execute(&open, &fetch).await["stdout"], "URLError\n");
    server.stop().await;
}
