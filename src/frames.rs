//! The frame layer: the only module that talks to tokio-tungstenite, so it could be swapped
//! without touching rooms, the hub or the bindings.

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::config::Config;

/// UTF-8 text that clones by reference count: a broadcast shares one buffer among all members.
pub type Text = tokio_tungstenite::tungstenite::Utf8Bytes;

pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A close reason must fit a control frame (125 bytes, 2 of them the code).
const MAX_REASON: usize = 123;

#[derive(Clone, Debug)]
pub enum Outgoing {
    Text(Text),
    Binary(Bytes),
    Ping,
    Close(u16, String),
}

impl Outgoing {
    /// Payload bytes, for `buffered_amount`.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => b.len(),
            Outgoing::Ping => 0,
            Outgoing::Close(_, r) => r.len() + 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub enum Incoming {
    Text(Text),
    Binary(Bytes),
    /// A Ping or Pong: proves the peer is alive, nothing to deliver.
    Control,
    Close(u16, String),
}

/// Why reading stopped with an error.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer went away without a Close frame (1006: no frame can be sent).
    Lost,
    /// The peer broke the protocol: answer with this close code and reason.
    Violation(u16, String),
}

pub fn ws_config(cfg: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        .write_buffer_size(cfg.write_buffer_size)
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size))
        .accept_unmasked_frames(false)
}

/// Maps a read error to the RFC 6455 close code the peer should get.
pub fn classify(err: &WsError) -> ReadError {
    match err {
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => ReadError::Lost,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ReadError::Lost,
        WsError::Protocol(p) => {
            ReadError::Violation(1002, truncate(&format!("protocol error: {p}")))
        }
        WsError::Utf8(_) => ReadError::Violation(1007, "invalid UTF-8 in a text message".into()),
        WsError::Capacity(c) => {
            ReadError::Violation(1009, truncate(&format!("message too big: {c}")))
        }
        other => ReadError::Violation(1011, truncate(&other.to_string())),
    }
}

pub fn truncate(reason: &str) -> String {
    if reason.len() <= MAX_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

// Generic over the stream (TcpStream in the server) so that the fuzz targets can feed
// in-memory bytes through the very same reader.
pub struct FrameReader<S = TcpStream>(SplitStream<WebSocketStream<S>>);
pub struct FrameWriter<S = TcpStream>(SplitSink<WebSocketStream<S>, Message>);

/// Starts the WebSocket protocol on a socket whose handshake is done. `leftover` holds bytes the
/// client sent right after its request head; they are frames and are read first.
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    leftover: Vec<u8>,
    cfg: &Config,
) -> (FrameReader<S>, FrameWriter<S>) {
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config(cfg)))
            .await;
    let (sink, stream) = ws.split();
    (FrameReader(stream), FrameWriter(sink))
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    /// `None` when the stream has ended (after a Close exchange).
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        let msg = match self.0.next().await? {
            Ok(m) => m,
            Err(WsError::ConnectionClosed) => return None,
            Err(e) => return Some(Err(classify(&e))),
        };
        Some(Ok(match msg {
            Message::Text(t) => Incoming::Text(t),
            Message::Binary(b) => Incoming::Binary(b),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
            Message::Close(Some(f)) => Incoming::Close(f.code.into(), f.reason.to_string()),
            Message::Close(None) => Incoming::Close(1005, String::new()),
        }))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameWriter<S> {
    /// Queues a frame in the write buffer; `flush` sends what is buffered.
    pub async fn feed(&mut self, out: Outgoing) -> Result<(), WsError> {
        let msg = match out {
            Outgoing::Text(t) => Message::Text(t),
            Outgoing::Binary(b) => Message::Binary(b),
            Outgoing::Ping => Message::Ping(Bytes::new()),
            Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: truncate(&reason).into(),
            })),
        };
        self.0.feed(msg).await
    }

    pub async fn flush(&mut self) -> Result<(), WsError> {
        self.0.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::CapacityError;

    #[test]
    fn errors_map_to_rfc_close_codes() {
        let unmasked = WsError::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert!(matches!(classify(&unmasked), ReadError::Violation(1002, _)));
        assert!(matches!(
            classify(&WsError::Utf8("x".into())),
            ReadError::Violation(1007, _)
        ));
        let big = WsError::Capacity(CapacityError::MessageTooLong {
            size: 10,
            max_size: 5,
        });
        assert!(matches!(classify(&big), ReadError::Violation(1009, _)));
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(classify(&reset), ReadError::Lost);
        assert_eq!(
            classify(&WsError::Io(std::io::ErrorKind::BrokenPipe.into())),
            ReadError::Lost
        );
    }

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_REASON);
        assert!(long.starts_with(&cut));
    }
}
