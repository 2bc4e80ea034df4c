//! Cross-node fan-out for servers sharing one PostgreSQL database.
//!
//! Every commit raises its tenant's row in `tenant_heads`; after the commit the store's announcer
//! sends `NOTIFY finwise_heads, '<tenant>:<old seq>:<new seq>'` (ids and numbers only, never data;
//! batched, so one server's heads of a tenant arrive in commit order, other servers' in any). Each server keeps, per tenant with
//! local sockets, the last seq it delivered (its *cursor*). All deliveries of a tenant go through
//! [`Relay::deliver`] under the tenant's lock: what is missing between the cursor and the new
//! head is read from the database once (by seq, so in order, no gaps) and published to the local
//! sockets; what was already delivered is skipped (no duplicates). A server's own commits take
//! the same path, with the messages the writer already built (the writer's connection is spared
//! its own change, as without the relay).
//!
//! The listener runs on its own thread and connection. When that connection dies it reconnects
//! and catches every local tenant up to its head; a slow safety poll ([`POLL_INTERVAL`]) does
//! the same, so a lost notification delays a change but never loses it. `finwise_events` carries
//! the closes that must reach every server: a deleted tenant, a member removed.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use finwise_protocol::{locks::LockExt, messages::Operation};
use postgres::fallible_iterator::FallibleIterator;
use tracing::{info, warn};

use crate::{
    engine,
    hub::{Event, Hub},
    storage::{postgres::PgPool, Result, Store},
    TenantId,
};

/// How often each server checks its tenants' heads besides the notifications (a lost
/// notification delays a change by at most this long).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The channel of head changes (payload `tenant:from:to`).
pub const HEADS: &str = "finwise_heads";
/// The channel of closes every server must apply (`close:<tenant>`, `revoke:<tenant>:<user>`).
pub const EVENTS: &str = "finwise_events";

pub struct Relay {
    store: Arc<dyn Store>,
    pool: Arc<PgPool>,
    hub: Arc<Hub>,
    /// Per tenant: the last seq delivered to this server's sockets (`None`: not known yet).
    cursors: Mutex<HashMap<TenantId, Arc<Mutex<Option<i64>>>>>,
    /// Per tenant: this server's commits between `begin_local` and `finish_local`, and whether a
    /// notification was set aside meanwhile. A server's own commit is announced to it too, and
    /// the notification may overtake the writer: it is set aside so the writer's messages (which
    /// spare the writing connection) are the ones delivered.
    local: Mutex<HashMap<TenantId, (usize, bool)>>,
    stop: AtomicBool,
    /// Times the listener connected (tests and metrics see reconnects).
    pub connects: std::sync::atomic::AtomicU64,
}

