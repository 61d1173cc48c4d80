//! The frame reader on a client's bytes, as the server runs it on a socket whose handshake is
//! done, reading until the end or an error, answering the way the session does (echoing data,
//! a Pong for a Ping, a Close on a violation), with or without permessage-deflate.
//!
//! Input, so that the fuzzer gets past "unmasked frame" at once:
//! - byte 0: bits 0-1 == 3 sends the rest raw (unmasked garbage, anything), == 1 negotiates
//!   permessage-deflate (RSV1 marks compressed messages; echoes are compressed); bits 2-4 say how
//!   much of the encoded stream is `leftover` (n/8); bits 5-7 the read size (1 << n bytes), so
//!   frames arrive split at every point.
//! - then frames, each: the first header byte as on the wire (FIN, RSV, opcode); a length
//!   byte L (bits 0-6) whose bit 7 says a form byte follows (0: 16-bit length, 1: 64-bit,
//!   2/3: a declared 16/64-bit length that lies, read from the next 2/8 bytes); then L bytes of
//!   payload, masked here with a fixed key.
#![no_main]

use std::sync::OnceLock;

use _roomcast::config::Config;
use _roomcast::frames::{Deflate, FrameReader, FrameWriter, Incoming, Outgoing, ReadError};
use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::{runtime, Wire};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

/// Encodes the frame descriptions of the module comment as a client would send them.
fn encode(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    while data.len() >= 2 {
        let head = take(&mut data, 2);
        let (b0, b1) = (head[0], head[1]);
        let len = usize::from(b1 & 0x7f);
        out.push(b0);
        let form = if b1 & 0x80 != 0 {
            take(&mut data, 1).first().copied().unwrap_or(0) & 3
        } else if len >= 126 {
            0
        } else {
            4
        };
        match form {
            0 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            1 => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            2 => {
                out.push(0x80 | 126);
                out.extend_from_slice(take(&mut data, 2));
            }
            3 => {
                out.push(0x80 | 127);
                out.extend_from_slice(take(&mut data, 8));
            }
            _ => out.push(0x80 | len as u8),
        }
        out.extend_from_slice(&MASK);
        let payload = take(&mut data, len);
        out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    }
    out
}

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    // Small limits: a message past them is the 1009 path, and memory stays bounded.
    CFG.get_or_init(|| Config {
        max_message_size: 512,
        read_buffer_size: 256,
        ..Config::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 3 == 3 {
        rest.to_vec()
    } else {
        encode(rest)
    };
    let split = bytes.len() * usize::from((mode >> 2) & 7) / 8;
    let leftover = bytes[..split].to_vec();
    let wire = Wire::new(bytes[split..].to_vec(), 1 << (mode >> 5));
    let deflate = (mode & 3 == 1).then_some(Deflate {
        server_window_bits: 15,
    });
    let cfg = config();
    runtime().block_on(async {
        let mut reader =
            FrameReader::new(wire, leftover, cfg.max_message_size, cfg.read_buffer_size)
                .with_deflate(deflate.is_some());
        let mut writer = FrameWriter::new(Wire::new(Vec::new(), 1)).with_deflate(deflate, 0);
        // Every frame yields at most one item, so the input's length bounds the loop.
        for _ in 0..=data.len() {
            let out = match reader.next().await {
                None | Some(Err(ReadError::Lost)) => break,
                Some(Ok(Incoming::Text(t))) => {
                    assert!(t.len() <= cfg.max_message_size);
                    Outgoing::Text(t)
                }
                Some(Ok(Incoming::Binary(b))) => {
                    assert!(b.len() <= cfg.max_message_size);
                    Outgoing::Binary(b)
                }
                Some(Ok(Incoming::Ping(p))) => Outgoing::Pong(p),
                Some(Ok(Incoming::Control)) => continue,
                Some(Ok(Incoming::Close(code, _))) => Outgoing::Close(code, String::new()),
                Some(Err(ReadError::Violation(code, reason))) => {
                    assert!(reason.len() <= 123, "a close reason fits a control frame");
                    writer.feed(Outgoing::Close(code, reason));
                    let _ = writer.flush().await;
                    break;
                }
            };
            writer.feed(out);
            if writer.flush().await.is_err() {
                break;
            }
        }
    });
});
