//! The outputs of one execution as they arrive, held within the execution's budget:
//! whatever a cell writes, the host keeps at most the first and the last half of
//! `Limits::output_mib` of stdout and stderr, `Limits::results_mib` of rich results and
//! `Limits::max_results` results. Events reach the caller under the same bounds, so
//! every front end built on `on_event` is bounded too.

use crate::execution::{ExecEvent, ExecutionError, MimeBundle};
use crate::limits::Limits;
use crate::protocol::{Frame, SessionMessage, StreamName};
use std::collections::VecDeque;

/// What an execution keeps, once it has ended.
pub(crate) struct Kept {
    pub stdout: String,
    pub stderr: String,
    pub results: Vec<MimeBundle>,
    /// Which of `results` is the last expression's value.
    pub execute_result: Option<usize>,
    /// Something was dropped to stay within the budget (a marker or note says what).
    pub truncated: bool,
}

/// Bytes of an error's value kept when the error does not fit in the budget.
const ERROR_VALUE_KEPT: usize = 4096;

pub(crate) struct Outputs {
    stdout: String,
    stderr: String,
    results: Vec<MimeBundle>,
    execute_result: Option<usize>,
    error: Option<ExecutionError>,
    /// Bytes of stream text still sent on as it comes (the head).
    head_left: usize,
    /// The most recent text past the head, at most `tail_capacity` bytes, in order.
    tail: VecDeque<(StreamName, String)>,
    tail_bytes: usize,
    tail_capacity: usize,
    /// Bytes dropped between head and tail, per stream (stdout, stderr).
    dropped: [u64; 2],
    results_bytes_left: usize,
    results_limit_mib: u64,
    results_left: u64,
    /// Results not kept because `max_results` was reached.
    results_uncounted: u64,
    truncated: bool,
}

impl Outputs {
    pub(crate) fn new(limits: &Limits) -> Self {
        let output = limits.output_bytes();
        Self {
            stdout: String::new(),
            stderr: String::new(),
            results: Vec::new(),
            execute_result: None,
            error: None,
            head_left: output - output / 2,
            tail: VecDeque::new(),
            tail_bytes: 0,
            tail_capacity: output / 2,
            dropped: [0, 0],
            results_bytes_left: limits.results_bytes(),
            results_limit_mib: limits.results_mib,
            results_left: limits.max_results,
            results_uncounted: 0,
            truncated: false,
        }
    }

    /// The last error the cell reported.
    pub(crate) fn error(&self) -> Option<&ExecutionError> {
        self.error.as_ref()
    }

    pub(crate) fn take_error(&mut self) -> Option<ExecutionError> {
        self.error.take()
    }

    pub(crate) fn apply(&mut self, frame: Frame, on_event: &mut (dyn FnMut(&ExecEvent) + Send)) {
        match frame {
            Frame::Oversized { bytes } => {
                let note = format!(
                    "[… an output of {} bytes was dropped: larger than the {} MiB the host accepts …]",
                    thousands(bytes),
                    self.results_limit_mib
                );
                self.truncated = true;
                self.push_result(note_bundle(note), on_event);
            }
            Frame::Message { message, bytes } => match message {
                SessionMessage::Stream { name, text } => self.stream(name, text, on_event),
                SessionMessage::OutputDropped { name, bytes } => {
                    self.dropped[index(name)] += bytes;
                    self.truncated = true;
                    // What follows comes after the gap: it is the tail, whatever is left
                    // of the head.
                    self.head_left = 0;
                }
                SessionMessage::DisplayData { data } => {
                    self.result(data, bytes, on_event);
                }
                SessionMessage::ExecuteResult { data } => {
                    if self.result(data, bytes, on_event) {
                        self.execute_result = Some(self.results.len() - 1);
                    }
                }
                SessionMessage::ResultDropped { bytes, mimes } => {
                    self.drop_result(bytes, &mimes.join(", "), on_event)
                }
                SessionMessage::Error {
                    ename,
                    mut evalue,
                    mut traceback,
                } => {
                    // Errors share the results' budget: a cell can report many, and huge.
                    if bytes > self.results_bytes_left {
                        self.truncated = true;
                        evalue.truncate(floor_char_boundary(&evalue, ERROR_VALUE_KEPT));
                        traceback = vec![format!(
                            "[… a traceback of {} bytes was dropped: an execution keeps at most {} MiB of results and errors …]",
                            thousands(bytes as u64),
                            self.results_limit_mib
                        )];
                    } else {
                        self.results_bytes_left -= bytes;
                    }
                    let error = ExecutionError {
                        ename,
                        evalue,
                        traceback,
                    };
                    on_event(&ExecEvent::Error(error.clone()));
                    self.error = Some(error);
                }
                SessionMessage::Ready
                | SessionMessage::Failed { .. }
                | SessionMessage::Done { .. }
                | SessionMessage::CompleteReply { .. } => {}
            },
        }
    }

