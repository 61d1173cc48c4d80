//! What nodes say to each other on the bus: a small binary format, one Redis message each.
//!
//! Every message starts with a version byte, its kind, the sending node's id and a sequence
//! number. Sequenced kinds (room traffic, presence) carry the sender's next number, so a
//! receiver can deliver them exactly once and in order; control kinds (beats, requests for a
//! replay) carry 0 and are never replayed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frames::{Outgoing, Text};

const VERSION: u8 = 1;

/// Local connection counts per room, absolute (so applying one twice changes nothing).
pub type Counts = Vec<(String, u32)>;

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A broadcast to one room's members.
    Room { room: String, frame: Frame },
    /// A broadcast to every connection.
    All { frame: Frame },
    /// A chat preset frame (`chat/`): delivered like `Room`, minus the users it was kept for.
    Chat(ChatBody),
    /// The sender's members of these rooms changed to these counts.
    Presence { counts: Counts },
    /// Everything the sender has: replaces what a receiver knew of it.
    Snapshot { counts: Counts },
    /// "I am alive, and my last sequence number is `last`" (tail gaps show up here).
    Beat { last: u64 },
    /// "`target`, send me your messages `from..=to` again."
    Nack { target: u64, from: u64, to: u64 },
    /// "My messages up to `upto` are no longer kept": the asker stops waiting for them.
    Gone { upto: u64 },
    /// A node (re)joined the bus: everyone answers with a snapshot.
    Hello,
    /// A node is shutting down cleanly: drop it from every count now.
    Bye,
}

impl Body {
    /// Room traffic and presence are numbered and replayable; control messages are not.
    pub fn is_sequenced(&self) -> bool {
        matches!(
            self,
            Body::Room { .. }
                | Body::All { .. }
                | Body::Chat(_)
                | Body::Presence { .. }
                | Body::Snapshot { .. }
        )
    }
}

/// A chat frame with what the receiving nodes need besides the frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatBody {
    pub room: String,
    pub frame: Text,
    /// Users the frame was kept for: they get it on entering, not live.
    pub kept_for: Vec<String>,
    /// The room's `num` and its version, as the roster counted them.
    pub num: u64,
    pub version: u64,
    /// A user who left the room on purpose: their connections here stop receiving it.
    pub unseat: Option<String>,
}

/// A frame as it crosses the bus (pings and closes never do).
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Text(Text),
    Binary(Bytes),
}

impl Frame {
    pub fn from_outgoing(out: &Outgoing) -> Option<Frame> {
        match out {
            Outgoing::Text(t) => Some(Frame::Text(t.clone())),
            Outgoing::Binary(b) => Some(Frame::Binary(b.clone())),
            Outgoing::Shared(s) if s.text => Text::try_from(s.data.clone()).ok().map(Frame::Text),
            Outgoing::Shared(s) => Some(Frame::Binary(s.data.clone())),
            Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Close(..) => None,
        }
    }

