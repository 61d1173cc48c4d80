//! The chat protocol's frames (../shared/PROTOCOL.md): a client frame is parsed once, and every
//! frame the server sends is serialised once and shared by all its recipients.

use serde_json::{json, Map, Value};

use crate::frames::Text;

pub type Object = Map<String, Value>;

/// The answer to a frame that needs a valid token first.
pub const NOAUTH: &str = r#"{"event":"noauth","message":"please auth again"}"#;

/// A client frame: its `event` and the whole object (fields not named in the protocol are kept
/// and passed on).
#[derive(Debug)]
pub struct ClientFrame {
    pub event: String,
    pub obj: Object,
}

/// Parses a text frame; the error says what was wrong and what to send instead.
pub fn parse(text: &str) -> Result<ClientFrame, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not JSON ({e}); send one JSON object per text frame, e.g. {{\"event\":\"message\",\"message\":\"hi\"}}"
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(
            "not a JSON object; send one object per frame with a string \"event\" field".into(),
        );
    };
    match obj.get("event") {
        Some(Value::String(event)) => Ok(ClientFrame {
            event: event.clone(),
            obj,
        }),
        _ => Err("missing \"event\": every frame needs a string \"event\" field (enter, message, leave, heartbeat, auth, ...)".into()),
    }
}

/// A room id or uid as a key: strings as given, numbers by their JSON text (so `5` and `"5"`
/// are the same room). Anything else is not an id.
pub fn key(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A string field, if it is one.
pub fn string<'a>(obj: &'a Object, field: &str) -> Option<&'a str> {
    obj.get(field).and_then(Value::as_str)
}

fn text(value: &impl serde::Serialize) -> Text {
    // Serialising a Map of JSON values cannot fail (keys are strings, no custom types).
    Text::from(serde_json::to_string(value).expect("JSON values always serialise"))
}

/// The frame as broadcast: the client's object with the sender's entered `name` and the room's
/// current `num` stamped on it (as the seed's server does).
pub fn stamp(mut obj: Object, name: &str, num: usize) -> Text {
    obj.insert("name".into(), Value::String(name.to_owned()));
    obj.insert("num".into(), num.into());
    text(&obj)
}

/// The copy kept for an offline member: the broadcast frame plus `roomid`, unless the client's
/// frame already carried it (then it is the same room: a mismatch is refused before this).
pub fn kept_copy(broadcast: &Text, roomid: &Value, had_roomid: bool) -> Text {
    if had_roomid {
        return broadcast.clone();
    }
    let s = broadcast.as_str();
    // `stamp` always produces an object, so the last byte is its closing brace.
    let mut out = String::with_capacity(s.len() + 32);
    out.push_str(&s[..s.len() - 1]);
    out.push_str(",\"roomid\":");
    out.push_str(&serde_json::to_string(roomid).expect("JSON values always serialise"));
    out.push('}');
    Text::from(out)
}

pub fn out(name: &str, num: usize) -> Text {
    text(&json!({"event": "out", "name": name, "num": num}))
}

/// The JSON heartbeat ping; `num` is left out for a connection that entered no room.
pub fn heartbeat(num: Option<usize>) -> Text {
    match num {
        Some(num) => text(&json!({"event": "heartbeat", "message": "ping", "num": num})),
        None => Text::from_static(crate::envelope::HEARTBEAT_PING),
    }
}

/// What a client gets for a frame the preset cannot act on.
pub fn error(message: &str) -> Text {
    text(&json!({"event": "error", "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_with_an_event() {
        let f = parse(r#"{"event":"enter","message":"ann","roomid":"r1","uid":7}"#).unwrap();
        assert_eq!(f.event, "enter");
        assert_eq!(key(&f.obj["uid"]).as_deref(), Some("7"));
        assert_eq!(key(&f.obj["roomid"]).as_deref(), Some("r1"));
    }

    #[test]
    fn bad_frames_say_what_to_send() {
        for bad in ["ping!", "[1]", r#"{"event":3}"#, r#"{"message":"x"}"#, "{"] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.contains("event") || err.contains("JSON"),
                "{bad}: {err}"
            );
        }
        assert_eq!(key(&Value::Null), None);
        assert_eq!(key(&Value::String(String::new())), None);
    }

    #[test]
    fn stamping_keeps_unknown_fields_and_order() {
        let f = parse(r#"{"event":"message","message":"hi","name":"liar","extra":[1]}"#).unwrap();
        let t = stamp(f.obj, "ann", 2);
        assert_eq!(
            t.as_str(),
            r#"{"event":"message","message":"hi","name":"ann","extra":[1],"num":2}"#
        );
        let kept = kept_copy(&t, &Value::String("r1".into()), false);
        assert_eq!(
            kept.as_str(),
            r#"{"event":"message","message":"hi","name":"ann","extra":[1],"num":2,"roomid":"r1"}"#
        );
        assert_eq!(kept_copy(&t, &Value::Null, true).as_str(), t.as_str());
    }

    #[test]
    fn server_frames() {
        assert_eq!(
            out("ann", 1).as_str(),
            r#"{"event":"out","name":"ann","num":1}"#
        );
        assert_eq!(
            heartbeat(Some(3)).as_str(),
            r#"{"event":"heartbeat","message":"ping","num":3}"#
        );
        assert!(!heartbeat(None).as_str().contains("num"));
        assert!(serde_json::from_str::<Value>(NOAUTH).is_ok());
        assert!(serde_json::from_str::<Value>(error("x \"y\"").as_str()).is_ok());
    }
}
