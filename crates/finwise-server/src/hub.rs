//! Per-tenant fan-out. Every connection of a tenant subscribes to one bounded broadcast channel;
//! the writer publishes each commit's changes once, already serialised, as one event, and each
//! connection forwards those it did not write itself. A connection that falls more than the
//! channel's capacity (in commits) behind is closed with 1013 and resyncs by delta. The channel's
//! slots are allocated when a tenant's first connection subscribes, so the capacity is memory per
//! tenant with connections (about 100 bytes a slot).

use finwise_protocol::locks::LockExt;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::{
    net::{Buffers, OutboundCharge},
    TenantId,
};

/// What a tenant's connections receive.
#[derive(Debug, Clone)]
pub enum Event {
    /// The serialised `data_update`s of one commit, each with the connection that wrote it
    /// (`0`: another server's). One event per commit, not per change: the channel's capacity
    /// (`outbound_queue`) then counts commits, and a batch of 500 entries takes one slot. Cloning
    /// it only bumps a reference count: every listener sends the same bytes.
    Changes { changes: Arc<[(u64, Utf8Bytes)]>, charge: Arc<OutboundCharge> },
    /// The tenant was deleted: close with this code.
    Close { code: u16, reason: &'static str },
    /// The user lost access to the tenant: that user's connections close with 1008.
    Revoke { user_id: String },
    /// The tenant's members as the database has them now: a connection of any other user closes
    /// with 1008 (a server that missed a revocation while not listening catches up with this).
    Members { user_ids: Arc<Vec<String>> },
    /// Sent to every connection on graceful shutdown.
    Shutdown,
}

#[derive(Debug)]
pub struct Hub {
    capacity: usize,
    tenants: Mutex<HashMap<TenantId, broadcast::Sender<Event>>>,
    all: broadcast::Sender<Event>,
    /// Broadcasts count against the WebSocket buffer budget until every listener has taken them.
    pub buffers: Arc<Buffers>,
}

impl Hub {
    pub fn new(capacity: usize, buffers: Arc<Buffers>) -> Self {
        Hub { capacity, tenants: Mutex::new(HashMap::new()), all: broadcast::channel(4).0, buffers }
    }

    /// Publishes the changes of one commit (each serialised once, with the connection that wrote
    /// it) to the tenant's listeners, as one event.
    pub fn publish_changes(&self, tenant: &TenantId, changes: Vec<(u64, Utf8Bytes)>) {
        if changes.is_empty() {
            return;
        }
        let charge = self.buffers.charge_outbound(changes.iter().map(|(_, t)| t.len()).sum());
        self.publish(tenant, Event::Changes { changes: changes.into(), charge });
    }

    /// Subscribes to a tenant's events (and to server-wide events).
    pub fn subscribe(&self, tenant: &TenantId) -> (broadcast::Receiver<Event>, broadcast::Receiver<Event>) {
        let mut map = self.tenants.locked();
        let tx = map.entry(tenant.clone()).or_insert_with(|| broadcast::channel(self.capacity).0);
        (tx.subscribe(), self.all.subscribe())
    }

    /// Drops a tenant's channel once its last connection has gone.
    pub fn unsubscribe(&self, tenant: &TenantId) {
        let mut map = self.tenants.locked();
        if map.get(tenant).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(tenant);
        }
    }

    pub fn publish(&self, tenant: &TenantId, event: Event) {
        let tx = self.tenants.locked().get(tenant).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(event);
        }
    }

    pub fn publish_all(&self, event: Event) {
        let _ = self.all.send(event);
    }

    /// The tenants with connections on this server.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.tenants.locked().iter().filter(|(_, tx)| tx.receiver_count() > 0).map(|(t, _)| t.clone()).collect()
    }

    /// Whether the tenant has connections on this server.
    pub fn has_listeners(&self, tenant: &TenantId) -> bool {
        self.tenants.locked().get(tenant).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Connections per tenant, for status endpoints.
    pub fn stats(&self) -> (usize, usize) {
        let map = self.tenants.locked();
        (map.values().map(|tx| tx.receiver_count()).sum(), map.len())
    }
}
