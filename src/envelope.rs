//! JSON envelopes: find the `"event"` of a text frame without building the whole object, and the
//! fixed frames of the application-level heartbeat.

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Deserialize)]
struct Peek<'a> {
    // Unknown fields are skipped by serde without being materialised.
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// The `event` and `message` string fields of a JSON object, when `text` is one.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub event: Cow<'a, str>,
    pub message: Option<Cow<'a, str>>,
}

pub fn peek(text: &str) -> Option<Envelope<'_>> {
    // Cheap pre-check: most non-JSON traffic is rejected without running the parser.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_str(text).ok()?;
    Some(Envelope {
        event: peek.event?,
        message: peek.message,
    })
}

/// The server's application-level heartbeat ping (seed 000's format).
pub const HEARTBEAT_PING: &str = r#"{"event":"heartbeat","message":"ping"}"#;

/// Whether this envelope is a client's answer to `HEARTBEAT_PING`.
pub fn is_heartbeat_pong(env: &Envelope<'_>) -> bool {
    env.event == "heartbeat" && env.message.as_deref() == Some("pong")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_among_other_fields() {
        let env =
            peek(r#"{"roomid":"r1","event":"enter","uid":7,"nested":{"event":"x"}}"#).unwrap();
        assert_eq!(env.event, "enter");
        assert_eq!(env.message, None);
    }

    #[test]
    fn escaped_event_names_are_decoded() {
        assert_eq!(peek(r#"{"event":"a\"b"}"#).unwrap().event, "a\"b");
    }

    #[test]
    fn non_envelopes_are_none() {
        for text in [
            "ping",
            "",
            "[1,2]",
            "{",
            r#"{"event":3}"#,
            r#"{"message":"x"}"#,
            "{} trailing",
        ] {
            assert_eq!(peek(text), None, "{text}");
        }
    }

    #[test]
    fn heartbeat_pong_is_recognised() {
        assert!(is_heartbeat_pong(
            &peek(r#"{"event":"heartbeat","message":"pong"}"#).unwrap()
        ));
        assert!(!is_heartbeat_pong(
            &peek(r#"{"event":"heartbeat","message":"ping"}"#).unwrap()
        ));
        assert!(peek(HEARTBEAT_PING).is_some());
    }
}
