//! The record of a conversation, one JSON object per line, appended as it happens (so a
//! crash loses nothing already said), and rebuilt into what the model is sent.

use sandcell_llm::{Conversation, ImageBase64, Message, ToolCall};
use sandcell_session::Execution;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::error::AgentError;
use crate::event::TokenUsage;

/// The version of the record format, in the first line.
const FORMAT_VERSION: u32 = 1;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line.
    Start { version: u32, model: String },
    /// The person's message, with the images they gave (shown to models with vision).
    User {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<ImageBase64>,
    },
    /// One assistant turn: its words and the code it asked to run.
    Assistant {
        text: String,
        tool_calls: Vec<RecordedCall>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<TokenUsage>,
    },
    /// A tool call and what came of it. `content` is exactly what the model read;
    /// `execution` is `None` for a call that did not run (cancelled, not valid).
    Tool {
        call_id: String,
        code: String,
        content: String,
        execution: Option<Box<Execution>>,
        /// Where its images were saved (`/mnt/data/figure_1.png`), in result order.
        images: Vec<String>,
    },
    /// Something that happened outside the model's turn (the model changed, a turn was
    /// cancelled); not sent to the model.
    Note { text: String },
}

/// A tool call as the model made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Where a transcript's records are written through as they are added (a JSON Lines
/// file, a database).
pub trait RecordSink: Send {
    fn append(&mut self, record: &Record) -> Result<(), AgentError>;
}

/// A JSON Lines file.
struct JsonLinesFile {
    path: PathBuf,
    file: std::fs::File,
}

impl RecordSink for JsonLinesFile {
    fn append(&mut self, record: &Record) -> Result<(), AgentError> {
        let mut line = serde_json::to_string(record).map_err(|e| AgentError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| AgentError::io(self.path.clone(), e))
    }
}

/// A conversation's records, kept in memory and written through to a sink, if any.
#[derive(Default)]
pub struct Transcript {
    records: Vec<Record>,
    sink: Option<Box<dyn RecordSink>>,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl Transcript {
    /// A new transcript in memory only.
    pub fn in_memory(model: &str) -> Transcript {
        Transcript {
            records: vec![start(model)],
            sink: None,
        }
    }

    /// A new transcript whose records go to `sink` (the start record too).
    pub fn with_sink(model: &str, sink: Box<dyn RecordSink>) -> Result<Transcript, AgentError> {
        let mut transcript = Transcript {
            records: Vec::new(),
            sink: Some(sink),
        };
        transcript.push(start(model))?;
        Ok(transcript)
    }

    /// A transcript read back from `records` (already stored); later records go to `sink`.
    pub fn resume(records: Vec<Record>, sink: Box<dyn RecordSink>) -> Transcript {
        Transcript {
            records,
            sink: Some(sink),
        }
    }

    /// A new transcript written to `path` as it grows (an existing file is replaced).
    pub fn create(path: &Path, model: &str) -> Result<Transcript, AgentError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| AgentError::io(parent, e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| AgentError::io(path, e))?;
        let sink = JsonLinesFile {
            path: path.to_path_buf(),
            file,
        };
        Transcript::with_sink(model, Box::new(sink))
    }

