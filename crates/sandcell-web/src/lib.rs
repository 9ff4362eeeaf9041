//! The web app of `sandcell serve`: a chat page (conversations with a model that runs
//! Python) and a notebook page (cells run directly in a session), as static files
//! embedded in the binary at build time.
//!
//! For: serving the page at `/` and its assets at `/assets/…` with their content types,
//! validators (`ETag`, answered with `304 Not Modified`) and a strict Content Security
//! Policy. In the browser, the page speaks the JSON and Server-Sent Events API under
//! `/api/v1`.
//!
//! Not for: the API itself (`sandcell-server` serves it), authentication (the page sends
//! the key a person gives it; the API checks it), templating or bundling: the files are
//! served exactly as they are in `assets/`. The third-party libraries among them
//! (`assets/vendor/`: CodeMirror, markdown-it, DOMPurify) are built files, committed with
//! their licences and rebuilt by `scripts/rebuild-web-vendor` from the versions pinned in
//! `vendor-src/`, so building this crate never needs Node.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

/// The routes of the web app: `GET /` (the page) and `GET /assets/{name}`. Merge them
/// into the server's router; they use no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*name}", get(asset))
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

const INDEX: Asset = asset!("index.html", HTML);

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("editor.css", CSS),
    asset!("frame.css", CSS),
    asset!("icon.svg", SVG),
    asset!("api.js", JAVASCRIPT),
    asset!("app.js", JAVASCRIPT),
    asset!("chat.js", JAVASCRIPT),
    asset!("dom.js", JAVASCRIPT),
    asset!("editor.js", JAVASCRIPT),
    asset!("highlight.js", JAVASCRIPT),
    asset!("markdown.js", JAVASCRIPT),
    asset!("notebook.js", JAVASCRIPT),
    asset!("output.js", JAVASCRIPT),
    asset!("vendor/codemirror.js", JAVASCRIPT),
    asset!("vendor/dompurify.js", JAVASCRIPT),
    asset!("vendor/markdown-it.js", JAVASCRIPT),
];

/// What the page may load and run: only its own scripts and styles, images from the API
/// and from `data:` URLs (plots arrive base64-encoded), requests to its own origin. Model
/// output is never markup, and HTML results go into `sandbox=""` frames, which inherit
/// this policy as well. Styles stay `'self'` too: CodeMirror writes its styles at run
/// time, which a `<style>` element would need `'unsafe-inline'` or a nonce for, so each
/// editor lives in a shadow root, where CodeMirror uses a constructed style sheet instead
/// (`adoptedStyleSheets`, which the policy does not govern); see `assets/editor.js`.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Strong validators, one per asset (the index last), computed once. The names carry no
/// content hash, so browsers must revalidate (`no-cache`); an unchanged file then costs
/// a `304` with no body.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain([&INDEX])
        .map(|asset| {
            let mut hasher = DefaultHasher::new();
            asset.body.hash(&mut hasher);
            HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
                .expect("a hex string is a valid header value")
        })
        .collect()
});

async fn index(request_headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &ETAGS[ASSETS.len()], &request_headers);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn asset(Path(name): Path<String>, request_headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == name) {
        Some(position) => serve(&ASSETS[position], &ETAGS[position], &request_headers),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": {"code": "not_found", "message": format!("There is no asset named {name}.")}
            })),
        )
            .into_response(),
    }
}

fn serve(asset: &Asset, etag: &HeaderValue, request_headers: &HeaderMap) -> Response {
    let headers = [
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (ETAG, etag.clone()),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if matches_etag(request_headers, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response()
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for it) or is `*`.
fn matches_etag(request_headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request_headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}
