//! Server configuration with the embedded defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Everything the server can be told. `Config::default()` is the embedded default:
/// `127.0.0.1:8000`, SQLite in `./data`.
#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Accept FinWise 0.4 clients without a token (off by default).
    pub allow_legacy_clients: bool,
    /// JWT signing secret; generated and kept in `<data_dir>/jwt.secret` when `None`.
    pub jwt_secret: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub registration_enabled: bool,
    /// Largest WebSocket message, except batches.
    pub max_message_bytes: usize,
    /// Largest `process_sync_batch` message.
    pub max_batch_bytes: usize,
    pub max_clock_skew: Duration,
    /// How long tombstones (and remembered entry ids) are kept.
    pub tombstone_horizon: Duration,
    /// A tenant writer with no work for this long closes its file.
    pub idle_tenant_close: Duration,
    /// Per-connection message rate limit (token bucket).
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub login_attempts_per_account: u32,
    pub login_attempts_per_address: u32,
    pub login_window: Duration,
    pub heartbeat_interval: Duration,
    /// A send to a client that takes longer than this closes the connection.
    pub send_timeout: Duration,
    /// Broadcast messages a connection may fall behind before it is closed with 1013. Must be well
    /// above `max_group_commit`: one commit publishes its whole group at once.
    pub outbound_queue: usize,
    /// Entries a tenant writer may have queued before `overloaded` NACKs.
    pub tenant_queue: usize,
    /// Entries at most in one group commit.
    pub max_group_commit: usize,
    /// Entries a connection may have in flight (sent, not yet answered) before it stops reading.
    pub max_in_flight: usize,
    /// The built web client, served at `/` when present.
    pub web_dir: Option<PathBuf>,
    /// Allowed CORS origins; empty means any origin.
    pub cors_origins: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("allow_legacy_clients", &self.allow_legacy_clients)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("registration_enabled", &self.registration_enabled)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "127.0.0.1:8000".parse().expect("literal address"),
            data_dir: PathBuf::from("data"),
            allow_legacy_clients: false,
            jwt_secret: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(60 * 24 * 3600),
            registration_enabled: true,
            max_message_bytes: 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            max_clock_skew: Duration::from_secs(5 * 60),
            tombstone_horizon: Duration::from_secs(90 * 24 * 3600),
            idle_tenant_close: Duration::from_secs(60),
            messages_per_second: 5_000,
            message_burst: 10_000,
            login_attempts_per_account: 5,
            login_attempts_per_address: 20,
            login_window: Duration::from_secs(15 * 60),
            heartbeat_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            outbound_queue: 8192,
            tenant_queue: 4096,
            max_group_commit: 1000,
            max_in_flight: 512,
            web_dir: None,
            cors_origins: Vec::new(),
        }
    }
}