    /// Reads a saved transcript (to export or continue it); later records go to the same file.
    pub fn open(path: &Path) -> Result<Transcript, AgentError> {
        let file = std::fs::File::open(path).map_err(|e| AgentError::io(path, e))?;
        let mut records = Vec::new();
        for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
            let bad = |message: String| AgentError::Transcript {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            };
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            records.push(serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?);
        }
        match records.first() {
            Some(Record::Start { version, .. }) if *version <= FORMAT_VERSION => {}
            _ => {
                return Err(AgentError::Transcript {
                    path: path.to_path_buf(),
                    line: 1,
                    message: "it does not start with a supported start record".into(),
                })
            }
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| AgentError::io(path, e))?;
        let sink = JsonLinesFile {
            path: path.to_path_buf(),
            file,
        };
        Ok(Transcript::resume(records, Box::new(sink)))
    }

    /// Writes a copy of every record so far to `path`, as JSON Lines.
    pub fn save_json_lines(&self, path: &Path) -> Result<(), AgentError> {
        let file = std::fs::File::create(path).map_err(|e| AgentError::io(path, e))?;
        let mut copy = JsonLinesFile {
            path: path.to_path_buf(),
            file,
        };
        self.records
            .iter()
            .try_for_each(|record| copy.append(record))
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends a record (and writes it through, when there is a file).
    pub fn push(&mut self, record: Record) -> Result<(), AgentError> {
        if let Some(sink) = &mut self.sink {
            sink.append(&record)?;
        }
        self.records.push(record);
        Ok(())
    }

    /// How many `python` calls the conversation has made.
    pub fn tool_calls(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Tool { .. }))
            .count()
    }

    /// Tokens used by the model replies recorded so far.
    pub fn usage(&self) -> TokenUsage {
        let mut total = TokenUsage::default();
        for record in &self.records {
            if let Record::Assistant {
                usage: Some(usage), ..
            } = record
            {
                total += *usage;
            }
        }
        total
    }

    /// What the model is sent. With `vision`, the images of the calls made since the
    /// person's last message follow their results as image input (older images are sent
    /// only as their descriptions, which stay in the tool results).
    pub fn conversation(&self, system: String, vision: bool) -> Conversation {
        let last_user = self
            .records
            .iter()
            .rposition(|r| matches!(r, Record::User { .. }))
            .unwrap_or(0);
        let mut messages = Vec::new();
        let mut pending_images: Vec<ImageBase64> = Vec::new();
        for (index, record) in self.records.iter().enumerate() {
            if !matches!(record, Record::Tool { .. }) {
                flush_images(&mut messages, &mut pending_images);
            }
            match record {
                Record::Start { .. } | Record::Note { .. } => {}
                Record::User { text, images } => messages.push(Message::User {
                    text: text.clone(),
                    images: if vision { images.clone() } else { Vec::new() },
                }),
                Record::Assistant {
                    text, tool_calls, ..
                } => messages.push(Message::Assistant {
                    text: text.clone(),
                    tool_calls: tool_calls
                        .iter()
                        .map(|c| ToolCall {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        })
                        .collect(),
                }),
                Record::Tool {
                    call_id,
                    content,
                    execution,
                    ..
                } => {
                    messages.push(Message::ToolResult {
                        call_id: call_id.clone(),
                        name: "python".to_owned(),
                        content: content.clone(),
                    });
                    if let Some(execution) =
                        execution.as_ref().filter(|_| vision && index > last_user)
                    {
                        pending_images.extend(execution.results.iter().filter_map(|bundle| {
                            let png = bundle.get("image/png")?.as_str()?;
                            Some(ImageBase64::png(png.trim()))
                        }));
                    }
                }
            }
        }
        flush_images(&mut messages, &mut pending_images);
        Conversation {
            system: Some(system),
            messages,
        }
    }
}

/// Images go in a user message after all the results of a turn's calls: every protocol
/// accepts images from the user, not all of them in tool results.
fn flush_images(messages: &mut Vec<Message>, images: &mut Vec<ImageBase64>) {
    if images.is_empty() {
        return;
    }
    messages.push(Message::User {
        text: "The images produced by the code above.".to_owned(),
        images: std::mem::take(images),
    });
}

