//! `envelope::peek` on any text frame, checked against a full JSON parse: the shortcut must
//! route exactly the frames whose decoded object (what the Python hook and the chat preset
//! see) has a string `"event"`. Text that serde_json cannot decode in full is not compared:
//! skipping a field validates less (a lone surrogate escape), and Python's `json` takes more.
#![no_main]

use _roomcast::envelope;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let peeked = envelope::peek(text);
    if let Some(env) = &peeked {
        let _ = envelope::is_heartbeat_pong(env);
    }
    let full = match serde_json::from_str::<Value>(text) {
        Err(_) => return,
        Ok(Value::Object(obj)) => match obj.get("event") {
            Some(Value::String(event)) => Some((
                event.clone(),
                obj.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            )),
            _ => None,
        },
        _ => None,
    };
    let peeked = peeked.map(|e| (e.event.into_owned(), e.message.map(|m| m.into_owned())));
    assert_eq!(peeked, full, "peek disagrees with a full parse of {text:?}");
});
