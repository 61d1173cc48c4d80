//! The byte stream a connection runs on: the TCP socket itself, or TLS over it. Everything
//! after the accept (the HTTP head, pages, the WSGI bridge, frames) reads and writes this.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::Tls;

/// The first byte of every TLS connection: a handshake record (RFC 8446, 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub enum Stream {
    Plain(TcpStream),
    // Boxed: the TLS state is ~1 KiB, and plaintext connections should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

/// What became of a new socket on the way to its first HTTP byte.
pub enum Accepted {
    Ready(Stream),
    /// A plaintext client on a TLS port (it sent HTTP, not a TLS hello): answer it in plain
    /// HTTP so it sees why, rather than leaving it waiting for a reply that never comes.
    NotTls(Stream),
    /// The TLS handshake failed or timed out; the reason is for the log.
    Failed(String),
}

/// Runs the TLS handshake when the server has TLS; a plain server takes the socket as it is.
pub async fn accept(tcp: TcpStream, tls: Option<&Tls>, limit: Duration) -> Accepted {
    let Some(tls) = tls else {
        return Accepted::Ready(Stream::Plain(tcp));
    };
    let acceptor = tls.acceptor();
    let handshake = async {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err("closed before the TLS handshake".to_owned()),
            Err(e) => return Err(format!("lost before the TLS handshake: {e}")),
            Ok(_) => {}
        }
        if first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_alphabetic() {
            return Ok(Accepted::NotTls(Stream::Plain(tcp)));
        }
        match acceptor.accept(tcp).await {
            Ok(s) => Ok(Accepted::Ready(Stream::Tls(Box::new(s)))),
            Err(e) => Err(format!("TLS handshake failed: {e}")),
        }
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(why)) => Accepted::Failed(why),
        Err(_) => Accepted::Failed(format!(
            "the TLS handshake did not finish within {:.1} s",
            limit.as_secs_f64()
        )),
    }
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.local_addr(),
            Stream::Tls(s) => s.get_ref().0.local_addr(),
        }
    }
}

delegate_read!(Stream);
delegate_write!(Stream);
