//! The chat protocol, as the `fanout` and `chat` scenarios speak it with `--protocol chat`
//! (roomcast's chat preset, the reference server's `--chat` mode; benches/PROTOCOL.md).
//!
//! Each client sends `enter` and waits for its own `enter` broadcast, then sends
//! `{"event":"message","message":PAYLOAD}` frames and reads back the stamped frames. Received
//! frames are never parsed as a whole: one forward scan of the top-level keys finds `event` and,
//! for a `message` event, where the text starts (the loadgen header is its first 40 bytes). The
//! loadgen reads every delivery, so its cost per frame bounds what it can measure.

use std::cell::Cell;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Ws;
use crate::payload::{self, Header};
use crate::rawws;
use crate::stats::Recorder;

/// The wire protocol of a traffic scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Proto {
    /// benches/PROTOCOL.md: the payload is the whole frame, rooms are joined by path.
    Raw,
    /// The chat preset's JSON protocol: `enter` a room, then `message` events.
    Chat,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Raw => "raw",
            Proto::Chat => "chat",
        }
    }
}

/// A `message` frame is this prefix, the payload, this suffix.
pub const MESSAGE_PREFIX: &[u8] = br#"{"event":"message","message":""#;
pub const MESSAGE_SUFFIX: &[u8] = br#""}"#;

/// How long a connection may wait for its own `enter` to come back.
pub const ENTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `enter` frame of user `uid` (whose name is its uid too) into `room`.
pub fn enter_frame(uid: &str, room: &str) -> String {
    format!(r#"{{"event":"enter","message":"{uid}","roomid":"{room}","uid":"{uid}"}}"#)
}

/// A connection that can enter a room: tungstenite's (`conn::Ws`) or the bare client's.
pub(crate) trait ChatConn {
    async fn chat_send(&mut self, text: String) -> Result<(), String>;
    /// The next data frame's payload (`None` for a control frame); a Close, or the end of the
    /// connection, is an error.
    async fn chat_next(&mut self) -> Result<Option<Vec<u8>>, String>;
}

impl ChatConn for Ws {
    async fn chat_send(&mut self, text: String) -> Result<(), String> {
        self.send(Message::text(text)).await.map_err(|e| e.to_string())
    }

    async fn chat_next(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.next().await {
            Some(Ok(Message::Close(f))) => Err(format!("server sent close {f:?}")),
            Some(Ok(m)) => Ok(payload::data_of(&m).map(<[u8]>::to_vec)),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("connection closed".into()),
        }
    }
}

impl ChatConn for rawws::Ws {
    async fn chat_send(&mut self, text: String) -> Result<(), String> {
        self.send_text(&text).await.map_err(|f| f.detail)
    }

    async fn chat_next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let f = self.next().await.map_err(|f| f.detail)?;
        match f.op {
            rawws::OP_CLOSE => Err(format!("server sent close {}", self.close_code(&f))),
            rawws::OP_TEXT | rawws::OP_BINARY => Ok(Some(self.payload(&f).to_vec())),
            _ => Ok(None),
        }
    }
}

