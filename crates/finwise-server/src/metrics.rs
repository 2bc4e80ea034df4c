//! Prometheus metrics (`GET /metrics`, text exposition format), one registry per [`crate::App`].
//!
//! Names: `finwise_connections_total`, `finwise_connections_open`, `finwise_messages_in_total{type}`,
//! `finwise_messages_out_total{type}`, `finwise_acks_total`, `finwise_nacks_total{reason}`,
//! `finwise_commit_batch_entries` (histogram), `finwise_commit_seconds` (histogram),
//! `finwise_commit_failures_total`, `finwise_writer_queue_depth`, `finwise_open_tenants`,
//! `finwise_tenant_evictions_total`,
//! `finwise_tcp_connections_open`, `finwise_ws_buffered_bytes`, `finwise_ws_outbound_bytes`,
//! `finwise_http_requests_total{status}`, `finwise_connection_closes_total{code}`, and on
//! PostgreSQL `finwise_unannounced_heads_total`.

use finwise_protocol::locks::LockExt;
use std::sync::Mutex;

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// Every metric of one server.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub connections_total: Counter,
    pub connections_open: Gauge,
    pub messages_in: Family<Labels, Counter>,
    pub messages_out: Family<Labels, Counter>,
    pub acks: Counter,
    pub nacks: Family<Labels, Counter>,
    pub commit_batch_entries: Histogram,
    pub commit_seconds: Histogram,
    pub commit_failures: Counter,
    /// Entries queued on tenant writers and not yet taken into a commit (all tenants).
    pub writer_queue_depth: Gauge,
    pub open_tenants: Gauge,
    /// Idle tenants closed early to stay under `max_open_tenants`.
    pub tenant_evictions: Counter,
    /// TCP connections open now (HTTP and WebSocket).
    pub tcp_connections_open: Gauge,
    /// Bytes held in unfinished incoming WebSocket messages.
    pub ws_buffered_bytes: Gauge,
    /// Outgoing WebSocket bytes not yet handed to the kernel.
    pub ws_outbound_bytes: Gauge,
    pub http_requests: Family<Labels, Counter>,
    /// Connections ended, by close code the server sent (`peer` when the client closed or vanished).
    pub closes: Family<Labels, Counter>,
    /// Handles of the message counters of the known types, resolved once: counting a message is
    /// then one atomic add instead of a label allocation, a hash and a lock on the family (it runs
    /// for every delivery of a broadcast).
    known_in: Vec<(&'static str, Counter)>,
    known_out: Vec<(&'static str, Counter)>,
}

/// Message types the server receives.
const KNOWN_IN: &[&str] = &[
    "process_sync_entry",
    "process_sync_batch",
    "request_initial_data",
    "ping",
    "data_status_request",
    "tenant_disconnect",
    "connection_status_request",
    "queue_status",
    "invalid",
];

/// Message types the server sends most.
const KNOWN_OUT: &[&str] = &[
    "data_update",
    "sync_ack",
    "sync_nack",
    "sync_batch_result",
    "initial_data_load",
    "status",
    "ping",
    "pong",
    "error",
];

fn resolve(family: &Family<Labels, Counter>, kinds: &[&'static str]) -> Vec<(&'static str, Counter)> {
    kinds.iter().map(|k| (*k, family.get_or_create(&vec![("type", (*k).to_owned())]).clone())).collect()
}

fn count(known: &[(&'static str, Counter)], family: &Family<Labels, Counter>, kind: &str, n: u64) {
    match known.iter().find(|(k, _)| *k == kind) {
        Some((_, c)) => {
            c.inc_by(n);
        }
        None => {
            family.get_or_create(&vec![("type", kind.to_owned())]).inc_by(n);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let (messages_in, messages_out) = (Family::default(), Family::default());
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            connections_total: Counter::default(),
            connections_open: Gauge::default(),
            known_in: resolve(&messages_in, KNOWN_IN),
            known_out: resolve(&messages_out, KNOWN_OUT),
            messages_in,
            messages_out,
            acks: Counter::default(),
            nacks: Family::default(),
            commit_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            commit_failures: Counter::default(),
            writer_queue_depth: Gauge::default(),
            open_tenants: Gauge::default(),
            tenant_evictions: Counter::default(),
            tcp_connections_open: Gauge::default(),
            ws_buffered_bytes: Gauge::default(),
            ws_outbound_bytes: Gauge::default(),
            http_requests: Family::default(),
            closes: Family::default(),
        };
        // Counter names get `_total` appended by the encoder.
        r.register("finwise_connections", "WebSocket connections accepted", m.connections_total.clone());
        r.register("finwise_connections_open", "WebSocket connections open now", m.connections_open.clone());
        r.register("finwise_messages_in", "WebSocket messages received, by type", m.messages_in.clone());
        r.register("finwise_messages_out", "WebSocket messages sent, by type", m.messages_out.clone());
        r.register("finwise_acks", "sync entries acknowledged (sync_ack)", m.acks.clone());
        r.register("finwise_nacks", "sync entries refused (sync_nack), by reason", m.nacks.clone());
        r.register("finwise_commit_batch_entries", "entries in one group commit", m.commit_batch_entries.clone());
        r.register("finwise_commit_seconds", "duration of one group commit transaction", m.commit_seconds.clone());
        r.register("finwise_commit_failures", "group commits that failed (storage_error)", m.commit_failures.clone());
        r.register(
            "finwise_writer_queue_depth",
            "entries queued on tenant writers, all tenants",
            m.writer_queue_depth.clone(),
        );
        r.register("finwise_open_tenants", "tenant databases open (running writers)", m.open_tenants.clone());
        r.register(
            "finwise_tenant_evictions",
            "idle tenants closed early to stay under max_open_tenants",
            m.tenant_evictions.clone(),
        );
        r.register(
            "finwise_tcp_connections_open",
            "TCP connections open (HTTP and WebSocket; see max_connections)",
            m.tcp_connections_open.clone(),
        );
        r.register(
            "finwise_ws_buffered_bytes",
            "bytes in unfinished incoming WebSocket messages (see ws_buffer_budget)",
            m.ws_buffered_bytes.clone(),
        );
        r.register(
            "finwise_ws_outbound_bytes",
            "outgoing WebSocket bytes not yet written to the kernel (see ws_buffer_budget)",
            m.ws_outbound_bytes.clone(),
        );
        r.register("finwise_http_requests", "HTTP requests answered, by status", m.http_requests.clone());
        r.register(
            "finwise_connection_closes",
            "WebSocket connections ended, by the close code the server sent (1013 slow client, 1008 policy, 1009 too big, 1001 shutdown; peer = closed by the client)",
            m.closes.clone(),
        );
        *m.registry.locked() = r;
        m
    }

    /// Registers a counter kept by another part of the server (e.g. the storage).
    pub fn register_counter(&self, name: &str, help: &str, counter: Counter) {
        self.registry.locked().register(name, help, counter);
    }

    pub fn message_in(&self, kind: &str) {
        count(&self.known_in, &self.messages_in, kind, 1);
    }

    /// Counts an outgoing text by its `type` (or `event_type`) field.
    pub fn message_out(&self, text: &str) {
        count(&self.known_out, &self.messages_out, message_type(text), 1);
    }

    /// Counts `n` outgoing `data_update`s (one tenant event's deliveries to one socket, at once).
    pub fn data_updates_out(&self, n: u64) {
        count(&self.known_out, &self.messages_out, "data_update", n);
    }

    pub fn nack(&self, reason: &str) {
        self.nacks.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    pub fn close(&self, code: &str) {
        self.closes.get_or_create(&vec![("code", code.to_owned())]).inc();
    }

    pub fn http(&self, status: u16) {
        self.http_requests.get_or_create(&vec![("status", status.to_string())]).inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.locked();
        encode(&mut out, &r).expect("encoding metrics into a String");
        out
    }
}

/// The `type` (or `event_type`) of a server message, read from its first bytes; a bounded label.
pub fn message_type(text: &str) -> &str {
    // Our own messages start with their type: no search.
    for prefix in ["{\"type\":\"", "{\"event_type\":\""] {
        if let Some(rest) = text.strip_prefix(prefix) {
            if let Some(v) = rest.get(..rest.len().min(49)).and_then(|h| h.split('"').next()) {
                if !v.is_empty() && v.len() <= 48 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return v;
                }
            }
        }
    }
    let mut n = text.len().min(256);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    let head = &text[..n];
    for key in ["\"type\":\"", "\"event_type\":\""] {
        if let Some(i) = head.find(key) {
            let rest = &head[i + key.len()..];
            if let Some(end) = rest.find('"') {
                let v = &rest[..end];
                if !v.is_empty() && v.len() <= 48 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return v;
                }
            }
        }
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types() {
        assert_eq!(message_type(r#"{"type":"sync_ack","id":"x"}"#), "sync_ack");
        assert_eq!(message_type(r#"{"event_type":"initial_data_load","payload":{}}"#), "initial_data_load");
        assert_eq!(message_type(r#"{"a":1}"#), "other");
        assert_eq!(message_type(r#"{"type":"evil label\n"}"#), "other");
    }

    #[test]
    fn renders() {
        let m = Metrics::new();
        m.message_in("ping");
        m.acks.inc();
        let t = m.render();
        assert!(t.contains("finwise_messages_in_total{type=\"ping\"} 1"), "{t}");
        assert!(t.contains("finwise_acks_total 1"), "{t}");
        m.message_out(r#"{"event_type":"data_update","x":1}"#);
        m.message_out(r#"{"type":"tenant_disconnect_ack"}"#);
        let t = m.render();
        assert!(t.contains("finwise_messages_out_total{type=\"data_update\"} 1"), "{t}");
        assert!(t.contains("finwise_messages_out_total{type=\"tenant_disconnect_ack\"} 1"), "{t}");
    }
}
