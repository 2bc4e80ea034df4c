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
//!
//! ```no_run
//! use std::sync::Arc;
//! use finwise_client::{Auth, Client, ClientOptions, EntityType};
//! use serde_json::json;
//!
//! # async fn demo() -> finwise_client::Result<()> {
//! let auth = Arc::new(Auth::login("http://127.0.0.1:8000", "ann@example.org", "secret password", None).await?);
//! let tenant = auth.create_tenant("Household").await?.uuid;
//! let client = Client::open(auth, &tenant, std::path::Path::new("/tmp/finwise"), ClientOptions::default())?;
//! let group = client.create(EntityType::AccountGroup, json!({"name": "Banks", "sortOrder": 0}))?;
//! client.create(EntityType::Account, json!({"name": "Giro", "accountGroupId": group["id"], "isActive": true,
//!     "isOfflineBudget": false, "balance": 0, "offset": 0}))?;
//! let report = client.sync_once().await?; // works offline too: the changes stay queued until it succeeds
//! assert_eq!(report.converged, Some(true));
//! let mut changes = client.changes();
//! tokio::spawn({
//!     let client = client.clone();
//!     async move { client.watch(std::future::pending()).await }
//! });
//! while let Ok(change) = changes.recv().await {
//!     println!("{:?} {} {:?}", change.entity_type, change.id, change.operation);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! One sync runs at a time per client: while [`Client::watch`] runs, it does the syncing (local
//! changes are pushed as they are made) and [`Client::sync_once`] waits for it to end.

mod auth;
mod client;
mod error;
pub mod ledger;
pub mod store;
mod sync;

pub use auth::{normalize_server, Auth, Member, Session, Tenant};
pub use client::{Client, ClientOptions, ConnectionState, Progress, ProgressFn, SyncReport, SyncStatus, WatcherInfo};
pub use error::{Error, Result};
pub use finwise_protocol::{messages::Operation, EntityType};
pub use store::{Change, EntryStatus, Origin, QueueCounts, QueueEntry};
pub use sync::backoff;
