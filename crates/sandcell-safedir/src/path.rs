//! A checked path beneath a session directory.

use crate::SafeDirError;

/// Longest name of one part, and of a whole path (Linux's NAME_MAX and PATH_MAX).
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// A path inside a session directory as a client or a caller gave it, checked: relative,
/// not empty, without `.`, `..` or empty parts, no NUL, within Linux's length limits.
/// Checking the text is only the first half: [`crate::SafeDir`] still refuses a link in
/// any of its parts when it resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    parts: Vec<String>,
}

impl SafePath {
    /// Checks a path as given (already percent-decoded, for a URL).
    pub fn parse(raw: &str) -> Result<Self, SafeDirError> {
        let invalid = |why: &str| {
            Err(SafeDirError::InvalidPath(format!(
                "The file path {raw:?} {why}."
            )))
        };
        if raw.is_empty() {
            return invalid("is empty");
        }
        if raw.starts_with('/') {
            return invalid("is absolute; give it relative to /mnt/data");
        }
        if raw.len() > MAX_PATH {
            return invalid("is too long");
        }
        if raw.contains('\0') {
            return invalid("contains a NUL character");
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" => return invalid("has an empty part (`//` or a trailing `/`)"),
                "." | ".." => return invalid("contains `.` or `..`"),
                _ if part.len() > MAX_NAME => return invalid("has a part longer than 255 bytes"),
                _ => parts.push(part.to_owned()),
            }
        }
        Ok(Self { parts })
    }

    /// The last part.
    pub fn file_name(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    /// The directories before the last part, outermost first.
    pub(crate) fn parents(&self) -> &[String] {
        &self.parts[..self.parts.len().saturating_sub(1)]
    }

    pub(crate) fn parts(&self) -> &[String] {
        &self.parts
    }
}

impl std::fmt::Display for SafePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(
                matches!(SafePath::parse(bad), Err(SafeDirError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert!(SafePath::parse(&"x".repeat(256)).is_err());
        let path = SafePath::parse("data/2024 report..csv").unwrap();
        assert_eq!(path.to_string(), "data/2024 report..csv");
        assert_eq!(path.file_name(), "2024 report..csv");
        assert_eq!(path.parents(), ["data"]);
    }
}
