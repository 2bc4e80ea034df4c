//! The local store: one SQLite file per (user, tenant) holding the entities, the sync queue and
//! the sync metadata (cursor, last sync, digests).
//!
//! Every local change writes the entity and its queue entry in one transaction, so a crash never
//! leaves a change that is visible but not queued, or queued but not visible. Entities that were
//! deleted keep a tombstone row (`deleted = 1`) with the delete's timestamp, so that a stale
//! incoming version cannot resurrect them.

use std::{collections::HashSet, path::Path};

use finwise_protocol::{digest, entity::UPDATED_AT, lww, messages::Operation, time, EntityType};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::Result;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Made through this client's API.
    Local,
    /// Received from the server (another device, or the server's winning version).
    Remote,
}

/// One change of the local store, as published on [`crate::Client::changes`].
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub entity_type: EntityType,
    pub id: String,
    pub operation: Operation,
    pub origin: Origin,
    /// The entity after the change; `None` for deletes.
    pub entity: Option<Map<String, Value>>,
}

/// A stored entity row.
#[derive(Debug, Clone)]
pub struct Row {
    pub data: Map<String, Value>,
    pub updated_at_ms: i64,
    pub deleted: bool,
}

/// The lifecycle state of a queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    Pending,
    Processing,
    Done,
    Failed,
}

impl EntryStatus {
    fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Pending => "pending",
            EntryStatus::Processing => "processing",
            EntryStatus::Done => "done",
            EntryStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> EntryStatus {
        match s {
            "processing" => EntryStatus::Processing,
            "done" => EntryStatus::Done,
            "failed" => EntryStatus::Failed,
            _ => EntryStatus::Pending,
        }
    }
}

/// One entry of the sync queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    /// Local order of the queue.
    pub seq: i64,
    /// The entry id sent to the server (key of idempotent retries).
    pub id: String,
    pub entity_type: EntityType,
    pub entity_id: String,
    pub operation: Operation,
    pub payload: Value,
    /// When the change was made (ms since the epoch).
    pub timestamp: i64,
    /// The `updated_at` of the change.
    pub updated_at_ms: i64,
    /// A field-level update: the fields it changes (`None`: the whole entity).
    pub fields: Option<Vec<String>>,
    pub status: EntryStatus,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub reason: Option<String>,
}

/// Counts of the queue by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub pending: u64,
    pub processing: u64,
    pub failed: u64,
    pub done: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entities (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    op TEXT NOT NULL,
    payload TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    reason TEXT,
    finished_ms INTEGER,
    owner TEXT,
    fields TEXT
);
CREATE INDEX IF NOT EXISTS queue_entity ON queue (entity_type, entity_id, status);
CREATE INDEX IF NOT EXISTS queue_status ON queue (status, seq);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Done entries are kept this long for inspection, then pruned on open.
const KEEP_DONE_MS: i64 = 7 * 24 * 3600 * 1000;

/// The local SQLite store. Synchronous; the client wraps it in a mutex (every call is short).
///
/// Several processes may share a store (a `finwise sync --watch` and the commands of another
/// shell). Entries in flight are marked with the instance that sent them (`pid:uuid`), so one
/// process never puts another live process's in-flight entries back into the queue.
pub struct Store {
    conn: Connection,
    instance: String,
}

/// The store instances open in this process.
static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|i| *i != self.instance);
        }
    }
}

/// Whether the instance that marked an entry `processing` is gone (its answers will never come).
fn owner_gone(owner: Option<&str>) -> bool {
    let Some(owner) = owner else { return true };
    let Some(pid) = owner.split(':').next().and_then(|p| p.parse::<u32>().ok()) else { return true };
    if pid == std::process::id() {
        return !LIVE.lock().map(|l| l.iter().any(|i| i == owner)).unwrap_or(false);
    }
    // Another process: alive while /proc/<pid> exists (without /proc we cannot tell: gone).
    let proc_dir = Path::new("/proc");
    !(proc_dir.exists() && proc_dir.join(pid.to_string()).exists())
}

