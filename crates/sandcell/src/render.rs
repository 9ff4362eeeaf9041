//! Human output of `sandcell run`: each cell's header, streamed text, text results, images
//! saved as files.

use base64::Engine;
use sandcell_safedir::{Create, SafeDir, SafePath};
use sandcell_session::{ExecEvent, Execution, MimeBundle, Status};
use std::io::Write;
use std::path::PathBuf;

/// Image types saved to files, with their extensions; the first one a result has wins.
const IMAGE_TYPES: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/svg+xml", "svg"),
];

pub struct HumanRenderer {
    /// Where images go, reached without following links (it may be the working directory).
    out: SafeDir,
    /// The same directory as the person named it, for messages.
    out_dir: PathBuf,
    /// The working directory is removed after the run: files there are not kept.
    temporary_workdir: bool,
    cell: usize,
    images: usize,
}

impl HumanRenderer {
    pub fn new(out: SafeDir, out_dir: PathBuf, temporary_workdir: bool) -> Self {
        Self {
            out,
            out_dir,
            temporary_workdir,
            cell: 0,
            images: 0,
        }
    }

    /// Starts cell number `cell` (from 1) with a header line naming it, so each output
    /// can be told apart.
    pub fn start_cell(&mut self, cell: usize, label: &str) {
        self.cell = cell;
        self.images = 0;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{cell}] {label}");
        let _ = out.flush();
    }

    pub fn event(&mut self, event: &ExecEvent) {
        match event {
            ExecEvent::Stdout(text) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            ExecEvent::Stderr(text) => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            ExecEvent::Result(bundle) => self.result(bundle),
            // Errors are printed once the cell is over, with the final status.
            ExecEvent::Error(_) => {}
        }
    }

    fn result(&mut self, bundle: &MimeBundle) {
        for (mime, extension) in IMAGE_TYPES {
            let Some(data) = bundle.get(*mime).and_then(|v| v.as_str()) else {
                continue;
            };
            let bytes = if *mime == "image/svg+xml" {
                Ok(data.as_bytes().to_vec())
            } else {
                base64::engine::general_purpose::STANDARD.decode(data.trim())
            };
            self.images += 1;
            let name = format!("cell{}-output{}.{extension}", self.cell, self.images);
            let path = self.out_dir.join(&name);
            match bytes.map_err(|e| e.to_string()).and_then(|bytes| {
                let name = SafePath::parse(&name).map_err(|e| e.to_string())?;
                self.out
                    .write_file(&name, &bytes, Create::Replace)
                    .map_err(|e| e.to_string())
            }) {
                Ok(_) => println!("[{mime} saved to {}]", path.display()),
                Err(e) => eprintln!("sandcell: cannot save {mime} to {}: {e}", path.display()),
            }
            return;
        }
        if let Some(text) = bundle.get("text/plain").and_then(|v| v.as_str()) {
            println!("{text}");
        }
    }

    pub fn finish_cell(&mut self, label: &str, execution: &Execution) {
        if execution.restarted {
            eprintln!(
                "sandcell: note: the Python session was restarted before {label}; earlier variables are gone, files are kept"
            );
        }
        if let Some(error) = &execution.error {
            let mut err = std::io::stderr().lock();
            for line in &error.traceback {
                let _ = writeln!(err, "{line}");
            }
        }
        if execution.status != Status::Ok {
            let status = serde_json::to_value(execution.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            eprintln!("sandcell: {label} ended with status {status}");
        }
        for file in &execution.files {
            println!("[file {} ({} bytes, {})]", file.path, file.size, file.mime);
        }
        if self.temporary_workdir && !execution.files.is_empty() {
            eprintln!("sandcell: note: the working directory is temporary; pass --workdir DIR to keep these files");
        }
    }
}
