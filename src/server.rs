//! Accepting connections, and the server's life: start on its own runtime, run, shut down
//! gracefully (stop accepting, close every connection with 1001, wait for queues to drain).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::error::Error;
use crate::heartbeat;
use crate::hub::Hub;
use crate::session;
use crate::tls::Tls;

/// `None` while running; `Some(timeout)` once shutdown began, with the time allowed to drain.
pub type ShutdownSignal = watch::Receiver<Option<Duration>>;

/// Accepts until shutdown, then closes every connection with 1001 and waits (up to the
/// shutdown's timeout) for their tasks to end; the rest are aborted. Every connection's last
/// event has been pushed when this returns.
pub async fn run(listener: TcpListener, hub: Arc<Hub>, mut shutdown: ShutdownSignal) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small frames must not wait for Nagle; the writer already batches.
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(session::serve(hub.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    log::error!("accept failed: {e}; retrying in 100 ms (raise the fd limit if this repeats)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    hub.http.close();
    let timeout = shutdown.borrow().unwrap_or_default();
    let open = hub.connection_count();
    log::info!(
        "shutting down: closing {open} connection(s) with 1001, waiting up to {:.1} s",
        timeout.as_secs_f64()
    );
    // Sends the hooks made before the shutdown go out ahead of the 1001.
    hub.apply_deferred();
    hub.close_all(1001, "server shutting down");
    let drained = tokio::time::timeout(timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warn!(
            "shutdown: {} connection(s) did not close within {:.1} s; dropping them",
            tasks.len(),
            timeout.as_secs_f64()
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// A server running on a runtime of its own. Every method may be called from any thread that
/// is not one of the runtime's.
pub struct Server {
    hub: Arc<Hub>,
    local_addr: SocketAddr,
    shutdown: watch::Sender<Option<Duration>>,
    // Taken by the first `shutdown`, which makes it idempotent.
    running: Mutex<Option<(Runtime, JoinHandle<()>)>>,
}

/// Binds like `TcpListener::bind`; with `reuse_port`, several processes can bind the same
/// address (SO_REUSEPORT) and the kernel balances new connections between them.
async fn bind(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr).await;
    }
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        match socket.bind(resolved) {
            Ok(()) => return socket.listen(1024),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

impl Server {
    pub fn start(config: Config, addr: &str) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        let io_threads = config.io_threads;
        let heartbeat_interval = config.heartbeat_interval;
        let tls = match &config.tls {
            Some(files) => Some(Tls::load(files.clone()).map_err(Error::Config)?),
            None => None,
        };
        if tls.is_some() && config.allowed_origins.is_none() {
            log::warn!(
                "TLS is on and allowed_origins is None: any web page can open a socket to this \
                 server with its visitors' cookies; set allowed_origins to the pages that may connect"
            );
        }
        let mut hub = Hub::new(config);
        hub.tls = tls;
        let hub = Arc::new(hub);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.thread_name("roomcast-io").enable_all();
        if io_threads > 0 {
            builder.worker_threads(io_threads);
        }
        // An I/O thread out of work wakes the hook workers once for everything it read.
        let park_hub = hub.clone();
        builder.on_thread_park(move || park_hub.events.wake_deferred());
        let runtime = builder.build().map_err(Error::Runtime)?;
        hub.attach_runtime(runtime.metrics());
        let reuse_port = hub.config.reuse_port;
        let listener = runtime
            .block_on(bind(addr, reuse_port))
            .map_err(|source| Error::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::Runtime)?;
        let (shutdown, signal) = watch::channel(None);
        if let Some(interval) = heartbeat_interval {
            let sweep_hub = hub.clone();
            let mut stop = signal.clone();
            runtime.spawn(heartbeat::run(
                interval,
                move |slice| sweep_hub.pulses(slice),
                async move {
                    let _ = stop.wait_for(Option::is_some).await;
                },
            ));
        }
        runtime.spawn(hub.clone().run_deferred());
        if let Some(broker) = &hub.broker {
            broker.start(runtime.handle(), hub.clone());
            if let Some(chat) = &hub.chat {
                let every = broker.config.lease / 3;
                runtime.spawn(chat.clone().run_roster(hub.clone(), every));
            }
        }
        let accept = runtime.spawn(run(listener, hub.clone(), signal));
        let scheme = if hub.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        log::info!("listening on {local_addr} ({scheme})");
        Ok(Server {
            hub,
            local_addr,
            shutdown,
            running: Mutex::new(Some((runtime, accept))),
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `work` on the server's runtime and waits for it, from a thread that is not one of
    /// the runtime's (a Python worker). `None` once the server stopped.
    pub fn block_on<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        let handle = self.running.lock().unwrap().as_ref()?.0.handle().clone();
        Some(handle.block_on(work))
    }

    /// One heartbeat sweep of every connection now, as the timer's ticks would run it over an
    /// interval (for tests that must not wait). False when the heartbeat is off.
    pub fn sweep_now(&self) -> bool {
        let Some(interval) = self.hub.config.heartbeat_interval else {
            return false;
        };
        heartbeat::sweep(&self.hub.pulses(heartbeat::Slice::ALL), interval);
        true
    }

    /// Reads the TLS certificate and key files again; connections from now on use them, open
    /// ones keep theirs. On an error the old certificate stays in use.
    pub fn reload_tls(&self) -> Result<(), Error> {
        match &self.hub.tls {
            Some(tls) => tls.reload().map_err(Error::Config),
            None => Err(Error::Config(
                "reload_tls: this server does not serve TLS (start it with ssl_certfile and ssl_keyfile)".into(),
            )),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap().is_some()
    }

    /// Graceful shutdown; blocks until done. Idempotent: later calls return at once.
    pub fn shutdown(&self, timeout: Duration) {
        let Some((runtime, accept)) = self.running.lock().unwrap().take() else {
            return;
        };
        let _ = self.shutdown.send(Some(timeout));
        let _ = runtime.block_on(accept);
        if let Some(broker) = self.hub.broker.clone() {
            runtime.block_on(broker.finish(Duration::from_secs(1)));
        }
        // Every connection task has ended and pushed its last event: let the workers drain.
        self.hub.events.close();
        runtime.shutdown_timeout(Duration::from_secs(1));
        log::info!("server on {} stopped", self.local_addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Routes};
    use crate::frames::{Outgoing, Text};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    fn next_events(hub: &Hub) -> (crate::ConnId, Vec<Event>) {
        let batch = hub
            .events
            .next_batch(Some(Duration::from_secs(5)))
            .expect("an event");
        let (id, events) = batch.claim().expect("a connection");
        hub.events.finish(id);
        (id, events)
    }

    /// The whole core without Python: a real client, a room broadcast, events, shutdown.
    #[test]
    fn serves_a_client_end_to_end() {
        let config = Config {
            io_threads: 1,
            heartbeat_interval: None,
            ..Config::default()
        };
        let server = Server::start(config, "127.0.0.1:0").unwrap();
        let hub = server.hub().clone();
        hub.set_routes(Routes {
            message: true,
            ..Routes::default()
        });
        let url = format!("ws://{}/room?x=1", server.local_addr());
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut ws =
            client_rt.block_on(async { tokio_tungstenite::connect_async(url).await.unwrap().0 });

        let (id, events) = next_events(&hub);
        assert!(
            matches!(&events[0], Event::Open(info) if info.path == "/room" && info.query == "x=1")
        );
        client_rt.block_on(ws.send(Message::text("hello"))).unwrap();
        let (_, events) = next_events(&hub);
        assert!(matches!(&events[..], [Event::Text(t)] if t.as_str() == "hello"));

        hub.join(id, "r").unwrap();
        assert_eq!(hub.room_count("r"), 1);
        assert_eq!(
            hub.broadcast_room("r", Outgoing::Text(Text::from("to the room")), &[]),
            1
        );
        assert_eq!(
            hub.broadcast_room("r", Outgoing::Text(Text::from("nobody")), &[id]),
            0
        );
        let got = client_rt.block_on(ws.next()).unwrap().unwrap();
        assert_eq!(got, Message::text("to the room"));

        // Deferred sends (what hook workers use) go out when the batch is flushed.
        hub.send_deferred(id, Outgoing::Text(Text::from("deferred")))
            .unwrap();
        assert_eq!(
            hub.broadcast_deferred(Some("r"), Outgoing::Text(Text::from("room, deferred")), &[]),
            1
        );
        hub.flush_deferred();
        let got: Vec<_> = (0..2)
            .map(|_| client_rt.block_on(ws.next()).unwrap().unwrap())
            .collect();
        assert_eq!(
            got,
            vec![Message::text("deferred"), Message::text("room, deferred")]
        );

        // The counters saw all of it. The writer counts a batch just after its flush returns,
        // which can be a moment after the client already read it: wait for that moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hub.stats().traffic.messages_sent < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = hub.stats();
        assert_eq!((stats.connections_open, stats.connections_accepted), (1, 1));
        assert_eq!((stats.rooms, stats.room_members), (1, 1));
        assert_eq!(stats.traffic.messages_received, 1);
        assert_eq!(stats.traffic.bytes_received, 5);
        assert_eq!(stats.traffic.messages_sent, 3);
        assert_eq!(stats.traffic.bytes_sent, 11 + 8 + 14);
        assert_eq!((stats.broadcasts, stats.deliveries), (3, 2));

        server.shutdown(Duration::from_secs(2));
        let close = client_rt.block_on(ws.next()).unwrap().unwrap();
        assert!(matches!(close, Message::Close(Some(f)) if u16::from(f.code) == 1001));
        let (_, events) = next_events(&hub);
        assert!(matches!(
            &events[..],
            [Event::Disconnect { code: 1001, .. }]
        ));
        assert_eq!(hub.room_count("r"), 0);
        // Closed connections' traffic stays in the totals.
        let stats = hub.stats();
        assert_eq!((stats.connections_open, stats.connections_closed), (0, 1));
        assert_eq!((stats.rooms, stats.room_members), (0, 0));
        assert_eq!(stats.traffic.messages_sent, 3);
        assert!(
            hub.events.next_batch(None).is_none(),
            "closed after shutdown"
        );
        server.shutdown(Duration::from_secs(2));
    }

    /// The task gauge: the server's own tasks, two more per open connection, and back down
    /// when it ends (what the soak benchmark relies on to count leaked tasks).
    #[test]
    fn runtime_tasks_come_and_go_with_connections() {
        let config = Config {
            io_threads: 1,
            heartbeat_interval: None,
            ..Config::default()
        };
        let server = Server::start(config, "127.0.0.1:0").unwrap();
        let hub = server.hub().clone();
        let tasks_settle_at = |want: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while hub.stats().runtime_tasks != want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(hub.stats().runtime_tasks, want);
        };
        // The accept loop and the deferred-send flusher (no heartbeat, no broker).
        tasks_settle_at(2);
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let mut ws =
            client_rt.block_on(async { tokio_tungstenite::connect_async(url).await.unwrap().0 });
        tasks_settle_at(4);
        client_rt.block_on(ws.close(None)).unwrap();
        while client_rt.block_on(ws.next()).is_some() {}
        tasks_settle_at(2);
        server.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn a_taken_port_is_a_bind_error_naming_the_address() {
        let first = Server::start(Config::default(), "127.0.0.1:0").unwrap();
        let addr = first.local_addr().to_string();
        let err = Server::start(Config::default(), &addr).err().unwrap();
        assert!(matches!(err, Error::Bind { .. }));
        assert!(err.to_string().contains(&addr));
    }
}
