//! The body of a plain HTTP request handed to the WSGI application (`http::read_body`), as the
//! server reads it after the head: framed by Content-Length within `max_body_size`, chunked
//! bodies refused, `Expect: 100-continue` answered. What it returns is checked against what
//! RFC 9112 says the framing is, worked out here on the parsed head.
//!
//! Input: byte 0: bits 0-2 the read size (1 << n bytes); bits 3-5 how much of what follows the
//! head arrived with it (n/8, the `leftover` of the head's reads); bits 6-7 pick
//! `max_body_size` (0, 8, 100 or 64 KiB). The rest is the request, head and body, as sent.
#![no_main]

use std::time::Duration;

use _roomcast::handshake::{parse_head, Request};
use _roomcast::http::{read_body, Limits};
use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::{runtime, Wire};

const LIMITS: [usize; 4] = [0, 8, 100, 64 << 10];

/// What a server must do with the request's framing.
#[derive(Debug, PartialEq)]
enum Framing {
    /// Refuse it with this status.
    Refused(u16),
    /// Read a body of exactly this many bytes.
    Length(usize),
}

fn headers<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    request
        .headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Content-Length is `1*DIGIT` (RFC 9110, 8.6); one that is not, or several that disagree,
/// leave the framing unknown and the request gets 400 (RFC 9112, 6.3). Chunked bodies are
/// not read here: 411.
fn framing(request: &Request, max: usize) -> Framing {
    if headers(request, "transfer-encoding").next().is_some() {
        return Framing::Refused(411);
    }
    let mut values = Vec::new();
    for value in headers(request, "content-length") {
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Framing::Refused(400);
        }
        values.push(value.trim_start_matches('0'));
    }
    values.dedup();
    match values[..] {
        [] => Framing::Length(0),
        [digits] if digits.len() > 20 => Framing::Refused(413),
        [digits] => match digits.parse::<u128>().unwrap_or(0) {
            n if n > max as u128 => Framing::Refused(413),
            n => Framing::Length(n as usize),
        },
        _ => Framing::Refused(400),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, sent)) = data.split_first() else {
        return;
    };
    let Ok(Some((request, head_len))) = parse_head(sent, 4096) else {
        return; // the head's own parser has its target (handshake)
    };
    let after_head = &sent[head_len..];
    let split = after_head.len() * usize::from((mode >> 3) & 7) / 8;
    let leftover = after_head[..split].to_vec();
    let mut wire = Wire::new(after_head[split..].to_vec(), 1 << (mode & 7));
    let limits = Limits {
        max_body_size: LIMITS[usize::from(mode >> 6)],
        timeout: Duration::from_secs(10),
    };
    let expected = framing(&request, limits.max_body_size);
    let result = runtime().block_on(read_body(&mut wire, &request, leftover, &limits));
    match (&expected, &result) {
        (_, Ok(body)) => {
            assert!(
                body.len() <= limits.max_body_size,
                "a body over max_body_size"
            );
            assert_eq!(expected, Framing::Length(body.len()), "the body's length");
            assert_eq!(
                body[..],
                after_head[..body.len()],
                "the body is what was sent"
            );
        }
        (Framing::Refused(status), Err(Some(reply))) => assert_eq!(*status, reply.status),
        (Framing::Length(n), Err(None)) => {
            assert!(
                after_head.len() < *n,
                "gave up on a body that was all there"
            )
        }
        _ => panic!("expected {expected:?}, got {:?}", result.map(|b| b.len())),
    }
    let asked = headers(&request, "expect")
        .flat_map(|list| list.split(','))
        .any(|e| e.trim().eq_ignore_ascii_case("100-continue"));
    let continued = asked && matches!(expected, Framing::Length(n) if split < n);
    let want: &[u8] = if continued {
        b"HTTP/1.1 100 Continue\r\n\r\n"
    } else {
        b""
    };
    assert_eq!(
        wire.written, want,
        "100 Continue is for a client that asked and waits"
    );
});
