//! Splitting a byte stream into lines, whatever the chunk boundaries.
//!
//! Both framings sandcell reads are line based (SSE and NDJSON). Bytes are buffered and
//! only whole lines are decoded as UTF-8, so a chunk that ends inside a multi-byte
//! character is never misread.

/// Accumulates bytes and hands out complete lines, without their terminator.
///
/// A line ends at `\n`, `\r\n` or a lone `\r` (the three endings the SSE specification
/// allows; NDJSON only uses `\n`). A `\r\n` split across two chunks is one ending.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buffer: Vec<u8>,
    /// The last byte seen was a `\r` that ended a line: a `\n` right after it belongs to it.
    after_cr: bool,
}

impl LineSplitter {
    /// Adds `bytes` and calls `on_line` for each line they complete.
    pub(crate) fn push<E>(
        &mut self,
        bytes: &[u8],
        mut on_line: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<std::str::Utf8Error>,
    {
        for &byte in bytes {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.buffer);
                    on_line(std::str::from_utf8(&line)?)?;
                }
                _ => self.buffer.push(byte),
            }
        }
        Ok(())
    }

    /// Ends the stream: a last line without a terminator is still a line.
    pub(crate) fn finish<E>(
        &mut self,
        mut on_line: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<std::str::Utf8Error>,
    {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.buffer);
        on_line(std::str::from_utf8(&line)?)
    }
}
