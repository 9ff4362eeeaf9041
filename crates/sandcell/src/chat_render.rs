//! How `sandcell chat` shows a turn: on a terminal (streamed text, highlighted code,
//! output, images saved and, where the terminal can, drawn), or as JSON Lines.

use crate::kept_files::KeptFiles;
use base64::Engine;
use sandcell_agent::{AgentEvent, TokenUsage};
use sandcell_safedir::{SafeDir, SafePath};
use sandcell_session::Status;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use syntect::easy::HighlightLines;
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;
use syntect::util::as_24_bit_terminal_escaped;

const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";
/// Images larger than this are saved but not drawn (the session's code controls what is
/// in the file by the time it is read).
const MAX_DRAWN_IMAGE_BYTES: u64 = 32 * 1024 * 1024;

/// Renders agent events, with files at the paths the host keeps them.
pub struct ChatRenderer {
    files: KeptFiles,
    output: Output,
}

enum Output {
    Json,
    Terminal(Box<TerminalRenderer>),
}

impl ChatRenderer {
    pub fn new(json: bool, workdir: &Path, files: KeptFiles) -> ChatRenderer {
        let output = if json {
            Output::Json
        } else {
            Output::Terminal(Box::new(TerminalRenderer::new(workdir)))
        };
        ChatRenderer { files, output }
    }

    /// Where the files the code makes are kept.
    pub fn files(&self) -> &KeptFiles {
        &self.files
    }

    pub fn event(&mut self, event: &AgentEvent) {
        self.files.keep(event);
        match &mut self.output {
            Output::Json => print_json(&self.files.on_host(event)),
            Output::Terminal(terminal) => terminal.event(event, &self.files),
        }
    }

    /// The turn is over; `outcome` is `answered`, `step_limit`, `cancelled` or `error`.
    pub fn end(&mut self, outcome: &str, message: Option<&str>, usage: TokenUsage) {
        match &mut self.output {
            Output::Json => print_json(&serde_json::json!({
                "type": "end",
                "outcome": outcome,
                "message": message,
                "usage": usage,
            })),
            Output::Terminal(terminal) => terminal.end(message),
        }
    }
}

fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, value).is_ok() {
        let _ = writeln!(out);
        let _ = out.flush();
    }
}

/// Streams a turn to a terminal (or a plain file, without colours and images).
pub struct TerminalRenderer {
    workdir: PathBuf,
    color: bool,
    images: Option<ImageProtocol>,
    highlighter: Option<Highlighter>,
    /// The call whose code is being shown, and its unfinished last line.
    code: Option<(String, String)>,
    /// Whether the cursor is at the start of a line.
    at_line_start: bool,
    turn_usage: TokenUsage,
}

struct Highlighter {
    syntaxes: SyntaxSet,
    theme: Theme,
}

impl TerminalRenderer {
    fn new(workdir: &Path) -> TerminalRenderer {
        let tty = std::io::stdout().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none();
        let highlighter = color.then(|| {
            let themes = ThemeSet::load_defaults();
            Highlighter {
                syntaxes: SyntaxSet::load_defaults_newlines(),
                theme: themes.themes["base16-ocean.dark"].clone(),
            }
        });
        TerminalRenderer {
            workdir: workdir.to_path_buf(),
            color,
            images: if tty { ImageProtocol::detect() } else { None },
            highlighter,
            code: None,
            at_line_start: true,
            turn_usage: TokenUsage::default(),
        }
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.at_line_start = text.ends_with('\n');
    }

    fn new_line(&mut self) {
        if !self.at_line_start {
            self.write("\n");
        }
    }

    fn event(&mut self, event: &AgentEvent, files: &KeptFiles) {
        match event {
            AgentEvent::TextDelta { text } => self.write(text),
            AgentEvent::CodeDelta { call_id, text } => {
                if self.code.as_ref().map(|(id, _)| id) != Some(call_id) {
                    self.start_code(call_id);
                }
                let Some((_, pending)) = &mut self.code else {
                    return;
                };
                pending.push_str(text);
                // Whole lines are highlighted as they complete.
                if let Some(end) = pending.rfind('\n') {
                    let lines: String = pending.drain(..=end).collect();
                    let shown = self.highlight(&lines);
                    self.write(&shown);
                }
            }
            AgentEvent::Code { call_id, code } => {
                if self.code.as_ref().map(|(id, _)| id) != Some(call_id) {
                    // The code arrived whole (no deltas were shown).
                    self.start_code(call_id);
                    if let Some((_, pending)) = &mut self.code {
                        pending.push_str(code);
                    }
                }
                let rest = self
                    .code
                    .as_mut()
                    .map(|(_, pending)| std::mem::take(pending))
                    .unwrap_or_default();
                let shown = self.highlight(&rest);
                self.write(&shown);
                self.new_line();
                let rule = self.paint(DIM, "─── output ───\n");
                self.write(&rule);
            }
            AgentEvent::Stdout { text, .. } => self.write(text),
            AgentEvent::Stderr { text, .. } => {
                let text = self.paint(RED, text);
                self.write(&text);
            }
            AgentEvent::Result { data, .. } => {
                let is_image = data.contains_key("image/png") || data.contains_key("image/jpeg");
                if let (false, Some(text)) =
                    (is_image, data.get("text/plain").and_then(|v| v.as_str()))
                {
                    self.new_line();
                    self.write(&format!("{text}\n"));
                }
            }
            AgentEvent::Error { error, .. } => {
                self.new_line();
                let text = self.paint(RED, &format!("{}\n", error.traceback.join("\n")));
                self.write(&text);
            }
            AgentEvent::Execution {
                execution, images, ..
            } => {
                self.new_line();
                if execution.restarted {
                    let note = self.paint(
                        DIM,
                        "[the Python session was restarted: variables are gone, files remain]\n",
                    );
                    self.write(&note);
                }
                if execution.status != Status::Ok && execution.status != Status::Error {
                    let status =
                        self.paint(RED, &format!("[{:?}]\n", execution.status).to_lowercase());
                    self.write(&status);
                }
                for image in images {
                    self.show_image(image, &files.host_path(image));
                }
                for file in &execution.files {
                    let line = self.paint(
                        DIM,
                        &format!(
                            "[file {} ({} bytes)]\n",
                            files.host_path(&file.path).display(),
                            file.size
                        ),
                    );
                    self.write(&line);
                }
                let rule = self.paint(DIM, "──────────────\n");
                self.write(&rule);
                self.code = None;
            }
            AgentEvent::Retrying {
                delay_ms, reason, ..
            } => {
                self.new_line();
                let line = self.paint(
                    DIM,
                    &format!(
                        "[the model is not answering ({reason}); trying again in {:.1} s]\n",
                        *delay_ms as f64 / 1000.0
                    ),
                );
                self.write(&line);
            }
            AgentEvent::Usage { request, .. } => {
                self.turn_usage += *request;
            }
            AgentEvent::Final { .. } => self.new_line(),
        }
    }

