//! The rule for installing packages into a session's package layer: which requirements
//! are accepted (a name, extras and version specifiers; never an option, a URL or a
//! path, which could make pip read or fetch something else), and the cell that installs
//! them with the kernel's own `%pip` code (`sandcell_runtime.packages.install`).

use crate::error::ServiceError;

/// Requirements one call may install.
pub const MAX_REQUIREMENTS: usize = 64;
/// The longest requirement accepted, in bytes.
const MAX_REQUIREMENT_LEN: usize = 200;
/// Version comparison operators of PEP 440, longest first (so `===` is not read as `==`).
const OPERATORS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];
/// Endings that make pip read a name as a file of the working directory (its archive
/// extensions), not as a project of the index.
const ARCHIVE_ENDINGS: [&str; 12] = [
    ".whl", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".xz", ".txz", ".tlz", ".lz", ".lzma",
];

/// What a client is told when no index is configured.
pub const NO_INDEX: &str = "No package index is configured: start sandcell with --pip-index URL (pip_index in the config file for serve) to install packages.";

/// The Python cell that installs `requirements`, after checking each of them.
pub(crate) fn install_cell(requirements: &[String]) -> Result<String, ServiceError> {
    if requirements.is_empty() {
        return Err(ServiceError::invalid(
            "Give at least one package to install, such as \"requests\" or \"numpy>=1.26,<2\".",
        ));
    }
    if requirements.len() > MAX_REQUIREMENTS {
        return Err(ServiceError::invalid(format!(
            "{} packages were asked for at once; install at most {MAX_REQUIREMENTS} per call.",
            requirements.len()
        )));
    }
    for requirement in requirements {
        check_requirement(requirement)?;
    }
    // The accepted characters need no escaping in a Python string literal.
    let quoted: Vec<String> = requirements.iter().map(|r| format!("'{r}'")).collect();
    Ok(format!(
        "__import__('sandcell_runtime.packages', fromlist=['install']).install([{}])",
        quoted.join(", ")
    ))
}

/// Accepts `NAME[EXTRA,...]SPECIFIER,...` (PEP 508 without markers, URLs or spaces).
fn check_requirement(requirement: &str) -> Result<(), ServiceError> {
    let refused = || {
        ServiceError::invalid(format!(
            "{requirement:?} is not a package name with optional extras and version specifiers (such as pandas, requests[socks] or numpy>=1.26,<2, without spaces); options, URLs and paths are not accepted."
        ))
    };
    if requirement.len() > MAX_REQUIREMENT_LEN {
        return Err(ServiceError::invalid(format!(
            "A requirement is longer than {MAX_REQUIREMENT_LEN} characters; give a package name and version specifiers only."
        )));
    }
    let name_end = requirement
        .find(|c: char| !is_name_char(c))
        .unwrap_or(requirement.len());
    let (name, mut rest) = requirement.split_at(name_end);
    let lowercase = name.to_ascii_lowercase();
    if !is_name(name) || ARCHIVE_ENDINGS.iter().any(|e| lowercase.ends_with(e)) {
        return Err(refused());
    }
    if let Some(extras) = rest.strip_prefix('[') {
        let (list, after) = extras.split_once(']').ok_or_else(refused)?;
        if !list.split(',').all(is_name) {
            return Err(refused());
        }
        rest = after;
    }
    if rest.is_empty() {
        return Ok(());
    }
    for specifier in rest.split(',') {
        let version = OPERATORS
            .iter()
            .find_map(|op| specifier.strip_prefix(op))
            .ok_or_else(refused)?;
        let version_char = |c: char| c.is_ascii_alphanumeric() || ".*+!_-".contains(c);
        if version.is_empty() || !version.chars().all(version_char) {
            return Err(refused());
        }
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A project or extra name of PEP 508: letters and digits, with `.`, `_` or `-` inside.
fn is_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(name.chars().next()) && edge(name.chars().last()) && name.chars().all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(requirement: &str) -> bool {
        check_requirement(requirement).is_ok()
    }

    #[test]
    fn names_extras_and_specifiers_are_accepted() {
        for requirement in [
            "pandas",
            "scikit-learn",
            "zope.interface",
            "requests[socks]",
            "requests[socks,security]>=2",
            "numpy>=1.26,<2",
            "black==24.1.0",
            "django~=5.0",
            "pkg===1.0+local",
            "torch!=2.0.*",
            "a",
        ] {
            assert!(accepted(requirement), "{requirement}");
        }
    }

    #[test]
    fn options_urls_paths_and_markers_are_refused() {
        for requirement in [
            "",
            "-r",
            "--index-url=http://elsewhere/simple",
            "-e.",
            ".",
            "./pkg",
            "/tmp/pkg.whl",
            "pkg.whl/",
            "pkg-1.0-py3-none-any.whl",
            "pkg-1.0.tar.gz",
            "PKG.ZIP",
            "pkg @ https://example.org/pkg.whl",
            "pkg@https://example.org/pkg.whl",
            "https://example.org/pkg.whl",
            "git+https://example.org/repo",
            "numpy >= 1.0",
            "numpy>=",
            "numpy>=1;python_version<'3.9'",
            "numpy[",
            "numpy[]",
            "numpy=1",
            "pkg'); import os; ('",
            "pkg\nimport os",
            "$HOME",
            "{x}",
            "_private",
        ] {
            let refused = check_requirement(requirement).unwrap_err();
            assert!(matches!(refused, ServiceError::Invalid(_)), "{requirement}");
        }
        assert!(!accepted(&"a".repeat(MAX_REQUIREMENT_LEN + 1)));
    }

    #[test]
    fn the_cell_calls_the_kernels_install_with_the_requirements() {
        let cell = install_cell(&["pandas".into(), "numpy>=1.26,<2".into()]).unwrap();
        assert_eq!(
            cell,
            "__import__('sandcell_runtime.packages', fromlist=['install']).install(['pandas', 'numpy>=1.26,<2'])"
        );
        assert!(install_cell(&[]).is_err());
        let many = vec!["a".to_string(); MAX_REQUIREMENTS + 1];
        assert!(install_cell(&many).is_err());
    }
}
