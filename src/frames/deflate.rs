//! permessage-deflate (RFC 7692). The server always answers with `server_no_context_takeover`
//! and `client_no_context_takeover`: every message is compressed on its own, so a broadcast is
//! compressed once for all its members, and no connection keeps a compressor or an inflater
//! (with their 32 KiB windows) between messages. Each I/O thread keeps one of each, reset for
//! every message.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::ReadError;

/// What a connection negotiated: the LZ77 window the server may use (2^bits bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    pub server_window_bits: u8,
}

/// Every deflated message ends with this empty block; the wire form leaves it out.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Picks the first permessage-deflate offer in the client's `Sec-WebSocket-Extensions` values
/// that the server can honour; returns it with the header value to answer. Offers with
/// unknown or repeated parameters, or invalid window sizes, are skipped (RFC 7692, 5).
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<(Deflate, String)> {
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<(Deflate, String)> {
    let mut params = offer.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window: Option<u8> = None;
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = |v: Option<&str>| {
            v.and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", v) => server_window = Some(bits(v)?),
            // The client's window is its own business: our inflater takes any (15 bits).
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", v) => {
                bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_window {
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    // zlib cannot compress with a 256-byte window: an offer of 8 bits is answered as asked but
    // compressed with 9 (what zlib itself does with 8). No browser offers 8; Autobahn's cases
    // that do pass; a client that truly inflates with 256 bytes could refuse a message. The
    // strict alternative is to decline such offers.
    let server_window_bits = server_window.unwrap_or(15).max(9);
    Some((Deflate { server_window_bits }, answer))
}

thread_local! {
    static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message on its own (no context taken over from earlier ones).
pub fn compress(data: &[u8], window_bits: u8) -> Bytes {
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let at = match all.iter().position(|(bits, _)| *bits == window_bits) {
            Some(at) => at,
            None => {
                let fast = Compression::fast();
                all.push((
                    window_bits,
                    Compress::new_with_window_bits(fast, false, window_bits),
                ));
                all.len() - 1
            }
        };
        let compressor = &mut all[at].1;
        compressor.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = compressor.total_in() as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            compressor
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("compressing into a growing buffer cannot fail");
            // Done once all input is in and the flush left room to spare.
            if compressor.total_in() as usize == data.len() && out.capacity() > out.len() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        Bytes::from(out)
    })
}

fn too_big(max: usize) -> ReadError {
    ReadError::Violation(
        1009,
        format!("message too big: it inflates to more than max_message_size ({max})"),
    )
}

/// Inflates one message, refusing (1009) as soon as it grows past `max`: a small frame that
/// inflates to gigabytes (a zip bomb) costs at most `max` bytes.
pub fn inflate(data: &[u8], max: usize) -> Result<Bytes, ReadError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflater = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        inflater.reset(false);
        let mut out = Vec::with_capacity((data.len() * 2).clamp(64, max.max(64)));
        'message: for input in [data, &TAIL[..]] {
            let start = inflater.total_in();
            loop {
                if out.capacity() == out.len() {
                    out.reserve(out.capacity().min(max + 1 - out.len()).max(64));
                }
                let before = (inflater.total_in(), inflater.total_out());
                let consumed = (before.0 - start) as usize;
                let status = inflater
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|e| {
                        ReadError::Violation(1002, format!("a compressed message is corrupt: {e}"))
                    })?;
                if out.len() > max {
                    return Err(too_big(max));
                }
                // A final block ends the message; what follows it is not read.
                if status == Status::StreamEnd {
                    break 'message;
                }
                let all_in = (inflater.total_in() - start) as usize == input.len();
                let stuck = (inflater.total_in(), inflater.total_out()) == before;
                if (all_in && out.capacity() > out.len()) || stuck {
                    break;
                }
            }
        }
        if out.len() > max {
            return Err(too_big(max));
        }
        Ok(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_taken_or_skipped_by_their_parameters() {
        let (d, answer) = negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(d.server_window_bits, 15);
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let (d, answer) =
            negotiate(["x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10"])
                .unwrap();
        assert_eq!(d.server_window_bits, 10);
        assert!(answer.ends_with("; server_max_window_bits=10"));
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=8"])
                .unwrap()
                .0
                .server_window_bits,
            9
        );
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(negotiate([bad]).is_none(), "{bad}");
        }
        // A later acceptable offer is taken when the first is not.
        let two = "permessage-deflate; server_max_window_bits=99, permessage-deflate";
        assert!(negotiate([two]).is_some());
    }

    #[test]
    fn what_is_compressed_inflates_back_with_any_window() {
        let text = "{\"event\":\"message\",\"text\":\"hello hello hello hello\"}".repeat(50);
        for bits in [9, 12, 15] {
            let packed = compress(text.as_bytes(), bits);
            assert!(packed.len() < text.len() / 4, "{} bytes", packed.len());
            assert_eq!(&inflate(&packed, 1 << 20).unwrap()[..], text.as_bytes());
        }
        assert_eq!(&inflate(&compress(b"", 15), 10).unwrap()[..], b"");
        let random: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(
            &inflate(&compress(&random, 15), 1 << 20).unwrap()[..],
            &random[..]
        );
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress(&zeros, 15);
        assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
        assert!(matches!(
            inflate(&bomb, 1 << 20),
            Err(ReadError::Violation(1009, _))
        ));
        assert!(matches!(
            inflate(b"\xff\xff\xff", 100),
            Err(ReadError::Violation(1002, _))
        ));
    }
}
