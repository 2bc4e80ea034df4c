//! Storage: what the sync engine needs from a tenant's database, behind traits.
//!
//! The engine ([`crate::engine`]) only talks to [`WriteTxn`] (inside one write transaction of one
//! tenant) and the readers only to [`TenantReader`]. A [`Store`] hands out both for any tenant,
//! plus the central tables ([`sql::SqlDb`]: accounts, tenants, members, tokens) and the JWT
//! secret. Two engines implement it: [`sqlite`] (the embedded default: `auth.db` and one file per
//! tenant in a data dir) and [`postgres`] (all tenants in shared tables of one database, for
//! several servers). Nothing above this module knows which one runs.

pub mod data_dir;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

use finwise_protocol::EntityType;

use crate::TenantId;

/// Storage failures. Always reported to clients as the retryable NACK `storage_error`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// A unique constraint refused the write (e.g. two servers inserted the same name at once).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            StorageError::Postgres(e) => e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The stored version of one entity (live or tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    pub entity_type: EntityType,
    pub id: String,
    /// The tenant sequence number of the change that wrote this version.
    pub seq: i64,
    pub updated_at_ms: i64,
    pub deleted: bool,
    /// The canonical entity JSON (`{"id": …}` for a tombstone).
    pub data: String,
    /// Server clock when this version was written (drives tombstone compaction).
    pub changed_at_ms: i64,
    /// Per-field stamps after a field-level merge ([`finwise_protocol::merge::Stamps`] as JSON);
    /// `None` when every field carries `updated_at` (always for tombstones).
    pub stamps: Option<String>,
    /// The seq of the version that created (or revived) the entity: a version read back by seq
    /// is a `create` for whoever has not seen that seq (0: not known, data stored before v4).
    pub created_seq: i64,
}

/// A processed sync entry, remembered for idempotent retries.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEntry {
    pub entry_id: String,
    /// Hash of what the entry asked for (type, id, operation, normalised payload).
    pub content_hash: String,
    pub seq: i64,
    pub applied: bool,
    pub updated_at: String,
    pub processed_at_ms: i64,
}

/// One write transaction of one tenant.
pub trait WriteTxn {
    /// Announces the entities and entry ids the coming calls will look up, so an engine with a
    /// network round trip per query can fetch them in one go. Lookups of other keys still work.
    fn prefetch(&mut self, _entities: &[(EntityType, &str)], _entry_ids: &[&str]) -> Result<()> {
        Ok(())
    }
    fn entity(&mut self, entity_type: EntityType, id: &str) -> Result<Option<EntityRecord>>;
    fn put_entity(&mut self, record: &EntityRecord) -> Result<()>;
    /// Stores `record` as a new entity unless the tenant holds one under its key (live or a
    /// tombstone): then nothing changes and the answer is false. On insert, `record.seq` and
    /// `record.created_seq` become the next seq. (SQLite does it in one statement: one search of
    /// the key instead of a lookup and then a write.)
    fn insert_new(&mut self, record: &mut EntityRecord) -> Result<bool> {
        if self.entity(record.entity_type, &record.id)?.is_some() {
            return Ok(false);
        }
        record.seq = self.next_seq();
        record.created_seq = record.seq;
        self.put_entity(record)?;
        Ok(true)
    }
    fn applied_entry(&mut self, entry_id: &str) -> Result<Option<AppliedEntry>>;
    /// Remembers a processed entry. Only called for an id that [`WriteTxn::applied_entry`]
    /// did not find in this transaction (the storage need not check uniqueness again).
    fn record_entry(&mut self, entry: &AppliedEntry) -> Result<()>;
    /// Allocates the next sequence number of the tenant.
    fn next_seq(&mut self) -> i64;
    /// Sets the tenant's head (`finwise migrate` copying a tenant with its seqs): the next seq
    /// handed out follows `head.seq`, and tombstones up to `head.tombstone_floor` count as
    /// compacted.
    fn restore_head(&mut self, head: &Snapshot) -> Result<()>;
}

/// A consistent snapshot of one tenant for loads and status.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub seq: i64,
    /// Tombstones with `seq <= tombstone_floor` have been compacted.
    pub tombstone_floor: i64,
}