impl Relay {
    /// Starts the listener thread.
    pub fn start(store: Arc<dyn Store>, pool: Arc<PgPool>, hub: Arc<Hub>, poll: Duration) -> Arc<Relay> {
        let relay = Arc::new(Relay {
            store,
            pool,
            hub,
            cursors: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            connects: 0.into(),
        });
        let r = Arc::clone(&relay);
        std::thread::Builder::new().name("relay".into()).spawn(move || r.listen(poll)).expect("spawn relay thread");
        relay
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn cursor(&self, tenant: &TenantId) -> Arc<Mutex<Option<i64>>> {
        Arc::clone(self.cursors.locked().entry(tenant.clone()).or_default())
    }

    /// A socket of `tenant` subscribed here: start its cursor at the current head (what its
    /// load will contain) unless deliveries already set it. Blocks: call off the runtime.
    pub fn watch(&self, tenant: &TenantId) {
        // the tenant's other sockets here already set it: no read (a reconnect storm of one
        // household costs one head read, not one per socket)
        if self.cursor(tenant).locked().is_some() {
            return;
        }
        let head = self.store.read(tenant, |r| Ok(r.snapshot()?.seq));
        match head {
            Ok(head) => {
                let c = self.cursor(tenant);
                let mut c = c.locked();
                if c.is_none() {
                    *c = Some(head);
                }
            }
            Err(e) => warn!(tenant = %tenant, error = %e, "relay: cannot read the head; the safety poll will retry"),
        }
    }

    /// A writer of this server is about to commit a group of `tenant`.
    pub fn begin_local(&self, tenant: &TenantId) {
        self.local.locked().entry(tenant.clone()).or_default().0 += 1;
    }

    /// The group of [`Relay::begin_local`] ended: its messages (`(seq, origin, data_update)`, in
    /// seq order; none when nothing changed or the commit failed) are delivered, and what was set
    /// aside meanwhile is caught up.
    pub fn finish_local(&self, tenant: &TenantId, texts: &[(i64, u64, Utf8Bytes)]) {
        if let (Some(first), Some(last)) = (texts.first(), texts.last()) {
            self.deliver(tenant, first.0 - 1, last.0, texts);
        }
        let missed = {
            let mut local = self.local.locked();
            let e = local.entry(tenant.clone()).or_default();
            e.0 = e.0.saturating_sub(1);
            let missed = e.0 == 0 && e.1;
            if e.0 == 0 {
                local.remove(tenant);
            }
            missed
        };
        if missed {
            if let Ok(head) = self.store.read(tenant, |r| Ok(r.snapshot()?.seq)) {
                self.deliver(tenant, head, head, &[]);
            }
        }
    }

    /// Delivers the changes `(from, to]` of `tenant` to this server's sockets, in seq order,
    /// each once. `local`: the messages of this server's own commit for part of that range
    /// (`(seq, origin connection, data_update)`), used instead of reading them back.
    pub fn deliver(&self, tenant: &TenantId, from: i64, to: i64, local: &[(i64, u64, Utf8Bytes)]) {
        if !self.hub.has_listeners(tenant) {
            // nobody here: forget the cursor (a later socket starts from its own load)
            self.cursors.locked().remove(tenant);
            return;
        }
        let cursor = self.cursor(tenant);
        let mut c = cursor.locked();
        let start = c.unwrap_or(from);
        if start >= to {
            return;
        }
        let first_local = local.first().map_or(i64::MAX, |(s, _, _)| *s);
        // read what this server has not seen: everything up to its own messages
        let read_to = to.min(first_local - 1);
        let mut changes = Vec::new();
        if start < read_to {
            match self.read_changes(tenant, start, read_to) {
                Ok(msgs) => changes.extend(msgs.into_iter().map(|text| (0, text))),
                Err(e) => {
                    // the safety poll retries from the unchanged cursor
                    warn!(tenant = %tenant, error = %e, "relay: cannot read changes; retrying later");
                    return;
                }
            }
        }
        changes
            .extend(local.iter().filter(|(seq, _, _)| *seq > start).map(|(_, origin, text)| (*origin, text.clone())));
        // one event for what was read and this server's own commit
        self.hub.publish_changes(tenant, changes);
        *c = Some(to.max(start));
    }

    /// The `data_update` messages of the versions written in `(from, to]`: an entity created
    /// after `from` is a `create` for sockets that have seen up to `from`.
    fn read_changes(&self, tenant: &TenantId, from: i64, to: i64) -> Result<Vec<Utf8Bytes>> {
        self.store.read(tenant, |r| {
            let mut out = Vec::new();
            r.changes(from, to, &mut |rec| {
                let op = match rec {
                    _ if rec.deleted => Operation::Delete,
                    _ if rec.created_seq > from => Operation::Create,
                    _ => Operation::Update,
                };
                out.push(engine::data_update(tenant.as_str(), &rec, op));
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// Brings every tenant with local sockets up to its head (after a reconnect; the poll), with
    /// one query for all their heads. A tenant with a commit of this server in flight is left to
    /// that commit (which catches it up when it ends): read now, the commit's own change would
    /// reach its writer too.
    /// Runs on the listener's connection: an error means that connection is gone.
    fn catch_up_all(&self, client: &mut postgres::Client) -> Result<(), postgres::Error> {
        let tenants: Vec<String> = self.cursors.locked().keys().map(|t| t.as_str().to_owned()).collect();
        let rows = client.query(
            "SELECT tenant_id::text, seq FROM tenant_heads WHERE tenant_id = ANY($1::text[]::uuid[])",
            &[&tenants],
        )?;
        let heads = rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
        for (t, head) in heads {
            let Some(t) = TenantId::parse(&t) else { continue };
            if let Some(e) = self.local.locked().get_mut(&t) {
                e.1 = true;
                continue;
            }
            self.deliver(&t, head, head, &[]);
        }
        Ok(())
    }

    /// After the listener was away: closes the sockets whose tenant was deleted or whose user
    /// was removed meanwhile (the announcement of that was missed).
    fn recheck_access(&self) {
        for t in self.hub.tenants() {
            let members = self.store.central().tx(|db| {
                if !db.exists("SELECT 1 FROM tenants WHERE id = $1", crate::sql_params![t.as_str()])? {
                    return Ok(None);
                }
                let rows =
                    db.query("SELECT user_id FROM members WHERE tenant_id = $1", crate::sql_params![t.as_str()])?;
                rows.iter().map(|r| r.text(0)).collect::<Result<Vec<_>>>().map(Some)
            });
            match members {
                Ok(None) => self.hub.publish(&t, Event::Close { code: 1001, reason: "tenant deleted" }),
                Ok(Some(user_ids)) => self.hub.publish(&t, Event::Members { user_ids: Arc::new(user_ids) }),
                Err(e) => warn!(tenant = %t, error = %e, "relay: cannot re-check members after a reconnect"),
            }
        }
    }

    fn listen(self: Arc<Self>, poll: Duration) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::SeqCst) {
            let mut conn = match self.pool.connect() {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "relay: cannot connect for notifications; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(e) = conn.client.batch_execute(&format!("LISTEN {HEADS}; LISTEN {EVENTS}")) {
                warn!(error = %e, "relay: LISTEN failed; reconnecting");
                continue;
            }
            backoff = Duration::from_millis(100);
            let n = self.connects.fetch_add(1, Ordering::SeqCst);
            if n > 0 {
                info!("relay: notifications reconnected; catching up every local tenant");
                self.recheck_access();
            }
            // whatever happened while not listening
            if let Err(e) = self.catch_up_all(&mut conn.client) {
                warn!(error = %e, "relay: catch-up failed; reconnecting");
                continue;
            }
            let mut last_poll = Instant::now();
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut failed = false;
                {
                    let mut notes = conn.client.notifications();
                    let mut it = notes.timeout_iter(Duration::from_millis(250));
                    loop {
                        match it.next() {
                            Ok(Some(n)) => self.on_notification(n.channel(), n.payload()),
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "relay: notification connection lost; reconnecting");
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                if failed || conn.client.is_closed() {
                    break;
                }
                if last_poll.elapsed() >= poll {
                    last_poll = Instant::now();
                    // the query also proves the listening connection is alive
                    if let Err(e) = self.catch_up_all(&mut conn.client) {
                        warn!(error = %e, "relay: notification connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn on_notification(&self, channel: &str, payload: &str) {
        let mut parts = payload.split(':');
        if channel == HEADS {
            let (Some(t), Some(from), Some(to)) = (parts.next(), parts.next(), parts.next()) else { return };
            let (Some(t), Ok(from), Ok(to)) = (TenantId::parse(t), from.parse::<i64>(), to.parse::<i64>()) else {
                return;
            };
            {
                let mut local = self.local.locked();
                if let Some(e) = local.get_mut(&t) {
                    // a commit of ours is in flight: it delivers (and catches this up) itself
                    e.1 = true;
                    return;
                }
            }
            self.deliver(&t, from, to, &[]);
        } else if channel == EVENTS {
            match (parts.next(), parts.next().and_then(TenantId::parse), parts.next()) {
                (Some("close"), Some(t), _) => {
                    self.hub.publish(&t, Event::Close { code: 1001, reason: "tenant deleted" })
                }
                (Some("revoke"), Some(t), Some(user)) => {
                    self.hub.publish(&t, Event::Revoke { user_id: user.to_owned() })
                }
                _ => {}
            }
        }
    }
}

/// Tells every server on the database (this one included) to apply `event`: `close:<tenant>` or
/// `revoke:<tenant>:<user>`. Blocks: call off the runtime.
pub fn announce(store: &dyn Store, event: &str) -> Result<()> {
    store.central().tx(|db| {
        db.execute("SELECT pg_notify($1, $2)", crate::sql_params![EVENTS, event])?;
        Ok(())
    })
}