fn start(model: &str) -> Record {
    Record::Start {
        version: FORMAT_VERSION,
        model: model.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(call_id: &str, png: Option<&str>) -> Record {
        let results = png
            .map(|p| vec![serde_json::json!({"image/png": p})])
            .unwrap_or_default();
        Record::Tool {
            call_id: call_id.into(),
            code: "1".into(),
            content: format!("result of {call_id}"),
            execution: Some(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "ok", "stdout": "", "stderr": "", "results": results, "error": null,
                    "files": [], "duration_ms": 1, "restarted": false
                }))
                .unwrap(),
            )),
            images: vec![],
        }
    }

    fn call(id: &str) -> RecordedCall {
        RecordedCall {
            id: id.into(),
            name: "python".into(),
            arguments: r#"{"code":"1"}"#.into(),
        }
    }

    #[test]
    fn images_of_the_current_turn_follow_its_tool_results() {
        let mut t = Transcript::in_memory("m");
        for record in [
            Record::User {
                text: "plot".into(),
                images: Vec::new(),
            },
            Record::Assistant {
                text: String::new(),
                tool_calls: vec![call("a")],
                usage: None,
            },
            tool("a", Some("OLD")),
            Record::Assistant {
                text: "done".into(),
                tool_calls: vec![],
                usage: None,
            },
            Record::User {
                text: "again".into(),
                images: Vec::new(),
            },
            Record::Assistant {
                text: String::new(),
                tool_calls: vec![call("b"), call("c")],
                usage: None,
            },
            tool("b", Some("NEW1")),
            tool("c", Some("NEW2")),
        ] {
            t.push(record).unwrap();
        }
        let with = t.conversation("sys".into(), true);
        let images: Vec<&Message> = with
            .messages
            .iter()
            .filter(|m| matches!(m, Message::User { images, .. } if !images.is_empty()))
            .collect();
        assert_eq!(images.len(), 1, "only the current turn's images: {with:?}");
        assert!(matches!(
            with.messages.last(),
            Some(Message::User { images, .. })
                if images == &vec![ImageBase64::png("NEW1"), ImageBase64::png("NEW2")]
        ));
        assert!(matches!(
            &with.messages[with.messages.len() - 2],
            Message::ToolResult { call_id, .. } if call_id == "c"
        ));
        let without = t.conversation("sys".into(), false);
        assert_eq!(without.messages.len(), with.messages.len() - 1);
    }

    #[test]
    fn the_persons_images_go_to_a_model_with_vision_and_older_records_still_read() {
        let older: Record = serde_json::from_str(r#"{"type":"user","text":"hi"}"#).unwrap();
        assert_eq!(
            older,
            Record::User {
                text: "hi".into(),
                images: Vec::new()
            }
        );
        let mut t = Transcript::in_memory("m");
        let photo = ImageBase64 {
            media_type: "image/jpeg".into(),
            data: "JPEG".into(),
        };
        t.push(Record::User {
            text: "look".into(),
            images: vec![photo.clone()],
        })
        .unwrap();
        let user_images = |vision| match &t.conversation("sys".into(), vision).messages[0] {
            Message::User { images, .. } => images.clone(),
            other => panic!("not the person's message: {other:?}"),
        };
        assert_eq!(user_images(true), vec![photo]);
        assert!(user_images(false).is_empty());
    }

    #[test]
    fn a_saved_transcript_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/conversation.jsonl");
        let mut t = Transcript::create(&path, "openai:gpt-4.1").unwrap();
        t.push(Record::User {
            text: "hi".into(),
            images: Vec::new(),
        })
        .unwrap();
        t.push(tool("a", None)).unwrap();
        let mut back = Transcript::open(&path).unwrap();
        assert_eq!(back.records(), t.records());
        let copy = dir.path().join("copy.jsonl");
        t.save_json_lines(&copy).unwrap();
        assert_eq!(Transcript::open(&copy).unwrap().records(), t.records());
        back.push(Record::Note {
            text: "more".into(),
        })
        .unwrap();
        assert_eq!(Transcript::open(&path).unwrap().records().len(), 4);

        std::fs::write(&path, "{\"type\":\"user\",\"text\":\"x\"}\n").unwrap();
        let error = Transcript::open(&path).unwrap_err().to_string();
        assert!(error.contains("is not a sandcell conversation"), "{error}");
    }
}
