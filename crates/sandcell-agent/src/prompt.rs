//! The system prompt: where the model is (Python, packages, `/mnt/data` and its files,
//! limits, the network the session has) and how it works here.

use sandcell_pyenv::{EnvInfo, Package};
use sandcell_safedir::{SafeDir, SafePath, WalkLimits};
use sandcell_session::{Limits, NetPolicy};
use std::fmt::Write;
use std::path::Path;

/// Files listed in the prompt at most; the model can list the rest itself.
const MAX_FILES: usize = 50;
/// How far the directory is looked at for the prompt (a cell can make millions of files).
const LOOKED_AT: WalkLimits = WalkLimits {
    max_entries: 10_000,
    max_depth: 2,
};
/// Column names listed per table at most.
const MAX_COLUMNS: usize = 40;
/// Spreadsheets larger than this are listed without their columns (reading them takes time).
const MAX_SPREADSHEET_BYTES: u64 = 20 * 1024 * 1024;

/// What the session can reach: its network policy, and whether `%pip install` reaches
/// the operator's package index.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub network: &'a NetPolicy,
    pub package_index: bool,
}

impl Reach<'_> {
    /// The prompt's paragraph about it.
    fn describe(&self) -> String {
        let network = match self.network {
            NetPolicy::None => "There is no internet access: downloads fail.".to_owned(),
            NetPolicy::Allowlist(hosts) => format!(
                "Network access is limited to these hosts: {hosts}. HTTP and HTTPS go through \
                 the proxy the session is set up for (HTTP_PROXY, HTTPS_PROXY); anything else \
                 is refused."
            ),
        };
        let packages = if self.package_index {
            "%pip install PACKAGE installs from the operator's package index into this \
             session, importable at once."
        } else {
            "pip install fails, so use the installed packages."
        };
        format!("{network} {packages}")
    }
}

/// The system prompt for a conversation whose session runs in `env` (and in the configured
/// `environment`, its name and the packages its layer adds, if any) with `limits`, has
/// `workdir` as its `/mnt/data`, and reaches what `reach` says.
pub fn system_prompt(
    env: &EnvInfo,
    environment: Option<(&str, &[Package])>,
    limits: &Limits,
    workdir: &Path,
    reach: Reach,
) -> String {
    let mut prompt = String::new();
    let pinned = |packages: &[Package]| -> String {
        packages
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let packages = pinned(&env.packages);
    let layer = match environment {
        Some((name, [])) => format!(" This session runs in the environment {name}."),
        Some((name, added)) => format!(
            " This session runs in the environment {name}, which adds: {}.",
            pinned(added)
        ),
        None => String::new(),
    };
    let _ = write!(
        prompt,
        "You are a data analyst with a Python {python} interpreter. To run code, call the \
         `python` tool with the code; you see its output, errors and plots, and you can call \
         it again. Work step by step: run code, look at the result, fix errors, and answer \
         only once the task is done.\n\n\
         The interpreter is a stateful IPython session: variables, imports and functions \
         persist between calls. IPython magics (%timeit, %%writefile) and !shell commands \
         work. Matplotlib figures are captured automatically (no need to save them); the \
         value of the last expression is shown.\n\n\
         Files live in /mnt/data: read the user's files there and write every file you \
         create there, then tell the user its path. {reach}\n\n\
         Limits: {memory} MiB of memory, {timeout} s per call, files up to {file} MiB, \
         {quota} MiB in /mnt/data in all.\n\n\
         Installed packages: {packages}.{layer}\n\n",
        python = env.python_version,
        memory = limits.memory_mib,
        timeout = limits.timeout.as_secs_f64(),
        file = limits.file_size_mib,
        quota = limits.workdir_quota_mib,
        reach = reach.describe(),
    );
    let files = describe_files(workdir);
    if files.is_empty() {
        prompt.push_str("/mnt/data is empty.\n");
    } else {
        prompt.push_str("Files in /mnt/data:\n");
        for file in files {
            let _ = writeln!(prompt, "- {file}");
        }
    }
    prompt
}

/// One line per file under `workdir` (hidden files skipped): path, size, and the
/// columns of CSV and spreadsheet files.
pub fn describe_files(workdir: &Path) -> Vec<String> {
    // The session's code owns the directory: nothing in it is read by name.
    let Ok(dir) = SafeDir::open(workdir) else {
        return Vec::new();
    };
    let listing = dir.files(LOOKED_AT);
    let mut files: Vec<(String, u64)> = listing
        .files
        .into_iter()
        .filter_map(|entry| {
            let path = entry.path.to_str()?;
            let hidden = path.split('/').any(|part| part.starts_with('.'));
            (!hidden).then(|| (path.to_owned(), entry.size))
        })
        .collect();
    files.sort();
    let more = files.len().saturating_sub(MAX_FILES);
    files.truncate(MAX_FILES);
    let mut lines: Vec<String> = files
        .iter()
        .map(|(relative, size)| {
            let mut line = format!("/mnt/data/{relative} ({})", human_size(*size));
            if let Some(columns) = columns(&dir, relative, *size) {
                let _ = write!(line, "; {columns}");
            }
            line
        })
        .collect();
    if more > 0 {
        lines.push(format!("… and {more} more files"));
    }
    if !listing.complete {
        lines.push("… and more not looked at (too many files or folders too deep)".to_owned());
    }
    lines
}

/// `columns: a, b, c` for a table file, or `sheets: …` for a workbook.
fn columns(dir: &SafeDir, relative: &str, size: u64) -> Option<String> {
    let extension = Path::new(relative)
        .extension()?
        .to_string_lossy()
        .to_lowercase();
    let open = || {
        let path = SafePath::parse(relative).ok()?;
        dir.open_file(&path).ok().map(|(file, _)| file)
    };
    match extension.as_str() {
        "csv" | "tsv" => {
            let delimiter = if extension == "tsv" { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .flexible(true)
                .from_reader(open()?);
            let headers: Vec<String> = reader.headers().ok()?.iter().map(str::to_owned).collect();
            Some(format!("columns: {}", list(&headers)))
        }
        "xlsx" | "xlsm" | "xls" | "xlsb" | "ods" if size <= MAX_SPREADSHEET_BYTES => {
            use calamine::Reader;
            use std::io::Read;
            // In memory (it is small), shared by calamine's tries of each format.
            let mut bytes = Vec::new();
            open()?
                .take(MAX_SPREADSHEET_BYTES)
                .read_to_end(&mut bytes)
                .ok()?;
            let bytes: std::sync::Arc<[u8]> = bytes.into();
            let mut workbook =
                calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes)).ok()?;
            let sheets: Vec<String> = workbook
                .sheet_names()
                .into_iter()
                .take(5)
                .filter_map(|sheet| {
                    let range = workbook.worksheet_range(&sheet).ok()?;
                    let header: Vec<String> = range
                        .rows()
                        .next()
                        .map(|row| row.iter().map(|cell| cell.to_string()).collect())
                        .unwrap_or_default();
                    Some(format!("sheet \"{sheet}\" columns: {}", list(&header)))
                })
                .collect();
            (!sheets.is_empty()).then(|| sheets.join("; "))
        }
        _ => None,
    }
}

