//! Reading a client's messages. Between messages a connection holds no read buffer: a read
//! lands in a scratch buffer of the thread that polls it, and only the bytes of an unfinished
//! frame are kept with the connection.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::codec::{take_frame, RawFrame};
use super::deflate::inflate;
use super::{Incoming, ReadError, Text};

thread_local! {
    /// Grown to the largest `read_buffer_size` this thread has read with, once.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A text or binary message whose final frame has not arrived.
struct Partial {
    text: bool,
    /// Deflated (RSV1 on its first frame): checked once inflated, at its end.
    compressed: bool,
    data: BytesMut,
    /// How much of `data` is known to be valid UTF-8 (a text message fails as soon as it
    /// cannot be, not at its last frame).
    checked: usize,
}

pub struct FrameReader<R> {
    io: R,
    /// Read, not yet taken as frames; no allocation while it is empty.
    pending: BytesMut,
    partial: Option<Partial>,
    max_message: usize,
    read_size: usize,
    /// The connection negotiated permessage-deflate.
    deflate: bool,
    /// A Close frame or an error ended the stream: nothing more is read.
    done: bool,
}

fn invalid_utf8(what: &str) -> ReadError {
    ReadError::Violation(1007, format!("invalid UTF-8 in a {what}"))
}

fn protocol(why: impl Into<String>) -> ReadError {
    ReadError::Violation(1002, why.into())
}

fn too_big(len: usize, max: usize) -> ReadError {
    ReadError::Violation(
        1009,
        format!("message too big: {len} bytes or more, over max_message_size ({max})"),
    )
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `leftover`: bytes that arrived with the handshake, which are frames.
    pub fn new(io: R, leftover: Vec<u8>, max_message: usize, read_size: usize) -> Self {
        Self {
            io,
            pending: BytesMut::from(&leftover[..]),
            partial: None,
            max_message,
            read_size: read_size.max(512),
            deflate: false,
            done: false,
        }
    }

    /// Reads compressed messages too (the connection negotiated permessage-deflate).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// The most a message may take on the wire: deflate can grow what does not compress.
    fn max_wire(&self) -> usize {
        if self.deflate {
            self.max_message + self.max_message / 16 + 64
        } else {
            self.max_message
        }
    }

    /// The next message or control frame; `None` after a Close frame. An error ends the
    /// stream: `Lost` when the client went away without a Close.
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        if self.done {
            return None;
        }
        loop {
            match self.take() {
                Ok(Some(incoming)) => {
                    self.done = matches!(incoming, Incoming::Close(..));
                    return Some(Ok(incoming));
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            match self.fill().await {
                Ok(n) if n > 0 => {}
                _ => {
                    self.done = true;
                    return Some(Err(ReadError::Lost));
                }
            }
        }
    }

    /// The next whole message or control frame from what has been read.
    fn take(&mut self) -> Result<Option<Incoming>, ReadError> {
        let max_wire = self.max_wire();
        loop {
            let Some(frame) = take_frame(&mut self.pending, max_wire, self.deflate)? else {
                if self.pending.is_empty() && self.pending.capacity() > 0 {
                    self.pending = BytesMut::new();
                }
                return Ok(None);
            };
            if let Some(incoming) = self.assemble(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    fn assemble(&mut self, frame: RawFrame) -> Result<Option<Incoming>, ReadError> {
        let RawFrame {
            fin,
            compressed,
            opcode,
            payload,
        } = frame;
        let text = match opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Incoming::Ping(payload.freeze()))),
            OpCode::Control(Control::Close) => return close(payload).map(Some),
            OpCode::Control(_) => return Ok(Some(Incoming::Control)),
            OpCode::Data(Data::Continue) if compressed => {
                return Err(protocol("protocol error: RSV1 set on a continuation frame"))
            }
            OpCode::Data(Data::Continue) => return self.continued(fin, &payload),
            OpCode::Data(data) => data == Data::Text,
        };
        if self.partial.is_some() {
            return Err(protocol(
                "protocol error: a new message began before the fragmented one ended",
            ));
        }
        // On a deflate connection a frame may be up to `max_wire`; one that is not compressed
        // is the message itself, so `max_message` holds for it.
        if !compressed && payload.len() > self.max_message {
            return Err(too_big(payload.len(), self.max_message));
        }
        if fin {
            return self.finish(text, compressed, payload.freeze()).map(Some);
        }
        let mut partial = Partial {
            text,
            compressed,
            data: payload,
            checked: 0,
        };
        check_utf8(&mut partial, false)?;
        self.partial = Some(partial);
        Ok(None)
    }

    fn continued(&mut self, fin: bool, payload: &[u8]) -> Result<Option<Incoming>, ReadError> {
        let max_wire = self.max_wire();
        let Some(partial) = self.partial.as_mut() else {
            return Err(protocol(
                "protocol error: a continuation frame with no message to continue",
            ));
        };
        let len = partial.data.len() + payload.len();
        let max = if partial.compressed {
            max_wire
        } else {
            self.max_message
        };
        if len > max {
            return Err(too_big(len, self.max_message));
        }
        partial.data.extend_from_slice(payload);
        check_utf8(partial, fin)?;
        if !fin {
            return Ok(None);
        }
        let partial = self.partial.take().expect("checked above");
        self.finish(partial.text, partial.compressed, partial.data.freeze())
            .map(Some)
    }

    fn finish(&self, text: bool, compressed: bool, data: Bytes) -> Result<Incoming, ReadError> {
        let data = if compressed {
            inflate(&data, self.max_message)?
        } else {
            data
        };
        finish(text, data)
    }

    /// Reads what the socket has. With an unfinished large frame the read goes straight into
    /// its buffer (already allocated for it); otherwise through the thread's scratch buffer.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let size = self.read_size;
        if self.pending.capacity() - self.pending.len() >= size {
            return self.io.read_buf(&mut self.pending).await;
        }
        let (io, pending) = (&mut self.io, &mut self.pending);
        poll_fn(|cx| {
            SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                if scratch.len() < size {
                    scratch.resize(size, 0);
                }
                let mut buf = ReadBuf::new(&mut scratch[..size]);
                match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        pending.extend_from_slice(buf.filled());
                        Poll::Ready(Ok(buf.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
        })
        .await
    }
}

fn finish(text: bool, data: Bytes) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary(data));
    }
    Text::try_from(data)
        .map(Incoming::Text)
        .map_err(|_| invalid_utf8("text message"))
}

