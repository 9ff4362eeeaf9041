//! Paths as models write them, and the resource URIs of files.
//!
//! A model writes a file's path relative to `/mnt/data` or as an absolute path under it;
//! both name the same file. What is left after `/mnt/data/` is checked by the core's own
//! path type (`FilePath`: relative, no `.` or `..` part), and resolved beneath the
//! session's directory without following links by `WorkDir`: nothing here decides what a
//! path may reach.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use sandcell_service::{FilePath, ServiceError};

/// Where the session sees its working directory.
pub(crate) const MOUNT: &str = "/mnt/data";
/// The scheme and prefix of a session's file URIs.
const URI_PREFIX: &str = "sandcell://sessions/";
/// What must be escaped in one segment of a URI path (RFC 3986 `pchar`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The file a model means by `raw`: relative to `/mnt/data`, or absolute under it.
pub(crate) fn file_path(raw: &str) -> Result<FilePath, ServiceError> {
    let relative = match raw.strip_prefix(MOUNT) {
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
        Some("") => {
            return Err(ServiceError::InvalidPath(format!(
                "{MOUNT} is the working directory itself; name a file in it."
            )))
        }
        _ if raw.starts_with('/') => {
            return Err(ServiceError::InvalidPath(format!(
                "The path {raw} is outside {MOUNT}: give a path relative to {MOUNT} or under it."
            )))
        }
        _ => raw,
    };
    Ok(FilePath::parse(relative)?)
}

/// The URI of a session's file, each part of its path escaped.
pub(crate) fn file_uri(session_id: &str, path: &str) -> String {
    let escaped: Vec<String> = path
        .split('/')
        .map(|part| utf8_percent_encode(part, SEGMENT).to_string())
        .collect();
    format!(
        "{URI_PREFIX}{}/files/{}",
        utf8_percent_encode(session_id, SEGMENT),
        escaped.join("/")
    )
}

/// The session id and file path a URI of [`file_uri`]'s form names.
pub(crate) fn parse_file_uri(uri: &str) -> Result<(String, FilePath), ServiceError> {
    let malformed = || {
        ServiceError::invalid(format!(
            "{uri} is not a file of a session: expected {URI_PREFIX}SESSION_ID/files/PATH."
        ))
    };
    let rest = uri.strip_prefix(URI_PREFIX).ok_or_else(malformed)?;
    let (session, path) = rest.split_once("/files/").ok_or_else(malformed)?;
    let decode = |text: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| malformed())
    };
    let parts: Vec<String> = path.split('/').map(decode).collect::<Result<_, _>>()?;
    Ok((decode(session)?, FilePath::parse(&parts.join("/"))?))
}

/// The session an MCP request (one JSON-RPC message, or a batch: the first that names
/// one) acts on, as its tool call's `session_id` or its resource's URI names it; `None`
/// for a request on the connection's default session, or on none. For a node that sends
/// the request to the node running that session before anything here reads it.
pub fn session_named(body: &serde_json::Value) -> Option<String> {
    let one = |message: &serde_json::Value| {
        let params = message.get("params")?;
        match message.get("method")?.as_str()? {
            "tools/call" => Some(
                params
                    .get("arguments")?
                    .get("session_id")?
                    .as_str()?
                    .to_owned(),
            ),
            "resources/read" => parse_file_uri(params.get("uri")?.as_str()?)
                .ok()
                .map(|(session, _)| session),
            _ => None,
        }
    };
    match body.as_array() {
        Some(batch) => batch.iter().find_map(one),
        None => one(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_paths_name_the_same_file() {
        assert_eq!(file_path("a/b.csv").unwrap().to_string(), "a/b.csv");
        assert_eq!(
            file_path("/mnt/data/a/b.csv").unwrap().to_string(),
            "a/b.csv"
        );
        assert_eq!(file_path("/mnt/data//b.csv").unwrap().to_string(), "b.csv");
    }

    #[test]
    fn paths_leading_out_of_the_working_directory_are_refused() {
        for raw in [
            "/etc/passwd",
            "/mnt/database",
            "/mnt/data",
            "/mnt/data/../x",
            "../x",
            "a/../../x",
            "",
        ] {
            assert!(
                matches!(file_path(raw), Err(ServiceError::InvalidPath(_))),
                "{raw} was accepted"
            );
        }
    }

    #[test]
    fn uris_round_trip_with_escaped_parts() {
        let uri = file_uri("abc", "dir one/a#b%c?.txt");
        assert_eq!(
            uri,
            "sandcell://sessions/abc/files/dir%20one/a%23b%25c%3F.txt"
        );
        let (session, path) = parse_file_uri(&uri).unwrap();
        assert_eq!(
            (session.as_str(), path.to_string().as_str()),
            ("abc", "dir one/a#b%c?.txt")
        );
        assert!(parse_file_uri("sandcell://sessions/abc/files/a%2F..%2Fb").is_err());
        assert!(parse_file_uri("file:///etc/passwd").is_err());
    }

    #[test]
    fn a_request_names_the_session_it_acts_on() {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "run_python", "arguments": {"session_id": "s1", "code": "1"}}});
        assert_eq!(session_named(&call).as_deref(), Some("s1"));
        let read = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read",
            "params": {"uri": file_uri("s 2", "a b.txt")}});
        assert_eq!(session_named(&read).as_deref(), Some("s 2"));
        let default = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "run_python", "arguments": {"code": "1"}}});
        assert_eq!(
            session_named(&default),
            None,
            "the connection's default session"
        );
        let batch = serde_json::json!([default, call]);
        assert_eq!(session_named(&batch).as_deref(), Some("s1"));
        let other = serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "initialize",
            "params": {"session_id": "s3"}});
        assert_eq!(session_named(&other), None);
    }
}
