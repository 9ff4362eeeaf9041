//! The `text/event-stream` framing, as an incremental push parser.
//!
//! No published crate fits: `eventsource-stream` and `sse-stream` are adapters over a
//! `futures` `Stream` of bytes or an `http-body`, while the decoders here are plain
//! synchronous state machines fed by whatever moves the bytes. The subset of the
//! specification that matters is small: `data:` lines (joined with `\n`), a blank line
//! dispatching the event, comments and other fields ignored. An event the body's end
//! cuts off before its blank line is discarded, as the specification says, so a cut
//! stream shows as one that never finished.

use crate::lines::LineSplitter;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    lines: LineSplitter,
    data: Option<String>,
}

impl SseParser {
    /// Adds `bytes` and calls `on_data` with the data of each event they complete.
    ///
    /// The `event:` field is not kept: every protocol read here repeats the event name as
    /// the `type` of the JSON data, which is what the decoders dispatch on.
    pub(crate) fn push<E>(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<std::str::Utf8Error>,
    {
        let data = &mut self.data;
        self.lines
            .push(bytes, |line| Self::line(data, line, &mut on_data))
    }

    fn line<E>(
        data: &mut Option<String>,
        line: &str,
        on_data: &mut impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        if line.is_empty() {
            return match data.take() {
                Some(data) => on_data(&data),
                None => Ok(()),
            };
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => *data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}
