//! FinWise Sync client library: an offline-first device in a crate.
//!
//! * [`Auth`]: register, log in, refresh tokens (single-use, rotated), list and create tenants.
//! * [`Client`]: one tenant's local store (one SQLite file per user and tenant) with a typed API
//!   — [`Client::create`], [`Client::update`], [`Client::delete`], [`Client::get`],
//!   [`Client::list`] — a stream of changes ([`Client::changes`]) and the sync status
//!   ([`Client::status`]). Every local change is written and queued in one local transaction.
//! * Sync: [`Client::sync_once`] (connect, push the queue, pull the delta, verify the digest,
//!   disconnect) and [`Client::watch`] (stay connected and reconnect with backoff).
//!
//! The queue lifecycle is pending → processing → done | failed. Entries refused with a
//! retryable reason (`storage_error`, `overloaded`) are retried with exponential backoff and
//! jitter within a budget per reason; others are kept as `failed` for inspection. Entries left
//! `processing` by a crash are resent on the next start with the same entry id: the server
//! recognises them (`duplicate: true`) and applies nothing twice. Incoming versions are applied
//! by [`finwise_protocol::lww::client_accepts`]: never over a local change that is still queued,
//! so a pending delete is not undone by a load.

mod auth;
mod client;
mod error;
pub mod store;
mod sync;

pub use auth::{normalize_server, Auth, Session, Tenant};
pub use client::{Client, ClientOptions, ConnectionState, Progress, ProgressFn, SyncReport, SyncStatus, WatcherInfo};
pub use error::{Error, Result};
pub use finwise_protocol::{messages::Operation, EntityType};
pub use store::{Change, EntryStatus, Origin, QueueCounts, QueueEntry};
pub use sync::backoff;
