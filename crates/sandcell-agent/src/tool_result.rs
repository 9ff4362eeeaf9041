//! What the model reads after its code ran: output, errors, new files and images, with
//! long output cut to its head and tail (the full text saved in `/mnt/data`).

use base64::Engine;
use sandcell_safedir::{Create, SafeDir, SafeDirError, SafePath};
use sandcell_session::{Execution, Status};
use std::fmt::Write;
use std::path::Path;

use crate::error::AgentError;
use crate::prompt::human_size;

/// Characters of tool result the model reads at most, by default (about 3,000 tokens).
pub const DEFAULT_OUTPUT_LIMIT: usize = 12_000;
/// Where cut outputs are saved, under `/mnt/data`.
const OUTPUTS_DIR: &str = "outputs";
/// Images are saved as `figure_1.png` up to this number; past it (a directory already
/// full of figures, or names the session's code took) saving fails and the result says so.
const MAX_FIGURE_NUMBER: usize = 10_000;

/// The tool result of one execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The text the model reads.
    pub content: String,
    /// Images the execution produced, saved in the working directory.
    pub images: Vec<SavedImage>,
}

/// An image result written to the working directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedImage {
    /// As the session sees it: `/mnt/data/figure_1.png`.
    pub path: String,
    pub mime: String,
    pub width: usize,
    pub height: usize,
}

/// Builds the tool result of `execution`, the `number`th call of the conversation, whose
/// session has `workdir` as `/mnt/data`: images are saved there as `figure_N.png`, and
/// output longer than `limit` characters is cut, its full text saved there too.
pub fn tool_output(
    execution: &Execution,
    number: usize,
    workdir: &Path,
    limit: usize,
) -> Result<ToolOutput, AgentError> {
    let mut text = String::new();
    if execution.restarted {
        text.push_str(
            "[The Python session was restarted before this code ran: variables, imports and \
             functions from earlier calls are gone; files in /mnt/data remain.]\n",
        );
    }
    text.push_str(&execution.stdout);
    if !execution.stderr.is_empty() {
        ensure_newline(&mut text);
        let _ = write!(text, "[stderr]\n{}", execution.stderr);
    }
    let mut images = Vec::new();
    for bundle in &execution.results {
        ensure_newline(&mut text);
        let image = ["image/png", "image/jpeg"]
            .into_iter()
            .find_map(|mime| Some((mime, bundle.get(mime)?.as_str()?)));
        if let Some((mime, data)) = image {
            let image = save_image(workdir, mime, data)?;
            let _ = writeln!(
                text,
                "[{} {}×{} saved as {}]",
                image.mime, image.width, image.height, image.path
            );
            images.push(image);
        } else if let Some(plain) = bundle.get("text/plain").and_then(|v| v.as_str()) {
            let _ = writeln!(text, "{plain}");
        } else if let Some(kind) = bundle.keys().next() {
            let _ = writeln!(text, "[{kind} output]");
        }
    }
    if let Some(error) = &execution.error {
        ensure_newline(&mut text);
        if error.traceback.is_empty() {
            let _ = writeln!(text, "{}: {}", error.ename, error.evalue);
        } else {
            let _ = writeln!(text, "{}", error.traceback.join("\n"));
        }
    }
    match execution.status {
        Status::Ok | Status::Error => {}
        Status::Timeout => {
            ensure_newline(&mut text);
            text.push_str("[The code was stopped: it ran past the time limit.]\n");
        }
        Status::Interrupted => {
            ensure_newline(&mut text);
            text.push_str("[The code was interrupted by the user.]\n");
        }
        Status::Crashed => {
            ensure_newline(&mut text);
            text.push_str(
                "[The Python process died (see the error above); the next call starts a fresh \
                 session with the same files.]\n",
            );
        }
    }
    if !execution.files.is_empty() {
        ensure_newline(&mut text);
        let files: Vec<String> = execution
            .files
            .iter()
            .map(|f| format!("/mnt/data/{} ({})", f.path, human_size(f.size)))
            .collect();
        let _ = writeln!(text, "[Files created or changed: {}]", files.join(", "));
    }
    if text.trim().is_empty() {
        text = "[The code ran and printed nothing.]".to_owned();
    }
    let content = cut(&text, number, workdir, limit)?;
    Ok(ToolOutput {
        content: content.trim_end().to_owned(),
        images,
    })
}

