//! SQLite implementation: one file per tenant (`tenants/<uuid>.db`), WAL, `synchronous=FULL`.
//!
//! Schema (version 5): `entities` holds every entity type in one table, unique on
//! `(entity_type, id)`, with the canonical JSON, its LWW version and the sequence number of the
//! change that wrote it; deletes stay as tombstones (`deleted = 1`). `applied_entries` remembers
//! processed entry ids with a 64-bit hash of the id ([`id_hash`]); the writer finds them through
//! a map of hash to rowid in memory ([`EntryIds`]). `meta` holds the sequence counter and the
//! compaction floor.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use finwise_protocol::{locks::LockExt, EntityType};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

pub use super::data_dir::{DataDir, DataDirLock};
use super::{
    sql::{self, Param, Row, Sql, SqlDb, Val},
    AppliedEntry, EntityRecord, Readiness, Result, Snapshot, StorageError, Store, TenantDb, TenantReader, WriteTxn,
};
use crate::TenantId;

/// Migrations of `auth.db`, the central database (accounts, tenants, members, refresh tokens).
const CENTRAL_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE tenants (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE members (
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role      TEXT NOT NULL CHECK (role IN ('owner', 'member')),
        PRIMARY KEY (tenant_id, user_id)
    );
    CREATE INDEX members_by_user ON members (user_id);
    CREATE TABLE refresh_tokens (
        token_hash    TEXT PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        family        TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used          INTEGER NOT NULL DEFAULT 0,
        revoked       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_by_family ON refresh_tokens (family);
"#,
    // v2: which tenants legacy (0.4, tokenless) clients may use: those they created or that
    // were imported from 0.4. Tenants that existed before keep today's behaviour (open).
    "ALTER TABLE tenants ADD COLUMN legacy_open INTEGER NOT NULL DEFAULT 1;",
    // v3: the 0.4 frontend's per-user settings (log level, categories, history retention)
    r#"
    CREATE TABLE user_settings (
        user_id                TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        id                     TEXT NOT NULL,
        log_level              TEXT NOT NULL,
        log_categories         TEXT NOT NULL,
        history_retention_days INTEGER NOT NULL,
        created_at             TEXT NOT NULL,
        updated_at             TEXT NOT NULL
    );
"#,
    // v4: account and group logos (128×128 PNG, base64), per tenant
    r#"
    CREATE TABLE logos (
        tenant_id  TEXT NOT NULL,
        name       TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
"#,
];

/// Number of schema migrations of `auth.db`.
pub const CENTRAL_SCHEMA_VERSION: usize = CENTRAL_MIGRATIONS.len();

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const TENANT_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE entities (
        entity_type   TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        seq           INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT    NOT NULL,
        changed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (entity_type, id)
    ) WITHOUT ROWID;
    CREATE INDEX entities_by_seq ON entities (seq);
    CREATE TABLE applied_entries (
        entry_id        TEXT    PRIMARY KEY,
        content_hash    TEXT    NOT NULL,
        seq             INTEGER NOT NULL,
        applied         INTEGER NOT NULL,
        updated_at      TEXT    NOT NULL,
        processed_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('seq', 0), ('tombstone_floor', 0);
"#,
    r#"
    -- v2: rowid tables with small unique indexes. New rows are appended instead of inserted at a
    -- random key with their JSON, so a group commit dirties far fewer pages (WAL volume).
    CREATE TABLE entities_v2 (
        entity_type   TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        seq           INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        data          TEXT    NOT NULL,
        changed_at_ms INTEGER NOT NULL
    );
    INSERT INTO entities_v2 (entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms)
        SELECT entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms FROM entities ORDER BY seq;
    DROP TABLE entities;
    ALTER TABLE entities_v2 RENAME TO entities;
    CREATE UNIQUE INDEX entities_by_key ON entities (entity_type, id);
    CREATE INDEX entities_by_seq ON entities (seq);
    CREATE TABLE applied_entries_v2 (
        entry_id        TEXT    NOT NULL,
        content_hash    TEXT    NOT NULL,
        seq             INTEGER NOT NULL,
        applied         INTEGER NOT NULL,
        updated_at      TEXT    NOT NULL,
        processed_at_ms INTEGER NOT NULL
    );
    INSERT INTO applied_entries_v2 SELECT entry_id, content_hash, seq, applied, updated_at, processed_at_ms FROM applied_entries;
    DROP TABLE applied_entries;
    ALTER TABLE applied_entries_v2 RENAME TO applied_entries;
    CREATE UNIQUE INDEX applied_entries_by_id ON applied_entries (entry_id);
    CREATE INDEX applied_entries_by_time ON applied_entries (processed_at_ms);
"#,
    r#"
    -- v3: entry ids are found through a 64-bit hash of the id (`finwise_id_hash`, FNV-1a). An
    -- index of integers is a fraction of the size of one on 36-character ids, so the random
    -- insert of each new id dirties far fewer index pages per group commit.
    ALTER TABLE applied_entries ADD COLUMN id_hash INTEGER NOT NULL DEFAULT 0;
    UPDATE applied_entries SET id_hash = finwise_id_hash(entry_id);
    DROP INDEX applied_entries_by_id;
    CREATE INDEX applied_entries_by_hash ON applied_entries (id_hash);
"#,
    r#"
    -- v4: field-level merge keeps a stamp per field (NULL: every field carries updated_at, which
    -- is what every version written before had), and the seq that created each entity
    ALTER TABLE entities ADD COLUMN stamps TEXT;
    ALTER TABLE entities ADD COLUMN created_seq INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
    -- v5: the writer finds entry ids through a map it holds in memory (`EntryIds`: a keyed hash
    -- of each id to its rowid), built at open by reading the table. Neither index is kept: the one on
    -- id_hash dirtied a random leaf page for nearly every new entry (most of a WAL frame each),
    -- and the one on the time was a second B-tree insert per entry for the hourly compaction,
    -- which now reads the table (rows are appended in the order they are processed).
    DROP INDEX applied_entries_by_hash;
    DROP INDEX applied_entries_by_time;
"#,
];

/// The 64-bit key under which an entry id is indexed (FNV-1a of its UTF-8 bytes). Stored in
/// tenant databases: it must never change. Different ids may share a hash; lookups compare the
/// id too.
pub fn id_hash(id: &str) -> i64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(id.as_bytes());
    h.finish() as i64
}

/// Makes `finwise_id_hash(text)` available to SQL (the v3 migration fills the column with it).
fn register_functions(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "finwise_id_hash",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(id_hash(&ctx.get::<String>(0)?)),
    )?;
    Ok(())
}