    fn stream(
        &mut self,
        name: StreamName,
        mut text: String,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) {
        if self.head_left > 0 {
            let head_end = floor_char_boundary(&text, self.head_left);
            let rest = text.split_off(head_end);
            self.head_left -= text.len();
            if !text.is_empty() {
                self.keep(name, text, on_event);
            }
            text = rest;
        }
        if text.is_empty() {
            return;
        }
        self.tail_bytes += text.len();
        self.tail.push_back((name, text));
        while self.tail_bytes > self.tail_capacity {
            let excess = self.tail_bytes - self.tail_capacity;
            let Some((name, front)) = self.tail.front_mut() else {
                break;
            };
            let name = *name;
            let cut = if excess >= front.len() {
                front.len()
            } else {
                ceil_char_boundary(front, excess)
            };
            self.dropped[index(name)] += cut as u64;
            self.tail_bytes -= cut;
            self.truncated = true;
            if cut == front.len() {
                self.tail.pop_front();
            } else {
                front.drain(..cut);
            }
        }
    }

    /// Keeps stream text and passes it on.
    fn keep(
        &mut self,
        name: StreamName,
        text: String,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) {
        match name {
            StreamName::Stdout => {
                self.stdout.push_str(&text);
                on_event(&ExecEvent::Stdout(text));
            }
            StreamName::Stderr => {
                self.stderr.push_str(&text);
                on_event(&ExecEvent::Stderr(text));
            }
        }
    }

    /// Keeps a result within the budget; true when `data` itself was kept (not a note
    /// in its place, not dropped).
    fn result(
        &mut self,
        data: MimeBundle,
        frame_bytes: usize,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) -> bool {
        if frame_bytes > self.results_bytes_left {
            let mimes: Vec<&str> = data.keys().map(String::as_str).collect();
            self.drop_result(frame_bytes as u64, &mimes.join(", "), on_event);
            return false;
        }
        if self.results_left > 0 {
            self.results_bytes_left -= frame_bytes;
        }
        self.push_result(data, on_event)
    }

    fn drop_result(
        &mut self,
        bytes: u64,
        mimes: &str,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) {
        let note = format!(
            "[… a result of {} bytes ({mimes}) was dropped: an execution keeps at most {} MiB of results …]",
            thousands(bytes),
            self.results_limit_mib
        );
        self.truncated = true;
        self.push_result(note_bundle(note), on_event);
    }

    /// Keeps a result if the count allows; says whether it did.
    fn push_result(
        &mut self,
        data: MimeBundle,
        on_event: &mut (dyn FnMut(&ExecEvent) + Send),
    ) -> bool {
        if self.results_left == 0 {
            self.results_uncounted += 1;
            self.truncated = true;
            return false;
        }
        self.results_left -= 1;
        on_event(&ExecEvent::Result(data.clone()));
        self.results.push(data);
        true
    }

    /// The tail after a marker of what was dropped, and a note for uncounted results.
    pub(crate) fn finish(mut self, on_event: &mut (dyn FnMut(&ExecEvent) + Send)) -> Kept {
        for name in [StreamName::Stdout, StreamName::Stderr] {
            let dropped = self.dropped[index(name)];
            if dropped == 0 {
                continue;
            }
            let text = match name {
                StreamName::Stdout => &self.stdout,
                StreamName::Stderr => &self.stderr,
            };
            let newline = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let marker = format!(
                "{newline}[… {} bytes of output dropped …]\n",
                thousands(dropped)
            );
            self.keep(name, marker, on_event);
        }
        while let Some((name, text)) = self.tail.pop_front() {
            self.keep(name, text, on_event);
        }
        if self.results_uncounted > 0 {
            let note = note_bundle(format!(
                "[… {} more results dropped: an execution keeps at most {} …]",
                thousands(self.results_uncounted),
                self.results.len()
            ));
            on_event(&ExecEvent::Result(note.clone()));
            self.results.push(note);
        }
        Kept {
            stdout: self.stdout,
            stderr: self.stderr,
            results: self.results,
            execute_result: self.execute_result,
            truncated: self.truncated,
        }
    }
}