/// Read access to one tenant, on a read-only connection (never blocks the writer).
pub trait TenantReader {
    fn snapshot(&mut self) -> Result<Snapshot>;
    /// Live entities changed after `since` (all when `since` is 0), in no particular order, as
    /// `(type, canonical JSON)`; `visit` returns false to stop.
    fn live_since(&mut self, since: i64, visit: &mut dyn FnMut(EntityType, &str) -> bool) -> Result<()>;
    /// The live entities of one type as canonical JSON, through the `(type, id)` key: the cost
    /// is that type's entities, not the tenant's. `visit` returns false to stop.
    fn live_of_type(&mut self, t: EntityType, visit: &mut dyn FnMut(&str) -> bool) -> Result<()>;
    /// Ids deleted after `since`.
    fn deleted_since(&mut self, since: i64) -> Result<Vec<(EntityType, String)>>;
    /// `(type, id, updated_at_ms)` of every live entity (for the digest).
    fn live_versions(&mut self, visit: &mut dyn FnMut(EntityType, &str, i64)) -> Result<()>;
    /// The versions written in `(from, to]`, tombstones included, in seq order (cross-node
    /// fan-out reads what another server committed).
    fn changes(&mut self, from: i64, to: i64, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()>;
    /// Every stored version, tombstones included, in seq order (`finwise migrate`).
    fn records(&mut self, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()>;
    /// Every remembered entry (`finwise migrate`).
    fn entries(&mut self, visit: &mut dyn FnMut(AppliedEntry) -> Result<()>) -> Result<()>;
}

/// A tenant's writer handle: what the writer actor of one tenant holds while the tenant is open.
pub trait TenantDb: Send {
    /// Runs `f` inside one write transaction (group commit) and commits when it returns `Ok`;
    /// on `Err` nothing is stored. Sequence numbers handed out by [`WriteTxn::next_seq`] become
    /// visible to readers only with the commit, and in order.
    fn write_dyn(&mut self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()>;
    /// Removes tombstones and remembered entry ids older than `cutoff_ms` (server time) and
    /// raises the compaction floor; returns the number of tombstones removed.
    fn compact(&mut self, cutoff_ms: i64) -> Result<usize>;
}

impl dyn TenantDb + '_ {
    /// [`TenantDb::write_dyn`] with a result.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut dyn WriteTxn) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        self.write_dyn(&mut |txn| {
            let f = f.take().ok_or_else(|| StorageError::Other("write transaction retried".into()))?;
            out = Some(f(txn)?);
            Ok(())
        })?;
        out.ok_or_else(|| StorageError::Other("write transaction did not run".into()))
    }
}

/// Where all server state lives: one data dir of SQLite files, or one PostgreSQL database.
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn engine(&self) -> &'static str;
    /// Where the data is, for logs (a path, or the database URL without its password).
    fn location(&self) -> String;
    /// The central tables: accounts, tenants, members, refresh tokens.
    fn central(&self) -> Arc<dyn sql::SqlDb>;
    /// The JWT signing secret, generated and stored at the first start.
    fn jwt_secret(&self) -> Result<Vec<u8>>;
    /// Stores `secret` as the JWT signing secret unless one is stored (`finwise migrate`).
    fn adopt_jwt_secret(&self, secret: &[u8]) -> Result<()>;
    /// File descriptors an open tenant holds (its writer's), for the cap on open tenants.
    fn files_per_tenant(&self) -> usize;
    /// Opens (creating when needed) a tenant's data for its writer.
    fn open_tenant(&self, tenant: &TenantId) -> Result<Box<dyn TenantDb>>;
    /// Runs `f` on one consistent snapshot of the tenant, without blocking its writer. A tenant
    /// with no data reads as empty.
    fn read_dyn(&self, tenant: &TenantId, f: &mut dyn FnMut(&mut dyn TenantReader) -> Result<()>) -> Result<()>;
    /// Removes a tenant's data (its writer is closed first).
    fn delete_tenant_data(&self, tenant: &TenantId) -> Result<()>;
    /// Ids of the tenants that have data.
    fn tenants_with_data(&self) -> Result<Vec<TenantId>>;
    /// Whether the store can take writes, with the schema version: `(writable, schema, expected)`.
    fn readiness(&self) -> Readiness;
    /// Raised heads this store could not announce to the other servers (they got them by their
    /// safety poll instead), when it announces at all; exported as `finwise_unannounced_heads`.
    fn unannounced_heads(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        None
    }
    /// The PostgreSQL pool, when the store is shared by several servers (cross-node fan-out).
    fn shared_pool(&self) -> Option<Arc<postgres::PgPool>> {
        None
    }
}

/// What `/ready` reports about the storage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub engine: &'static str,
    pub writable: bool,
    pub schema_version: Option<i64>,
    pub expected_schema_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl dyn Store {
    /// [`Store::read_dyn`] with a result.
    pub fn read<T>(&self, tenant: &TenantId, f: impl FnOnce(&mut dyn TenantReader) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        self.read_dyn(tenant, &mut |r| {
            let f = f.take().ok_or_else(|| StorageError::Other("read transaction retried".into()))?;
            out = Some(f(r)?);
            Ok(())
        })?;
        out.ok_or_else(|| StorageError::Other("read transaction did not run".into()))
    }
}

/// Opens the configured store: PostgreSQL when `database_url` is set, else the data dir.
/// Migrations run here (on PostgreSQL under an advisory lock, so servers may start together).
pub fn open(config: &crate::Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(postgres::PgStore::open(url, config.database_pool_size, config.database_pool_wait)?),
        None => Arc::new(
            sqlite::SqliteStore::open(data_dir::DataDir { root: config.data_dir.clone() })?
                .with_max_ids_in_memory(config.max_ids_in_memory),
        ),
    })
}