fn new_instance() -> String {
    let id = format!("{}:{}", std::process::id(), uuid::Uuid::new_v4());
    if let Ok(mut live) = LIVE.lock() {
        live.push(id.clone());
    }
    id
}

fn op_str(op: Operation) -> &'static str {
    op.as_str()
}

fn parse_op(s: &str) -> Operation {
    match s {
        "create" => Operation::Create,
        "delete" => Operation::Delete,
        _ => Operation::Update,
    }
}

fn parse_type(s: &str) -> EntityType {
    EntityType::parse(s).unwrap_or(EntityType::Account)
}

impl Store {
    /// Opens (or creates) the store at `path`. Entries left `processing` by a process that died
    /// before their answer arrived go back to `pending`: they are resent with the same entry id,
    /// so the server recognises them and applies nothing twice.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        add_fields_column(&conn)?;
        let store = Store { conn, instance: new_instance() };
        store.release_orphans()?;
        store.conn.execute(
            "DELETE FROM queue WHERE status = 'done' AND finished_ms < ?1",
            params![time::now_ms() - KEEP_DONE_MS],
        )?;
        Ok(store)
    }

    /// An in-memory store (tests and throw-away clients).
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn, instance: new_instance() })
    }

    // ----- entities -----

    pub fn get(&self, t: EntityType, id: &str) -> Result<Option<Row>> {
        get_row(&self.conn, t, id)
    }

    /// Live entities of a type, ordered by `sortOrder` (when present), then name, then id.
    pub fn list(&self, t: EntityType) -> Result<Vec<Map<String, Value>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT data FROM entities WHERE type = ?1 AND deleted = 0
             ORDER BY json_extract(data, '$.sortOrder'), json_extract(data, '$.name'), json_extract(data, '$.date'), id",
        )?;
        let rows = stmt.query_map(params![t.as_str()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(Value::Object(m)) = serde_json::from_str(&r?) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Number of live entities per type.
    pub fn counts(&self) -> Result<Vec<(EntityType, u64)>> {
        let mut out = Vec::new();
        for t in EntityType::ALL {
            let n: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM entities WHERE type = ?1 AND deleted = 0",
                params![t.as_str()],
                |r| r.get(0),
            )?;
            out.push((*t, n as u64));
        }
        Ok(out)
    }

    /// Writes a local change and queues it, in one transaction. `entity` is the normalised
    /// entity for create/update (already stamped with `updated_at_ms`), `None` for delete;
    /// `fields`: the fields a field-level update changes.
    ///
    /// An update of an entity whose last queued change has not been sent yet is folded into
    /// that entry (under a new entry id): create + update stay a create of the new entity,
    /// field-level updates add up their fields, and anything with a whole update is whole.
    pub fn local_change(
        &mut self,
        t: EntityType,
        id: &str,
        op: Operation,
        entity: Option<&Map<String, Value>>,
        updated_at_ms: i64,
        fields: Option<&[String]>,
    ) -> Result<QueueEntry> {
        let tx = self.conn.transaction()?;
        let (data, deleted, payload) = match entity {
            Some(e) => {
                let s = serde_json::to_string(e)?;
                (s.clone(), false, s)
            }
            None => (
                serde_json::json!({ "id": id }).to_string(),
                true,
                serde_json::json!({ "id": id, "updated_at": time::format_ms(updated_at_ms) }).to_string(),
            ),
        };
        put_row(&tx, t, id, &data, updated_at_ms, deleted)?;
        let entry_id = uuid::Uuid::new_v4().to_string();
        let now = time::now_ms();
        // the entity's last queued change, when it is still waiting to be sent
        let unsent = if op == Operation::Update {
            tx.query_row(
                "SELECT seq, op, fields FROM queue WHERE entity_type = ?1 AND entity_id = ?2
                   AND status = 'pending' AND attempts = 0
                   AND seq = (SELECT MAX(seq) FROM queue WHERE entity_type = ?1 AND entity_id = ?2)",
                params![t.as_str(), id],
                |r| Ok((r.get::<_, i64>(0)?, parse_op(&r.get::<_, String>(1)?), r.get::<_, Option<String>>(2)?)),
            )
            .optional()?
            .filter(|(_, prev, _)| *prev != Operation::Delete)
        } else {
            None
        };
        let (seq, op, fields) = match unsent {
            Some((seq, prev_op, prev_fields)) => {
                let prev_fields: Option<Vec<String>> = prev_fields.and_then(|f| serde_json::from_str(&f).ok());
                let fields = match (prev_op, prev_fields, fields) {
                    (Operation::Update, Some(mut a), Some(b)) => {
                        a.extend(b.iter().filter(|f| !a.contains(f)).cloned().collect::<Vec<_>>());
                        Some(a)
                    }
                    _ => None,
                };
                tx.execute(
                    "UPDATE queue SET id = ?2, payload = ?3, timestamp = ?4, updated_at_ms = ?5, fields = ?6 WHERE seq = ?1",
                    params![seq, entry_id, payload, now, updated_at_ms, fields_json(fields.as_deref())],
                )?;
                (seq, prev_op, fields)
            }
            None => {
                tx.execute(
                    "INSERT INTO queue (id, entity_type, entity_id, op, payload, timestamp, updated_at_ms, status, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
                    params![entry_id, t.as_str(), id, op_str(op), payload, now, updated_at_ms, fields_json(fields)],
                )?;
                (tx.last_insert_rowid(), op, fields.map(<[String]>::to_vec))
            }
        };
        tx.commit()?;
        Ok(QueueEntry {
            seq,
            id: entry_id,
            entity_type: t,
            entity_id: id.to_owned(),
            operation: op,
            payload: serde_json::from_str(&payload)?,
            timestamp: now,
            updated_at_ms,
            fields,
            status: EntryStatus::Pending,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            reason: None,
        })
    }

    /// Whether a local change of this entity is still queued (pending or awaiting its answer).
    pub fn is_pending(&self, t: EntityType, id: &str) -> Result<bool> {
        is_pending(&self.conn, t, id)
    }

    /// Applies one version received from the server in a `data_update` (LWW client rule).
    pub fn apply_remote(
        &mut self,
        t: EntityType,
        entity: &Map<String, Value>,
        deleted: bool,
        updated_at_ms: i64,
    ) -> Result<Option<Change>> {
        let tx = self.conn.transaction()?;
        let c = apply_one(&tx, t, entity, deleted, updated_at_ms, false)?;
        tx.commit()?;
        Ok(c)
    }

    /// Applies one part of an `initial_data_load`. `authoritative` (full loads and resets):
    /// every entity without a queued local change takes the server's version whatever its
    /// timestamp. `seen` collects the ids of full loads for [`Store::finish_full_load`].
    pub fn apply_load_part(
        &mut self,
        payload: &Map<String, Value>,
        deleted: Option<&std::collections::BTreeMap<EntityType, Vec<String>>>,
        authoritative: bool,
        seen: &mut HashSet<(EntityType, String)>,
    ) -> Result<Vec<Change>> {
        let tx = self.conn.transaction()?;
        let mut changes = Vec::new();
        for t in EntityType::ALL {
            let Some(Value::Array(items)) = payload.get(t.collection()) else { continue };
            for item in items {
                let Value::Object(e) = item else { continue };
                let Some(id) = e.get("id").and_then(Value::as_str) else { continue };
                let ms = e.get("updated_at").and_then(Value::as_str).and_then(time::parse_ms).unwrap_or(0);
                seen.insert((*t, id.to_owned()));
                if let Some(c) = apply_one(&tx, *t, e, false, ms, authoritative)? {
                    changes.push(c);
                }
            }
        }
        if let Some(deleted) = deleted {
            for (t, ids) in deleted {
                for id in ids {
                    if is_pending(&tx, *t, id)? {
                        continue;
                    }
                    let existing = get_row(&tx, *t, id)?;
                    if existing.as_ref().is_some_and(|r| !r.deleted) {
                        // The delta does not carry the tombstone's timestamp: keep the local one
                        // (the next data_update or load decides anything newer).
                        let ms = existing.as_ref().map(|r| r.updated_at_ms).unwrap_or(0);
                        put_row(&tx, *t, id, &serde_json::json!({ "id": id }).to_string(), ms, true)?;
                        changes.push(Change {
                            entity_type: *t,
                            id: id.clone(),
                            operation: Operation::Delete,
                            origin: Origin::Remote,
                            entity: None,
                        });
                    }
                }
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Ends a full load: live local entities the server did not send and that have no queued
    /// change are gone on the server; they become tombstones here.
    pub fn finish_full_load(&mut self, seen: &HashSet<(EntityType, String)>) -> Result<Vec<Change>> {
        let tx = self.conn.transaction()?;
        let mut gone = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT type, id, updated_at_ms FROM entities WHERE deleted = 0")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
            for r in rows {
                let (t, id, ms) = r?;
                let t = parse_type(&t);
                if !seen.contains(&(t, id.clone())) {
                    gone.push((t, id, ms));
                }
            }
        }
        let mut changes = Vec::new();
        for (t, id, ms) in gone {
            if is_pending(&tx, t, &id)? {
                continue;
            }
            put_row(&tx, t, &id, &serde_json::json!({ "id": id }).to_string(), ms, true)?;
            changes.push(Change {
                entity_type: t,
                id,
                operation: Operation::Delete,
                origin: Origin::Remote,
                entity: None,
            });
        }
        tx.commit()?;
        Ok(changes)
    }

    /// The v2 tenant digest of the local live entities.
    pub fn digest(&self) -> Result<String> {
        let mut stmt = self.conn.prepare_cached("SELECT type, id, updated_at_ms FROM entities WHERE deleted = 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        let mut lines = Vec::new();
        for r in rows {
            let (t, id, ms) = r?;
            lines.push((parse_type(&t), id, time::format_ms(ms)));
        }
        Ok(digest::tenant_digest(lines.iter().map(|(t, id, u)| (*t, id.as_str(), u.as_str()))))
    }

    // ----- queue -----

    /// Selects up to `max` entries that may be sent now, in queue order, and marks them
    /// `processing`. An entity whose earlier entry is waiting (backoff) or already in flight
    /// holds back its later entries, so each entity's changes reach the server in order.
    pub fn take_batch(&mut self, now_ms: i64, max: usize) -> Result<Vec<QueueEntry>> {
        self.take_batch_bounded(now_ms, max, usize::MAX)
    }

    /// [`Store::take_batch`] that also stops once the payloads add up to `max_bytes` (at least
    /// one entry is always taken), so a batch stays under the server's message size limit.
    pub fn take_batch_bounded(&mut self, now_ms: i64, max: usize, max_bytes: usize) -> Result<Vec<QueueEntry>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::new();
        {
            // Scanned lazily in queue order: a batch reads about as many rows as it takes.
            let sql =
                format!("SELECT {ENTRY_COLUMNS} FROM queue WHERE status IN ('pending', 'processing') ORDER BY seq");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query([])?;
            let mut blocked: HashSet<(EntityType, String)> = HashSet::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                if out.len() >= max {
                    break;
                }
                let e = row_to_entry(row)?;
                let key = (e.entity_type, e.entity_id.clone());
                if blocked.contains(&key) {
                    continue;
                }
                if e.status == EntryStatus::Processing || e.next_attempt_ms > now_ms {
                    blocked.insert(key);
                    continue;
                }
                let size = row.get_ref(5)?.as_str().map(str::len).unwrap_or(0) + 256;
                if !out.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                out.push(e);
            }
        }
        for e in &mut out {
            tx.execute(
                "UPDATE queue SET status = 'processing', attempts = attempts + 1, owner = ?2 WHERE id = ?1",
                params![e.id, self.instance],
            )?;
            e.status = EntryStatus::Processing;
            e.attempts += 1;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The server stored the change (or had it already).
    pub fn mark_done(&self, entry_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE queue SET status = 'done', last_error = NULL, reason = NULL, finished_ms = ?2 WHERE id = ?1",
            params![entry_id, time::now_ms()],
        )?;
        Ok(())
    }

    /// A retryable refusal: back to `pending`, not before `next_attempt_ms`.
    pub fn mark_retry(&self, entry_id: &str, reason: &str, detail: &str, next_attempt_ms: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE queue SET status = 'pending', reason = ?2, last_error = ?3, next_attempt_ms = ?4 WHERE id = ?1",
            params![entry_id, reason, detail, next_attempt_ms],
        )?;
        Ok(())
    }

    /// A permanent refusal (or an exhausted retry budget): kept as `failed` for inspection.
    pub fn mark_failed(&self, entry_id: &str, reason: &str, detail: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE queue SET status = 'failed', reason = ?2, last_error = ?3, finished_ms = ?4 WHERE id = ?1",
            params![entry_id, reason, detail, time::now_ms()],
        )?;
        Ok(())
    }

    /// This instance's entries still `processing` (sent, no answer: the connection broke) go
    /// back to `pending`.
    pub fn release_processing(&self) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE queue SET status = 'pending', owner = NULL WHERE status = 'processing' AND owner = ?1",
            params![self.instance],
        )?)
    }

    /// Entries left `processing` by an instance that is gone (a process that died or a client
    /// dropped before the answers came) go back to `pending`; they are resent with the same ids.
    pub fn release_orphans(&self) -> Result<usize> {
        let owners: Vec<Option<String>> = {
            let mut stmt = self.conn.prepare("SELECT DISTINCT owner FROM queue WHERE status = 'processing'")?;
            let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for owner in owners {
            if owner_gone(owner.as_deref()) {
                n += self.conn.execute(
                    "UPDATE queue SET status = 'pending', owner = NULL WHERE status = 'processing' AND owner IS ?1",
                    params![owner],
                )?;
            }
        }
        Ok(n)
    }

    /// Puts failed entries back into the queue (`finwise sync --retry-failed`).
    pub fn retry_failed(&self) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE queue SET status = 'pending', attempts = 0, next_attempt_ms = 0, finished_ms = NULL WHERE status = 'failed'",
            [],
        )?)
    }

    pub fn queue_counts(&self) -> Result<QueueCounts> {
        let mut c = QueueCounts::default();
        let mut stmt = self.conn.prepare_cached("SELECT status, COUNT(*) FROM queue GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for r in rows {
            let (s, n) = r?;
            let n = n as u64;
            match EntryStatus::parse(&s) {
                EntryStatus::Pending => c.pending = n,
                EntryStatus::Processing => c.processing = n,
                EntryStatus::Failed => c.failed = n,
                EntryStatus::Done => c.done = n,
            }
        }
        Ok(c)
    }

    /// Queue entries with the given status, in queue order.
    pub fn entries(&self, status: EntryStatus) -> Result<Vec<QueueEntry>> {
        query_entries(&self.conn, "WHERE status = ?1 ORDER BY seq", params![status.as_str()])
    }

    /// When the next entry may be sent: the earliest `next_attempt_ms` among the first queued
    /// entry of each entity (later entries wait for their entity's first). `None`: nothing queued.
    pub fn next_attempt(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(q.next_attempt_ms) FROM queue q WHERE q.status = 'pending' AND q.seq = (
                SELECT MIN(q2.seq) FROM queue q2 WHERE q2.entity_type = q.entity_type AND q2.entity_id = q.entity_id
                AND q2.status IN ('pending', 'processing'))",
            [],
            |r| r.get(0),
        )?)
    }

    // ----- meta -----

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.conn.execute("DELETE FROM meta WHERE key = ?1", params![key])?;
        Ok(())
    }

    /// The delta cursor: the tenant `seq` of the last load applied.
    pub fn cursor(&self) -> Result<Option<i64>> {
        Ok(self.meta("cursor")?.and_then(|s| s.parse().ok()))
    }

    pub fn set_cursor(&self, seq: i64) -> Result<()> {
        self.set_meta("cursor", &seq.to_string())
    }
}

