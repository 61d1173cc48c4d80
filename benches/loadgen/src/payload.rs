//! Message payloads: a fixed-width ASCII header (sender id, sequence number, send
//! timestamp) padded with 'x' to the requested size, built without per-message allocation.

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Header layout, all lowercase hex: 8 digits sender id, 16 digits sequence number,
/// 16 digits send time (nanoseconds since the loadgen started).
pub const HEADER_LEN: usize = 40;

/// Messages are carved out of shared chunks of this many bytes (or one message, if larger).
const CHUNK: usize = 64 * 1024;
const PAD: [u8; 256] = [b'x'; 256];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The decoded header of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Builds outgoing TEXT messages of a fixed size.
pub struct PayloadWriter {
    size: usize,
    buf: BytesMut,
}

impl PayloadWriter {
    pub fn new(size: usize) -> Self {
        assert!(size >= HEADER_LEN, "payload size below header length");
        PayloadWriter { size, buf: BytesMut::new() }
    }

    /// A TEXT message carrying `h`, exactly `size` bytes long.
    pub fn message(&mut self, h: Header) -> Message {
        if self.buf.capacity() - self.buf.len() < self.size {
            // Reuses the chunk in place once every message cut from it has been dropped.
            self.buf.reserve(CHUNK.max(self.size));
        }
        let mut head = [0u8; HEADER_LEN];
        put_hex(&mut head[0..8], h.sender as u64);
        put_hex(&mut head[8..24], h.seq);
        put_hex(&mut head[24..40], h.sent_ns);
        self.buf.extend_from_slice(&head);
        let mut left = self.size - HEADER_LEN;
        while left > 0 {
            let n = left.min(PAD.len());
            self.buf.extend_from_slice(&PAD[..n]);
            left -= n;
        }
        let bytes: Bytes = self.buf.split().freeze();
        // The payload is pure ASCII, so the UTF-8 check cannot fail (and is cheap).
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => unreachable!("ASCII payload is valid UTF-8"),
        }
    }
}

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Decodes the header at the start of a received payload (None if it is not one of ours).
pub fn parse(payload: &[u8]) -> Option<Header> {
    if payload.len() < HEADER_LEN {
        return None;
    }
    Some(Header {
        sender: parse_hex(&payload[0..8])? as u32,
        seq: parse_hex(&payload[8..24])?,
        sent_ns: parse_hex(&payload[24..40])?,
    })
}

/// The payload bytes of a data message; None for control frames.
pub fn data_of(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_size() {
        let mut w = PayloadWriter::new(64);
        for i in 0..5000u64 {
            let h = Header { sender: 7, seq: i, sent_ns: u64::MAX - i };
            let m = w.message(h);
            let d = data_of(&m).unwrap();
            assert_eq!(d.len(), 64);
            assert!(d[HEADER_LEN..].iter().all(|&c| c == b'x'));
            assert_eq!(parse(d), Some(h));
        }
        assert_eq!(parse(b"short"), None);
    }
}