    fn end(&mut self, message: Option<&str>) {
        self.new_line();
        if let Some(message) = message {
            let _ = writeln!(std::io::stderr(), "sandcell: {message}");
        }
        let usage = self.turn_usage;
        if usage != TokenUsage::default() {
            let line = self.paint(
                DIM,
                &format!(
                    "[tokens: {} in, {} out]\n",
                    usage.input_tokens, usage.output_tokens
                ),
            );
            self.write(&line);
        }
        self.turn_usage = TokenUsage::default();
    }

    fn start_code(&mut self, call_id: &str) {
        self.new_line();
        let rule = self.paint(DIM, "─── python ───\n");
        self.write(&rule);
        self.code = Some((call_id.to_owned(), String::new()));
    }

    fn highlight(&self, code: &str) -> String {
        let Some(highlighter) = &self.highlighter else {
            return code.to_owned();
        };
        let Some(syntax) = highlighter.syntaxes.find_syntax_by_extension("py") else {
            return code.to_owned();
        };
        // One highlighter per piece: a piece is whole lines, so only multi-line strings
        // spanning two pieces lose their colour.
        let mut lines = HighlightLines::new(syntax, &highlighter.theme);
        let mut shown = String::new();
        for line in syntect::util::LinesWithEndings::from(code) {
            match lines.highlight_line(line, &highlighter.syntaxes) {
                Ok(ranges) => shown.push_str(&as_24_bit_terminal_escaped(&ranges, false)),
                Err(_) => shown.push_str(line),
            }
        }
        shown.push_str(RESET);
        shown
    }

    /// The bytes of an image the agent saved in `/mnt/data`, read without following a
    /// link the session's code may have put in its place since.
    fn read_image(&self, session_path: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let relative = session_path.strip_prefix("/mnt/data/")?;
        let (file, _) = SafeDir::open(&self.workdir)
            .ok()?
            .open_file(&SafePath::parse(relative).ok()?)
            .ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_DRAWN_IMAGE_BYTES)
            .read_to_end(&mut bytes)
            .ok()?;
        Some(bytes)
    }

    fn show_image(&mut self, session_path: &str, path: &Path) {
        let line = format!("[image saved as {}]\n", path.display());
        self.write(&line);
        if let (Some(protocol), Some(bytes)) = (self.images, self.read_image(session_path)) {
            let drawn = protocol.escape(&bytes);
            self.write(&drawn);
            self.write("\n");
        }
    }
}

/// Terminal image protocols sandcell can draw with.
#[derive(Debug, Clone, Copy)]
enum ImageProtocol {
    /// kitty's graphics protocol (also Ghostty, WezTerm).
    Kitty,
    /// iTerm2's inline images (also WezTerm, VS Code's terminal).
    Iterm2,
}

impl ImageProtocol {
    /// What the terminal says it is: no query is sent, since a terminal that does not
    /// answer would leave the reply in the user's input.
    fn detect() -> Option<ImageProtocol> {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        if var("TERM").contains("kitty")
            || std::env::var_os("KITTY_WINDOW_ID").is_some()
            || var("TERM_PROGRAM") == "ghostty"
        {
            return Some(ImageProtocol::Kitty);
        }
        if matches!(
            var("TERM_PROGRAM").as_str(),
            "iTerm.app" | "WezTerm" | "vscode"
        ) {
            return Some(ImageProtocol::Iterm2);
        }
        None
    }

    fn escape(self, png: &[u8]) -> String {
        let data = base64::engine::general_purpose::STANDARD.encode(png);
        match self {
            ImageProtocol::Iterm2 => format!(
                "\x1b]1337;File=inline=1;size={};preserveAspectRatio=1:{data}\x07",
                png.len()
            ),
            ImageProtocol::Kitty => {
                // The payload goes in chunks of at most 4096 bytes, `m=1` on all but the last.
                let chunks: Vec<&[u8]> = data.as_bytes().chunks(4096).collect();
                let mut out = String::new();
                for (index, chunk) in chunks.iter().enumerate() {
                    let more = u8::from(index + 1 < chunks.len());
                    let control = if index == 0 {
                        format!("a=T,f=100,m={more}")
                    } else {
                        format!("m={more}")
                    };
                    out.push_str(&format!(
                        "\x1b_G{control};{}\x1b\\",
                        String::from_utf8_lossy(chunk)
                    ));
                }
                out
            }
        }
    }
}
