//! JSON envelopes: find the `"event"` of a text frame without building the whole object, and the
//! fixed frames of the application-level heartbeat.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A field's value when it is a string; any other JSON value (a number, an object) is skipped
/// without being materialised and is not an error, so it cannot hide the `event` beside it.
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| MaybeStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(map).map(|_| MaybeStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys `peek` looks at; any other is skipped unread.
enum Key {
    Event,
    Message,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "event" => Key::Event,
                    "message" => Key::Message,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

#[derive(Default)]
struct Peek<'a> {
    event: Option<Cow<'a, str>>,
    message: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Peek<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Peek<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Peek<'de>, A::Error> {
                let mut peek = Peek::default();
                // A repeated key is not an error and the last one counts, as for the decoders
                // the frame goes to next (serde_json's Value in the chat preset, Python's json).
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Event => peek.event = map.next_value::<MaybeStr>()?.0,
                        Key::Message => peek.message = map.next_value::<MaybeStr>()?.0,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(peek)
            }
        }
        d.deserialize_map(V)
    }
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
    fn other_json_in_message_or_a_repeated_key_keeps_the_event() {
        // Found by the `envelope` fuzz target: a non-string "message" or a repeated key made the
        // whole frame a non-envelope, so an `on(event)` hook never got it.
        let env = peek(r#"{"event":"a\"b","message":21131.66,"messag666666":"u15E9"}"#).unwrap();
        assert_eq!((env.event.as_ref(), env.message), ("a\"b", None));
        let env = peek(r#"{"event":"lookup","message":{"q":[1,{"event":"x"}]}}"#).unwrap();
        assert_eq!((env.event.as_ref(), env.message), ("lookup", None));
        let env = peek(r#"{"event":"x","message":"a","event":"y","message":"b"}"#).unwrap();
        assert_eq!(env.event, "y");
        assert_eq!(env.message.as_deref(), Some("b"));
        assert_eq!(peek(r#"{"event":"x","event":null}"#), None);
    }

    #[test]
    fn plain_event_names_are_borrowed_from_the_frame() {
        let env = peek(r#"{"event":"enter","message":"hi"}"#).unwrap();
        assert!(matches!(env.event, Cow::Borrowed("enter")));
        assert!(matches!(env.message, Some(Cow::Borrowed("hi"))));
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
