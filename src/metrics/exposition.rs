//! A `Snapshot` in Prometheus' text exposition format (version 0.0.4), for the opt-in metrics
//! path: `# HELP` and `# TYPE` before each family, the `roomcast_` prefix, base units (seconds,
//! bytes), `_total` on counters. `roomcast.metrics.RoomcastCollector` yields the same families
//! to a `prometheus_client` registry (tests/test_metrics.py checks that they agree).

use std::fmt::{Display, Write};

use super::{Snapshot, PROTOCOL_ERROR_CODES};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const HTTP_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                // Label values here are numbers and fixed names: nothing to escape.
                let _ = write!(self.0, "{sep}{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The whole exposition.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(4096));
    let (g, c) = ("gauge", "counter");
    o.single(
        "roomcast_connections_open",
        g,
        "WebSocket connections open now.",
        s.connections_open,
    );
    o.single(
        "roomcast_connections_accepted_total",
        c,
        "WebSocket handshakes completed.",
        s.connections_accepted,
    );
    o.single(
        "roomcast_connections_closed_total",
        c,
        "Accepted WebSocket connections that ended.",
        s.connections_closed,
    );
    let name = "roomcast_connections_refused_total";
    o.family(
        name,
        c,
        "Connections refused before opening, by reason (request, origin, limit, on_connect, on_connect_timeout) and HTTP status.",
    );
    for (why, status, n) in &s.refused {
        o.sample(
            name,
            &[("reason", why.name()), ("status", &status.to_string())],
            n,
        );
    }
    o.single("roomcast_rooms", g, "Rooms with members now.", s.rooms);
    o.single(
        "roomcast_room_members",
        g,
        "Room memberships now (a connection in two rooms counts twice).",
        s.room_members,
    );
    let t = &s.traffic;
    o.single(
        "roomcast_received_messages_total",
        c,
        "Data messages received from clients.",
        t.messages_received,
    );
    o.single(
        "roomcast_received_bytes_total",
        c,
        "Payload bytes of the data messages received from clients.",
        t.bytes_received,
    );
    o.single(
        "roomcast_sent_messages_total",
        c,
        "Data messages written to clients.",
        t.messages_sent,
    );
    o.single(
        "roomcast_sent_bytes_total",
        c,
        "Payload bytes of the data messages written to clients.",
        t.bytes_sent,
    );
    o.single(
        "roomcast_broadcasts_total",
        c,
        "Broadcasts to a room or to every connection.",
        s.broadcasts,
    );
    o.single(
        "roomcast_broadcast_deliveries_total",
        c,
        "Messages queued for members by broadcasts.",
        s.deliveries,
    );
    o.single(
        "roomcast_dropped_messages_total",
        c,
        "Messages dropped because a client's queue was full (overflow='drop').",
        t.messages_dropped,
    );
    o.single(
        "roomcast_slow_consumer_closes_total",
        c,
        "Connections closed with 1013 because their queue was full (overflow='close').",
        s.slow_consumer_closes,
    );
    o.single(
        "roomcast_rate_limited_total",
        c,
        "Messages from clients over their rate limit (closed with 1008, or dropped).",
        s.rate_limited,
    );
    o.single(
        "roomcast_tls_handshake_failures_total",
        c,
        "Sockets on the TLS port whose TLS handshake failed or timed out.",
        s.tls_handshake_failures,
    );
    o.single(
        "roomcast_heartbeat_timeouts_total",
        c,
        "Connections closed with 1011 by the heartbeat: nothing received for an interval.",
        s.heartbeat_timeouts,
    );
    let name = "roomcast_protocol_errors_total";
    o.family(
        name,
        c,
        "Connections closed for breaking the protocol, by close code (1002 protocol, 1007 bad UTF-8, 1009 too big).",
    );
    for (code, n) in &s.protocol_errors {
        o.sample(name, &[("code", &code.to_string())], n);
    }
    debug_assert!(PROTOCOL_ERROR_CODES
        .iter()
        .all(|c| s.protocol_errors.iter().any(|(k, _)| k == c)));
    o.single(
        "roomcast_hook_calls_total",
        c,
        "Python hook calls.",
        s.hook_calls(),
    );
    o.single(
        "roomcast_hook_errors_total",
        c,
        "Python hook calls that raised.",
        s.hook_errors,
    );
    let name = "roomcast_hook_duration_seconds";
    o.family(
        name,
        "histogram",
        "Time from a hook's call to its return (an async hook's: to its completion).",
    );
    let bucket = format!("{name}_bucket");
    for (le, n) in s.hook_cumulative() {
        o.sample(&bucket, &[("le", le)], n);
    }
    o.sample(&format!("{name}_sum"), &[], s.hook_nanos as f64 / 1e9);
    o.sample(&format!("{name}_count"), &[], s.hook_calls());
    o.single(
        "roomcast_hook_events_pending",
        g,
        "Events waiting for a hook worker now.",
        s.events_pending,
    );
    o.single(
        "roomcast_runtime_tasks",
        g,
        "Tasks alive on the server's I/O runtime now (two per open WebSocket connection, one per other socket being served, a few of the server's own).",
        s.runtime_tasks,
    );
    let name = "roomcast_http_responses_total";
    o.family(
        name,
        c,
        "Plain HTTP requests answered on the server's port (WSGI app, pages, metrics, 426), by status class.",
    );
    for (class, n) in HTTP_CLASSES.iter().zip(s.http_responses) {
        o.sample(name, &[("class", class)], n);
    }
    if let Some(chat) = &s.chat {
        o.single(
            "roomcast_chat_offline_kept_total",
            c,
            "Chat messages kept for members away (one per member and message).",
            chat.kept,
        );
        o.single(
            "roomcast_chat_offline_delivered_total",
            c,
            "Kept chat messages delivered when their member came back.",
            chat.delivered,
        );
        let name = "roomcast_chat_offline_dropped_total";
        o.family(
            name,
            c,
            "Kept chat messages dropped, by reason (full: offline_limit; expired: offline_ttl).",
        );
        o.sample(name, &[("reason", "full")], chat.dropped_full);
        o.sample(name, &[("reason", "expired")], chat.dropped_expired);
        o.single(
            "roomcast_chat_offline_waiting",
            g,
            "Kept chat messages waiting for their member now.",
            chat.waiting,
        );
        o.single(
            "roomcast_chat_store_failures_total",
            c,
            "Chat roster calls to Redis that failed (messages sent meanwhile may not be kept).",
            chat.store_failures,
        );
    }
    if let Some(b) = &s.broker {
        broker(&mut o, b);
    }
    o.0
}

