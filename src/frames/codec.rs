//! One WebSocket frame to and from bytes (RFC 6455, 5.2): tungstenite's header codec, and the
//! checks a server makes on a client's frame before it buffers its payload.

use std::io::Cursor;

use bytes::{Buf, BytesMut};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::ReadError;

/// The longest header a server writes: 2 bytes, then an 8-byte length (never a mask).
pub const MAX_HEADER: usize = 10;

/// A client's frame, its payload unmasked.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    /// RSV1: with permessage-deflate, the first frame of a compressed message.
    pub compressed: bool,
    pub opcode: OpCode,
    pub payload: BytesMut,
}

fn violation(why: impl Into<String>) -> ReadError {
    ReadError::Violation(1002, why.into())
}

/// Takes one whole frame off the front of `buf`, or `None` (consuming nothing) until it has
/// arrived. A frame is refused from its header, before its payload is waited for, when it
/// breaks the protocol (1002) or is larger than `max_payload` (1009). `deflate`: the connection
/// negotiated permessage-deflate, which gives RSV1 a meaning on data frames.
pub fn take_frame(
    buf: &mut BytesMut,
    max_payload: usize,
    deflate: bool,
) -> Result<Option<RawFrame>, ReadError> {
    let mut cursor = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(e) => return Err(violation(format!("protocol error: {e}"))),
    };
    let header_len = cursor.position() as usize;
    let Some(mask) = header.mask else {
        return Err(violation("protocol error: unmasked frame from the client"));
    };
    let rsv1_means_compressed = deflate && matches!(header.opcode, OpCode::Data(_));
    if (header.rsv1 && !rsv1_means_compressed) || header.rsv2 || header.rsv3 {
        return Err(violation(
            "protocol error: reserved bits set that no negotiated extension gives a meaning",
        ));
    }
    match header.opcode {
        OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) => {
            return Err(violation(format!("protocol error: unknown opcode {op}")));
        }
        OpCode::Control(_) if !header.is_final => {
            return Err(violation("protocol error: fragmented control frame"));
        }
        OpCode::Control(_) if len > 125 => {
            return Err(violation("protocol error: control frame over 125 bytes"));
        }
        _ => {}
    }
    if len > max_payload as u64 {
        return Err(ReadError::Violation(
            1009,
            format!(
                "message too big: a frame of {len} bytes, over max_message_size ({max_payload})"
            ),
        ));
    }
    let len = len as usize;
    if buf.len() - header_len < len {
        // Room for the rest, so that it arrives in as few reads as possible.
        buf.reserve(header_len + len - buf.len());
        return Ok(None);
    }
    buf.advance(header_len);
    let mut payload = buf.split_to(len);
    unmask(&mut payload, mask);
    Ok(Some(RawFrame {
        fin: header.is_final,
        compressed: header.rsv1,
        opcode: header.opcode,
        payload,
    }))
}

/// XORs the payload with the client's mask, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Writes the header of an unmasked, final server frame into `out`; `compressed` sets RSV1.
pub fn put_header(out: &mut BytesMut, opcode: OpCode, len: usize, compressed: bool) {
    let header = FrameHeader {
        opcode,
        rsv1: compressed,
        ..FrameHeader::default()
    };
    let mut bytes = [0u8; MAX_HEADER];
    let mut cursor = Cursor::new(&mut bytes[..]);
    header
        .format(len as u64, &mut cursor)
        .expect("a server header fits in ten bytes");
    let written = cursor.position() as usize;
    out.extend_from_slice(&bytes[..written]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client frame: masked, as a browser sends it.
    pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn a_frame_is_taken_only_once_whole() {
        let frame = client_frame(0x81, b"hello, world");
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert!(take_frame(&mut buf, 100, false).unwrap().is_none());
        assert_eq!(buf.len(), frame.len() - 1, "nothing consumed");
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        let got = take_frame(&mut buf, 100, false).unwrap().unwrap();
        assert!(got.fin);
        assert_eq!(got.opcode, OpCode::Data(Data::Text));
        assert_eq!(&got.payload[..], b"hello, world");
        assert!(buf.is_empty());
    }

    #[test]
    fn unmasking_matches_the_bytewise_definition() {
        for len in [0, 1, 7, 8, 9, 31, 100] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, [9, 8, 7, 6]);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn broken_frames_get_their_close_codes_from_the_header_alone() {
        let code = |bytes: &[u8], max| match take_frame(&mut BytesMut::from(bytes), max, false) {
            Err(ReadError::Violation(code, _)) => code,
            other => panic!("expected a violation, got {other:?}"),
        };
        assert_eq!(code(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], 100), 1002); // unmasked
        assert_eq!(code(&client_frame(0xC1, b"x"), 100), 1002); // RSV1 without deflate
        let ping_rsv1 = client_frame(0xC9, b"");
        assert!(take_frame(&mut BytesMut::from(&ping_rsv1[..]), 100, true).is_err());
        let text_rsv1 = client_frame(0xC1, b"x");
        assert!(
            take_frame(&mut BytesMut::from(&text_rsv1[..]), 100, true)
                .unwrap()
                .unwrap()
                .compressed
        );
        assert_eq!(code(&client_frame(0x83, b""), 100), 1002); // reserved data opcode
        assert_eq!(code(&client_frame(0x8B, b""), 100), 1002); // reserved control opcode
        assert_eq!(code(&client_frame(0x09, b""), 100), 1002); // fragmented ping
        assert_eq!(code(&client_frame(0x89, &[0; 126]), 1000), 1002); // ping over 125
                                                                      // Only the header has arrived: refused before waiting for a megabyte.
        let big = client_frame(0x82, &vec![0; 1 << 20]);
        assert_eq!(code(&big[..14], 1000), 1009);
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = BytesMut::new();
            put_header(&mut out, OpCode::Data(Data::Binary), len, false);
            assert_eq!(out.len(), header_len, "len {len}");
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0, "a server never masks");
        }
    }
}
