//! FinWise Sync server.
//!
//! Bird's-eye view: [`http`] answers REST and upgrades WebSockets; [`ws`] runs one task per
//! connection that parses frames, validates entries with [`engine::prepare`] and hands them to
//! the tenant's writer ([`writer`]); the writer applies them with [`engine::apply`] over the
//! [`storage`] traits in one transaction per group, then publishes changes on the tenant's
//! [`hub`] channel and answers the connection. Loads and status read on separate read-only
//! connections ([`loads`]). Accounts and tokens live in [`auth`], tenants and memberships in
//! [`tenants`]; the REST resources each have a file below [`http`].

pub mod auth;
pub mod browser;
pub mod config;
pub mod engine;
pub mod frames;
pub mod http;
pub mod hub;
pub mod legacy;
pub mod limits;
pub mod loads;
pub mod logos;
pub mod metrics;
pub mod migrate;
pub mod names;
pub mod net;
pub mod openapi;
pub mod relay;
pub mod settings;
pub mod storage;
pub mod tenants;
pub mod web;
pub mod writer;
pub mod ws;

use std::{
    future::Future,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

pub use config::Config;
use storage::{sqlite::DataDir, Store};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// A tenant id: a canonical (lowercase, hyphenated) UUID, validated before it names a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts only the canonical form, so that one tenant has exactly one file name.
    pub fn parse(s: &str) -> Option<TenantId> {
        let u = uuid::Uuid::try_parse(s).ok()?;
        let canonical = u.hyphenated().to_string();
        (canonical == s).then_some(TenantId(canonical))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    /// Where all state lives (the data dir's SQLite files, or PostgreSQL).
    pub store: Arc<dyn Store>,
    pub auth: Arc<auth::AuthStore>,
    pub keys: auth::TokenKeys,
    pub writers: Arc<writer::Writers>,
    /// Cross-node fan-out, when servers share a PostgreSQL database.
    pub relay: Option<Arc<relay::Relay>>,
    pub hub: Arc<hub::Hub>,
    /// Password guesses per account (locks), failed logins per address (slows).
    pub login_accounts: limits::Attempts,
    pub login_addresses: limits::AddressSlowdown,
    pub registrations: limits::Attempts,
    pub hash_gate: limits::HashGate,
    pub proxies: limits::TrustedProxies,
    pub user_conns: Arc<limits::PerKeyCount>,
    /// Every open TCP connection (the cap, idle timeouts, the WebSocket buffer budget).
    pub conns: Arc<net::Connections>,
    pub metrics: Arc<metrics::Metrics>,
    pub started: Instant,
    next_conn: AtomicU64,
    /// WebSocket connections still running (graceful shutdown waits for them).
    open_conns: std::sync::atomic::AtomicUsize,
    conn_closed: tokio::sync::Notify,
}

impl App {
    /// Opens the store (the data dir, created when needed, or the PostgreSQL database), runs
    /// its migrations, loads or creates the JWT secret.
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        // on a thread of its own: the PostgreSQL driver blocks, and callers may be async
        let opened = std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<_> {
                let store = storage::open(&config)?;
                let secret = match &config.jwt_secret {
                    Some(s) => s.as_bytes().to_vec(),
                    None => store.jwt_secret()?,
                };
                Ok((store, secret))
            })
            .join()
        });
        let (store, secret) = opened.map_err(|_| anyhow::anyhow!("opening the storage panicked"))??;
        let auth = Arc::new(auth::AuthStore::new(store.central()));
        let keys = auth::TokenKeys::new(&secret, config.access_token_ttl, config.refresh_token_ttl);
        let buffers = net::Buffers::new(config.ws_buffer_budget);
        let hub = Arc::new(hub::Hub::new(config.outbound_queue, Arc::clone(&buffers)));
        let metrics = Arc::new(metrics::Metrics::new());
        if let Some(unannounced) = store.unannounced_heads() {
            metrics.register_counter(
                "finwise_unannounced_heads",
                "raised heads not announced to the other servers (queue full or the announcement failed; their 2 s poll delivers them)",
                unannounced,
            );
        }
        let relay = store
            .shared_pool()
            .map(|pool| relay::Relay::start(Arc::clone(&store), pool, Arc::clone(&hub), relay::POLL_INTERVAL));
        let writers = writer::Writers::new(
            Arc::clone(&store),
            relay.clone(),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            writer::WriterConfig {
                queue_capacity: config.tenant_queue,
                max_group: config.max_group_commit,
                idle_close: config.idle_tenant_close,
                tombstone_horizon_ms: config.tombstone_horizon.as_millis() as i64,
                threads: config.writer_threads,
                max_open: config.max_open_tenants.unwrap_or_else(|| {
                    writer::tenant_cap(
                        net::nofile_limit(),
                        net::effective_max_connections(config.max_connections),
                        store.files_per_tenant(),
                    )
                }),
            },
        );
        let window = config.login_window;
        let proxies = limits::TrustedProxies::parse(&config.trusted_proxies).map_err(anyhow::Error::msg)?;
        // several servers on one database count one account's guesses, and one address's
        // registrations, together
        let attempts = |limit: u32, window: Duration, name: &'static str| match store.engine() {
            "postgres" => limits::Attempts::shared(limit, window, store.central(), name),
            _ => limits::Attempts::new(limit, window),
        };
        Ok(Arc::new(App {
            login_accounts: attempts(config.login_attempts_per_account, window, "login"),
            login_addresses: limits::AddressSlowdown::new(
                config.login_attempts_per_address,
                window,
                config.login_address_delay,
            ),
            registrations: attempts(config.registrations_per_address, config.registration_window, "register"),
            hash_gate: limits::HashGate::new(config.password_hash_concurrency, config.password_hash_wait),
            proxies,
            user_conns: Arc::default(),
            conns: net::Connections::new(buffers, config.max_message_bytes),
            config,
            store,
            auth,
            keys,
            writers,
            relay,
            hub,
            metrics,
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
            open_conns: 0.into(),
            conn_closed: tokio::sync::Notify::new(),
        }))
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks a WebSocket connection as running until the guard is dropped.
    pub fn conn_guard(self: &Arc<Self>) -> ConnGuard {
        self.open_conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ConnGuard(Arc::clone(self))
    }

    /// Waits until every WebSocket connection has ended, at most `limit`; false on timeout.
    pub async fn wait_for_connections(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let closed = self.conn_closed.notified();
                if self.open_conns.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                closed.await;
            }
        })
        .await
        .is_ok()
    }

    pub fn engine_limits(&self) -> engine::Limits {
        engine::Limits { max_clock_skew_ms: self.config.max_clock_skew.as_millis() as i64 }
    }
}

