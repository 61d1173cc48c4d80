//! Writing frames: the writer owns its half of the socket, gathers a batch of frames (headers and
//! small payloads copied into one buffer; a larger payload, such as a broadcast's, sent from the
//! bytes every member shares, never copied) and sends the batch with vectored writes.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::codec::{put_header, MAX_HEADER};
use super::deflate::{compress, Deflate};
use super::{truncate, Outgoing};

/// Slices per write call (small frames share one).
const MAX_SLICES: usize = 16;
/// Payloads up to this size are copied into the batch's buffer rather than sent as a slice.
const COPY_UP_TO: usize = 512;
/// What a writer keeps allocated between batches; a larger batch's buffers are let go.
const KEEP_PARTS: usize = 16;
const KEEP_HEADERS: usize = 1024;

pub struct FrameWriter<W> {
    io: W,
    /// Headers of the batch being gathered; `parts` holds them split off, beside payloads.
    headers: BytesMut,
    parts: Vec<Bytes>,
    deflate: Option<Deflate>,
    /// Smaller messages go out uncompressed: deflate would save too little to pay for itself.
    compress_from: usize,
}

/// A Close frame's payload: the code (none for 1005, which is never sent) and the reason.
fn close_payload(code: u16, reason: &str) -> Bytes {
    if code == 1005 {
        return Bytes::new();
    }
    let reason = truncate(reason);
    let mut out = BytesMut::with_capacity(2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
    out.freeze()
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        Self {
            io,
            headers: BytesMut::new(),
            parts: Vec::new(),
            deflate: None,
            compress_from: usize::MAX,
        }
    }

    /// Compresses data messages of `compress_from` bytes or more (permessage-deflate).
    pub fn with_deflate(mut self, deflate: Option<Deflate>, compress_from: usize) -> Self {
        self.deflate = deflate;
        self.compress_from = compress_from;
        self
    }

    /// The deflate window to compress a message of `len` bytes with, if it is to be.
    fn compress_with(&self, len: usize) -> Option<u8> {
        self.deflate
            .filter(|_| len >= self.compress_from)
            .map(|d| d.server_window_bits)
    }

    /// A data frame's opcode, payload and RSV1.
    fn data(&self, opcode: Data, payload: Bytes) -> (OpCode, Bytes, bool) {
        match self.compress_with(payload.len()) {
            Some(bits) => (OpCode::Data(opcode), compress(&payload, bits), true),
            None => (OpCode::Data(opcode), payload, false),
        }
    }

    /// Adds a frame to the batch; `flush` sends the batch.
    pub fn feed(&mut self, out: Outgoing) {
        let control = |op| (OpCode::Control(op), false);
        let ((opcode, compressed), payload) = match out {
            Outgoing::Text(text) => {
                let (op, payload, rsv1) = self.data(Data::Text, Bytes::from(text));
                ((op, rsv1), payload)
            }
            Outgoing::Binary(data) => {
                let (op, payload, rsv1) = self.data(Data::Binary, data);
                ((op, rsv1), payload)
            }
            Outgoing::Shared(shared) => {
                let op = OpCode::Data(if shared.text {
                    Data::Text
                } else {
                    Data::Binary
                });
                match self.compress_with(shared.data.len()) {
                    Some(bits) => ((op, true), shared.deflated(bits)),
                    None => ((op, false), shared.data.clone()),
                }
            }
            Outgoing::Ping => (control(Control::Ping), Bytes::new()),
            Outgoing::Pong(data) => (control(Control::Pong), data),
            Outgoing::Close(code, reason) => {
                (control(Control::Close), close_payload(code, &reason))
            }
        };
        // Room for what this frame adds, no more: the buffer grows to a connection's largest
        // batch (reused from then on), and one that only ever got a heartbeat Ping holds a few
        // bytes, not a kilobyte, while it is idle.
        let copied = if payload.len() <= COPY_UP_TO {
            payload.len()
        } else {
            0
        };
        self.headers.reserve(MAX_HEADER + copied);
        put_header(&mut self.headers, opcode, payload.len(), compressed);
        // A small payload is copied beside its header: one slice instead of two, and a
        // batch of small frames is one buffer. A large one is sent from where it is, shared.
        if payload.len() <= COPY_UP_TO {
            self.headers.extend_from_slice(&payload);
        } else {
            self.parts.push(self.headers.split().freeze());
            self.parts.push(payload);
        }
    }

    /// Writes the batch, as few system calls as the socket allows.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.headers.is_empty() {
            self.parts.push(self.headers.split().freeze());
        }
        let mut first = 0;
        while first < self.parts.len() {
            // The slices are built in the poll, on the thread's stack: held across the await,
            // they would be part of every writer task's state, idle or not.
            let (io, parts) = (&mut self.io, &self.parts[first..]);
            let mut written = poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slot, part) in slices.iter_mut().zip(parts) {
                    *slot = IoSlice::new(part);
                    count += 1;
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let part = &mut self.parts[first];
                if written < part.len() {
                    part.advance(written);
                    break;
                }
                written -= part.len();
                first += 1;
            }
        }
        self.parts.clear();
        if self.parts.capacity() > KEEP_PARTS {
            self.parts = Vec::new();
        }
        if self.headers.capacity() > KEEP_HEADERS {
            self.headers = BytesMut::new();
        }
        self.io.flush().await
    }

    /// Ends the write side (a TLS close_notify, then FIN).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::Text;

    /// A socket that takes at most 7 bytes per write, to exercise partial vectored writes.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_batch_arrives_whole_through_short_writes() {
        let shared = Text::from("x".repeat(300));
        let mut writer = FrameWriter::new(Trickle(Vec::new()));
        writer.feed(Outgoing::Text(Text::from("hi")));
        writer.feed(Outgoing::Text(shared.clone()));
        writer.feed(Outgoing::Pong(Bytes::from_static(b"p")));
        writer.feed(Outgoing::Close(1000, "bye".into()));
        writer.feed(Outgoing::Close(1005, "never sent".into()));
        writer.flush().await.unwrap();
        let mut expected = vec![0x81, 2, b'h', b'i', 0x81, 126, 1, 44];
        expected.extend_from_slice(shared.as_bytes());
        expected.extend_from_slice(&[0x8A, 1, b'p', 0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        expected.extend_from_slice(&[0x88, 0]);
        assert_eq!(writer.io.0, expected);
    }
}
