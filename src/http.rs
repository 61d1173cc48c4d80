//! Plain HTTP handed to the application (a WSGI app: Django's pages under `runws`, or any
//! other), so pages and WebSockets share one port. The core reads the request, head and body,
//! within limits; the application's HTTP threads take it from the exchange and answer; the
//! core writes the answer and closes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::tls::Stream;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::handshake::{reason_phrase, Reply, Request};

/// A request for the application.
#[derive(Debug)]
pub struct HttpRequest {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub remote_addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    /// "https" when the request came over TLS, else "http" (WSGI's `wsgi.url_scheme`).
    pub scheme: &'static str,
}

/// The application's answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<HttpRequest>,
    closed: bool,
}

/// Requests waiting for the application's HTTP threads, and the answers they owe.
pub struct HttpExchange {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Requests waiting for a thread before new ones get 503.
    limit: usize,
    answers: Mutex<HashMap<u64, oneshot::Sender<HttpResponse>>>,
    next_id: AtomicU64,
}

impl HttpExchange {
    pub fn new(limit: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            limit,
            answers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Queues a request; `None` when the queue is full or closed (answer 503).
    fn submit(&self, mut request: HttpRequest) -> Option<(u64, oneshot::Receiver<HttpResponse>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        let (tx, rx) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap();
        if queue.closed || queue.items.len() >= self.limit {
            return None;
        }
        self.answers.lock().unwrap().insert(id, tx);
        queue.items.push_back(request);
        drop(queue);
        self.ready.notify_one();
        Some((id, rx))
    }

    /// Blocks until a request is waiting (or `timeout` passes, or the exchange closes).
    pub fn next(&self, timeout: Duration) -> Option<HttpRequest> {
        let give_up = Instant::now() + timeout;
        let mut queue = self.queue.lock().unwrap();
        loop {
            if let Some(request) = queue.items.pop_front() {
                return Some(request);
            }
            let now = Instant::now();
            if queue.closed || now >= give_up {
                return None;
            }
            queue = self.ready.wait_timeout(queue, give_up - now).unwrap().0;
        }
    }

    /// Delivers the answer to request `id`; false if nobody waits for it any more.
    pub fn respond(&self, id: u64, response: HttpResponse) -> bool {
        let tx = self.answers.lock().unwrap().remove(&id);
        tx.is_some_and(|tx| tx.send(response).is_ok())
    }

    fn forget(&self, id: u64) {
        self.answers.lock().unwrap().remove(&id);
    }

    /// No more requests are taken; threads waiting in `next` return `None`.
    pub fn close(&self) {
        let mut queue = self.queue.lock().unwrap();
        queue.closed = true;
        // Requests no thread took will not be: their connections get 503 as their answer
        // senders drop. Requests being handled keep theirs, so they finish during the drain.
        let untaken: Vec<u64> = queue.items.drain(..).map(|r| r.id).collect();
        drop(queue);
        let mut answers = self.answers.lock().unwrap();
        for id in untaken {
            answers.remove(&id);
        }
        drop(answers);
        self.ready.notify_all();
    }
}

/// The limits of a handed-over request, from the server's config.
pub struct Limits {
    pub max_body_size: usize,
    pub timeout: Duration,
}

/// Reads the body, hands the request over, writes the answer. `leftover` holds the bytes read
/// past the head. Returns the status answered; `None` when the client left first.
pub async fn serve(
    exchange: &HttpExchange,
    limits: &Limits,
    stream: &mut Stream,
    request: Request,
    leftover: Vec<u8>,
    peer: SocketAddr,
) -> Option<u16> {
    let body = match read_body(stream, &request, leftover, limits).await {
        Ok(body) => body,
        Err(Some(reply)) => {
            log::info!(
                "{peer}: {} {} refused with {}: {}",
                request.method,
                request.path,
                reply.status,
                reply.body.trim_end()
            );
            write_all(stream, &reply.to_bytes()).await;
            return Some(reply.status);
        }
        Err(None) => return None, // the client left
    };
    let head_only = request.method == "HEAD";
    let summary = format!("{} {}", request.method, request.path);
    let handed = HttpRequest {
        id: 0,
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers,
        body,
        remote_addr: peer,
        local_addr: stream.local_addr().ok(),
        scheme: if stream.is_tls() { "https" } else { "http" },
    };
    let Some((id, answer)) = exchange.submit(handed) else {
        log::warn!(
            "{peer}: {summary}: {} HTTP requests already wait for the application; 503",
            exchange.limit
        );
        let reply = Reply::new(503, "the server is busy; retry shortly\n");
        write_all(stream, &reply.to_bytes()).await;
        return Some(503);
    };
    let response = match tokio::time::timeout(limits.timeout, answer).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => {
            let reply = Reply::new(503, "the server is shutting down\n");
            write_all(stream, &reply.to_bytes()).await;
            return Some(503);
        }
        Err(_) => {
            exchange.forget(id);
            log::warn!(
                "{peer}: {summary}: the application did not answer within {:.0} s (http_timeout); 504",
                limits.timeout.as_secs_f64()
            );
            let reply = Reply::new(504, "the application did not answer in time\n");
            write_all(stream, &reply.to_bytes()).await;
            return Some(504);
        }
    };
    log::debug!("{peer}: {summary} answered {}", response.status);
    write_all(stream, &response_bytes(&response, head_only)).await;
    Some(response.status)
}

