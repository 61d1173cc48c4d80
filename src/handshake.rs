//! The HTTP side of a connection, without I/O: parse a request head, decide between a WebSocket
//! upgrade and a plain HTTP answer, and write the responses.
//!
//! The server does its own handshake (rather than tokio-tungstenite's) so that it can route by
//! path, answer plain HTTP, and refuse with a real status and body.

use crate::frames::derive_accept_key;

const MAX_HEADERS: usize = 64;

/// A parsed HTTP request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Comma-separated tokens of every header with this name (headers may repeat).
    pub(crate) fn header_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Subprotocols the client offered, in its order.
    pub fn subprotocols(&self) -> Vec<String> {
        self.header_tokens("sec-websocket-protocol")
            .map(str::to_owned)
            .collect()
    }

    /// Whether the client asks for a WebSocket at all (as opposed to a plain HTTP request).
    pub fn wants_websocket(&self) -> bool {
        self.header_tokens("upgrade")
            .any(|t| t.eq_ignore_ascii_case("websocket"))
    }
}

/// A complete HTTP response to write before closing (or, for 101, before switching protocols).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8".into(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.status != 101 {
            out.push_str(&format!("Content-Type: {}\r\n", self.content_type));
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((request, n)))`: the head is `buf[..n]`; bytes
/// after it are already WebSocket frames and must not be lost. `Err`: the reply to send.
pub fn parse_head(buf: &[u8], max_header_bytes: usize) -> Result<Option<(Request, usize)>, Reply> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reply::new(
                431,
                format!("more than {MAX_HEADERS} request headers; send fewer\n"),
            ))
        }
        Err(e) => return Err(Reply::new(400, format!("malformed HTTP request: {e}\n"))),
    };
    let head_len = match status {
        httparse::Status::Partial => {
            if buf.len() >= max_header_bytes {
                return Err(too_large(max_header_bytes));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > max_header_bytes {
        return Err(too_large(max_header_bytes));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        Request {
            method: req.method.unwrap_or("GET").to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
        },
        head_len,
    )))
}

fn too_large(max: usize) -> Reply {
    Reply::new(
        431,
        format!("request head larger than {max} bytes; send smaller headers or raise max_header_bytes\n"),
    )
}

/// What a client that did not ask for a WebSocket gets.
pub fn plain_http_reply(req: &Request) -> Reply {
    Reply::new(
        426,
        format!(
            "{} {} is a WebSocket endpoint of a roomcast server.\nConnect with a WebSocket client (Upgrade: websocket).\n",
            req.method, req.path
        ),
    )
    .header("Upgrade", "websocket")
}

/// A page's answer to a plain HTTP request.
pub fn page_reply(req: &Request, page: &crate::config::Page) -> Reply {
    if req.method != "GET" {
        return Reply::new(405, format!("{} answers GET only\n", req.path)).header("Allow", "GET");
    }
    let mut reply = Reply::new(200, page.body.clone()).header("Cache-Control", "no-cache");
    reply.content_type = page.content_type.clone();
    reply
}

/// Checks an upgrade request against RFC 6455 §4.2.1; returns the client's key.
pub fn validate_upgrade(req: &Request) -> Result<String, Reply> {
    if req.method != "GET" {
        return Err(Reply::new(405, "a WebSocket handshake must use GET\n").header("Allow", "GET"));
    }
    if !req
        .header_tokens("connection")
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Err(Reply::new(400, "missing 'Connection: Upgrade' header\n"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(Reply::new(
            426,
            "unsupported WebSocket version; this server speaks 13\n",
        )
        .header("Sec-WebSocket-Version", "13"));
    }
    match req.header("sec-websocket-key") {
        Some(key) if is_valid_key(key) => Ok(key.to_owned()),
        _ => Err(Reply::new(
            400,
            "missing or invalid Sec-WebSocket-Key (must be 16 bytes, base64)\n",
        )),
    }
}

/// A key is 16 random bytes in base64: 24 characters ending in `==`.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The first protocol the client offered that the server speaks (the client lists its
/// preference; the server only filters).
pub fn choose_subprotocol(offered: &[String], supported: &[String]) -> Option<String> {
    offered.iter().find(|p| supported.contains(p)).cloned()
}

/// The 101 response that completes the handshake.
pub fn accept_reply(key: &str, subprotocol: Option<&str>, extensions: Option<&str>) -> Reply {
    let mut reply = Reply::new(101, "")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", &derive_accept_key(key.as_bytes()));
    if let Some(p) = subprotocol {
        reply = reply.header("Sec-WebSocket-Protocol", p);
    }
    if let Some(e) = extensions {
        reply = reply.header("Sec-WebSocket-Extensions", e);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /chat?room=a&name=b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n";

    fn parse(buf: &[u8]) -> Request {
        parse_head(buf, 16 * 1024).unwrap().unwrap().0
    }

    #[test]
    fn parses_path_query_headers_and_leaves_trailing_bytes() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(b"\x81\x85frame");
        let (req, n) = parse_head(&buf, 16 * 1024).unwrap().unwrap();
        assert_eq!(n, UPGRADE.len());
        assert_eq!(req.path, "/chat");
        assert_eq!(req.query, "room=a&name=b");
        assert_eq!(req.header("host"), Some("x"));
        assert_eq!(req.subprotocols(), vec!["chat", "superchat"]);
        assert!(req.wants_websocket());
    }

    #[test]
    fn partial_head_asks_for_more_until_the_limit() {
        assert_eq!(parse_head(&UPGRADE[..20], 16 * 1024), Ok(None));
        let big = vec![b'a'; 300];
        let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
        buf.extend_from_slice(&big);
        assert_eq!(parse_head(&buf, 256).unwrap_err().status, 431);
    }

    #[test]
    fn garbage_is_a_400() {
        assert_eq!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n", 1024)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let key = validate_upgrade(&parse(UPGRADE)).unwrap();
        let reply = String::from_utf8(accept_reply(&key, Some("chat"), None).to_bytes()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(reply.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(reply.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(reply.ends_with("\r\n\r\n"));
    }

    #[test]
    fn invalid_upgrades_get_the_right_status() {
        let cases: &[(&str, u16)] = &[
            ("POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
            ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let req = parse(raw.as_bytes());
            assert_eq!(validate_upgrade(&req).unwrap_err().status, *status, "{raw}");
        }
    }

    #[test]
    fn plain_http_gets_426_with_an_explanation() {
        let req = parse(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!req.wants_websocket());
        let text = String::from_utf8(plain_http_reply(&req).to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("WebSocket endpoint"));
        assert!(text.contains("Content-Length: "));
    }

    #[test]
    fn subprotocol_choice_follows_the_client_order_among_supported() {
        let offered = vec!["superchat".to_owned(), "chat".to_owned()];
        let supported = vec!["chat".to_owned(), "superchat".to_owned()];
        assert_eq!(
            choose_subprotocol(&offered, &supported).as_deref(),
            Some("superchat")
        );
        assert_eq!(choose_subprotocol(&offered, &[]), None);
    }
}