fn ensure_newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

/// `text` if it fits in `limit` characters, else its head and tail around a note saying
/// how much was cut and where the whole text was saved.
fn cut(text: &str, number: usize, workdir: &Path, limit: usize) -> Result<String, AgentError> {
    let total = text.chars().count();
    if total <= limit {
        return Ok(text.to_owned());
    }
    let name = format!("call_{number}.txt");
    let saved = SafePath::parse(&format!("{OUTPUTS_DIR}/{name}"))?;
    session_files(workdir)?.write_file(&saved, text.as_bytes(), Create::Replace)?;
    let head_chars = limit * 2 / 3;
    let tail_chars = limit / 4;
    let head: String = text.chars().take(head_chars).collect();
    let tail: String = text.chars().skip(total - tail_chars).collect();
    Ok(format!(
        "{head}\n[… {cut} of {total} characters cut here; the full output is in \
         /mnt/data/{OUTPUTS_DIR}/{name} …]\n{tail}",
        cut = total - head_chars - tail_chars,
    ))
}

fn save_image(workdir: &Path, mime: &str, base64_data: &str) -> Result<SavedImage, AgentError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_data.trim())
        .map_err(|e| AgentError::Io {
            path: workdir.to_path_buf(),
            message: format!("an image result is not valid base64: {e}"),
        })?;
    let (width, height) = imagesize::blob_size(&bytes)
        .map(|size| (size.width, size.height))
        .unwrap_or((0, 0));
    let extension = if mime == "image/jpeg" { "jpg" } else { "png" };
    let files = session_files(workdir)?;
    // The first free name, taken with O_EXCL: whatever the session's code put under a
    // name (a file, a link) is never written over or through.
    let mut number = 1;
    loop {
        let name = format!("figure_{number}.{extension}");
        match files.write_file(&SafePath::parse(&name)?, &bytes, Create::New) {
            Ok(_) => {
                return Ok(SavedImage {
                    path: format!("/mnt/data/{name}"),
                    mime: mime.to_owned(),
                    width,
                    height,
                })
            }
            Err(SafeDirError::AlreadyExists(_)) if number < MAX_FIGURE_NUMBER => number += 1,
            Err(error) => return Err(error.into()),
        }
    }
}

