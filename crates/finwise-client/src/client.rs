//! The typed client API: local reads and writes, the change stream and the sync status.

use finwise_protocol::locks::LockExt;
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use finwise_protocol::{messages::Operation, time, EntityType, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch, Notify};

use crate::{
    auth::Auth,
    error::{Error, Result},
    store::{Change, EntryStatus, Origin, QueueCounts, QueueEntry, Store},
};

/// Progress of a sync step, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Queue entries sent so far out of those queued when the push started.
    Pushing { sent: u64, total: u64 },
    /// Entities received so far in a load; `total` is known for full loads.
    Loading { received: u64, total: Option<u64> },
    /// The load is complete.
    Loaded { received: u64 },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Tuning of the sync engine. `Default` fits interactive use; tests shorten the intervals.
#[derive(Clone)]
pub struct ClientOptions {
    /// Queue entries per `process_sync_batch` (at most 1000).
    pub batch_size: usize,
    /// Entities per `initial_data_load` message.
    pub chunk_size: usize,
    /// How long to wait for an answer from the server.
    pub request_timeout: Duration,
    /// Reconnect backoff: first delay and cap (exponential with jitter).
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    /// Health check: a ping this often; no message for three intervals means the link is dead.
    pub ping_interval: Duration,
    /// In watch mode, how often the digest is compared while idle.
    pub verify_interval: Duration,
    /// Retry backoff of refused entries: first delay and cap (exponential with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts an entry gets for each retryable NACK reason before it is marked failed.
    pub storage_error_budget: u32,
    pub overloaded_budget: u32,
    /// `sync_once` waits for entries in backoff when their next attempt is at most this far off.
    pub max_retry_wait: Duration,
    pub progress: Option<ProgressFn>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            batch_size: 500,
            chunk_size: 1000,
            request_timeout: Duration::from_secs(30),
            reconnect_base: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            verify_interval: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            storage_error_budget: 10,
            overloaded_budget: 20,
            max_retry_wait: Duration::from_secs(5),
            progress: None,
        }
    }
}

/// The state of the link to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    Offline,
    Connecting,
    Online,
}

/// A snapshot of the sync state.
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub connection: ConnectionState,
    pub queue: QueueCounts,
    /// The tenant `seq` up to which this store has pulled changes.
    pub cursor: Option<i64>,
    /// When the last sync finished (wire timestamp).
    pub last_sync: Option<String>,
    /// Whether the last digest comparison matched the server (`None`: not compared yet).
    pub converged: Option<bool>,
    pub local_digest: String,
    pub server_digest: Option<String>,
    pub last_error: Option<String>,
    /// A `watch` running on this store, possibly in another process (e.g. `finwise sync --watch`).
    pub watcher: Option<WatcherInfo>,
    /// Local clock minus the server's at the last connection, in ms (positive: ahead). Changes
    /// stamped more than the server's limit (default 5 min) ahead are refused with `clock_skew`.
    pub clock_offset_ms: Option<i64>,
}

/// What a running [`Client::watch`] records in the store, so other processes can show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatcherInfo {
    pub state: ConnectionState,
    pub pid: u32,
    /// When the state last changed (wire timestamp).
    pub since: String,
}

impl WatcherInfo {
    /// Whether the recording process still runs (Linux: checked in /proc; elsewhere assumed).
    fn alive(&self) -> bool {
        let proc_dir = Path::new("/proc");
        !proc_dir.exists() || proc_dir.join(self.pid.to_string()).exists()
    }
}

/// What one `sync_once` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Entries sent (retries included).
    pub sent: u64,
    /// Entries the server stored or had already.
    pub acked: u64,
    /// Acks with `duplicate: true`: the server had already applied the entry.
    pub duplicates: u64,
    /// Acks with `applied: false`: a newer version on the server won.
    pub lost: u64,
    /// Entries refused with a retryable reason and scheduled again.
    pub retried: u64,
    /// Entries refused for good (kept as `failed`).
    pub failed: u64,
    /// Entities changed locally by loads and updates from the server.
    pub received: u64,
    /// Entities the server's loads (full or delta) carried, whether or not they changed anything
    /// here (a fresh device's full load: every entity; a device that has them all: none received).
    pub loaded: u64,
    /// Whether a full load was needed (no cursor, reset, or digest mismatch).
    pub full_load: bool,
    pub cursor: Option<i64>,
    /// Whether the local digest equals the server's (`None` when entries are still queued).
    pub converged: Option<bool>,
    pub digest: Option<String>,
}

