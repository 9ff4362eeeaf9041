//! The session socket's framing and messages (see ARCHITECTURE.md, "Session socket
//! protocol"), and the keeper's status lines. `python/sandcell_runtime/protocol.py` is
//! the other end.

use crate::execution::MimeBundle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What an oversized frame is read into, a piece at a time, to be thrown away.
const DISCARD_CHUNK: usize = 64 * 1024;

/// Host → session.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage<'a> {
    Execute {
        code: &'a str,
        /// Bytes of stdout and stderr the host keeps of this execution (head and tail):
        /// the session may stop sending early once it is spent.
        output_limit: usize,
        /// Bytes of rich results the host keeps of this execution.
        results_limit: usize,
        /// Results the host keeps of this execution.
        max_results: usize,
    },
    /// What IPython's completer offers at `cursor_pos` (in code points, as Jupyter counts)
    /// of `code`; answered by one `complete_reply`. Sent only between executions.
    Complete {
        code: &'a str,
        cursor_pos: usize,
    },
    Shutdown,
}

/// Session → host.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionMessage {
    Ready,
    Failed {
        message: String,
    },
    Stream {
        name: StreamName,
        text: String,
    },
    DisplayData {
        data: MimeBundle,
    },
    ExecuteResult {
        data: MimeBundle,
    },
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
    /// The session dropped this many bytes of a stream itself (past the output limit).
    OutputDropped {
        name: StreamName,
        bytes: u64,
    },
    /// The session dropped a result itself (too large for what is left of the results
    /// limit, or past the count) and sends only its size and MIME types.
    ResultDropped {
        bytes: u64,
        mimes: Vec<String>,
    },
    Done {
        status: DoneStatus,
        /// The cell's number in IPython's history (the `N` of `In [N]` and of its
        /// tracebacks' `Cell In[N]`); absent when the cell was not counted (empty).
        #[serde(default)]
        execution_count: Option<u64>,
    },
    /// The answer to `complete`: Jupyter's complete_reply (positions in code points).
    CompleteReply {
        matches: Vec<String>,
        cursor_start: usize,
        cursor_end: usize,
    },
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Stdout,
    Stderr,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Ok,
    Error,
}

/// A line the keeper writes on the status pipe.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum KeeperEvent {
    Started {
        pid: i32,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Failed {
        message: String,
    },
}

pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    message: &HostMessage<'_>,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await
}

/// One frame from the session, and the host memory it holds until it is dropped.
#[derive(Debug)]
pub struct Received {
    pub frame: Frame,
    _held: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub enum Frame {
    /// A message, and the size of its frame.
    Message {
        message: SessionMessage,
        bytes: usize,
    },
    /// A frame larger than the host accepts: skipped unread (never allocated).
    Oversized { bytes: u64 },
}

/// Reads frames from a session that may be hostile (a cell can write to its socket): a
/// frame larger than `max_frame` is skipped without being allocated, and frames not yet
/// dropped by their consumer together hold at most `max_frame` bytes: past that, the
/// reader waits, which pushes back on the session instead of filling host memory.
pub struct FrameReader<R> {
    reader: R,
    max_frame: usize,
    memory: Arc<Semaphore>,
}

impl<R: AsyncReadExt + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_frame: usize) -> Self {
        // A semaphore counts at most `MAX_PERMITS`; frames are never that large anyway.
        let max_frame = max_frame.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Self {
            reader,
            max_frame,
            memory: Arc::new(Semaphore::new(max_frame)),
        }
    }

    /// The next frame, or `None` when the session closed the socket.
    pub async fn next(&mut self) -> std::io::Result<Option<Received>> {
        let mut header = [0u8; 4];
        match self.reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            return match self.discard(len as u64).await? {
                true => Ok(Some(Received {
                    frame: Frame::Oversized { bytes: len as u64 },
                    _held: None,
                })),
                false => Ok(None),
            };
        }
        let held = u32::try_from(len).map_err(|_| invalid("frame size"))?;
        let permit = self
            .memory
            .clone()
            .acquire_many_owned(held)
            .await
            .map_err(|_| invalid("frame memory"))?;
        let mut body = vec![0u8; len];
        match self.reader.read_exact(&mut body).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let message = serde_json::from_slice(&body).map_err(|e| invalid(&e.to_string()))?;
        Ok(Some(Received {
            frame: Frame::Message {
                message,
                bytes: len,
            },
            _held: Some(permit),
        }))
    }

    /// Reads and throws away `len` bytes; false if the socket closed first.
    async fn discard(&mut self, mut len: u64) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; DISCARD_CHUNK];
        while len > 0 {
            let want = chunk.len().min(usize::try_from(len).unwrap_or(usize::MAX));
            let n = self.reader.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Ok(false);
            }
            len -= n as u64;
        }
        Ok(true)
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unreadable frame from the session: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    const HI: &[u8] = br#"{"type":"stream","name":"stdout","text":"hi\n"}"#;

    fn expect_hi(received: Option<Received>) {
        match received.map(|r| r.frame) {
            Some(Frame::Message {
                message: SessionMessage::Stream { name, text },
                bytes,
            }) => {
                assert_eq!(name, StreamName::Stdout);
                assert_eq!(text, "hi\n");
                assert_eq!(bytes, HI.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_through_a_socket() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        a.write_all(&frame(HI)).await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b, 1024);
        expect_hi(reader.next().await.unwrap());
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        let junk = vec![b'x'; 1 << 20];
        let writer = tokio::spawn(async move {
            a.write_all(&frame(&junk)).await.unwrap();
            a.write_all(&frame(HI)).await.unwrap();
        });
        let mut reader = FrameReader::new(b, 1024);
        match reader.next().await.unwrap().map(|r| r.frame) {
            Some(Frame::Oversized { bytes }) => assert_eq!(bytes, 1 << 20),
            other => panic!("unexpected {other:?}"),
        }
        expect_hi(reader.next().await.unwrap());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_declaring_4_gib_is_not_allocated() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        a.write_all(b"short").await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b, 1024);
        // The body never comes: the socket closes while it is being skipped.
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn unconsumed_frames_hold_back_the_reader() {
        let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
        a.write_all(&frame(HI)).await.unwrap();
        a.write_all(&frame(HI)).await.unwrap();
        let mut reader = FrameReader::new(b, HI.len() + 1);
        let first = reader.next().await.unwrap();
        // The first frame still holds the reader's memory: the second one, although it
        // is there to read, waits until the first is dropped.
        tokio::select! {
            biased;
            _ = reader.next() => panic!("the reader went past its memory bound"),
            () = std::future::ready(()) => {}
        }
        drop(first);
        assert_eq!(reader.memory.available_permits(), HI.len() + 1);
    }

    #[test]
    fn keeper_lines_parse() {
        let exited: KeeperEvent =
            serde_json::from_str(r#"{"event":"exited","signal":11}"#).unwrap();
        assert_eq!(
            exited,
            KeeperEvent::Exited {
                code: None,
                signal: Some(11)
            }
        );
    }
}
