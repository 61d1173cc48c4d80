//! The request head a client sends before anything else, and every helper that reads it:
//! upgrade checks, subprotocols, Origin and the trusted-proxy headers.
//!
//! Input: byte 0 picks `max_header_bytes` (so both the 431 and the complete paths are
//! reached); the rest is the bytes the socket delivered.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use _roomcast::handshake::{self, Request};
use _roomcast::origin::OriginPolicy;
use _roomcast::proxies::TrustedProxies;
use libfuzzer_sys::fuzz_target;

struct Policies {
    origins: OriginPolicy,
    proxies: TrustedProxies,
    supported: Vec<String>,
}

fn policies() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Policies {
            origins: OriginPolicy::parse(&list(&[
                "https://chat.example.com",
                "*.example.org",
                "http://[::1]:8000",
                "null",
            ]))
            .unwrap(),
            proxies: TrustedProxies::parse(&list(&["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]))
                .unwrap(),
            supported: list(&["chat", "v2.roomcast"]),
        }
    })
}

fn exercise(req: &Request) {
    let p = policies();
    let _ = req.wants_websocket();
    let offered = req.subprotocols();
    let chosen = handshake::choose_subprotocol(&offered, &p.supported);
    match handshake::validate_upgrade(req) {
        Ok(key) => {
            assert_eq!(key.len(), 24, "a validated key is 24 base64 characters");
            // The permessage-deflate offers, as the session reads them.
            let offers = req.headers.iter();
            let deflate = _roomcast::frames::negotiate(
                offers
                    .filter(|(name, _)| name == "sec-websocket-extensions")
                    .map(|(_, value)| value.as_str()),
            );
            if let Some((d, _)) = &deflate {
                assert!((9..=15).contains(&d.server_window_bits));
            }
            let answer = deflate.as_ref().map(|(_, a)| a.as_str());
            let _ = handshake::accept_reply(&key, chosen.as_deref(), answer).to_bytes();
        }
        Err(reply) => {
            let _ = reply.to_bytes();
        }
    }
    let _ = handshake::plain_http_reply(req).to_bytes();
    if let Some(origin) = req.header("origin") {
        let _ = p.origins.allows(origin);
        // A pattern is server config, but it goes through the same splitter: no panic either.
        let _ = OriginPolicy::parse(&[origin.to_owned()]);
    }
    for peer in ["127.0.0.1:40000", "[::1]:40000", "198.51.100.7:40000"] {
        let peer: SocketAddr = peer.parse().unwrap();
        let client = p.proxies.client(peer, req);
        if !p.proxies.contains(peer.ip()) {
            assert_eq!(client, peer, "an untrusted peer's headers are ignored");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, buf)) = data.split_first() else {
        return;
    };
    let max = 16 + usize::from(first) * 64;
    match handshake::parse_head(buf, max) {
        Ok(Some((req, head_len))) => {
            assert!(head_len <= buf.len() && head_len <= max);
            exercise(&req);
        }
        Ok(None) => assert!(buf.len() < max, "a partial head past the limit is a 431"),
        Err(reply) => {
            let _ = reply.to_bytes();
        }
    }
});
