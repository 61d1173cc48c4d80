//! The chat preset end to end without Python: a real server, real clients (tokio-tungstenite).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ChatConfig;
use crate::config::Config;
use crate::server::Server;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn start(chat: ChatConfig) -> Server {
    let config = Config {
        io_threads: 1,
        heartbeat_interval: Some(Duration::from_secs(3600)),
        app_heartbeat: true,
        chat: Some(chat),
        ..Config::default()
    };
    Server::start(config, "127.0.0.1:0").unwrap()
}

async fn connect(server: &Server, query: &str) -> Client {
    let url = format!("ws://{}/{query}", server.local_addr());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Client, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text frame as JSON (Pings are skipped; the client answers them itself).
async fn recv(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string()));
        }
    }
}

async fn enter(ws: &mut Client, name: &str, room: &str, uid: &str) {
    send(
        ws,
        json!({"event": "enter", "message": name, "roomid": room, "uid": uid}),
    )
    .await;
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_room_chats_counts_users_and_keeps_messages_for_the_absent() {
    let server = start(ChatConfig::default());
    client_runtime().block_on(async {
        let mut ann = connect(&server, "").await;
        let mut bob = connect(&server, "").await;
        enter(&mut ann, "Ann", "r1", "a").await;
        assert_eq!(recv(&mut ann).await["num"], 1);
        enter(&mut bob, "Bob", "r1", "b").await;
        for ws in [&mut ann, &mut bob] {
            let got = recv(ws).await;
            assert_eq!(
                (got["event"].as_str(), got["num"].as_u64()),
                (Some("enter"), Some(2))
            );
        }
        send(
            &mut ann,
            json!({"event": "message", "message": "hi", "name": "fake"}),
        )
        .await;
        for ws in [&mut ann, &mut bob] {
            assert_eq!(
                recv(ws).await,
                json!({"event": "message", "message": "hi", "name": "Ann", "num": 2})
            );
        }
        bob.close(None).await.unwrap();
        assert_eq!(
            recv(&mut ann).await,
            json!({"event": "out", "name": "Bob", "num": 1})
        );
        for i in 0..3 {
            send(&mut ann, json!({"event": "message", "message": i})).await;
            recv(&mut ann).await;
        }
        let mut bob = connect(&server, "").await;
        enter(&mut bob, "Bob", "r1", "b").await;
        for i in 0..3 {
            let kept = recv(&mut bob).await;
            assert_eq!(
                (kept["message"].as_u64(), kept["roomid"].as_str()),
                (Some(i), Some("r1"))
            );
        }
        assert_eq!(recv(&mut bob).await["event"], "enter");
        let chat = server.hub().chat.clone().unwrap();
        assert_eq!(chat.count("r1"), 2);
        assert_eq!(chat.offline_counts().delivered, 3);

        assert_eq!(recv(&mut ann).await["event"], "enter");
        // The JSON heartbeat carries the room's num.
        assert!(server.sweep_now());
        let beat = recv(&mut ann).await;
        assert_eq!(
            beat,
            json!({"event": "heartbeat", "message": "ping", "num": 2})
        );
    });
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn without_a_valid_token_a_connection_gets_noauth_and_no_room_traffic() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let chat = ChatConfig {
        jwt_secret: Some("k".into()),
        ..ChatConfig::default()
    };
    let server = start(chat);
    let token = encode(
        &Header::default(),
        &json!({"sub": "a", "exp": super::auth::unix_now() + 600.0}),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    client_runtime().block_on(async {
        let mut ann = connect(&server, &format!("?token={token}")).await;
        let mut eve = connect(&server, "").await;
        enter(&mut eve, "Eve", "r1", "e").await;
        assert_eq!(recv(&mut eve).await["event"], "noauth");
        enter(&mut ann, "Ann", "r1", "a").await;
        assert_eq!(recv(&mut ann).await["event"], "enter");
        send(
            &mut eve,
            json!({"event": "auth", "message": "forged.token.here"}),
        )
        .await;
        assert_eq!(recv(&mut eve).await["event"], "noauth");
        // The text ping works before auth; nothing of the room reached eve before it.
        eve.send(Message::text("ping")).await.unwrap();
        assert_eq!(recv(&mut eve).await, Value::String("pong".into()));
        send(&mut eve, json!({"event": "auth", "message": token})).await;
        enter(&mut eve, "Eve", "r1", "e").await;
        assert_eq!(recv(&mut eve).await["num"], 2);
    });
    server.shutdown(Duration::from_secs(1));
}