/// What a received chat frame is, as far as the loadgen cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A `message` event: the bytes from the start of its text to the end of the frame when
    /// `event` came first (the text is not scanned), else the text alone.
    Message(&'a [u8]),
    /// An `enter` event and its `uid` (a string's raw contents, or a number's token).
    Enter(&'a [u8]),
    /// The server refused something: `error` or `noauth`, with its `message`.
    Refused(&'a [u8], &'a [u8]),
    /// Any other event (`heartbeat`, `out`, ...).
    Other(&'a [u8]),
    /// Not a JSON object with a string `event`.
    Invalid,
}

/// A forward-only cursor over a frame; every step returns None on malformed input.
struct Cur<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.d.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace and returns the next byte without consuming it.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.d.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// The raw contents of a string whose opening quote was consumed (escapes left as is).
    fn string_rest(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            match *self.d.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(&self.d[start..self.i - 1]);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// Any JSON value: a string's raw contents, or the raw token (objects and arrays whole).
    fn value(&mut self) -> Option<&'a [u8]> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string_rest()
            }
            b'{' | b'[' => {
                let start = self.i;
                let mut depth = 0usize;
                loop {
                    match *self.d.get(self.i)? {
                        b'"' => {
                            self.i += 1;
                            self.string_rest()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(&self.d[start..self.i]);
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while let Some(&c) = self.d.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start { None } else { Some(&self.d[start..self.i]) }
            }
        }
    }
}

/// Classifies a received frame with one forward scan of its top-level keys.
pub fn scan(d: &[u8]) -> Frame<'_> {
    // What both servers send for a message: one comparison instead of a scan.
    if let Some(text) = d.strip_prefix(MESSAGE_PREFIX) {
        return Frame::Message(text);
    }
    scan_fields(d).unwrap_or(Frame::Invalid)
}

fn scan_fields(d: &[u8]) -> Option<Frame<'_>> {
    let mut c = Cur { d, i: 0 };
    c.eat(b'{')?;
    let (mut event, mut message, mut uid) = (None, None, None);
    if c.peek()? != b'}' {
        loop {
            c.eat(b'"')?;
            let key = c.string_rest()?;
            c.eat(b':')?;
            match key {
                b"event" => {
                    c.eat(b'"')?;
                    event = Some(c.string_rest()?);
                }
                b"message" => {
                    if event == Some(b"message".as_slice()) && c.peek()? == b'"' {
                        // The common case: nothing after the text's start is needed.
                        return Some(Frame::Message(&d[c.i + 1..]));
                    }
                    message = Some(c.value()?);
                }
                b"uid" => uid = Some(c.value()?),
                _ => {
                    c.value()?;
                }
            }
            match c.peek()? {
                b',' => c.i += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    Some(match event? {
        b"message" => Frame::Message(message?),
        b"enter" => Frame::Enter(uid.unwrap_or_default()),
        e @ (b"error" | b"noauth") => Frame::Refused(e, message.unwrap_or_default()),
        e => Frame::Other(e),
    })
}

/// What a traffic connection does with a received data frame.
pub enum Received {
    /// One of the loadgen's messages.
    Payload(Header),
    /// A frame of the protocol that carries no payload (chat: `enter`, `heartbeat`, `out`).
    Skip,
    /// Something that should not arrive.
    Bad(String),
}

pub fn decode(proto: Proto, data: &[u8]) -> Received {
    let text = match proto {
        Proto::Raw => data,
        Proto::Chat => match scan(data) {
            Frame::Message(text) => text,
            Frame::Enter(_) | Frame::Other(_) => return Received::Skip,
            Frame::Refused(e, m) => {
                return Received::Bad(format!(
                    "server sent {}: {}",
                    String::from_utf8_lossy(e),
                    String::from_utf8_lossy(m)
                ));
            }
            Frame::Invalid => {
                let head = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
                return Received::Bad(format!("not a chat frame: {head:?}"));
            }
        },
    };
    match payload::parse(text) {
        Some(h) => Received::Payload(h),
        None => Received::Bad("payload without loadgen header".into()),
    }
}

/// Sends `enter` on `ws` and reads until the server's `enter` broadcast for `uid` comes back
/// (the connection is then in the room); frames before it are skipped.
pub async fn enter(ws: &mut impl ChatConn, uid: &str, room: &str) -> Result<(), String> {
    ws.chat_send(enter_frame(uid, room)).await.map_err(|e| format!("send enter: {e}"))?;
    let wait = async {
        loop {
            let data = match ws.chat_next().await {
                Ok(Some(data)) => data,
                Ok(None) => continue,
                Err(e) => return Err(format!("waiting for enter: {e}")),
            };
            match scan(&data) {
                Frame::Enter(u) if u == uid.as_bytes() => return Ok(()),
                Frame::Refused(e, m) => {
                    return Err(format!(
                        "enter refused with {}: {}",
                        String::from_utf8_lossy(e),
                        String::from_utf8_lossy(m)
                    ));
                }
                _ => {}
            }
        }
    };
    match timeout(ENTER_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => Err(format!("own enter not back within {}s", ENTER_TIMEOUT.as_secs())),
    }
}

/// Enters every connection into `room` at once, as uids `{uid_prefix}{index}`. Returns the
/// connections that are in (in their original order) and how many failed (recorded). A
/// connection that is in keeps reading (and dropping) the others' `enter` broadcasts until all
/// are done, so they do not pile up in the server's queue for it.
pub async fn enter_all<C: ChatConn>(wss: Vec<C>, uid_prefix: &str, room: &str, rec: &Recorder) -> (Vec<C>, u64) {
    let pending = Cell::new(wss.len());
    let all_done = Notify::new();
    let finished = || {
        pending.set(pending.get() - 1);
        if pending.get() == 0 {
            all_done.notify_waiters();
        }
    };
    let entering = wss.into_iter().enumerate().map(|(i, mut ws)| {
        let (pending, all_done, finished) = (&pending, &all_done, &finished);
        async move {
            let r = enter(&mut ws, &format!("{uid_prefix}{i}"), room).await;
            finished();
            if r.is_ok() {
                while pending.get() > 0 {
                    let done = all_done.notified();
                    tokio::select! {
                        m = ws.chat_next() => if let Err(e) = m {
                            return (ws, Err(format!("after enter: {e}")));
                        },
                        _ = done => {}
                    }
                }
            }
            (ws, r)
        }
    });
    let mut ok = Vec::new();
    let mut failed = 0;
    for (ws, r) in futures_util::future::join_all(entering).await {
        match r {
            Ok(()) => ok.push(ws),
            Err(e) => {
                failed += 1;
                rec.error("enter", e);
            }
        }
    }
    (ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_frames() {
        let f = br#"{"event":"message","message":"0000abcdxx","name":"c1","num":16}"#;
        assert_eq!(scan(f), Frame::Message(br#"0000abcdxx","name":"c1","num":16}"#));
        // Other key orders and spacing take the full scan.
        let f = br#"{ "num" : 3, "message" : "hi \"there\"", "name":"x", "event" : "message" }"#;
        assert_eq!(scan(f), Frame::Message(br#"hi \"there\""#));
        let f = br#"{"event":"enter","message":"s1","roomid":"bench","uid":"s1","name":"s1","num":2}"#;
        assert_eq!(scan(f), Frame::Enter(b"s1"));
        assert_eq!(scan(br#"{"uid":7,"event":"enter","x":{"a":[1,"}"]}}"#), Frame::Enter(b"7"));
        assert_eq!(scan(br#"{"event":"heartbeat","message":"ping","num":4}"#), Frame::Other(b"heartbeat"));
        assert_eq!(
            scan(br#"{"event":"error","message":"enter a room first"}"#),
            Frame::Refused(b"error", b"enter a room first")
        );
        for bad in
            [&b"pong"[..], b"", b"{}", b"{\"event\":1}", b"{\"event\":\"message\"", b"[1]", b"{\"message\":\"m\"}"]
        {
            assert_eq!(scan(bad), Frame::Invalid, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn decodes_own_messages() {
        let mut w = payload::PayloadWriter::framed(64, MESSAGE_PREFIX, MESSAGE_SUFFIX);
        let h = Header { sender: 5, seq: 77, sent_ns: 123_456 };
        let m = w.message(h);
        let sent = payload::data_of(&m).unwrap();
        // What the server sends back: the frame with name and num stamped.
        let mut back = sent[..sent.len() - 1].to_vec();
        back.extend_from_slice(br#","name":"c5","num":16}"#);
        assert!(matches!(decode(Proto::Chat, &back), Received::Payload(x) if x == h));
        assert!(matches!(decode(Proto::Chat, br#"{"event":"out","name":"c1","num":1}"#), Received::Skip));
        assert!(matches!(decode(Proto::Chat, br#"{"event":"message","message":"short"}"#), Received::Bad(_)));
        assert!(matches!(decode(Proto::Raw, &sent[MESSAGE_PREFIX.len()..]), Received::Payload(x) if x == h));
    }
}
