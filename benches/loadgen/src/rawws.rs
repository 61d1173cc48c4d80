//! A bare WebSocket client: a pre-built upgrade request, frames built and parsed by hand in
//! one reused buffer. The churn scenario uses it because a WebSocket library would cost more per
//! connection than the server spends on it, and could not end a connection the odd ways the soak
//! needs (half a frame header, a reset before the 101 arrives); the fan-out's subscribers,
//! because a library's message objects (a zero-filled read buffer, a UTF-8 check and an
//! allocation per frame) made the load generator, not the server, the limit.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::tls::{Stream, TlsClient};

/// RFC 6455's sample key and the accept value it must get back.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The largest request head the server answers with 101 is far below this.
const MAX_HEAD: usize = 8192;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why a connection did not go as planned; `key` names it in the report.
#[derive(Debug)]
pub struct Fail {
    pub key: &'static str,
    pub detail: String,
}

impl Fail {
    pub fn new(key: &'static str, detail: impl Into<String>) -> Self {
        Fail { key, detail: detail.into() }
    }

    /// `key` names where it happened; a reset or an early end is named for what it is, and
    /// where it happened goes into the detail.
    fn io(key: &'static str, e: std::io::Error) -> Self {
        let detail = format!("{key}: {e}");
        let key = match e.kind() {
            ErrorKind::ConnectionReset => "reset_by_server",
            ErrorKind::UnexpectedEof => "eof",
            _ => key,
        };
        Fail::new(key, detail)
    }
}

/// How to open the socket.
#[derive(Clone, Copy, Default)]
pub struct SocketOpts {
    pub source: Option<IpAddr>,
    /// SO_LINGER 0: dropping the socket resets it instead of closing it.
    pub linger0: bool,
    /// SO_RCVBUF, for clients that must fill up quickly when they stop reading.
    pub recv_buffer: Option<u32>,
    /// TCP_MAXSEG: loopback's 64 KiB segments let the server's send buffer grow to
    /// `tcp_wmem`'s maximum (4 MB) at once; an Ethernet-sized one keeps it near 100 KB, as on a
    /// real network, so that what a client does not read piles up in the server's queue.
    pub max_segment: Option<u32>,
}