    pub fn into_outgoing(self) -> Outgoing {
        match self {
            Frame::Text(t) => Outgoing::Text(t),
            Frame::Binary(b) => Outgoing::Binary(b),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub origin: u64,
    pub seq: u64,
    pub body: Body,
}

const ROOM: u8 = 1;
const ALL: u8 = 2;
const PRESENCE: u8 = 3;
const SNAPSHOT: u8 = 4;
const CHAT: u8 = 5;
const BEAT: u8 = 10;
const NACK: u8 = 11;
const GONE: u8 = 12;
const HELLO: u8 = 13;
const BYE: u8 = 14;

pub fn encode(origin: u64, seq: u64, body: &Body) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(VERSION);
    let kind = match body {
        Body::Room { .. } => ROOM,
        Body::All { .. } => ALL,
        Body::Chat(_) => CHAT,
        Body::Presence { .. } => PRESENCE,
        Body::Snapshot { .. } => SNAPSHOT,
        Body::Beat { .. } => BEAT,
        Body::Nack { .. } => NACK,
        Body::Gone { .. } => GONE,
        Body::Hello => HELLO,
        Body::Bye => BYE,
    };
    b.put_u8(kind);
    b.put_u64_le(origin);
    b.put_u64_le(seq);
    match body {
        Body::Room { room, frame } => {
            put_str(&mut b, room);
            put_frame(&mut b, frame);
        }
        Body::All { frame } => put_frame(&mut b, frame),
        Body::Chat(c) => {
            put_str(&mut b, &c.room);
            b.put_u64_le(c.num);
            b.put_u64_le(c.version);
            b.put_u32_le(c.kept_for.len() as u32);
            for uid in &c.kept_for {
                put_str(&mut b, uid);
            }
            match &c.unseat {
                Some(uid) => {
                    b.put_u8(1);
                    put_str(&mut b, uid);
                }
                None => b.put_u8(0),
            }
            put_str(&mut b, c.frame.as_str());
        }
        Body::Presence { counts } | Body::Snapshot { counts } => {
            b.put_u32_le(counts.len() as u32);
            for (room, n) in counts {
                put_str(&mut b, room);
                b.put_u32_le(*n);
            }
        }
        Body::Beat { last } => b.put_u64_le(*last),
        Body::Nack { target, from, to } => {
            b.put_u64_le(*target);
            b.put_u64_le(*from);
            b.put_u64_le(*to);
        }
        Body::Gone { upto } => b.put_u64_le(*upto),
        Body::Hello | Body::Bye => {}
    }
    b.freeze()
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn put_frame(b: &mut BytesMut, frame: &Frame) {
    match frame {
        Frame::Text(t) => {
            b.put_u8(0);
            b.put_slice(t.as_bytes());
        }
        Frame::Binary(bytes) => {
            b.put_u8(1);
            b.put_slice(bytes);
        }
    }
}

/// Reads one message; an error names what was wrong (a foreign publisher on our channel, or
/// a node speaking a newer version).
pub fn decode(data: Bytes) -> Result<Message, String> {
    let mut r = Reader { data, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!("version {version}, this node speaks {VERSION}"));
    }
    let kind = r.u8()?;
    let origin = r.u64()?;
    let seq = r.u64()?;
    let body = match kind {
        ROOM => Body::Room {
            room: r.string()?,
            frame: r.frame()?,
        },
        ALL => Body::All { frame: r.frame()? },
        CHAT => Body::Chat(r.chat()?),
        PRESENCE => Body::Presence {
            counts: r.counts()?,
        },
        SNAPSHOT => Body::Snapshot {
            counts: r.counts()?,
        },
        BEAT => Body::Beat { last: r.u64()? },
        NACK => Body::Nack {
            target: r.u64()?,
            from: r.u64()?,
            to: r.u64()?,
        },
        GONE => Body::Gone { upto: r.u64()? },
        HELLO => Body::Hello,
        BYE => Body::Bye,
        other => return Err(format!("unknown message kind {other}")),
    };
    if body.is_sequenced() != (seq != 0) {
        return Err(format!("kind {kind} with sequence number {seq}"));
    }
    Ok(Message { origin, seq, body })
}

struct Reader {
    data: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        if self.data.len() - self.at < n {
            return Err(format!("truncated: wanted {n} bytes at offset {}", self.at));
        }
        let out = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b[..].try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b[..].try_into().unwrap()))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a room name is not UTF-8".into())
    }

    fn frame(&mut self) -> Result<Frame, String> {
        let kind = self.u8()?;
        let rest = self.take(self.data.len() - self.at)?;
        match kind {
            0 => Text::try_from(rest)
                .map(Frame::Text)
                .map_err(|_| "a text frame is not UTF-8".into()),
            1 => Ok(Frame::Binary(rest)),
            other => Err(format!("unknown frame kind {other}")),
        }
    }

    fn chat(&mut self) -> Result<ChatBody, String> {
        let room = self.string()?;
        let num = self.u64()?;
        let version = self.u64()?;
        let n = self.u32()? as usize;
        if n > (self.data.len() - self.at) / 4 {
            return Err(format!("{n} uids in {} bytes", self.data.len()));
        }
        let kept_for = (0..n).map(|_| self.string()).collect::<Result<_, _>>()?;
        let unseat = match self.u8()? {
            0 => None,
            _ => Some(self.string()?),
        };
        let n = self.u32()? as usize;
        let frame = Text::try_from(self.take(n)?).map_err(|_| "a chat frame is not UTF-8")?;
        Ok(ChatBody {
            room,
            frame,
            kept_for,
            num,
            version,
            unseat,
        })
    }

    fn counts(&mut self) -> Result<Counts, String> {
        let n = self.u32()? as usize;
        // Each entry takes at least 8 bytes: a length cannot promise more than the data holds.
        if n > (self.data.len() - self.at) / 8 {
            return Err(format!("{n} presence entries in {} bytes", self.data.len()));
        }
        (0..n).map(|_| Ok((self.string()?, self.u32()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(seq: u64, body: Body) {
        let msg = decode(encode(7, seq, &body)).unwrap();
        assert_eq!(
            msg,
            Message {
                origin: 7,
                seq,
                body
            }
        );
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(
            1,
            Body::Room {
                room: "lobby".into(),
                frame: Frame::Text(Text::from("héllo")),
            },
        );
        round_trip(
            2,
            Body::All {
                frame: Frame::Binary(Bytes::from_static(&[0, 255, 1])),
            },
        );
        round_trip(
            3,
            Body::Presence {
                counts: vec![("a".into(), 2), ("b".into(), 0)],
            },
        );
        round_trip(4, Body::Snapshot { counts: vec![] });
        round_trip(0, Body::Beat { last: 99 });
        round_trip(
            0,
            Body::Nack {
                target: 3,
                from: 5,
                to: 9,
            },
        );
        round_trip(0, Body::Gone { upto: 4 });
        round_trip(0, Body::Hello);
        round_trip(0, Body::Bye);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(Bytes::from_static(b"")).is_err());
        assert!(decode(Bytes::from_static(b"hello world, not ours")).is_err());
        let mut good = encode(
            1,
            1,
            &Body::Presence {
                counts: vec![("r".into(), 1)],
            },
        )
        .to_vec();
        good.truncate(good.len() - 2);
        assert!(decode(Bytes::from(good)).is_err());
        let mut huge = encode(1, 1, &Body::Presence { counts: vec![] }).to_vec();
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(Bytes::from(huge)).is_err());
        // A control kind with a number, or a numbered kind without one.
        assert!(decode(encode(1, 5, &Body::Hello)).is_err());
        assert!(decode(encode(
            1,
            0,
            &Body::All {
                frame: Frame::Binary(Bytes::new())
            }
        ))
        .is_err());
    }
}