/// The session's working directory, reached without following the links its code may
/// have planted; files sandcell writes there belong to the directory's owner.
fn session_files(workdir: &Path) -> Result<SafeDir, AgentError> {
    Ok(SafeDir::open(workdir)?.shown_as("/mnt/data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandcell_session::{ExecutionError, FileChange, MimeBundle};

    fn execution() -> Execution {
        serde_json::from_value(serde_json::json!({
            "status": "ok", "stdout": "", "stderr": "", "results": [], "error": null,
            "files": [], "duration_ms": 3, "restarted": false
        }))
        .unwrap()
    }

    // A 2×1 PNG.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAEUlEQVR4nGP4z8DAwMDAAAAHBAEAB0LKMQAAAABJRU5ErkJggg==";

    #[test]
    fn output_results_errors_and_files_are_all_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = execution();
        e.status = Status::Error;
        e.stdout = "hello\n".into();
        e.stderr = "careful".into();
        let mut text = MimeBundle::new();
        text.insert("text/plain".into(), "42".into());
        let mut image = MimeBundle::new();
        image.insert("image/png".into(), PNG.into());
        image.insert("text/plain".into(), "<Figure>".into());
        e.results = vec![text, image];
        e.error = Some(ExecutionError {
            ename: "ValueError".into(),
            evalue: "bad".into(),
            traceback: vec!["Traceback:".into(), "ValueError: bad".into()],
        });
        e.files = vec![FileChange {
            path: "out.csv".into(),
            size: 1200,
            mime: "text/csv".into(),
        }];
        let output = tool_output(&e, 1, dir.path(), DEFAULT_OUTPUT_LIMIT).unwrap();
        assert_eq!(
            output.content,
            "hello\n[stderr]\ncareful\n42\n[image/png 2×1 saved as /mnt/data/figure_1.png]\n\
             Traceback:\nValueError: bad\n[Files created or changed: /mnt/data/out.csv (1.2 kB)]"
        );
        assert_eq!(output.images.len(), 1);
        assert!(dir.path().join("figure_1.png").is_file());
        let again = tool_output(&e, 2, dir.path(), DEFAULT_OUTPUT_LIMIT).unwrap();
        assert_eq!(
            again.images[0].path, "/mnt/data/figure_2.png",
            "never overwritten"
        );
    }

    #[test]
    fn long_output_is_cut_to_head_and_tail_and_saved_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = execution();
        e.stdout = (0..5000).map(|i| format!("line {i}\n")).collect();
        let output = tool_output(&e, 7, dir.path(), 1000).unwrap();
        assert!(output.content.len() < 1300, "{}", output.content.len());
        assert!(output.content.starts_with("line 0\nline 1\n"));
        assert!(output.content.ends_with("line 4999"));
        assert!(output
            .content
            .contains("characters cut here; the full output is in /mnt/data/outputs/call_7.txt"));
        let saved = std::fs::read_to_string(dir.path().join("outputs/call_7.txt")).unwrap();
        assert_eq!(saved, e.stdout);
    }

    #[test]
    fn a_restarted_session_and_silence_are_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = execution();
        assert_eq!(
            tool_output(&e, 1, dir.path(), 100).unwrap().content,
            "[The code ran and printed nothing.]"
        );
        e.restarted = true;
        assert!(tool_output(&e, 1, dir.path(), 1000)
            .unwrap()
            .content
            .contains("The Python session was restarted"));
    }

    /// A host file outside the working directory, and its content and modification time.
    fn canary() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        (String, std::time::SystemTime),
    ) {
        let outside = tempfile::tempdir().unwrap();
        let canary = outside.path().join("canary");
        std::fs::write(&canary, "keep").unwrap();
        let state = canary_state(&canary);
        (outside, canary, state)
    }

    fn canary_state(canary: &Path) -> (String, std::time::SystemTime) {
        (
            std::fs::read_to_string(canary).unwrap(),
            std::fs::metadata(canary).unwrap().modified().unwrap(),
        )
    }

    #[test]
    fn a_symlink_planted_for_the_saved_output_is_not_followed() {
        let (outside, canary, before) = canary();
        let mut e = execution();
        e.stdout = "x".repeat(500);
        // At the file name, and as the `outputs` folder itself.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outputs")).unwrap();
        std::os::unix::fs::symlink(&canary, dir.path().join("outputs/call_1.txt")).unwrap();
        let error = tool_output(&e, 1, dir.path(), 100).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("outputs")).unwrap();
        assert!(tool_output(&e, 1, dir.path(), 100).is_err());
        assert_eq!(canary_state(&canary), before);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        // A FIFO there would block a write with no reader forever: it is replaced instead.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outputs")).unwrap();
        let fifo = dir.path().join("outputs/call_1.txt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        tool_output(&e, 1, dir.path(), 100).unwrap();
        assert_eq!(std::fs::read_to_string(&fifo).unwrap(), e.stdout);
    }

    #[test]
    fn an_image_is_never_written_through_a_planted_figure_name() {
        let (_outside, canary, before) = canary();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&canary, dir.path().join("figure_1.png")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("figure_2.png")).unwrap();
        let mut e = execution();
        let mut image = MimeBundle::new();
        image.insert("image/png".into(), PNG.into());
        e.results = vec![image];
        let output = tool_output(&e, 1, dir.path(), DEFAULT_OUTPUT_LIMIT).unwrap();
        assert_eq!(output.images[0].path, "/mnt/data/figure_3.png");
        assert!(std::fs::symlink_metadata(dir.path().join("figure_3.png"))
            .unwrap()
            .is_file());
        assert_eq!(canary_state(&canary), before);
    }
}