/// The upgrade request for `path_query` from a page of `origin` (as browsers send it), built
/// once per scenario and reused by every socket.
pub fn request(authority: &str, path_query: &str, origin: &str) -> Vec<u8> {
    format!(
        "GET {path_query} HTTP/1.1\r\nHost: {authority}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// TCP connect (and the TLS handshake with `tls`), with the request written. The caller may
/// drop it at once (a client that goes away while `on_connect` runs) or wait for the 101 with
/// `Ws::upgraded`.
pub async fn connect(addr: SocketAddr, req: &[u8], o: SocketOpts, tls: Option<&TlsClient>) -> Result<Stream, Fail> {
    let sock = TcpSocket::new_v4().map_err(|e| Fail::io("socket", e))?;
    if let Some(ip) = o.source {
        sock.bind(SocketAddr::new(ip, 0)).map_err(|e| Fail::io("bind", e))?;
    }
    if o.linger0 {
        sock.set_zero_linger().map_err(|e| Fail::io("socket", e))?;
    }
    if let Some(n) = o.recv_buffer {
        sock.set_recv_buffer_size(n).map_err(|e| Fail::io("socket", e))?;
    }
    if let Some(mss) = o.max_segment {
        set_max_segment(&sock, mss).map_err(|e| Fail::io("socket", e))?;
    }
    let tcp = sock.connect(addr).await.map_err(|e| Fail::io("connect", e))?;
    tcp.set_nodelay(true).map_err(|e| Fail::io("socket", e))?;
    let mut stream = match tls {
        Some(tls) => tls.handshake(tcp).await.map_err(|e| Fail::io("tls", e))?,
        None => Stream::Plain(tcp),
    };
    write(&mut stream, req).await.map_err(|e| Fail::io("handshake", e))?;
    Ok(stream)
}

/// Writes all of `bytes`; TLS may hold the last record until flushed.
async fn write(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// One open WebSocket connection, and what was read and not yet parsed.
pub struct Ws {
    pub tcp: Stream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    mask: [u8; 4],
    /// Reads from the socket so far: frames that came in one read arrived together.
    reads: u64,
}

/// A frame's opcode and where its payload is in the connection's buffer (valid until the next
/// read).
pub struct Frame {
    pub op: u8,
    /// The last frame of its message (servers here never fragment small messages).
    pub fin: bool,
    start: usize,
    end: usize,
}

impl Ws {
    /// Reads the server's answer to the request: a 101 with the right accept value, or the
    /// status it sent instead.
    pub async fn upgraded(mut tcp: Stream, mask: u32) -> Result<Ws, Fail> {
        let mut buf = Vec::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(Fail::new("handshake", "response head too large"));
            }
            if read_more(&mut tcp, &mut buf).await.map_err(|e| Fail::io("handshake", e))? == 0 {
                return Err(Fail::new("handshake", "connection closed before the 101"));
            }
        };
        let head = &buf[..head_end];
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(Fail::new("refused", String::from_utf8_lossy(line).into_owned()));
        }
        if !head.windows(ACCEPT.len()).any(|w| w == ACCEPT) {
            return Err(Fail::new("handshake", "wrong Sec-WebSocket-Accept"));
        }
        Ok(Ws { tcp, buf, pos: head_end, mask: mask.to_le_bytes(), reads: 0 })
    }

    /// Sends one masked frame (client frames must be masked; any key will do).
    pub async fn send(&mut self, op: u8, payload: &[u8]) -> Result<(), Fail> {
        let frame = frame(op, payload, self.mask);
        write(&mut self.tcp, &frame).await.map_err(|e| Fail::io("write", e))
    }

    /// Appends a frame masked with this connection's key to `out`, to send with `send_raw`.
    pub fn put(&self, out: &mut Vec<u8>, op: u8, payload: &[u8]) {
        put_frame(out, op, payload, self.mask);
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), Fail> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Writes raw bytes: the start of a frame that will never be finished.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        write(&mut self.tcp, bytes).await.map_err(|e| Fail::io("write", e))
    }

    /// The next frame; pings are answered on the way (a stayer of the heartbeat's).
    pub async fn next(&mut self) -> Result<Frame, Fail> {
        loop {
            if let Some(f) = self.parse()? {
                if f.op == OP_PING {
                    let ping = self.payload(&f).to_vec();
                    self.send(OP_PONG, &ping).await?;
                    continue;
                }
                return Ok(f);
            }
            if self.pos > 0 && self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            } else if self.pos > 64 * 1024 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.reads += 1;
            if read_more(&mut self.tcp, &mut self.buf).await.map_err(|e| Fail::io("read", e))? == 0 {
                return Err(Fail::new("eof", "the server closed the connection without a Close frame"));
            }
        }
    }

    /// Reads from the socket so far; `next` reads only when no whole frame is buffered.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    pub fn payload(&self, f: &Frame) -> &[u8] {
        &self.buf[f.start..f.end]
    }

    /// The close code of a Close frame (1005 when it has none).
    pub fn close_code(&self, f: &Frame) -> u16 {
        match self.payload(f) {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 1005,
        }
    }

    /// Waits for the text frame `want`, skipping others (broadcasts to the room, the
    /// heartbeat); a Close or the end of the stream instead is a failure.
    pub async fn expect_text(&mut self, want: &[u8]) -> Result<(), Fail> {
        loop {
            let f = self.next().await?;
            match f.op {
                OP_TEXT if self.payload(&f) == want => return Ok(()),
                OP_CLOSE => {
                    return Err(Fail::new("closed_by_server", format!("Close {}", self.close_code(&f))));
                }
                _ => {}
            }
        }
    }

    /// A clean close: our Close 1000, theirs back, then the server closes the TCP connection
    /// (it closes first, so TIME_WAIT stays on its side).
    pub async fn close(&mut self) -> Result<(), Fail> {
        self.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        loop {
            let f = self.next().await?;
            if f.op == OP_CLOSE {
                let code = self.close_code(&f);
                if code != 1000 {
                    return Err(Fail::new("close_code", format!("server answered Close {code}")));
                }
                break;
            }
        }
        let mut rest = [0u8; 512];
        match self.tcp.read(&mut rest).await {
            Ok(0) => Ok(()),
            Ok(_) => Err(Fail::new("after_close", "data after the Close frame")),
            Err(e) => Err(Fail::io("after_close", e)),
        }
    }

    /// A whole frame is buffered: `next` returns it without reading from the socket.
    pub fn has_frame(&self) -> bool {
        frame_size(&self.buf[self.pos..]).is_some_and(|(head, len)| self.buf.len() - self.pos >= head + len)
    }

    /// A complete frame at the read position, if one is there; consumes it.
    fn parse(&mut self) -> Result<Option<Frame>, Fail> {
        let b = &self.buf[self.pos..];
        if b.len() >= 2 && b[1] & 0x80 != 0 {
            return Err(Fail::new("protocol", "masked frame from the server"));
        }
        let Some((head, len)) = frame_size(b) else {
            return Ok(None);
        };
        let total = head as u64 + len as u64;
        if (b.len() as u64) < total {
            self.buf.reserve(total as usize - b.len());
            return Ok(None);
        }
        let f =
            Frame { op: b[0] & 0x0f, fin: b[0] & 0x80 != 0, start: self.pos + head, end: self.pos + total as usize };
        self.pos = f.end;
        Ok(Some(f))
    }
}

