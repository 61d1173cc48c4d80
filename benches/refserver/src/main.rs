//! Reference WebSocket server: accept loop, handshake routing, per-connection reader/writer tasks.
//! With `--chat` every path speaks the chat preset's JSON protocol instead (chat.rs).

mod chat;
mod rooms;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat::ChatRooms;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rooms::{Room, Rooms, DROPPED};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const QUEUE: usize = 1024;
const BATCH: usize = 64;
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Route {
    Echo,
    Sub,
    Pub,
    Chat,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args.first().and_then(|p| p.parse::<u16>().ok());
    let chat = args.get(1).map(String::as_str) == Some("--chat");
    let (Some(port), true) = (port, args.len() == 1 || chat && args.len() == 2) else {
        eprintln!(
            "usage: refserver PORT [--chat]   (env: REFSERVER_THREADS=1, REFSERVER_BUF=16384)"
        );
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_usize("REFSERVER_THREADS", 1).max(1))
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    if let Err(e) = runtime.block_on(serve(port, chat)) {
        eprintln!("refserver: {e}");
        std::process::exit(1);
    }
}

async fn serve(port: u16, chat: bool) -> std::io::Result<()> {
    let buf = env_usize("REFSERVER_BUF", 16 * 1024);
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = buf;
    config.write_buffer_size = buf;
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    let rooms: &'static Rooms = Box::leak(Box::default());
    let chat: Option<&'static ChatRooms> = chat.then(|| &*Box::leak(Box::default()));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(report_on_signal());
    let next_id = AtomicU64::new(0);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                eprintln!("refserver: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        match chat {
            Some(chat) => tokio::spawn(chat_connection(tcp, id, chat, config)),
            None => tokio::spawn(connection(tcp, id, rooms, config)),
        };
    }
}

/// On SIGTERM/SIGINT, report how many broadcast messages slow members missed, then exit.
async fn report_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    futures_util::future::select(Box::pin(term.recv()), Box::pin(int.recv())).await;
    eprintln!(
        "refserver: {} broadcast messages dropped",
        DROPPED.load(Ordering::Relaxed)
    );
    std::process::exit(0);
}

/// Handshake, then this task reads while a spawned task writes.
async fn connection(tcp: TcpStream, id: u64, rooms: &'static Rooms, config: WebSocketConfig) {
    let mut route = None;
    #[allow(clippy::result_large_err)] // the error type is fixed by tungstenite's `Callback`
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        route = match req.uri().path() {
            "/echo" => Some(Route::Echo),
            "/sub" => Some(Route::Sub),
            "/pub" => Some(Route::Pub),
            "/chat" => Some(Route::Chat),
            _ => None,
        };
        if route.is_some() {
            return Ok(resp);
        }
        let mut err = ErrorResponse::new(Some("unknown path".into()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
    else {
        return; // failed handshake, or unknown path (answered 404)
    };
    let Some(route) = route else { return };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(write_loop(sink, rx));
    let joined: Option<&Room> = match route {
        Route::Sub => Some(&rooms.bench),
        Route::Chat => Some(&rooms.chat),
        Route::Echo | Route::Pub => None,
    };
    if let Some(room) = joined {
        room.join(id, tx.clone());
    }
    read_loop(stream, route, rooms, tx).await;
    if let Some(room) = joined {
        room.leave(id);
    }
    // Our queue senders are now gone, so the writer drains what is queued and ends.
}

/// Chat mode: every path is accepted, and the connection speaks the chat protocol.
async fn chat_connection(
    tcp: TcpStream,
    id: u64,
    rooms: &'static ChatRooms,
    config: WebSocketConfig,
) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(write_loop(sink, rx));
    chat::read_loop(stream, id, rooms, tx).await;
}

async fn read_loop(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    route: Route,
    rooms: &Rooms,
    tx: mpsc::Sender<Message>,
) {
    // Ping/pong and the close reply are handled by tungstenite while we read.
    while let Some(Ok(msg)) = stream.next().await {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        match route {
            // Echo waits for room in its own queue: backpressure, never loss.
            Route::Echo => {
                if tx.send(msg).await.is_err() {
                    return; // the writer has failed
                }
            }
            Route::Sub => {}
            Route::Pub => rooms.bench.broadcast(&msg),
            Route::Chat => rooms.chat.broadcast(&msg),
        }
    }
}

/// Writes every queued message, batching what is ready into one flush.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(msg) = rx.recv().await {
        if sink.feed(msg).await.is_err() {
            return;
        }
        for _ in 1..BATCH {
            let Ok(msg) = rx.try_recv() else { break };
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