fn get_row(conn: &Connection, t: EntityType, id: &str) -> Result<Option<Row>> {
    let row = conn
        .query_row(
            "SELECT data, updated_at_ms, deleted FROM entities WHERE type = ?1 AND id = ?2",
            params![t.as_str(), id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, bool>(2)?)),
        )
        .optional()?;
    Ok(row.map(|(data, updated_at_ms, deleted)| Row {
        data: serde_json::from_str(&data).unwrap_or_default(),
        updated_at_ms,
        deleted,
    }))
}

fn put_row(conn: &Connection, t: EntityType, id: &str, data: &str, updated_at_ms: i64, deleted: bool) -> Result<()> {
    conn.execute(
        "INSERT INTO entities (type, id, data, updated_at_ms, deleted) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(type, id) DO UPDATE SET data = excluded.data, updated_at_ms = excluded.updated_at_ms, deleted = excluded.deleted",
        params![t.as_str(), id, data, updated_at_ms, deleted],
    )?;
    Ok(())
}

fn is_pending(conn: &Connection, t: EntityType, id: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM queue WHERE entity_type = ?1 AND entity_id = ?2 AND status IN ('pending', 'processing') LIMIT 1",
            params![t.as_str(), id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Applies one server version unless a local change is queued, by the LWW client rule
/// (or unconditionally when `authoritative`). Returns the change when something changed.
fn apply_one(
    tx: &Transaction<'_>,
    t: EntityType,
    entity: &Map<String, Value>,
    deleted: bool,
    updated_at_ms: i64,
    authoritative: bool,
) -> Result<Option<Change>> {
    let Some(id) = entity.get("id").and_then(Value::as_str) else { return Ok(None) };
    let pending = is_pending(tx, t, id)?;
    let local = get_row(tx, t, id)?;
    if pending && !deleted {
        if let Some(local) = local.as_ref().filter(|l| !l.deleted) {
            return overlay_pending_fields(tx, t, id, entity, local);
        }
    }
    let accept = if authoritative {
        !pending
    } else {
        lww::client_accepts(local.as_ref().map(|r| r.updated_at_ms), pending, updated_at_ms)
    };
    if !accept {
        return Ok(None);
    }
    let same = local
        .as_ref()
        .is_some_and(|r| r.updated_at_ms == updated_at_ms && r.deleted == deleted && (deleted || r.data == *entity));
    if same {
        return Ok(None);
    }
    let data = if deleted { serde_json::json!({ "id": id }).to_string() } else { serde_json::to_string(entity)? };
    put_row(tx, t, id, &data, updated_at_ms, deleted)?;
    let existed = local.as_ref().is_some_and(|r| !r.deleted);
    let operation = match (deleted, existed) {
        (true, _) => Operation::Delete,
        (false, true) => Operation::Update,
        (false, false) => Operation::Create,
    };
    if deleted && !existed {
        return Ok(None);
    }
    Ok(Some(Change {
        entity_type: t,
        id: id.to_owned(),
        operation,
        origin: Origin::Remote,
        entity: (!deleted).then(|| entity.clone()),
    }))
}

/// A server version of an entity with queued field-level edits (and nothing else queued): shown
/// at once with the edited fields' local values laid over it, so another device's edits of the
/// other fields appear before the server has merged ours (its merged version follows our ack).
fn overlay_pending_fields(
    tx: &Transaction<'_>,
    t: EntityType,
    id: &str,
    entity: &Map<String, Value>,
    local: &Row,
) -> Result<Option<Change>> {
    let queued = query_entries(
        tx,
        "WHERE entity_type = ?1 AND entity_id = ?2 AND status IN ('pending', 'processing')",
        params![t.as_str(), id],
    )?;
    let mut fields: Vec<&str> = Vec::new();
    for e in &queued {
        match (&e.operation, &e.fields) {
            (Operation::Update, Some(f)) => fields.extend(f.iter().map(String::as_str)),
            _ => return Ok(None), // a queued create, delete or whole update wins locally until acked
        }
    }
    let mut merged = entity.clone();
    for f in fields {
        if let Some(v) = local.data.get(f) {
            merged.insert(f.to_owned(), v.clone());
        }
    }
    for stamp in std::iter::once(UPDATED_AT).chain(t.def().mirrors_updated_at.iter().copied()) {
        if let Some(v) = local.data.get(stamp) {
            merged.insert(stamp.to_owned(), v.clone());
        }
    }
    if merged == local.data {
        return Ok(None);
    }
    // the local stamp stays until the server's merge arrives (which is newer than both)
    put_row(tx, t, id, &serde_json::to_string(&merged)?, local.updated_at_ms, false)?;
    Ok(Some(Change {
        entity_type: t,
        id: id.to_owned(),
        operation: Operation::Update,
        origin: Origin::Remote,
        entity: Some(merged),
    }))
}

const ENTRY_COLUMNS: &str =
    "seq, id, entity_type, entity_id, op, payload, timestamp, updated_at_ms, status, attempts, \
     next_attempt_ms, last_error, reason, fields";

fn fields_json(fields: Option<&[String]>) -> Option<String> {
    fields.map(|f| serde_json::to_string(f).expect("a list of strings serialises"))
}

/// Stores made before field-level updates lack the queue's `fields` column.
fn add_fields_column(conn: &Connection) -> Result<()> {
    let has: bool =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('queue') WHERE name = 'fields'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has {
        conn.execute_batch("ALTER TABLE queue ADD COLUMN fields TEXT")?;
    }
    Ok(())
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueEntry> {
    Ok(QueueEntry {
        seq: r.get(0)?,
        id: r.get(1)?,
        entity_type: parse_type(&r.get::<_, String>(2)?),
        entity_id: r.get(3)?,
        operation: parse_op(&r.get::<_, String>(4)?),
        payload: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
        timestamp: r.get(6)?,
        updated_at_ms: r.get(7)?,
        status: EntryStatus::parse(&r.get::<_, String>(8)?),
        attempts: r.get::<_, i64>(9)? as u32,
        next_attempt_ms: r.get(10)?,
        last_error: r.get(11)?,
        reason: r.get(12)?,
        fields: r.get::<_, Option<String>>(13)?.and_then(|f| serde_json::from_str(&f).ok()),
    })
}

fn query_entries<P: rusqlite::Params>(conn: &Connection, where_clause: &str, p: P) -> Result<Vec<QueueEntry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM queue {where_clause}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(p, row_to_entry)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(id: &str, name: &str, ms: i64) -> Map<String, Value> {
        EntityType::Tag.def().normalize(&json!({"id": id, "name": name}), ms).unwrap()
    }

    #[test]
    fn local_change_is_stored_and_queued_together() {
        let mut s = Store::open_in_memory().unwrap();
        s.local_change(EntityType::Tag, "t1", Operation::Create, Some(&tag("t1", "A", 10)), 10, None).unwrap();
        assert!(s.is_pending(EntityType::Tag, "t1").unwrap());
        assert_eq!(s.list(EntityType::Tag).unwrap().len(), 1);
        assert_eq!(s.queue_counts().unwrap().pending, 1);
    }

    #[test]
    fn pending_delete_is_not_undone_by_remote_versions() {
        let mut s = Store::open_in_memory().unwrap();
        s.local_change(EntityType::Tag, "t1", Operation::Delete, None, 10, None).unwrap();
        assert!(s.apply_remote(EntityType::Tag, &tag("t1", "B", 50), false, 50).unwrap().is_none());
        let payload = json!({"tags": [tag("t1", "B", 60)]});
        let mut seen = HashSet::new();
        assert!(s.apply_load_part(payload.as_object().unwrap(), None, true, &mut seen).unwrap().is_empty());
        assert!(s.get(EntityType::Tag, "t1").unwrap().unwrap().deleted);
    }

    #[test]
    fn batches_keep_per_entity_order_and_respect_backoff() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s.local_change(EntityType::Tag, "a", Operation::Create, Some(&tag("a", "A", 10)), 10, None).unwrap();
        let batch = s.take_batch(100, 10).unwrap();
        assert_eq!(batch.len(), 1);
        s.mark_retry(&batch[0].id, "overloaded", "busy", 1000).unwrap();
        s.release_processing().unwrap();
        // sent once already: the update is queued behind it, not folded into it
        s.local_change(EntityType::Tag, "a", Operation::Update, Some(&tag("a", "A2", 11)), 11, None).unwrap();
        s.local_change(EntityType::Tag, "b", Operation::Create, Some(&tag("b", "B", 10)), 10, None).unwrap();
        // "a" waits for its first entry's backoff; "b" goes.
        let batch = s.take_batch(100, 10).unwrap();
        assert_eq!(batch.iter().map(|e| e.entity_id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        s.mark_done(&batch[0].id).unwrap();
        let batch = s.take_batch(2000, 10).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].id, a.id);
    }

    #[test]
    fn only_entries_of_gone_instances_are_released_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut a = Store::open(&path).unwrap();
        a.local_change(EntityType::Tag, "t", Operation::Create, Some(&tag("t", "A", 10)), 10, None).unwrap();
        assert_eq!(a.take_batch(100, 10).unwrap().len(), 1);
        // Another instance (e.g. a command in another shell) leaves A's entry in flight.
        let b = Store::open(&path).unwrap();
        assert_eq!(b.queue_counts().unwrap().processing, 1);
        assert_eq!(b.release_processing().unwrap(), 0);
        drop(a);
        // A is gone without its answer: the next open puts the entry back into the queue.
        let c = Store::open(&path).unwrap();
        let counts = c.queue_counts().unwrap();
        assert_eq!((counts.pending, counts.processing), (1, 0));
    }

    #[test]
    fn batches_are_bounded_in_bytes() {
        let mut s = Store::open_in_memory().unwrap();
        for i in 0..10 {
            let id = format!("t{i}");
            let note = "x".repeat(1000);
            let e = EntityType::Tag.def().normalize(&json!({"id": id, "name": note}), 10).unwrap();
            s.local_change(EntityType::Tag, &id, Operation::Create, Some(&e), 10, None).unwrap();
        }
        assert_eq!(s.take_batch_bounded(100, 100, 3000).unwrap().len(), 2);
        assert_eq!(s.take_batch_bounded(100, 100, 10).unwrap().len(), 1, "at least one entry");
    }

    #[test]
    fn older_remote_version_loses_and_equal_wins() {
        let mut s = Store::open_in_memory().unwrap();
        let mut seen = HashSet::new();
        let p = json!({"tags": [tag("t", "A", 20)]});
        s.apply_load_part(p.as_object().unwrap(), None, false, &mut seen).unwrap();
        assert!(s.apply_remote(EntityType::Tag, &tag("t", "old", 10), false, 10).unwrap().is_none());
        assert!(s.apply_remote(EntityType::Tag, &tag("t", "tie", 20), false, 20).unwrap().is_some());
        assert_eq!(s.get(EntityType::Tag, "t").unwrap().unwrap().data["name"], "tie");
    }
}