async fn write_all(stream: &mut Stream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
}

/// The response as sent: the application's headers less the ones the core owns (framing and
/// connection management), then its own.
fn response_bytes(response: &HttpResponse, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ) {
            continue;
        }
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            continue; // never let a header split the response
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

/// The request body, as framed by Content-Length; `body` holds the bytes read past the head.
/// `Err(Some(reply))`: refused, send `reply`; `Err(None)`: the client left. Generic over the
/// stream so that the fuzz target (fuzz/fuzz_targets/http_body.rs) runs it on memory.
pub async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    mut body: Vec<u8>,
    limits: &Limits,
) -> Result<Bytes, Option<Reply>> {
    if request.header("transfer-encoding").is_some() {
        return Err(Some(Reply::new(
            411,
            "chunked request bodies are not supported; send a Content-Length\n",
        )));
    }
    let length = declared_length(request, limits.max_body_size).map_err(Some)?;
    if body.len() < length
        && request
            .header_tokens("expect")
            .any(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let deadline = limits.timeout;
    let read = async {
        while body.len() < length {
            body.reserve(length - body.len());
            match stream.read_buf(&mut body).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {}
            }
        }
        body.truncate(length);
        Ok(Bytes::from(body))
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(Some(Reply::new(
            408,
            "the request body did not arrive in time\n",
        ))),
    }
}

