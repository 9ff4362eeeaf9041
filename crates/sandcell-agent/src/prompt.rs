//! The system prompt: where the model is (Python, packages, `/mnt/data` and its files,
//! limits, no internet) and how it works here.

use sandcell_pyenv::EnvInfo;
use sandcell_session::Limits;
use std::fmt::Write;
use std::path::Path;

/// Files listed in the prompt at most; the model can list the rest itself.
const MAX_FILES: usize = 50;
/// Column names listed per table at most.
const MAX_COLUMNS: usize = 40;
/// Spreadsheets larger than this are listed without their columns (reading them takes time).
const MAX_SPREADSHEET_BYTES: u64 = 20 * 1024 * 1024;

/// The system prompt for a conversation whose session runs in `env` with `limits` and
/// has `workdir` as its `/mnt/data`.
pub fn system_prompt(env: &EnvInfo, limits: &Limits, workdir: &Path) -> String {
    let mut prompt = String::new();
    let packages: Vec<String> = env
        .packages
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
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
         create there, then tell the user its path. There is no internet access: pip \
         install and downloads fail, so use the installed packages.\n\n\
         Limits: {memory} MiB of memory, {timeout} s per call, files up to {file} MiB, \
         {quota} MiB in /mnt/data in all.\n\n\
         Installed packages: {packages}.\n\n",
        python = env.python_version,
        memory = limits.memory_mib,
        timeout = limits.timeout.as_secs_f64(),
        file = limits.file_size_mib,
        quota = limits.workdir_quota_mib,
        packages = packages.join(", "),
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
    let mut files = Vec::new();
    collect_files(workdir, workdir, 0, &mut files);
    files.sort();
    let more = files.len().saturating_sub(MAX_FILES);
    files.truncate(MAX_FILES);
    let mut lines: Vec<String> = files
        .iter()
        .map(|(relative, size)| {
            let path = workdir.join(relative);
            let mut line = format!("/mnt/data/{relative} ({})", human_size(*size));
            if let Some(columns) = columns(&path, *size) {
                let _ = write!(line, "; {columns}");
            }
            line
        })
        .collect();
    if more > 0 {
        lines.push(format!("… and {more} more files"));
    }
    lines
}

fn collect_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // Not following symlinks: the session's code may point them anywhere.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() && depth < 2 {
            collect_files(root, &entry.path(), depth + 1, out);
        } else if meta.is_file() {
            if let Ok(relative) = entry.path().strip_prefix(root) {
                out.push((relative.to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
}

/// `columns: a, b, c` for a table file, or `sheets: …` for a workbook.
fn columns(path: &Path, size: u64) -> Option<String> {
    let extension = path.extension()?.to_string_lossy().to_lowercase();
    match extension.as_str() {
        "csv" | "tsv" => {
            let delimiter = if extension == "tsv" { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .flexible(true)
                .from_path(path)
                .ok()?;
            let headers: Vec<String> = reader.headers().ok()?.iter().map(str::to_owned).collect();
            Some(format!("columns: {}", list(&headers)))
        }
        "xlsx" | "xlsm" | "xls" | "xlsb" | "ods" if size <= MAX_SPREADSHEET_BYTES => {
            use calamine::Reader;
            let mut workbook = calamine::open_workbook_auto(path).ok()?;
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
    fn the_prompt_names_python_packages_limits_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.csv"), "x,y\n").unwrap();
        let env = EnvInfo {
            python_version: "3.12.1".into(),
            python: "/env/bin/python".into(),
            prefix: "/env".into(),
            base_prefix: "/usr".into(),
            base_executable_dir: "/usr/bin".into(),
            packages: vec![sandcell_pyenv::Package {
                name: "pandas".into(),
                version: "2.3.3".into(),
            }],
        };
        let prompt = system_prompt(&env, &Limits::default(), dir.path());
        for needle in [
            "Python 3.12.1",
            "pandas==2.3.3",
            "/mnt/data/data.csv (4 B); columns: x, y",
            "no internet",
            "2048 MiB of memory",
        ] {
            assert!(prompt.contains(needle), "{needle} missing from:\n{prompt}");
        }
    }
}
