//! The web app's routes, served on a real listener as `sandcell serve` serves them.

use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

/// Serves `sandcell_web::router()` on a free port; returns its base URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, sandcell_web::router::<()>())
            .await
            .unwrap()
    });
    format!("http://{address}")
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("the server answers")
}

#[tokio::test]
async fn the_page_is_html_with_a_strict_policy() {
    let base = serve().await;
    let response = get(&format!("{base}/")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "no-cache");
    let policy = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    let body = response.text().await.unwrap();
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains(r#"src="/assets/app.js""#), "{body}");
}

#[tokio::test]
async fn every_asset_is_served_with_its_type() {
    let base = serve().await;
    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("markdown.js", "text/javascript; charset=utf-8"),
        ("vendor/codemirror.js", "text/javascript; charset=utf-8"),
        ("editor.css", "text/css; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("frame.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = get(&format!("{base}/assets/{name}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(response.headers()[CONTENT_TYPE], content_type, "{name}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty(), "{name}");
    }
}

/// Every module the page imports is one the router serves.
#[tokio::test]
async fn every_imported_module_is_served() {
    let base = serve().await;
    let mut pending = vec!["app.js".to_owned()];
    let mut seen = pending.clone();
    while let Some(name) = pending.pop() {
        let response = get(&format!("{base}/assets/{name}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{name} is imported");
        let source = response.text().await.unwrap();
        if name.starts_with("vendor/") {
            // A built bundle: whole in itself, it imports nothing.
            assert!(
                !source.contains("from\"./") && !source.contains("from './"),
                "{name}"
            );
            continue;
        }
        for (_, rest) in source
            .match_indices("from '")
            .map(|(at, _)| source.split_at(at + 6))
        {
            let module = rest
                .strip_prefix("./")
                .and_then(|rest| rest.split_once('\''))
                .map(|(module, _)| module.to_owned())
                .unwrap_or_else(|| {
                    panic!("{name}: an import not of a module beside it: {rest:.40}")
                });
            if !seen.contains(&module) {
                seen.push(module.clone());
                pending.push(module);
            }
        }
    }
    for module in [
        "markdown.js",
        "editor.js",
        "vendor/codemirror.js",
        "vendor/dompurify.js",
    ] {
        assert!(
            seen.iter().any(|name| name == module),
            "{module} in {seen:?}"
        );
    }
}

#[tokio::test]
async fn an_unchanged_asset_is_not_sent_again() {
    let base = serve().await;
    let url = format!("{base}/assets/app.css");
    let etag = get(&url).await.headers()[ETAG].clone();
    let client = reqwest::Client::new();
    let again = client
        .get(&url)
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = client
        .get(&url)
        .header(IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_asset_is_a_json_404() {
    let base = serve().await;
    for path in ["/assets/missing.js", "/assets/../Cargo.toml", "/assets/"] {
        let response = get(&format!("{base}{path}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        if path == "/assets/missing.js" {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
}