/// The body's length by its Content-Length headers, refused unless it is within `max`. Every
/// header must be digits only and all must agree (RFC 9112, 6.3): else the framing is unknown,
/// and a proxy in front of us may have read another body from the same bytes than we would.
fn declared_length(request: &Request, max: usize) -> Result<usize, Reply> {
    let mut declared: Option<&str> = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        let digits = value.trim_matches([' ', '\t']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reply::new(
                400,
                format!(
                    "bad Content-Length {value:?}: send the body's size in bytes, digits only\n"
                ),
            ));
        }
        let digits = digits.trim_start_matches('0');
        if declared.is_some_and(|d| d != digits) {
            return Err(Reply::new(
                400,
                "Content-Length headers that disagree; send one, with the body's size\n",
            ));
        }
        declared = Some(digits);
    }
    let digits = declared.unwrap_or("");
    // Digits past usize are a size too, just a large one: 413, not 400.
    match (digits.is_empty(), digits.parse::<usize>()) {
        (true, _) => Ok(0),
        (false, Ok(length)) if length <= max => Ok(length),
        _ => Err(Reply::new(
            413,
            format!("request body of {digits} bytes is larger than max_body_size ({max} bytes)\n"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> HttpRequest {
        HttpRequest {
            id,
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            local_addr: None,
            scheme: "http",
        }
    }

    #[test]
    fn requests_are_taken_in_order_and_answered_once() {
        let ex = HttpExchange::new(2);
        let (a, mut rx_a) = ex.submit(request(0)).unwrap();
        let (b, _rx_b) = ex.submit(request(0)).unwrap();
        assert!(ex.submit(request(0)).is_none(), "the queue is full");
        assert_eq!(ex.next(Duration::ZERO).unwrap().id, a);
        assert_eq!(ex.next(Duration::ZERO).unwrap().id, b);
        assert!(ex.next(Duration::from_millis(1)).is_none());
        let ok = HttpResponse {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"hi"),
        };
        assert!(ex.respond(a, ok));
        assert_eq!(rx_a.try_recv().unwrap().status, 200);
        let again = HttpResponse {
            status: 500,
            headers: vec![],
            body: Bytes::new(),
        };
        assert!(!ex.respond(a, again));
        ex.close();
        assert!(ex.submit(request(0)).is_none());
    }

    /// `read_body` on `sent` (head, then what follows), the client gone after it.
    async fn body_of(sent: &str, max_body_size: usize) -> Result<Bytes, Option<u16>> {
        let (request, head_len) = crate::handshake::parse_head(sent.as_bytes(), 4096)
            .unwrap()
            .unwrap();
        let (mut server, client) = tokio::io::duplex(64);
        drop(client);
        let limits = Limits {
            max_body_size,
            timeout: Duration::from_secs(5),
        };
        let leftover = sent.as_bytes()[head_len..].to_vec();
        let read = read_body(&mut server, &request, leftover, &limits).await;
        read.map_err(|refusal| refusal.map(|reply| reply.status))
    }

    const POST: &str = "POST / HTTP/1.1\r\nHost: x\r\n";

    #[tokio::test]
    async fn a_declared_length_is_read_exactly() {
        let sent = format!("{POST}Content-Length: 5\r\n\r\nhello, and more");
        assert_eq!(body_of(&sent, 100).await, Ok(Bytes::from_static(b"hello")));
        let twice = format!("{POST}Content-Length: 5\r\nContent-Length: 005\r\n\r\nhello");
        assert_eq!(body_of(&twice, 100).await, Ok(Bytes::from_static(b"hello")));
        let short = format!("{POST}Content-Length: 50\r\n\r\nhello");
        assert_eq!(body_of(&short, 100).await, Err(None), "the client left");
        assert_eq!(
            body_of(&format!("{POST}\r\nrest"), 100).await,
            Ok(Bytes::new())
        );
    }

    /// Found by fuzz/fuzz_targets/http_body.rs: the first of two Content-Length headers was
    /// believed, whatever the others said.
    #[tokio::test]
    async fn content_lengths_that_disagree_or_are_not_digits_get_400() {
        for lengths in [
            "41\r\nContent-Length: 40",
            "5\r\nContent-Length: 6",
            "+5",
            "-1",
            "5, 5",
            "",
        ] {
            let sent = format!("{POST}Content-Length: {lengths}\r\n\r\nhello");
            assert_eq!(body_of(&sent, 100).await, Err(Some(400)), "{lengths:?}");
        }
    }

    #[tokio::test]
    async fn lengths_over_the_limit_get_413_however_many_digits() {
        for length in ["101", "99999999999999999999999999"] {
            let sent = format!("{POST}Content-Length: {length}\r\n\r\nhello");
            assert_eq!(body_of(&sent, 100).await, Err(Some(413)), "{length}");
        }
        let chunked = format!("{POST}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(body_of(&chunked, 100).await, Err(Some(411)));
    }

    /// Found by fuzz/fuzz_targets/http_body.rs: Expect is a list, and only its first header
    /// was read, so a client whose 100-continue came second waited for nothing.
    #[tokio::test]
    async fn every_expect_header_is_read_for_100_continue() {
        let (request, _) = crate::handshake::parse_head(
            format!("{POST}Expect: foo\r\nExpect: bar, 100-Continue\r\nContent-Length: 2\r\n\r\n")
                .as_bytes(),
            4096,
        )
        .unwrap()
        .unwrap();
        let (mut server, mut client) = tokio::io::duplex(64);
        let limits = Limits {
            max_body_size: 100,
            timeout: Duration::from_secs(5),
        };
        let (body, continued) = tokio::join!(
            read_body(&mut server, &request, Vec::new(), &limits),
            async {
                // A client that waits for 100 Continue, but not forever (curl: one second).
                let mut answer = [0; 25];
                let wait = Duration::from_secs(1);
                let _ = tokio::time::timeout(wait, client.read_exact(&mut answer)).await;
                client.write_all(b"hi").await.unwrap();
                answer
            }
        );
        assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(body, Ok(Bytes::from_static(b"hi")));
    }

    #[test]
    fn responses_own_their_framing() {
        let response = HttpResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "text/html".into()),
                ("Content-Length".into(), "999".into()),
                ("X-Evil".into(), "a\r\nInjected: 1".into()),
            ],
            body: Bytes::from_static(b"<p>"),
        };
        let text = String::from_utf8(response_bytes(&response, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"));
        assert!(text.contains("Content-Length: 3\r\n") && !text.contains("999"));
        assert!(!text.contains("Injected"));
        assert!(text.ends_with("\r\n\r\n<p>"));
        let head = String::from_utf8(response_bytes(&response, true)).unwrap();
        assert!(head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }
}