/// Fails a text message at the first byte that cannot be UTF-8; a sequence cut by a frame
/// boundary waits for the next frame, unless this was the last.
fn check_utf8(partial: &mut Partial, fin: bool) -> Result<(), ReadError> {
    if !partial.text || partial.compressed {
        return Ok(());
    }
    match std::str::from_utf8(&partial.data[partial.checked..]) {
        Ok(_) => {
            partial.checked = partial.data.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !fin => {
            partial.checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(invalid_utf8("text message")),
    }
}

/// A client's Close: its code (1005 when it gave none) and reason.
fn close(payload: BytesMut) -> Result<Incoming, ReadError> {
    match payload.len() {
        0 => Ok(Incoming::Close(1005, String::new())),
        1 => Err(protocol(
            "protocol error: a Close frame with a one-byte payload",
        )),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(protocol(format!(
                    "protocol error: {code} is not a close code a client may send"
                )));
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| invalid_utf8("Close reason"))?;
            Ok(Incoming::Close(code, reason.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::tests::client_frame;
    use super::*;

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, ReadError>> {
        // Split in two: the leftover from the handshake, and the socket's bytes.
        let half = bytes.len() / 2;
        let mut reader = FrameReader::new(&bytes[half..], bytes[..half].to_vec(), max, 512);
        let mut out = Vec::new();
        while let Some(item) = reader.next().await {
            out.push(item);
        }
        out
    }

    fn frames(parts: &[(u8, &[u8])]) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|(b, p)| client_frame(*b, p))
            .collect()
    }

    #[tokio::test]
    async fn fragments_join_with_control_frames_between_them() {
        let bytes = frames(&[
            (0x01, "hé".as_bytes()),
            (0x89, b"ping"),
            (0x00, b"llo"),
            (0x80, b"!"),
            (0x82, &[1, 2, 3]),
            (0x88, &[0x03, 0xE8, b'b', b'y', b'e']),
            (0x81, b"never read"),
        ]);
        let got = read_all(bytes, 100).await;
        assert!(matches!(&got[0], Ok(Incoming::Ping(p)) if &p[..] == b"ping"));
        assert!(matches!(&got[1], Ok(Incoming::Text(t)) if t.as_str() == "héllo!"));
        assert!(matches!(&got[2], Ok(Incoming::Binary(b)) if b[..] == [1, 2, 3]));
        assert!(matches!(&got[3], Ok(Incoming::Close(1000, r)) if r == "bye"));
        assert_eq!(got.len(), 4, "nothing after the Close");
    }

    #[tokio::test]
    async fn a_client_that_vanishes_is_lost() {
        let mut bytes = client_frame(0x81, b"hello");
        bytes.truncate(bytes.len() - 2);
        let got = read_all(bytes, 100).await;
        assert!(matches!(&got[..], [Err(ReadError::Lost)]));
    }

    async fn first_error(parts: &[(u8, &[u8])], max: usize) -> u16 {
        for item in read_all(frames(parts), max).await {
            if let Err(ReadError::Violation(code, _)) = item {
                return code;
            }
        }
        panic!("no violation");
    }

    #[tokio::test]
    async fn broken_messages_get_their_close_codes() {
        // Invalid UTF-8 fails at the fragment that has it, before the message ends.
        let cut = &"é".as_bytes()[..1];
        assert_eq!(
            first_error(&[(0x01, b"ok"), (0x00, &[0xFF])], 100).await,
            1007
        );
        assert_eq!(first_error(&[(0x01, cut), (0x80, b"x")], 100).await, 1007);
        assert_eq!(first_error(&[(0x81, &[0xC3])], 100).await, 1007);
        assert_eq!(first_error(&[(0x80, b"x")], 100).await, 1002); // nothing to continue
        assert_eq!(first_error(&[(0x01, b"a"), (0x81, b"b")], 100).await, 1002);
        assert_eq!(
            first_error(&[(0x01, &[0; 60]), (0x80, &[0; 60])], 100).await,
            1009
        );
        assert_eq!(first_error(&[(0x88, &[0x03])], 100).await, 1002); // one-byte Close
        assert_eq!(first_error(&[(0x88, &[0x03, 0xED])], 100).await, 1002); // 1005
        assert_eq!(first_error(&[(0x88, &[0x03, 0xE8, 0xFF])], 100).await, 1007);
    }

    #[tokio::test]
    async fn an_uncompressed_message_on_a_deflate_connection_keeps_the_limit() {
        // Found by the `frames` fuzzer: frames may be longer than the limit on a deflate
        // connection (compressed bytes can outgrow their text), but a plain message may not.
        for parts in [
            &[(0x82, &[7u8; 110][..])][..],
            &[(0x02, &[7; 110]), (0x80, &[])],
        ] {
            let bytes = frames(parts);
            let mut reader = FrameReader::new(&bytes[..], Vec::new(), 100, 512).with_deflate(true);
            let got = reader.next().await;
            assert!(
                matches!(got, Some(Err(ReadError::Violation(1009, _)))),
                "{got:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_close_is_1005_and_a_cut_sequence_may_span_fragments() {
        let e = "é".as_bytes();
        let got = read_all(
            frames(&[(0x01, &e[..1]), (0x80, &e[1..]), (0x88, b"")]),
            100,
        )
        .await;
        assert!(matches!(&got[0], Ok(Incoming::Text(t)) if t.as_str() == "é"));
        assert!(matches!(&got[1], Ok(Incoming::Close(1005, r)) if r.is_empty()));
    }
}