/// Counts a running WebSocket connection (see [`App::conn_guard`]).
pub struct ConnGuard(Arc<App>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.conn_closed.notify_waiters();
    }
}

/// Serves on `listener` until `shutdown` resolves, then shuts down gracefully: tells every
/// connection (`status: shutdown`), lets in-flight entries commit and be acked, closes the
/// tenant databases.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // one process per data dir: held until the server has stopped (or the process dies); any
    // number of servers may share a PostgreSQL database
    let _lock = match config.database_url {
        None => Some(DataDir { root: config.data_dir.clone() }.lock("serve")?),
        Some(_) => None,
    };
    let app = App::open(config)?;
    run(listener, app, shutdown).await
}

/// Serves `app` on `listener` until `shutdown` resolves (mini-redis's shape: [`App::open`] builds
/// the state, `run` serves it). The caller holds the data dir's lock ([`DataDir::lock`]); the
/// `finwise` binary takes it before it binds, so a refused second server never prints
/// `listening on`.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if app.config.allow_legacy_clients {
        warn!("legacy mode: FinWise 0.4 clients without a token can use the tenants of legacy clients");
    }
    let router = http::router(Arc::clone(&app));
    let addr = listener.local_addr()?;
    let cfg = &app.config;
    let limits = net::NetLimits {
        max_connections: net::effective_max_connections(cfg.max_connections),
        header_timeout: cfg.http_header_timeout,
        idle_timeout: cfg.http_idle_timeout,
    };
    if limits.max_connections < cfg.max_connections {
        warn!(
            configured = cfg.max_connections,
            effective = limits.max_connections,
            "max_connections lowered to fit the open-file limit (ulimit -n)"
        );
    }
    info!(%addr, storage = app.store.engine(), location = %app.store.location(), max_connections = limits.max_connections, max_open_tenants = app.writers.max_open(), "listening");
    let hub = Arc::clone(&app.hub);
    let graceful = async move {
        shutdown.await;
        info!("shutting down: telling clients and committing in-flight changes");
        hub.publish_all(hub::Event::Shutdown);
    };
    let drain = app.config.send_timeout + Duration::from_secs(5);
    net::serve(listener, router, Arc::clone(&app.conns), limits, graceful, drain).await;
    // Upgraded WebSocket connections are not HTTP connections any more: axum returns without
    // them. Each one answers what it has in flight, says `status: shutdown` and closes; wait
    // for that (a client that stops reading is dropped after the send timeout), so the process
    // does not exit under them.
    let limit = app.config.send_timeout + Duration::from_secs(5);
    if !app.wait_for_connections(limit).await {
        warn!("some connections did not finish within {limit:?}; closing anyway");
    }
    app.writers.close_all().await;
    if let Some(r) = &app.relay {
        r.stop();
    }
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A small helper for timeouts in the connection code.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