pub(crate) struct Inner {
    pub auth: Arc<Auth>,
    pub tenant: String,
    pub store: Mutex<Store>,
    pub changes: broadcast::Sender<Change>,
    pub conn_state: watch::Sender<ConnectionState>,
    pub last_error: Mutex<Option<String>>,
    pub local_notify: Notify,
    pub sync_lock: tokio::sync::Mutex<()>,
    pub opts: ClientOptions,
}

impl Inner {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.locked()
    }

    pub fn publish(&self, changes: Vec<Change>) {
        for c in changes {
            let _ = self.changes.send(c);
        }
    }

    /// Publishes the connection state of a running watch and records it in the store.
    pub fn watch_state(&self, state: ConnectionState) {
        self.conn_state.send_replace(state);
        let info = WatcherInfo { state, pid: std::process::id(), since: time::format_ms(time::now_ms()) };
        if let Ok(text) = serde_json::to_string(&info) {
            let _ = self.store().set_meta("watch", &text);
        }
    }

    pub fn set_error(&self, e: Option<String>) {
        *self.last_error.locked() = e;
    }
}

/// An offline-first client of one tenant. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// The local timestamp of a change: now, but always after the previous version.
fn next_stamp(previous_ms: Option<i64>) -> i64 {
    let now = time::now_ms();
    match previous_ms {
        Some(p) => now.max(p + 1),
        None => now,
    }
}

impl Client {
    /// The store file of a user's tenant under `data_dir`: `{data_dir}/{user_id}/{tenant}.db`.
    pub fn store_path(data_dir: &Path, user_id: &str, tenant: &str) -> PathBuf {
        data_dir.join(user_id).join(format!("{tenant}.db"))
    }

    /// Opens the client of `tenant` with its store under `data_dir` (see [`Client::store_path`]).
    pub fn open(auth: Arc<Auth>, tenant: &str, data_dir: &Path, opts: ClientOptions) -> Result<Client> {
        let path = Client::store_path(data_dir, &auth.user_id(), tenant);
        Client::open_at(auth, tenant, &path, opts)
    }