/// Number of schema migrations of a tenant database.
pub const TENANT_SCHEMA_VERSION: usize = TENANT_MIGRATIONS.len();

/// Applies pending migrations in one transaction each.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > migrations.len() {
        return Err(StorageError::Other(format!(
            "database schema version {current} is newer than this server ({})",
            migrations.len()
        )));
    }
    for (i, m) in migrations.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Opens a database for writing with the durability settings every file of ours uses.
pub fn open_rw(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    create_private_file(path)?;
    let conn = Connection::open(path)?;
    // SQLite silently opens a file it cannot write read-only (e.g. on a read-only filesystem).
    // Such a connection would refuse every write until it is closed, even after the trouble is
    // gone: fail the open instead, so the next attempt opens the file again.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(StorageError::Other(format!("{} can only be opened read-only", path.display())));
    }
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // An ack means durable: FULL syncs the WAL on every commit.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 16 MiB page cache (allocated as used): random-key upserts of a large tenant stay in memory.
    conn.pragma_update(None, "cache_size", -16384)?;
    // Checkpoint the WAL every 32 MiB instead of every 4 MiB: group commits are large, and each
    // checkpoint copies pages back and fsyncs the database (measured: +50% upserts/s).
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    Ok(conn)
}

/// The writer's connection to one tenant database.
pub struct SqliteTenant {
    conn: Connection,
    seq: i64,
    ids: EntryIds,
    wal: std::path::PathBuf,
}

/// Where the writer finds a remembered entry id: the rowid in `applied_entries` of every entry,
/// under a keyed 64-bit hash of its id. Built at open by reading the table once, kept in step by
/// the writer, built again after a compaction removed rows. An id whose hash is not in it was
/// never processed (within the horizon), so a new entry costs no B-tree search, and the table
/// needs no randomly keyed index (whose pages a group commit wrote to the WAL for nearly every
/// new entry). A hash holds one rowid; another id with the same hash is found by a search of the
/// table. The hash is keyed at random per open (SipHash, as `HashMap`'s), unlike the stored
/// `id_hash`: a client cannot make its ids collide here, so that search (a scan) stays as rare
/// as a 64-bit collision by chance.
///
/// The maps of all open tenants share one budget ([`IdBudget`], `max_ids_in_memory`). A tenant
/// that does not fit at its open, or whose map takes the budget past its limit, indexes the
/// hashes on disk instead (`applied_entries_by_hash`, built once; the map is dropped) until it is
/// opened again with room in the budget.
struct EntryIds {
    /// `None`: the ids are found through the index on disk.
    map: Option<HashMap<u64, i64, std::hash::BuildHasherDefault<fnv::FnvHasher>>>,
    keys: std::collections::hash_map::RandomState,
    budget: Arc<IdBudget>,
    /// This tenant's map took the budget past its limit: it moves to the index after the commit.
    over: bool,
}

/// How a remembered id is found.
enum IdLookup {
    /// Not in the map: never processed.
    New,
    /// The row that holds the hash in the map (the same id, or one that shares its hash).
    Row(i64),
    /// Through the index on disk.
    Index,
}

impl EntryIds {
    fn open(conn: &Connection, budget: Arc<IdBudget>) -> Result<Self> {
        let count: i64 = conn.query_row("SELECT count(*) FROM applied_entries", [], |r| r.get(0))?;
        let mut ids = EntryIds { map: None, keys: Default::default(), budget, over: false };
        if ids.budget.fits(count as usize) {
            conn.execute_batch("DROP INDEX IF EXISTS applied_entries_by_hash")?;
            ids.load(conn, count as usize)?;
        } else {
            conn.execute_batch("CREATE INDEX IF NOT EXISTS applied_entries_by_hash ON applied_entries (id_hash)")?;
        }
        Ok(ids)
    }