/// The header and payload sizes of the frame starting `b`, once its header is there.
fn frame_size(b: &[u8]) -> Option<(usize, usize)> {
    let (len, head) = match *b.get(1)? & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    Some((head, usize::try_from(len).ok()?))
}

fn set_max_segment(sock: &TcpSocket, mss: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = mss as libc::c_int;
    // SAFETY: a valid socket, and a c_int of the size passed, as TCP_MAXSEG takes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

async fn read_more(tcp: &mut Stream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(16 * 1024);
    }
    tcp.read_buf(buf).await
}

/// A final, masked frame.
pub fn frame(op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    put_frame(&mut out, op, payload, mask);
    out
}

/// Appends a final, masked frame to `out` (frames sent together go out in one write).
pub fn put_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Reads what the server sends until it ends the connection, for at most `limit`: the close
/// code of the Close frame that came (None: the socket ended without one).
pub async fn drain(ws: &mut Ws, limit: Duration) -> Result<Option<u16>, Fail> {
    let code = tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Ok(f) if f.op == OP_CLOSE => return Ok(Some(ws.close_code(&f))),
                Ok(_) => {}
                Err(Fail { key: "eof" | "reset_by_server", .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| {
        Fail::new("not_shed", format!("no Close and no end within {:.0} s of reading", limit.as_secs_f64()))
    })??;
    if code.is_some() {
        // Answered, as a client should; whether it arrives no longer matters.
        let _ = ws.send(OP_CLOSE, &[]).await;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_size_is_known_once_its_header_is_there() {
        assert_eq!(frame_size(&[0x81]), None);
        assert_eq!(frame_size(&[0x81, 5, b'h']), Some((2, 5)));
        assert_eq!(frame_size(&[0x82, 126, 1]), None);
        assert_eq!(frame_size(&[0x82, 126, 1, 0]), Some((4, 256)));
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes()[..7]);
        assert_eq!(frame_size(&long), None);
        long.push(0x70);
        assert_eq!(frame_size(&long), Some((10, 70_000)));
    }
}