fn list(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(MAX_COLUMNS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_COLUMNS {
        let _ = write!(text, ", … ({} columns in all)", names.len());
    }
    text
}

/// `1.2 MB`, `340 B`: sizes as people read them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_with_sizes_and_table_columns() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sales.csv"),
            "region,month,amount\nnorth,1,3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x".repeat(1500)).unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/t.tsv"), "a\tb\n1\t2\n").unwrap();
        let lines = describe_files(dir.path());
        assert_eq!(
            lines,
            vec![
                "/mnt/data/notes.txt (1.5 kB)",
                "/mnt/data/sales.csv (30 B); columns: region, month, amount",
                "/mnt/data/sub/t.tsv (8 B); columns: a, b",
            ]
        );
    }

    #[test]
    fn files_behind_planted_links_are_neither_listed_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("host.csv"), "SECRET_COLUMN\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("host.csv"), dir.path().join("a.csv"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("shadow.csv")).unwrap();
        std::fs::write(dir.path().join("own.csv"), "x\n").unwrap();
        assert_eq!(
            describe_files(dir.path()),
            ["/mnt/data/own.csv (2 B); columns: x"]
        );
    }

    #[test]
    fn a_directory_too_deep_to_look_at_is_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        std::fs::write(dir.path().join("a/b/c/deep.txt"), "x").unwrap();
        assert_eq!(
            describe_files(dir.path()),
            ["… and more not looked at (too many files or folders too deep)"]
        );
    }

    fn package(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
        }
    }

    /// A base environment of Python 3.12.1 with pandas 2.3.3.
    fn base_with_pandas() -> EnvInfo {
        EnvInfo {
            python_version: "3.12.1".into(),
            python: "/env/bin/python".into(),
            prefix: "/env".into(),
            base_prefix: "/usr".into(),
            base_executable_dir: "/usr/bin".into(),
            packages: vec![package("pandas", "2.3.3")],
        }
    }

    #[test]
    fn the_prompt_names_python_packages_limits_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.csv"), "x,y\n").unwrap();
        let env = base_with_pandas();
        let closed = Reach {
            network: &NetPolicy::None,
            package_index: false,
        };
        let prompt = system_prompt(&env, None, &Limits::default(), dir.path(), closed);
        for needle in [
            "Python 3.12.1",
            "pandas==2.3.3",
            "/mnt/data/data.csv (4 B); columns: x, y",
            "no internet",
            "pip install fails",
            "2048 MiB of memory",
        ] {
            assert!(prompt.contains(needle), "{needle} missing from:\n{prompt}");
        }

        let hosts = sandcell_session::Allowlist::parse(&["*.example.org:443"]).unwrap();
        let open = Reach {
            network: &NetPolicy::from_allowlist(hosts),
            package_index: true,
        };
        let prompt = system_prompt(&env, None, &Limits::default(), dir.path(), open);
        for needle in ["limited to these hosts: *.example.org:443", "%pip install"] {
            assert!(prompt.contains(needle), "{needle} missing from:\n{prompt}");
        }
        assert!(!prompt.contains("no internet"), "{prompt}");
        assert!(!prompt.contains("runs in the environment"), "{prompt}");
    }

    #[test]
    fn the_prompt_names_the_packages_a_configured_environment_adds() {
        let dir = tempfile::tempdir().unwrap();
        let env = base_with_pandas();
        let added = [package("pyproj", "3.6.1"), package("shapely", "2.0.6")];
        let reach = Reach {
            network: &NetPolicy::None,
            package_index: false,
        };
        let prompt = system_prompt(
            &env,
            Some(("geo", &added)),
            &Limits::default(),
            dir.path(),
            reach,
        );
        assert!(
            prompt.contains(
                "Installed packages: pandas==2.3.3. This session runs in the environment geo, \
                 which adds: pyproj==3.6.1, shapely==2.0.6."
            ),
            "{prompt}"
        );
    }
}