    /// (Re)reads the map from the table; `capacity`: the rows it has, or more.
    fn load(&mut self, conn: &Connection, capacity: usize) -> Result<()> {
        self.release();
        let mut map = HashMap::with_capacity_and_hasher(capacity, Default::default());
        let mut stmt = conn.prepare("SELECT entry_id, rowid FROM applied_entries")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            map.entry(self.keys.hash_one(id)).or_insert(r.get(1)?);
        }
        self.over = !self.budget.add(map.len());
        self.map = Some(map);
        Ok(())
    }

    fn lookup(&self, id: &str) -> IdLookup {
        match &self.map {
            Some(m) => m.get(&self.keys.hash_one(id)).map_or(IdLookup::New, |&rowid| IdLookup::Row(rowid)),
            None => IdLookup::Index,
        }
    }

    /// Records the row of a new id; its hash when that was not in the map before.
    fn insert(&mut self, id: &str, rowid: i64) -> Option<u64> {
        let hash = self.keys.hash_one(id);
        let map = self.map.as_mut()?;
        let std::collections::hash_map::Entry::Vacant(v) = map.entry(hash) else { return None };
        v.insert(rowid);
        if !self.budget.add(1) {
            self.over = true;
        }
        Some(hash)
    }

    /// Takes out hashes [`EntryIds::insert`] put in (their rows were rolled back).
    fn remove(&mut self, hashes: &[u64]) {
        if let Some(map) = &mut self.map {
            for h in hashes {
                if map.remove(h).is_some() {
                    self.budget.sub(1);
                }
            }
        }
    }

    /// After a commit: a map over the budget gives way to the index on disk.
    fn spill_if_over(&mut self, conn: &Connection) {
        if !self.over || self.map.is_none() {
            return;
        }
        match conn.execute_batch("CREATE INDEX IF NOT EXISTS applied_entries_by_hash ON applied_entries (id_hash)") {
            Ok(()) => {
                tracing::info!(
                    limit = self.budget.limit,
                    "max_ids_in_memory reached: a tenant's remembered entry ids are indexed on disk now"
                );
                self.release();
            }
            Err(e) => tracing::warn!(error = %e, "cannot index remembered entry ids; they stay in memory"),
        }
    }

    /// Drops the map and gives its share of the budget back.
    fn release(&mut self) {
        if let Some(map) = self.map.take() {
            self.budget.sub(map.len());
        }
        self.over = false;
    }
}

impl Drop for EntryIds {
    fn drop(&mut self) {
        self.release();
    }
}

/// How many remembered entry ids the writers of all open SQLite tenants may hold in memory
/// together (`max_ids_in_memory`; about 32 bytes each). See [`EntryIds`].
#[derive(Debug)]
pub struct IdBudget {
    used: AtomicUsize,
    limit: usize,
}

impl IdBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(IdBudget { used: AtomicUsize::new(0), limit })
    }

    /// Ids held in memory now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn fits(&self, n: usize) -> bool {
        self.used().saturating_add(n) <= self.limit
    }

    /// Counts `n` more; false when that is past the limit.
    fn add(&self, n: usize) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n) <= self.limit
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A tenant's WAL up to this size stays when the writer closes (see the `Drop` of [`SqliteTenant`]).
const WAL_KEPT_ON_CLOSE: u64 = 256 * 1024;

/// Closing the last connection makes SQLite checkpoint the WAL into the database and delete it:
/// two `fsync`s and a file deleted and created again at the next open. A tenant that is closed
/// to make room for others (`max_open_tenants`) and opened again soon would pay that on every
/// round, so a small WAL is left as it is — every frame in it was `fsync`ed at its commit, and the
/// next open recovers it — and only a WAL above 256 KiB is checkpointed (and truncated). The WAL
/// file's size is the most it has held since its last truncation, so the check errs towards
/// checkpointing.
impl Drop for SqliteTenant {
    fn drop(&mut self) {
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if wal > WAL_KEPT_ON_CLOSE {
            if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(wal = %self.wal.display(), error = %e, "checkpoint at close failed (the WAL stays; the next open recovers it)");
            }
        } else if let Err(e) =
            self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        {
            tracing::debug!(error = %e, "cannot keep the WAL at close; SQLite checkpoints it");
        }
    }
}

