//! The session socket's framing and messages (see ARCHITECTURE.md, "Session socket
//! protocol"), and the keeper's status lines. `python/sandcell_runtime/protocol.py` is
//! the other end.

use crate::execution::MimeBundle;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Frames larger than this are a protocol violation, not an allocation to attempt.
const MAX_FRAME: u32 = 512 << 20;

/// Host → session.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage<'a> {
    Execute { code: &'a str },
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
    Done {
        status: DoneStatus,
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

/// The next message, or `None` when the session closed the socket.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<SessionMessage>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the session sent a {len}-byte frame"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    match reader.read_exact(&mut body).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_a_socket() {
        let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let body = br#"{"type":"stream","name":"stdout","text":"hi\n"}"#;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        a.write_all(&frame).await.unwrap();
        drop(a);
        match read_frame(&mut b).await.unwrap() {
            Some(SessionMessage::Stream { name, text }) => {
                assert_eq!(name, StreamName::Stdout);
                assert_eq!(text, "hi\n");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused() {
        let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(read_frame(&mut b).await.is_err());
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