    /// Opens the client with its store at `path`.
    pub fn open_at(auth: Arc<Auth>, tenant: &str, path: &Path, opts: ClientOptions) -> Result<Client> {
        let store = Store::open(path)?;
        let (changes, _) = broadcast::channel(1024);
        let (conn_state, _) = watch::channel(ConnectionState::Offline);
        Ok(Client {
            inner: Arc::new(Inner {
                auth,
                tenant: tenant.to_owned(),
                store: Mutex::new(store),
                changes,
                conn_state,
                last_error: Mutex::new(None),
                local_notify: Notify::new(),
                sync_lock: tokio::sync::Mutex::new(()),
                opts,
            }),
        })
    }

    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant
    }

    pub fn auth(&self) -> &Arc<Auth> {
        &self.inner.auth
    }

    fn change(
        &self,
        t: EntityType,
        id: &str,
        op: Operation,
        entity: Option<Map<String, Value>>,
        ms: i64,
        fields: Option<&[String]>,
    ) -> Result<()> {
        self.inner.store().local_change(t, id, op, entity.as_ref(), ms, fields)?;
        let _ = self.inner.changes.send(Change {
            entity_type: t,
            id: id.to_owned(),
            operation: op,
            origin: Origin::Local,
            entity,
        });
        self.inner.local_notify.notify_one();
        Ok(())
    }

    /// Creates an entity locally and queues it. `payload` is the entity object; a missing `id`
    /// is generated. Returns the stored (normalised) entity.
    pub fn create(&self, t: EntityType, payload: Value) -> Result<Map<String, Value>> {
        let mut obj = match payload {
            Value::Object(m) => m,
            _ => {
                return Err(Error::Validation {
                    entity_type: t,
                    error: ValidationError::new("payload", "must be an object"),
                })
            }
        };
        let id = match obj.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        obj.insert("id".into(), Value::from(id.clone()));
        let previous = self.inner.store().get(t, &id)?;
        if previous.as_ref().is_some_and(|r| !r.deleted) {
            return Err(Error::Validation {
                entity_type: t,
                error: ValidationError::new("id", format!("{id} already exists")),
            });
        }
        let ms = next_stamp(previous.map(|r| r.updated_at_ms));
        let entity = t
            .def()
            .normalize_owned(Value::Object(obj), ms)
            .map_err(|source| Error::Validation { entity_type: t, error: source })?;
        self.change(t, &id, Operation::Create, Some(entity.clone()), ms, None)?;
        Ok(entity)
    }

    /// Changes fields of an entity locally and queues the change as a field-level update of the
    /// fields whose value changed (the server merges it with other devices' edits of other
    /// fields). `patch` holds the fields to change (`null` clears a nullable field). Returns the
    /// stored entity; when nothing changes, nothing is queued.
    pub fn update(&self, t: EntityType, id: &str, patch: Value) -> Result<Map<String, Value>> {
        let Value::Object(patch) = patch else {
            return Err(Error::Validation {
                entity_type: t,
                error: ValidationError::new("payload", "must be an object"),
            });
        };
        let row = self.live_row(t, id)?;
        let mut merged = row.data.clone();
        for (k, v) in patch {
            if k != "id" {
                merged.insert(k, v);
            }
        }
        let ms = next_stamp(Some(row.updated_at_ms));
        let entity = t
            .def()
            .normalize_owned(Value::Object(merged), ms)
            .map_err(|source| Error::Validation { entity_type: t, error: source })?;
        let changed: Vec<String> = t
            .def()
            .stamped_fields()
            .filter(|f| entity.get(f.name) != row.data.get(f.name))
            .map(|f| f.name.to_owned())
            .collect();
        if changed.is_empty() {
            return Ok(row.data);
        }
        self.change(t, id, Operation::Update, Some(entity.clone()), ms, Some(&changed))?;
        Ok(entity)
    }

    /// The stored row of a live (not deleted) entity, or `NotFound`.
    fn live_row(&self, t: EntityType, id: &str) -> Result<crate::store::Row> {
        self.inner
            .store()
            .get(t, id)?
            .filter(|r| !r.deleted)
            .ok_or_else(|| Error::NotFound { entity_type: t, id: id.to_owned() })
    }

    /// Deletes an entity locally and queues the delete.
    pub fn delete(&self, t: EntityType, id: &str) -> Result<()> {
        let row = self.live_row(t, id)?;
        let ms = next_stamp(Some(row.updated_at_ms));
        self.change(t, id, Operation::Delete, None, ms, None)
    }

    /// One live entity.
    pub fn get(&self, t: EntityType, id: &str) -> Result<Option<Map<String, Value>>> {
        Ok(self.inner.store().get(t, id)?.filter(|r| !r.deleted).map(|r| r.data))
    }

    /// All live entities of a type.
    pub fn list(&self, t: EntityType) -> Result<Vec<Map<String, Value>>> {
        self.inner.store().list(t)
    }

    /// Live entity counts per type.
    pub fn counts(&self) -> Result<Vec<(EntityType, u64)>> {
        self.inner.store().counts()
    }

    /// A stream of every change of the local store, local and remote.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The connection state as it changes.
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.inner.conn_state.subscribe()
    }

    /// The current sync status.
    pub fn status(&self) -> Result<SyncStatus> {
        let store = self.inner.store();
        Ok(SyncStatus {
            connection: *self.inner.conn_state.borrow(),
            queue: store.queue_counts()?,
            cursor: store.cursor()?,
            last_sync: store.meta("last_sync")?,
            converged: {
                // "in sync" only while it still holds: nothing queued, the digest unchanged since
                // the check; a change since then makes it unknown until the next check
                let queue = store.queue_counts()?;
                let (local, server) = (store.digest()?, store.meta("server_digest")?);
                match store.meta("converged")?.as_deref() {
                    Some("true")
                        if queue.pending + queue.processing == 0 && server.as_deref() == Some(local.as_str()) =>
                    {
                        Some(true)
                    }
                    Some("false") => Some(false),
                    _ => None,
                }
            },
            local_digest: store.digest()?,
            server_digest: store.meta("server_digest")?,
            last_error: self
                .inner
                .last_error
                .lock()
                .expect("error lock")
                .clone()
                .or(store.meta("last_error")?.filter(|e| !e.is_empty())),
            clock_offset_ms: store.meta("clock_offset_ms")?.and_then(|s| s.parse().ok()),
            watcher: store
                .meta("watch")?
                .and_then(|t| serde_json::from_str::<WatcherInfo>(&t).ok())
                .filter(WatcherInfo::alive),
        })
    }

    /// Queue entries with a status (e.g. `Failed` for inspection).
    pub fn queue_entries(&self, status: EntryStatus) -> Result<Vec<QueueEntry>> {
        self.inner.store().entries(status)
    }

    /// Puts failed entries back into the queue; returns how many.
    pub fn retry_failed(&self) -> Result<usize> {
        let n = self.inner.store().retry_failed()?;
        self.inner.local_notify.notify_one();
        Ok(n)
    }

    /// The tenant digest of the local store.
    pub fn local_digest(&self) -> Result<String> {
        self.inner.store().digest()
    }
}