fn index(name: StreamName) -> usize {
    match name {
        StreamName::Stdout => 0,
        StreamName::Stderr => 1,
    }
}

fn note_bundle(note: String) -> MimeBundle {
    let mut bundle = MimeBundle::new();
    bundle.insert("text/plain".into(), note.into());
    bundle
}

/// The largest char boundary at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// The smallest char boundary at or above `at`.
fn ceil_char_boundary(text: &str, at: usize) -> usize {
    (at..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len())
}

/// 1987654321 → "1,987,654,321".
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(output_bytes: u64) -> Limits {
        // Whole MiB only: tests scale the text instead.
        Limits {
            output_mib: output_bytes,
            results_mib: 1,
            max_results: 3,
            ..Limits::default()
        }
    }

    fn stream(name: StreamName, text: &str) -> Frame {
        Frame::Message {
            message: SessionMessage::Stream {
                name,
                text: text.into(),
            },
            bytes: text.len(),
        }
    }

    fn result(bytes: usize) -> Frame {
        let mut data = MimeBundle::new();
        data.insert("text/html".into(), "x".repeat(bytes).into());
        Frame::Message {
            message: SessionMessage::DisplayData { data },
            bytes,
        }
    }

    /// Feeds frames; returns what was kept and what the events carried.
    fn feed(limits: &Limits, frames: Vec<Frame>) -> (Kept, String, String, Vec<MimeBundle>) {
        let (mut stdout, mut stderr, mut results) = (String::new(), String::new(), Vec::new());
        let mut on_event = |event: &ExecEvent| match event {
            ExecEvent::Stdout(text) => stdout.push_str(text),
            ExecEvent::Stderr(text) => stderr.push_str(text),
            ExecEvent::Result(data) => results.push(data.clone()),
            ExecEvent::Error(_) => {}
        };
        let mut outputs = Outputs::new(limits);
        for frame in frames {
            outputs.apply(frame, &mut on_event);
        }
        let kept = outputs.finish(&mut on_event);
        (kept, stdout, stderr, results)
    }

    fn value(text: &str) -> Frame {
        let mut data = MimeBundle::new();
        data.insert("text/plain".into(), text.into());
        Frame::Message {
            message: SessionMessage::ExecuteResult { data },
            bytes: text.len(),
        }
    }

    #[test]
    fn the_last_expression_value_is_told_from_displays() {
        let (kept, ..) = feed(&limits(1), vec![result(10), value("42"), result(10)]);
        assert_eq!(kept.results.len(), 3);
        assert_eq!(kept.execute_result, Some(1));
        assert_eq!(kept.results[1]["text/plain"], "42");

        let (kept, ..) = feed(&limits(1), vec![result(10), result(10)]);
        assert_eq!(kept.execute_result, None, "displays only");

        // A value too large is replaced by a note, which is not the value.
        let (kept, ..) = feed(&limits(1), vec![value(&"x".repeat(2 << 20))]);
        assert_eq!(kept.results.len(), 1);
        assert_eq!(kept.execute_result, None);

        // A value past the count of results is not kept at all.
        let (kept, ..) = feed(
            &limits(1),
            vec![result(1), result(1), result(1), value("42")],
        );
        assert_eq!(kept.execute_result, None);
    }

    #[test]
    fn output_within_the_budget_is_kept_whole() {
        let (kept, stdout, stderr, _) = feed(
            &limits(1),
            vec![
                stream(StreamName::Stdout, "a\n"),
                stream(StreamName::Stderr, "b\n"),
            ],
        );
        assert_eq!(kept.stdout, "a\n");
        assert_eq!(kept.stderr, "b\n");
        assert!(!kept.truncated);
        assert_eq!((stdout.as_str(), stderr.as_str()), ("a\n", "b\n"));
    }

    #[test]
    fn a_flood_keeps_head_and_tail_with_a_marker_and_events_see_the_same() {
        let chunk = "y".repeat(64 * 1024);
        let mut frames = vec![stream(StreamName::Stdout, "first line\n")];
        // 64 MiB through a 1 MiB budget.
        frames.extend((0..1024).map(|_| stream(StreamName::Stdout, &chunk)));
        frames.push(stream(StreamName::Stdout, "last line\n"));
        let (kept, events, _, _) = feed(&limits(1), frames);
        assert!(kept.truncated);
        assert!(kept.stdout.starts_with("first line\n"));
        assert!(kept.stdout.ends_with("last line\n"));
        assert!(
            kept.stdout.len() <= (1 << 20) + 100,
            "{}",
            kept.stdout.len()
        );
        let total = 11 + 1024 * chunk.len() + 10;
        let dropped = total - (1 << 20);
        assert!(
            kept.stdout.contains(&format!(
                "\n[… {} bytes of output dropped …]\n",
                thousands(dropped as u64)
            )),
            "no marker"
        );
        assert_eq!(events, kept.stdout);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "é".repeat(1 << 20); // 2 MiB of two-byte characters
        let (kept, _, _, _) = feed(&limits(1), vec![stream(StreamName::Stdout, &text)]);
        assert!(kept.truncated);
        assert!(kept.stdout.starts_with('é') && kept.stdout.ends_with('é'));
    }

    #[test]
    fn drops_the_session_reported_are_counted_in_the_marker() {
        let frames = vec![
            stream(StreamName::Stderr, "head\n"),
            Frame::Message {
                message: SessionMessage::OutputDropped {
                    name: StreamName::Stderr,
                    bytes: 5000,
                },
                bytes: 50,
            },
            stream(StreamName::Stderr, "tail\n"),
        ];
        let (kept, _, _, _) = feed(&limits(1), frames);
        assert_eq!(
            kept.stderr,
            "head\n[… 5,000 bytes of output dropped …]\ntail\n"
        );
        assert!(kept.truncated);
    }

    #[test]
    fn results_past_the_budget_or_the_count_become_notes() {
        let frames = vec![
            result(100),
            result(2 << 20), // larger than the 1 MiB results budget
            Frame::Oversized { bytes: 1 << 30 },
            result(100),
            result(100),
            result(100),
        ];
        let (kept, _, _, events) = feed(&limits(1), frames);
        assert!(kept.truncated);
        assert_eq!(kept.results.len(), 4, "{:?}", kept.results);
        let note = |i: usize| kept.results[i]["text/plain"].as_str().unwrap().to_string();
        assert!(
            note(1).contains("2,097,152 bytes (text/html) was dropped"),
            "{}",
            note(1)
        );
        assert!(
            note(2).contains("1,073,741,824 bytes was dropped"),
            "{}",
            note(2)
        );
        assert!(note(3).contains("3 more results dropped"), "{}", note(3));
        assert_eq!(events, kept.results);
    }

    #[test]
    fn an_error_past_the_budget_keeps_its_name_and_the_start_of_its_value() {
        let error = |evalue: String| Frame::Message {
            bytes: evalue.len() + 100,
            message: SessionMessage::Error {
                ename: "ValueError".into(),
                evalue,
                traceback: vec!["frame".into()],
            },
        };
        let mut outputs = Outputs::new(&limits(1));
        outputs.apply(error("x".repeat(2 << 20)), &mut |_| {});
        let kept = outputs.take_error().unwrap();
        assert_eq!(kept.ename, "ValueError");
        assert_eq!(kept.evalue.len(), ERROR_VALUE_KEPT);
        assert!(
            kept.traceback[0].contains("was dropped"),
            "{:?}",
            kept.traceback
        );
        outputs.apply(error("small".into()), &mut |_| {});
        assert_eq!(outputs.take_error().unwrap().traceback, ["frame"]);
        assert!(outputs.finish(&mut |_| {}).truncated);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_987_654_321), "1,987,654,321");
    }
}
