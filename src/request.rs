//! The HTTP request an accepted socket starts with: reading its head, and answering the ones
//! that are not WebSocket handshakes (metrics, pages, the WSGI application, 426) or that are
//! refused.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Page;
use crate::handshake::{self, Reply};
use crate::http;
use crate::hub::Hub;
use crate::metrics::exposition;

/// Reads the HTTP request head. `Ok(None)`: the client left, or the server is stopping.
pub(crate) async fn read_head(
    stream: &mut Stream,
    max: usize,
    limit: Duration,
    mut shutdown: watch::Receiver<Option<Duration>>,
) -> Result<Option<(handshake::Request, Vec<u8>)>, Reply> {
    let deadline = Instant::now() + limit;
    // Read straight into the heap buffer: a stack array here would live in every
    // connection's task for its whole life.
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
                Err(_) => {
                    return Err(Reply::new(408, format!(
                        "the request head did not arrive within {:.1} s\n", limit.as_secs_f64()
                    )))
                }
            },
            _ = shutdown.changed() => {
                return Err(Reply::new(503, "the server is shutting down\n"));
            }
        }
        if let Some((request, head_len)) = handshake::parse_head(&buf, max)? {
            return Ok(Some((request, buf.split_off(head_len))));
        }
    }
}

/// Answers a plain HTTP request (no upgrade): the metrics, a page, the WSGI application, or
/// 426. Returns the status answered; `None` when the client left first.
pub(crate) async fn plain_http(
    hub: &Hub,
    stream: &mut Stream,
    request: handshake::Request,
    leftover: Vec<u8>,
    peer: SocketAddr,
) -> Option<u16> {
    let cfg = &hub.config;
    let (method, path) = (&request.method, &request.path);
    let reply = if cfg.serves_metrics(path) {
        log::debug!("{peer}: {method} {path} served the metrics");
        let metrics = Page {
            path: path.clone(),
            content_type: exposition::CONTENT_TYPE.into(),
            body: exposition::render(&hub.stats()),
        };
        handshake::page_reply(&request, &metrics)
    } else if let Some(page) = cfg.page_for(path) {
        log::debug!("{peer}: {method} {path} served a page");
        handshake::page_reply(&request, page)
    } else if cfg.http_app {
        let limits = http::Limits {
            max_body_size: cfg.max_body_size,
            timeout: cfg.http_timeout,
        };
        return http::serve(&hub.http, &limits, stream, request, leftover, peer).await;
    } else {
        log::debug!("{peer}: plain HTTP {method} {path} answered with 426");
        handshake::plain_http_reply(&request)
    };
    write_reply(stream, &reply).await;
    Some(reply.status)
}

pub(crate) async fn write_reply(stream: &mut Stream, reply: &Reply) {
    let _ = stream.write_all(&reply.to_bytes()).await;
    let _ = stream.shutdown().await;
}
