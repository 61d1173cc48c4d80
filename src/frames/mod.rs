//! The frame layer (RFC 6455): our own reader and writer over a connection's two socket halves,
//! with tungstenite's header codec, opcodes and close codes. No other module sees frame bytes.

mod codec;
mod deflate;
mod reader;
mod writer;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::config::Config;
use crate::tls::{ReadHalf, Stream, WriteHalf};

pub use codec::{put_header, take_frame, unmask, RawFrame};
pub use deflate::{negotiate, Deflate};
pub use reader::FrameReader;
pub use writer::FrameWriter;

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
    /// The answer to a client's Ping, with its payload.
    Pong(Bytes),
    /// 1005 sends a Close with no code (the answer to a client's empty Close).
    Close(u16, String),
    /// A broadcast's message, one for all its members (see `share`).
    Shared(Arc<Shared>),
}

/// A message several connections are sent: its payload, and its deflated form, made by the
/// first writer whose connection negotiated permessage-deflate and kept for the others.
#[derive(Debug)]
pub struct Shared {
    pub text: bool,
    pub data: Bytes,
    deflated: OnceLock<Bytes>,
}

impl Shared {
    /// The payload deflated with this window (2^bits bytes). Browsers leave the server's
    /// window at 15 bits: that form is made once; any other is made per connection.
    pub fn deflated(&self, window_bits: u8) -> Bytes {
        if window_bits == 15 {
            self.deflated
                .get_or_init(|| deflate::compress(&self.data, 15))
                .clone()
        } else {
            deflate::compress(&self.data, window_bits)
        }
    }
}

/// The form of a data message that goes to many connections: compressed at most once.
pub fn share(out: Outgoing) -> Outgoing {
    let (text, data) = match out {
        Outgoing::Text(t) => (true, Bytes::from(t)),
        Outgoing::Binary(b) => (false, b),
        other => return other,
    };
    Outgoing::Shared(Arc::new(Shared {
        text,
        data,
        deflated: OnceLock::new(),
    }))
}

impl Outgoing {
    /// Payload bytes, for `buffered_amount`.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) | Outgoing::Pong(b) => b.len(),
            Outgoing::Shared(s) => s.data.len(),
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
    /// A Ping: the reader's owner answers it with a Pong of the same payload.
    Ping(Bytes),
    /// A Pong (or anything else that only proves the peer is alive).
    Control,
    /// The client's Close: its code (1005 when it sent none) and reason.
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

/// Starts the WebSocket protocol on a socket whose handshake is done: a reader and a writer,
/// each owning its half. `leftover` holds bytes the client sent right after its request head;
/// they are frames and are read first.
pub fn open(
    stream: Stream,
    leftover: Vec<u8>,
    cfg: &Config,
    deflate: Option<Deflate>,
) -> (FrameReader<ReadHalf>, FrameWriter<WriteHalf>) {
    let (read, write) = stream.into_split();
    let reader = FrameReader::new(read, leftover, cfg.max_message_size, cfg.read_buffer_size)
        .with_deflate(deflate.is_some());
    let writer = FrameWriter::new(write).with_deflate(deflate, cfg.compression_threshold);
    (reader, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_REASON);
        assert!(long.starts_with(&cut));
    }
}
