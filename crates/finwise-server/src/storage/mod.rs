//! Storage: what the sync engine needs from a tenant's database, behind traits.
//!
//! The engine ([`crate::engine`]) only talks to [`WriteTxn`] (inside one write transaction of one
//! tenant) and the readers only to [`TenantReader`]. [`sqlite`] implements both on one SQLite file
//! per tenant; a PostgreSQL implementation would implement the same traits.

pub mod data_dir;
pub mod sqlite;

use finwise_protocol::EntityType;

/// Storage failures. Always reported to clients as the retryable NACK `storage_error`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
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
    fn entity(&mut self, entity_type: EntityType, id: &str) -> Result<Option<EntityRecord>>;
    fn put_entity(&mut self, record: &EntityRecord) -> Result<()>;
    fn applied_entry(&mut self, entry_id: &str) -> Result<Option<AppliedEntry>>;
    /// Remembers a processed entry. Only called for an id that [`WriteTxn::applied_entry`]
    /// did not find in this transaction (the storage need not check uniqueness again).
    fn record_entry(&mut self, entry: &AppliedEntry) -> Result<()>;
    /// Allocates the next sequence number of the tenant.
    fn next_seq(&mut self) -> i64;
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
    /// Ids deleted after `since`.
    fn deleted_since(&mut self, since: i64) -> Result<Vec<(EntityType, String)>>;
    /// `(type, id, updated_at_ms)` of every live entity (for the digest).
    fn live_versions(&mut self, visit: &mut dyn FnMut(EntityType, &str, i64)) -> Result<()>;
}
