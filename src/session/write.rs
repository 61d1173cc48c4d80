//! A connection's writer: it owns the socket's write half and sends what is queued in batches.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::ConnHandle;
use crate::frames::{FrameWriter, Outgoing};
use crate::outbox::Receiver;
use crate::tls::WriteHalf;

/// Frames written before one flush: enough to batch, few enough to keep latency flat.
const MAX_WRITE_BATCH: usize = 64;
/// How long a Close, and the end of the write side after it, may wait for a full socket.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// After a Close nothing more is sent: the write side ends, with a FIN on plain TCP (as
/// dropping the half would) and, under TLS, a close_notify first. Without it a TLS client sees
/// the connection cut short (rustls: "peer closed connection without sending TLS
/// close_notify") even though the WebSocket closed cleanly.
async fn end_write_side(writer: &mut FrameWriter<WriteHalf>) {
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, writer.shutdown()).await;
}

/// The Close of `terminate` or of a full queue, ahead of whatever is queued.
async fn close_now(writer: &mut FrameWriter<WriteHalf>, code: u16, reason: String) {
    writer.feed(Outgoing::Close(code, reason));
    if let Ok(Ok(())) = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, writer.flush()).await {
        end_write_side(writer).await;
    }
}

/// Writes queued frames: everything ready, then one flush.
///
/// Every open connection keeps this task, so its state is kept small: the arguments are the
/// async block's own (an async fn would keep a second copy of them), and the closing steps,
/// which run once, are boxed rather than sizing it.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(super) fn write_loop(
    handle: Arc<ConnHandle>,
    mut writer: FrameWriter<WriteHalf>,
    mut rx: Receiver,
    batch_bytes: usize,
) -> impl Future<Output = ()> + Send {
    async move {
        loop {
            let first = tokio::select! {
                biased;
                _ = handle.urgent.raised() => {
                    if let Some(req) = handle.close_request() {
                        Box::pin(close_now(&mut writer, req.code, req.reason)).await;
                    }
                    return;
                }
                item = rx.recv() => item,
            };
            let mut next = Some(first);
            let mut written = 0;
            let mut bytes = 0;
            // Data messages and their payload, counted once the batch is on the socket.
            let (mut messages, mut payload) = (0, 0);
            while let Some(item) = next.take() {
                let len = item.len();
                bytes += len;
                if let Outgoing::Text(_) | Outgoing::Binary(_) | Outgoing::Shared(_) = item {
                    messages += 1;
                    payload += len as u64;
                }
                let is_close = matches!(item, Outgoing::Close(..));
                writer.feed(item);
                if is_close {
                    if writer.flush().await.is_ok() {
                        handle.traffic.sent(messages, payload);
                        Box::pin(end_write_side(&mut writer)).await;
                    }
                    return;
                }
                written += 1;
                if written < MAX_WRITE_BATCH && bytes < batch_bytes {
                    next = rx.try_recv();
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
            // Written to the socket now: once per batch, not per frame.
            handle.written(bytes);
            handle.traffic.sent(messages, payload);
        }
    }
}
