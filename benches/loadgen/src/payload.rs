//! Message payloads: a fixed-width ASCII header (sender id, sequence number, send
//! timestamp) padded with 'x' to the requested size, built without per-message allocation,
//! optionally wrapped in a fixed prefix and suffix (the chat protocol's JSON frame).

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
    prefix: &'static [u8],
    suffix: &'static [u8],
    buf: BytesMut,
}

impl PayloadWriter {
    pub fn new(size: usize) -> Self {
        Self::framed(size, b"", b"")
    }

    /// Payloads of `size` bytes sent as `prefix` + payload + `suffix` (ASCII, so the message
    /// stays valid UTF-8).
    pub fn framed(size: usize, prefix: &'static [u8], suffix: &'static [u8]) -> Self {
        assert!(size >= HEADER_LEN, "payload size below header length");
        assert!(prefix.is_ascii() && suffix.is_ascii(), "frame must be ASCII");
        PayloadWriter { size, prefix, suffix, buf: BytesMut::new() }
    }

    /// A TEXT message carrying `h`: the prefix, exactly `size` payload bytes, the suffix.
    pub fn message(&mut self, h: Header) -> Message {
        let bytes = self.bytes(h);
        // The message is pure ASCII, so the UTF-8 check cannot fail (and is cheap).
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => unreachable!("ASCII payload is valid UTF-8"),
        }
    }

    /// The bytes of `message(h)`, for the bare client.
    pub fn bytes(&mut self, h: Header) -> Bytes {
        let len = self.prefix.len() + self.size + self.suffix.len();
        if self.buf.capacity() - self.buf.len() < len {
            // Reuses the chunk in place once every message cut from it has been dropped.
            self.buf.reserve(CHUNK.max(len));
        }
        self.buf.extend_from_slice(self.prefix);
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
        self.buf.extend_from_slice(self.suffix);
        self.buf.split().freeze()
    }
}

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte set where the byte (all below 0x80) lies in lo..=hi.
fn bytes_in(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x + (0x80 - lo as u64) * ONES;
    let above_hi = x + (0x7f - hi as u64) * ONES;
    at_least_lo & !above_hi & HIGH
}

/// Decodes 8 hex digits at once (SWAR), None unless all 8 are hex digits. The digits are
/// random, so a branch per digit mispredicts: decoding was the loadgen's top function.
fn hex8(digits: &[u8; 8]) -> Option<u32> {
    let x = u64::from_be_bytes(*digits); // the first digit is the most significant byte
    let digit = bytes_in(x & !HIGH, b'0', b'9');
    let letter = bytes_in((x & !HIGH) | 0x2020_2020_2020_2020, b'a', b'f');
    if x & HIGH != 0 || (digit | letter) != HIGH {
        return None;
    }
    // Each byte's value: its low nibble, plus 9 for a letter ('a' and 'A' end in 1).
    let mut v = (x & 0x0f0f_0f0f_0f0f_0f0f) + (letter >> 7) * 9;
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    Some(v as u32)
}

fn hex16(digits: &[u8]) -> Option<u64> {
    let (hi, lo) = digits.split_at(8);
    let hi = hex8(hi.try_into().ok()?)?;
    let lo = hex8(lo.try_into().ok()?)?;
    Some((hi as u64) << 32 | lo as u64)
}

/// Decodes the header at the start of a received payload (None if it is not one of ours).
pub fn parse(payload: &[u8]) -> Option<Header> {
    if payload.len() < HEADER_LEN {
        return None;
    }
    Some(Header {
        sender: hex8(payload[0..8].try_into().ok()?)?,
        seq: hex16(&payload[8..24])?,
        sent_ns: hex16(&payload[24..40])?,
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
        let mut bad = data_of(&w.message(Header { sender: 1, seq: 2, sent_ns: 3 })).unwrap().to_vec();
        bad[20] = b'g';
        assert_eq!(parse(&bad), None);
        assert_eq!(hex8(b"0009afAF"), Some(0x09afaf));
        assert_eq!(hex16(b"fedcba9876543210"), Some(0xfedc_ba98_7654_3210));
    }

    #[test]
    fn hex8_accepts_exactly_hex_digits() {
        let ok = |c: u8| c.is_ascii_hexdigit();
        for c in 0..=255u8 {
            for pos in 0..8 {
                let mut d = *b"0123abcd";
                d[pos] = c;
                let want = if ok(c) { u32::from_str_radix(std::str::from_utf8(&d).unwrap(), 16).ok() } else { None };
                assert_eq!(hex8(&d), want, "byte {c:#x} at {pos}");
            }
        }
        assert_eq!(hex8(b"FFFFFFFF"), Some(u32::MAX));
        assert_eq!(hex8(b"00000000"), Some(0));
    }

    #[test]
    fn framed() {
        let mut w = PayloadWriter::framed(48, b"{\"m\":\"", b"\"}");
        let h = Header { sender: 3, seq: 9, sent_ns: 12345 };
        let m = w.message(h);
        let d = data_of(&m).unwrap();
        assert_eq!(d.len(), 6 + 48 + 2);
        assert!(d.starts_with(b"{\"m\":\"") && d.ends_with(b"xx\"}"));
        assert_eq!(parse(&d[6..]), Some(h));
    }
}