fn broker(o: &mut Out, b: &crate::broker::BrokerStats) {
    let (c, g) = ("counter", "gauge");
    let counters = [
        (
            "published",
            "Messages Redis accepted from this node (replays included).",
            b.published,
        ),
        (
            "received",
            "Messages from other nodes delivered here, in order, once.",
            b.received,
        ),
        (
            "duplicates",
            "Repeated messages from other nodes dropped.",
            b.duplicates,
        ),
        (
            "gaps",
            "Gaps in another node's messages noticed and asked for again.",
            b.gaps,
        ),
        (
            "lost",
            "Messages from other nodes given up on (past the sender's broker_buffer).",
            b.lost,
        ),
        (
            "dropped",
            "Messages this node dropped unsent: Redis was away and broker_buffer was full.",
            b.dropped,
        ),
        (
            "malformed",
            "Messages on the bus channel that were not roomcast's.",
            b.malformed,
        ),
        (
            "reconnects",
            "Connections to Redis made again after one was lost.",
            b.reconnects,
        ),
    ];
    for (name, help, value) in counters {
        o.single(&format!("roomcast_broker_{name}_total"), c, help, value);
    }
    o.single(
        "roomcast_broker_unsent",
        g,
        "Messages waiting for Redis.",
        b.unsent,
    );
    o.single(
        "roomcast_broker_nodes",
        g,
        "Other nodes heard from within their lease.",
        b.nodes,
    );
    o.single(
        "roomcast_broker_connected",
        g,
        "1 while both Redis connections (publish, subscribe) are up.",
        u64::from(b.connected),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::offline::OfflineCounts;
    use crate::metrics::{HookTally, HookTime, Metrics, Refusal};

    fn snapshot() -> Snapshot {
        let m = Metrics::new();
        m.accepted();
        m.refused(Refusal::OnConnect, 403);
        m.protocol_error(1009);
        let mut tally = HookTally::default();
        tally.add(HookTime {
            nanos: 1_500_000_000,
            failed: true,
        });
        m.hooks(&tally);
        m.http_response(200);
        m.snapshot()
    }

    /// `name{labels}` → value, for every sample line.
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn value(text: &str, key: &str) -> String {
        samples(text)
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no sample {key}"))
            .1
    }

    #[test]
    fn every_family_has_help_then_type_then_its_samples() {
        let text = render(&snapshot());
        let mut current: Option<String> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(!rest[name.len()..].trim().is_empty(), "{name} has no help");
                let kind = lines.next().unwrap();
                assert!(kind.starts_with(&format!("# TYPE {name} ")), "{kind}");
                let kind = kind.rsplit(' ').next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind));
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
                assert!(name.starts_with("roomcast_"));
                current = Some(name);
            } else {
                let family = current.as_deref().expect("a sample before any family");
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn values_and_labels() {
        let text = render(&snapshot());
        assert_eq!(value(&text, "roomcast_connections_open"), "1");
        assert_eq!(
            value(
                &text,
                "roomcast_connections_refused_total{reason=\"on_connect\",status=\"403\"}"
            ),
            "1"
        );
        assert_eq!(
            value(&text, "roomcast_protocol_errors_total{code=\"1009\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "roomcast_protocol_errors_total{code=\"1002\"}"),
            "0"
        );
        assert_eq!(
            value(&text, "roomcast_http_responses_total{class=\"2xx\"}"),
            "1"
        );
        assert_eq!(value(&text, "roomcast_hook_errors_total"), "1");
        assert_eq!(value(&text, "roomcast_runtime_tasks"), "0");
        let h = "roomcast_hook_duration_seconds";
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"1.0\"}}")), "0");
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"2.5\"}}")), "1");
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")), "1");
        assert_eq!(value(&text, &format!("{h}_sum")), "1.5");
        assert_eq!(value(&text, &format!("{h}_count")), "1");
        assert!(!text.contains("roomcast_chat_"));
    }

    #[test]
    fn the_chat_families_appear_with_the_preset() {
        let mut s = snapshot();
        s.chat = Some(OfflineCounts {
            kept: 4,
            delivered: 3,
            dropped_full: 1,
            dropped_expired: 0,
            waiting: 0,
            store_failures: 0,
        });
        let text = render(&s);
        assert_eq!(value(&text, "roomcast_chat_offline_kept_total"), "4");
        assert_eq!(
            value(
                &text,
                "roomcast_chat_offline_dropped_total{reason=\"full\"}"
            ),
            "1"
        );
        assert_eq!(value(&text, "roomcast_chat_offline_waiting"), "0");
    }
}