impl SqliteTenant {
    /// Opens (creating and migrating when needed) the tenant database at `path`, with the
    /// remembered entry ids in memory whatever their number (tools, tests).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, IdBudget::new(usize::MAX))
    }

    /// Opens the tenant database at `path`; its remembered entry ids are held in memory while
    /// `budget` has room for them (see [`EntryIds`]).
    pub fn open_with(path: &Path, budget: Arc<IdBudget>) -> Result<Self> {
        let mut conn = open_rw(path)?;
        register_functions(&conn)?;
        migrate(&mut conn, TENANT_MIGRATIONS)?;
        let seq = conn.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))?;
        let ids = EntryIds::open(&conn, budget)?;
        Ok(SqliteTenant { conn, seq, ids, wal: std::path::PathBuf::from(format!("{}-wal", path.display())) })
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE … COMMIT`; the sequence counter is persisted in the
    /// same transaction. On error nothing is committed and the in-memory counter is restored.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut dyn WriteTxn) -> Result<T>) -> Result<T> {
        let start_seq = self.seq;
        // on a shared borrow of the connection, so that the transaction's statements can borrow
        // it too (`SqliteTxn::stmt`); nothing else uses the connection meanwhile
        let conn = &self.conn;
        let tx = Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let mut txn =
            SqliteTxn { tx, conn, stmts: Default::default(), seq: start_seq, ids: &mut self.ids, added: Vec::new() };
        let out = f(&mut txn);
        let added = std::mem::take(&mut txn.added);
        let result = out.and_then(|v| {
            if txn.seq != start_seq {
                txn.tx.execute("UPDATE meta SET value = ?1 WHERE key = 'seq'", [txn.seq])?;
            }
            let seq = txn.seq;
            txn.tx.commit()?;
            Ok((v, seq))
        });
        match result {
            Ok((v, seq)) => {
                self.seq = seq;
                self.ids.spill_if_over(&self.conn);
                Ok(v)
            }
            Err(e) => {
                self.seq = start_seq;
                // the rows are rolled back: so are their hashes
                self.ids.remove(&added);
                Err(e)
            }
        }
    }

    /// Removes tombstones and remembered entry ids older than `cutoff_ms` (server time) and raises
    /// the compaction floor, so a delta request from before it gets a full load with `reset`.
    pub fn compact(&mut self, cutoff_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let floor: Option<i64> =
            tx.query_row("SELECT max(seq) FROM entities WHERE deleted = 1 AND changed_at_ms < ?1", [cutoff_ms], |r| {
                r.get(0)
            })?;
        let mut removed = 0;
        if let Some(floor) = floor {
            removed = tx.execute("DELETE FROM entities WHERE deleted = 1 AND seq <= ?1", [floor])?;
            tx.execute("UPDATE meta SET value = max(value, ?1) WHERE key = 'tombstone_floor'", [floor])?;
        }
        let forgotten = tx.execute("DELETE FROM applied_entries WHERE processed_at_ms < ?1", [cutoff_ms])?;
        tx.commit()?;
        if let Some(held) = self.ids.map.as_ref().map(|m| m.len()).filter(|_| forgotten > 0) {
            // fewer rows than the map held: its size is room enough
            self.ids.load(&self.conn, held)?;
            self.ids.spill_if_over(&self.conn);
        }
        Ok(removed)
    }

    pub fn seq(&self) -> i64 {
        self.seq
    }
}

struct SqliteTxn<'c, 'i> {
    tx: Transaction<'c>,
    conn: &'c Connection,
    stmts: [Option<rusqlite::CachedStatement<'c>>; STMTS.len()],
    seq: i64,
    ids: &'i mut EntryIds,
    /// Hashes this transaction put into `ids` (taken out again when it rolls back).
    added: Vec<u64>,
}

/// The columns [`entity_row`] reads, in its order.
macro_rules! entity_cols {
    () => {
        "entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms, stamps, created_seq"
    };
}

/// The columns [`entry_row`] reads, in its order.
macro_rules! entry_cols {
    () => {
        "entry_id, content_hash, seq, applied, updated_at, processed_at_ms"
    };
}

/// The statements a writer runs for (nearly) every entry, by [`Stmt`]. A transaction takes each
/// from the connection's statement cache at its first use and keeps it to the end, instead of
/// looking it up by its text and putting it back for every entry.
const STMTS: [&str; 5] = [
    concat!("SELECT ", entity_cols!(), " FROM entities WHERE entity_type = ?1 AND id = ?2"),
    "INSERT INTO entities (entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms, stamps, created_seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
     ON CONFLICT (entity_type, id) DO UPDATE SET seq = excluded.seq, updated_at_ms = excluded.updated_at_ms,
       deleted = excluded.deleted, data = excluded.data, changed_at_ms = excluded.changed_at_ms,
       stamps = excluded.stamps, created_seq = excluded.created_seq",
    "INSERT INTO entities (entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms, stamps, created_seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?3)
     ON CONFLICT (entity_type, id) DO NOTHING",
    concat!("SELECT ", entry_cols!(), " FROM applied_entries WHERE rowid = ?1"),
    "INSERT INTO applied_entries (entry_id, content_hash, seq, applied, updated_at, processed_at_ms, id_hash)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
];

#[derive(Clone, Copy)]
enum Stmt {
    EntityByKey,
    PutEntity,
    InsertNew,
    EntryByRowid,
    RecordEntry,
}

impl<'c> SqliteTxn<'c, '_> {
    fn stmt(&mut self, s: Stmt) -> Result<&mut rusqlite::CachedStatement<'c>> {
        let conn = self.conn;
        let slot = &mut self.stmts[s as usize];
        if slot.is_none() {
            *slot = Some(conn.prepare_cached(STMTS[s as usize])?);
        }
        Ok(slot.as_mut().expect("prepared above"))
    }
}

/// An [`AppliedEntry`] from a row of [`entry_cols!`].
fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppliedEntry> {
    Ok(AppliedEntry {
        entry_id: r.get(0)?,
        content_hash: r.get(1)?,
        seq: r.get(2)?,
        applied: r.get(3)?,
        updated_at: r.get(4)?,
        processed_at_ms: r.get(5)?,
    })
}

/// A stored version from a row of [`entity_cols!`].
fn entity_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntityRecord> {
    Ok(EntityRecord {
        entity_type: parse_type(r.get(0)?)?,
        id: r.get(1)?,
        seq: r.get(2)?,
        updated_at_ms: r.get(3)?,
        deleted: r.get(4)?,
        data: r.get(5)?,
        changed_at_ms: r.get(6)?,
        stamps: r.get(7)?,
        created_seq: r.get(8)?,
    })
}

fn parse_type(s: String) -> rusqlite::Result<EntityType> {
    EntityType::parse(&s).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

impl WriteTxn for SqliteTxn<'_, '_> {
    fn entity(&mut self, entity_type: EntityType, id: &str) -> Result<Option<EntityRecord>> {
        let stmt = self.stmt(Stmt::EntityByKey)?;
        Ok(stmt.query_row(params![entity_type.as_str(), id], entity_row).optional()?)
    }

    fn put_entity(&mut self, rec: &EntityRecord) -> Result<()> {
        self.stmt(Stmt::PutEntity)?.execute(params![
            rec.entity_type.as_str(),
            rec.id,
            rec.seq,
            rec.updated_at_ms,
            rec.deleted,
            rec.data,
            rec.changed_at_ms,
            rec.stamps,
            rec.created_seq
        ])?;
        Ok(())
    }

    fn insert_new(&mut self, rec: &mut EntityRecord) -> Result<bool> {
        let seq = self.seq + 1;
        let inserted = self.stmt(Stmt::InsertNew)?.execute(params![
            rec.entity_type.as_str(),
            rec.id,
            seq,
            rec.updated_at_ms,
            rec.deleted,
            rec.data,
            rec.changed_at_ms,
            rec.stamps
        ])?;
        if inserted == 0 {
            return Ok(false);
        }
        self.seq = seq;
        (rec.seq, rec.created_seq) = (seq, seq);
        Ok(true)
    }

    fn applied_entry(&mut self, entry_id: &str) -> Result<Option<AppliedEntry>> {
        match self.ids.lookup(entry_id) {
            // not among the hashes of the rows: never processed
            IdLookup::New => return Ok(None),
            IdLookup::Row(rowid) => {
                let stmt = self.stmt(Stmt::EntryByRowid)?;
                if let Some(e) = stmt.query_row([rowid], entry_row).optional()?.filter(|e| e.entry_id == entry_id) {
                    return Ok(Some(e));
                }
                // another id with the same hash holds the map's slot: search the table itself
                // (without the index, a scan; 64-bit collisions do not happen in practice)
            }
            IdLookup::Index => {}
        }
        let mut stmt = self.tx.prepare_cached(concat!(
            "SELECT ",
            entry_cols!(),
            " FROM applied_entries WHERE id_hash = ?1 AND entry_id = ?2"
        ))?;
        Ok(stmt.query_row(params![id_hash(entry_id), entry_id], entry_row).optional()?)
    }

    fn record_entry(&mut self, e: &AppliedEntry) -> Result<()> {
        let hash = id_hash(&e.entry_id);
        self.stmt(Stmt::RecordEntry)?.execute(params![
            e.entry_id,
            e.content_hash,
            e.seq,
            e.applied,
            e.updated_at,
            e.processed_at_ms,
            hash
        ])?;
        if let Some(key) = self.ids.insert(&e.entry_id, self.conn.last_insert_rowid()) {
            self.added.push(key);
        }
        Ok(())
    }

    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    fn restore_head(&mut self, head: &Snapshot) -> Result<()> {
        self.seq = head.seq;
        self.tx.execute("UPDATE meta SET value = ?1 WHERE key = 'tombstone_floor'", [head.tombstone_floor])?;
        Ok(())
    }
}

impl TenantDb for SqliteTenant {
    fn write_dyn(&mut self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()> {
        self.write(f)
    }
    fn compact(&mut self, cutoff_ms: i64) -> Result<usize> {
        SqliteTenant::compact(self, cutoff_ms)
    }
}

/// The central database `auth.db` (one connection: its statements are short).
pub struct SqliteCentral {
    conn: Mutex<Connection>,
}

impl SqliteCentral {
    /// Opens (creating and migrating when needed) the central database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = open_rw(path)?;
        migrate(&mut conn, CENTRAL_MIGRATIONS)?;
        Ok(SqliteCentral { conn: Mutex::new(conn) })
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Int(n) => ToSqlOutput::Owned(Value::Integer(n)),
            Param::Bool(b) => ToSqlOutput::Owned(Value::Integer(b as i64)),
        })
    }
}

struct SqliteSql<'a, 'c>(&'a Transaction<'c>);

impl Sql for SqliteSql<'_, '_> {
    fn query(&mut self, text: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&sql::sqlite_dialect(text))?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef;
                vals.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Real(v) => Val::Int(v as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn execute(&mut self, text: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&sql::sqlite_dialect(text))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }
}

impl SqlDb for SqliteCentral {
    fn transaction_dyn(&self, f: &mut dyn FnMut(&mut dyn Sql) -> Result<bool>) -> Result<()> {
        let mut conn = self.conn.locked();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if f(&mut SqliteSql(&tx))? {
            tx.commit()?;
        }
        Ok(())
    }
}

/// The embedded default: a data dir with `auth.db` and one SQLite file per tenant.
pub struct SqliteStore {
    pub data: DataDir,
    central: Arc<SqliteCentral>,
    /// Shared by the writers of all open tenants (`max_ids_in_memory`).
    pub ids: Arc<IdBudget>,
}

impl SqliteStore {
    /// Creates the data dir when needed and opens (migrating) `auth.db`. Tenant writers hold
    /// the default `max_ids_in_memory` of remembered entry ids in memory together.
    pub fn open(data: DataDir) -> Result<Self> {
        create_private_dir(&data.tenants_dir())?;
        let central = Arc::new(SqliteCentral::open(&data.auth_db())?);
        let ids = IdBudget::new(crate::Config::default().max_ids_in_memory);
        Ok(SqliteStore { data, central, ids })
    }

    /// Sets how many remembered entry ids the tenant writers hold in memory together.
    pub fn with_max_ids_in_memory(mut self, limit: usize) -> Self {
        self.ids = IdBudget::new(limit);
        self
    }
}

impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }
    fn location(&self) -> String {
        self.data.root.display().to_string()
    }
    fn central(&self) -> Arc<dyn SqlDb> {
        Arc::clone(&self.central) as Arc<dyn SqlDb>
    }
    fn jwt_secret(&self) -> Result<Vec<u8>> {
        Ok(crate::auth::load_or_create_secret(&self.data.jwt_secret())?)
    }
    fn adopt_jwt_secret(&self, secret: &[u8]) -> Result<()> {
        if self.data.jwt_secret().exists() {
            return Ok(());
        }
        Ok(crate::auth::write_secret(&self.data.jwt_secret(), secret)?)
    }
    fn files_per_tenant(&self) -> usize {
        3 // the database, its WAL and its shared-memory index
    }
    fn open_tenant(&self, tenant: &TenantId) -> Result<Box<dyn TenantDb>> {
        Ok(Box::new(SqliteTenant::open_with(&self.data.tenant_db(tenant), Arc::clone(&self.ids))?))
    }
    fn read_dyn(&self, tenant: &TenantId, f: &mut dyn FnMut(&mut dyn TenantReader) -> Result<()>) -> Result<()> {
        SqliteReader::open(&self.data.tenant_db(tenant))?.read(f)
    }
    fn delete_tenant_data(&self, tenant: &TenantId) -> Result<()> {
        let path = self.data.tenant_db(tenant);
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
    fn tenants_with_data(&self) -> Result<Vec<TenantId>> {
        Ok(self.data.tenant_files()?.into_iter().filter_map(|(stem, _)| TenantId::parse(&stem)).collect())
    }
    fn readiness(&self) -> Readiness {
        let probe = self.data.tenants_dir().join(".ready-probe");
        let writable = std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe)).is_ok();
        let version = Connection::open_with_flags(self.data.auth_db(), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
            .ok();
        let expected = CENTRAL_SCHEMA_VERSION as i64;
        Readiness {
            ready: writable && version == Some(expected),
            engine: "sqlite",
            writable,
            schema_version: version,
            expected_schema_version: expected,
            error: None,
        }
    }
}

/// A read-only connection to one tenant database.
pub struct SqliteReader {
    conn: Option<Connection>,
}

impl SqliteReader {
    /// Opens `path` read-only. A tenant without a file (nothing written yet) reads as empty and
    /// no file is created.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(SqliteReader { conn: None });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            return Ok(SqliteReader { conn: None });
        }
        Ok(SqliteReader { conn: Some(conn) })
    }

    /// Runs `f` inside one read transaction, so everything it reads is one snapshot.
    pub fn read<T>(&mut self, f: impl FnOnce(&mut dyn TenantReader) -> Result<T>) -> Result<T> {
        // (also used with `&mut dyn FnMut`, through `Store::read_dyn`)
        match &self.conn {
            Some(c) => {
                c.execute_batch("BEGIN")?;
                let out = f(self);
                if let Some(c) = &self.conn {
                    c.execute_batch("COMMIT")?;
                }
                out
            }
            None => f(self),
        }
    }
}

impl SqliteReader {
    /// Stored versions matching `filter` (with parameters `p`), in seq order.
    fn records_where(
        &mut self,
        filter: &str,
        p: [i64; 2],
        visit: &mut dyn FnMut(EntityRecord) -> Result<()>,
    ) -> Result<()> {
        let Some(c) = &self.conn else { return Ok(()) };
        let mut stmt =
            c.prepare_cached(&format!(concat!("SELECT ", entity_cols!(), " FROM entities {} ORDER BY seq"), filter))?;
        let mut rows = stmt.query(p)?;
        while let Some(r) = rows.next()? {
            visit(entity_row(r)?)?;
        }
        Ok(())
    }
}

impl TenantReader for SqliteReader {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let Some(c) = &self.conn else { return Ok(Snapshot::default()) };
        let mut s = Snapshot::default();
        let mut stmt = c.prepare_cached("SELECT key, value FROM meta")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            match r.get::<_, String>(0)?.as_str() {
                "seq" => s.seq = r.get(1)?,
                "tombstone_floor" => s.tombstone_floor = r.get(1)?,
                _ => {}
            }
        }
        Ok(s)
    }

    fn live_since(&mut self, since: i64, visit: &mut dyn FnMut(EntityType, &str) -> bool) -> Result<()> {
        let Some(c) = &self.conn else { return Ok(()) };
        // A delta walks the seq index (cost proportional to the delta, not the tenant); a full
        // load scans the table in storage order (the caller groups by type, order is not needed).
        let sql = if since > 0 {
            "SELECT entity_type, data FROM entities INDEXED BY entities_by_seq WHERE seq > ?1 AND deleted = 0 ORDER BY seq"
        } else {
            "SELECT entity_type, data FROM entities WHERE deleted = 0 AND ?1 = 0"
        };
        let mut stmt = c.prepare_cached(sql)?;
        let mut rows = stmt.query([since])?;
        while let Some(r) = rows.next()? {
            let t = parse_type(r.get(0)?)?;
            let data = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            if !visit(t, data) {
                break;
            }
        }
        Ok(())
    }

    fn live_of_type(&mut self, t: EntityType, visit: &mut dyn FnMut(&str) -> bool) -> Result<()> {
        let Some(c) = &self.conn else { return Ok(()) };
        let mut stmt = c.prepare_cached(
            "SELECT data FROM entities INDEXED BY entities_by_key WHERE entity_type = ?1 AND deleted = 0",
        )?;
        let mut rows = stmt.query([t.as_str()])?;
        while let Some(r) = rows.next()? {
            if !visit(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?) {
                break;
            }
        }
        Ok(())
    }

    fn deleted_since(&mut self, since: i64) -> Result<Vec<(EntityType, String)>> {
        let Some(c) = &self.conn else { return Ok(Vec::new()) };
        let mut stmt =
            c.prepare_cached("SELECT entity_type, id FROM entities INDEXED BY entities_by_seq WHERE seq > ?1 AND deleted = 1 ORDER BY seq")?;
        let rows = stmt.query_map([since], |r| Ok((parse_type(r.get(0)?)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn changes(&mut self, from: i64, to: i64, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()> {
        self.records_where("WHERE seq > ?1 AND seq <= ?2", [from, to], visit)
    }

    fn records(&mut self, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()> {
        self.records_where("WHERE ?1 = ?2", [0, 0], visit)
    }

    fn entries(&mut self, visit: &mut dyn FnMut(AppliedEntry) -> Result<()>) -> Result<()> {
        let Some(c) = &self.conn else { return Ok(()) };
        let mut stmt = c.prepare(concat!("SELECT ", entry_cols!(), " FROM applied_entries"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            visit(entry_row(r)?)?;
        }
        Ok(())
    }

    fn live_versions(&mut self, visit: &mut dyn FnMut(EntityType, &str, i64)) -> Result<()> {
        let Some(c) = &self.conn else { return Ok(()) };
        let mut stmt = c.prepare_cached("SELECT entity_type, id, updated_at_ms FROM entities WHERE deleted = 0")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let t = parse_type(r.get(0)?)?;
            let id = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            visit(t, id, r.get(2)?);
        }
        Ok(())
    }
}

/// Creates an empty file readable by its owner only (mode 0600), unless it exists. SQLite gives
/// a database's `-wal` and `-shm` files the mode of the database file, so they are private too.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its parents; a directory it creates is readable by its owner only.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_databases_migrate_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut conn = open_rw(&path).unwrap();
            migrate(&mut conn, &TENANT_MIGRATIONS[..1]).unwrap();
            conn.execute(
                "INSERT INTO entities VALUES ('Tag', 'a', 1, 5, 0, '{\"id\":\"a\"}', 7), ('Tag', 'b', 2, 6, 1, '{\"id\":\"b\"}', 8)",
                [],
            )
            .unwrap();
            conn.execute("INSERT INTO applied_entries VALUES ('e1', 'h', 1, 1, 'x', 7)", []).unwrap();
            conn.execute("UPDATE meta SET value = 2 WHERE key = 'seq'", []).unwrap();
        }
        let mut db = SqliteTenant::open(&path).unwrap();
        assert_eq!(db.seq(), 2);
        let (a, e) = db.write(|txn| Ok((txn.entity(EntityType::Tag, "a")?, txn.applied_entry("e1")?))).unwrap();
        assert_eq!(a.unwrap().data, "{\"id\":\"a\"}");
        assert_eq!(e.unwrap().content_hash, "h");
        let mut reader = SqliteReader::open(&path).unwrap();
        let deleted = reader.read(|r| r.deleted_since(0)).unwrap();
        assert_eq!(deleted, vec![(EntityType::Tag, "b".to_owned())]);
        let version: i64 =
            rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version as usize, TENANT_SCHEMA_VERSION);
    }

    fn entry(id: &str, seq: i64) -> AppliedEntry {
        AppliedEntry {
            entry_id: id.into(),
            content_hash: format!("h-{id}"),
            seq,
            applied: true,
            updated_at: "2026-12-03T00:00:00.000Z".into(),
            processed_at_ms: 1_000 + seq,
        }
    }

    #[test]
    fn remembered_entries_are_found_after_a_reopen_and_a_rollback_forgets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut db = SqliteTenant::open(&path).unwrap();
        db.write(|txn| {
            txn.record_entry(&entry("e1", 1))?;
            // found in the transaction that recorded it
            assert_eq!(txn.applied_entry("e1")?, Some(entry("e1", 1)));
            Ok(())
        })
        .unwrap();
        // a failed group: its row and its hash are gone, the id can be recorded again
        let failed: Result<()> = db.write(|txn| {
            txn.record_entry(&entry("e2", 2))?;
            Err(StorageError::Other("boom".into()))
        });
        assert!(failed.is_err());
        assert!(matches!(db.ids.lookup("e2"), IdLookup::New));
        db.write(|txn| {
            assert_eq!(txn.applied_entry("e2")?, None);
            txn.record_entry(&entry("e2", 3))
        })
        .unwrap();
        drop(db);
        let mut db = SqliteTenant::open(&path).unwrap();
        let (e1, e2, e3) =
            db.write(|txn| Ok((txn.applied_entry("e1")?, txn.applied_entry("e2")?, txn.applied_entry("e3")?))).unwrap();
        assert_eq!((e1, e2, e3), (Some(entry("e1", 1)), Some(entry("e2", 3)), None));
        // compaction forgets old ids, in the map too
        db.compact(1_002).unwrap();
        let (e1, e2) = db.write(|txn| Ok((txn.applied_entry("e1")?, txn.applied_entry("e2")?))).unwrap();
        assert_eq!((e1, e2), (None, Some(entry("e2", 3))));
        assert_eq!(db.ids.map.as_ref().map(|m| m.len()), Some(1));
    }

    #[test]
    fn an_id_whose_hash_slot_holds_another_row_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = SqliteTenant::open(&dir.path().join("t.db")).unwrap();
        db.write(|txn| txn.record_entry(&entry("e1", 1))).unwrap();
        db.conn
            .execute(
                "INSERT INTO applied_entries (entry_id, content_hash, seq, applied, updated_at, processed_at_ms, id_hash)
                 VALUES ('twin', 'h-twin', 2, 1, 'x', 5, ?1)",
                [id_hash("twin")],
            )
            .unwrap();
        let twin: i64 = db.conn.last_insert_rowid();
        // the map's slots of e1 and of an id never seen hold the twin's row, as a collision of
        // their keyed hashes would
        for id in ["e1", "e9"] {
            let key = db.ids.keys.hash_one(id);
            db.ids.map.as_mut().unwrap().insert(key, twin);
        }
        let (e1, e9) = db.write(|txn| Ok((txn.applied_entry("e1")?, txn.applied_entry("e9")?))).unwrap();
        assert_eq!((e1, e9), (Some(entry("e1", 1)), None));
    }

    fn has_hash_index(conn: &Connection) -> bool {
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'applied_entries_by_hash'", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    }

    #[test]
    fn ids_beyond_the_memory_budget_move_to_an_index_on_disk_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let budget = IdBudget::new(3);
        let mut a = SqliteTenant::open_with(&path, Arc::clone(&budget)).unwrap();
        a.write(|t| {
            t.record_entry(&entry("e1", 1))?;
            t.record_entry(&entry("e2", 2))
        })
        .unwrap();
        assert_eq!(budget.used(), 2);
        assert!(a.ids.map.is_some() && !has_hash_index(&a.conn));
        a.write(|t| {
            t.record_entry(&entry("e3", 3))?;
            t.record_entry(&entry("e4", 4))
        })
        .unwrap();
        // past the limit: after the commit the ids are indexed on disk and the budget is given back
        assert!(a.ids.map.is_none() && has_hash_index(&a.conn));
        assert_eq!(budget.used(), 0);
        a.write(|t| t.record_entry(&entry("e5", 5))).unwrap();
        let all = |db: &mut SqliteTenant| {
            db.write(|t| (1..=6).map(|i| t.applied_entry(&format!("e{i}"))).collect::<Result<Vec<_>>>()).unwrap()
        };
        let expected: Vec<_> = (1..=5).map(|i| Some(entry(&format!("e{i}"), i))).chain([None]).collect();
        assert_eq!(all(&mut a), expected);
        drop(a);

        // opened again with room in the budget: in memory again, without the index
        let budget = IdBudget::new(10);
        let mut a = SqliteTenant::open_with(&path, Arc::clone(&budget)).unwrap();
        assert!(a.ids.map.is_some() && !has_hash_index(&a.conn));
        assert_eq!(budget.used(), 5);
        assert_eq!(all(&mut a), expected);

        // another tenant that does not fit in what is left opens with the index
        let b_path = dir.path().join("b.db");
        let mut b = SqliteTenant::open(&b_path).unwrap();
        b.write(|t| (1..=6).try_for_each(|i| t.record_entry(&entry(&format!("e{i}"), i)))).unwrap();
        drop(b);
        let mut b = SqliteTenant::open_with(&b_path, Arc::clone(&budget)).unwrap();
        assert!(b.ids.map.is_none() && has_hash_index(&b.conn));
        assert_eq!(budget.used(), 5);
        assert_eq!(b.write(|t| t.applied_entry("e6")).unwrap(), Some(entry("e6", 6)));
        drop((a, b));
        assert_eq!(budget.used(), 0);
    }
}
