//! Server configuration with the embedded defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Everything the server can be told. `Config::default()` is the embedded default:
/// `127.0.0.1:8000`, SQLite in `./data`.
#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the data dir: when set, all state lives in this database.
    pub database_url: Option<String>,
    /// Connections this server opens to PostgreSQL at most.
    pub database_pool_size: usize,
    /// How long a request waits for a free database connection before `storage_error`.
    pub database_pool_wait: Duration,
    /// Accept FinWise 0.4 clients without a token (off by default).
    pub allow_legacy_clients: bool,
    /// JWT signing secret; generated and kept in `<data_dir>/jwt.secret` when `None`.
    pub jwt_secret: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub registration_enabled: bool,
    /// Largest WebSocket message, except batches.
    pub max_message_bytes: usize,
    /// Largest 0.4 tenant file `POST /api/v1/tenant/import-database` takes (bytes).
    pub max_import_bytes: usize,
    /// Largest image `POST /api/v1/logos/upload` takes (bytes).
    pub max_logo_bytes: usize,
    /// Largest `process_sync_batch` message.
    pub max_batch_bytes: usize,
    pub max_clock_skew: Duration,
    /// How long tombstones (and remembered entry ids) are kept.
    pub tombstone_horizon: Duration,
    /// A tenant writer with no work for this long closes its file.
    pub idle_tenant_close: Duration,
    /// Tenants open at once at most; beyond, the least recently active idle ones close first.
    /// None: derived from the open-file limit (what `max_connections` leaves, three descriptors
    /// per SQLite tenant; no cap on PostgreSQL, whose tenants hold no files).
    pub max_open_tenants: Option<usize>,
    /// Per-connection message rate limit (token bucket).
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub login_attempts_per_account: u32,
    pub login_attempts_per_address: u32,
    pub login_window: Duration,
    pub heartbeat_interval: Duration,
    /// A send to a client that takes longer than this closes the connection.
    pub send_timeout: Duration,
    /// Commits a connection may fall behind the tenant's broadcast before it is closed with 1013
    /// (each commit's changes are one event, whatever their number). The slots are allocated per
    /// tenant with connections, about 100 bytes each: 8,192 cost 0.8 MiB per online household.
    pub outbound_queue: usize,
    /// Messages (single entries or batches) a tenant writer may have queued before `overloaded`
    /// NACKs.
    pub tenant_queue: usize,
    /// Entries at most in one group commit.
    pub max_group_commit: usize,
    /// Entries a connection may have in flight (sent, not yet answered) before it stops reading.
    pub max_in_flight: usize,
    /// Threads that run the tenant writers (each open tenant is an actor run by one of them at a
    /// time). Default: two per core, at least two.
    pub writer_threads: usize,
    /// The built web client, served at `/` when present.
    pub web_dir: Option<PathBuf>,
    /// Allowed CORS origins. Empty: none besides the server's own origin (in legacy mode also
    /// loopback origins, where the 0.4 frontend runs).
    pub cors_origins: Vec<String>,
    /// Reverse proxies (CIDR ranges) whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// After `login_attempts_per_address` failures, an address gets one attempt per this delay.
    pub login_address_delay: Duration,
    /// Registrations per client address and `registration_window`.
    pub registrations_per_address: u32,
    pub registration_window: Duration,
    /// Password hashes computed at once (Argon2id: 19 MiB each); default: the number of cores.
    pub password_hash_concurrency: usize,
    /// How long a login or registration waits for a hashing slot before 503.
    pub password_hash_wait: Duration,
    /// Time a client has to send a request's headers (also the idle time before the first one).
    pub http_header_timeout: Duration,
    /// Time a client has to send a request body.
    pub http_body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub http_idle_timeout: Duration,
    /// Open TCP connections at most (HTTP and WebSocket); capped below the process's file limit.
    pub max_connections: usize,
    /// Open WebSocket connections per user.
    pub max_connections_per_user: usize,
    /// Bytes all WebSocket connections together may hold in unfinished incoming messages.
    pub ws_buffer_budget: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
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
            database_url: None,
            database_pool_size: 16,
            database_pool_wait: Duration::from_secs(5),
            allow_legacy_clients: false,
            jwt_secret: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(60 * 24 * 3600),
            registration_enabled: true,
            max_message_bytes: 1024 * 1024,
            max_import_bytes: 64 * 1024 * 1024,
            max_logo_bytes: 10 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            max_clock_skew: Duration::from_secs(5 * 60),
            tombstone_horizon: Duration::from_secs(90 * 24 * 3600),
            idle_tenant_close: Duration::from_secs(60),
            max_open_tenants: None,
            messages_per_second: 5_000,
            message_burst: 10_000,
            login_attempts_per_account: 5,
            login_attempts_per_address: 20,
            login_window: Duration::from_secs(15 * 60),
            heartbeat_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            outbound_queue: 256,
            tenant_queue: 4096,
            max_group_commit: 1000,
            max_in_flight: 512,
            writer_threads: std::thread::available_parallelism().map_or(2, |n| n.get() * 2).max(2),
            web_dir: None,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            login_address_delay: Duration::from_secs(1),
            registrations_per_address: 10,
            registration_window: Duration::from_secs(3600),
            password_hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            password_hash_wait: Duration::from_secs(5),
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_user: 100,
            ws_buffer_budget: 256 * 1024 * 1024,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layered configuration: defaults < file (TOML) < environment < command-line flags.

/// One layer of settings (a TOML file, the environment, the flags): every key optional.
/// Durations are whole seconds; `tombstone_days` is days.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub addr: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub database_pool_size: Option<usize>,
    pub database_pool_wait: Option<u64>,
    pub allow_legacy_clients: Option<bool>,
    pub jwt_secret: Option<String>,
    pub access_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    pub registration_enabled: Option<bool>,
    pub max_clock_skew: Option<u64>,
    pub tombstone_days: Option<u64>,
    pub messages_per_second: Option<u32>,
    pub idle_tenant_secs: Option<u64>,
    pub max_open_tenants: Option<usize>,
    pub heartbeat_interval: Option<u64>,
    pub send_timeout: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub max_import_bytes: Option<usize>,
    pub max_logo_bytes: Option<usize>,
    pub max_batch_bytes: Option<usize>,
    pub outbound_queue: Option<usize>,
    pub tenant_queue: Option<usize>,
    pub max_group_commit: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub writer_threads: Option<usize>,
    pub web_dir: Option<PathBuf>,
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub login_attempts_per_account: Option<u32>,
    pub login_attempts_per_address: Option<u32>,
    pub login_window: Option<u64>,
    pub login_address_delay: Option<u64>,
    pub registrations_per_address: Option<u32>,
    pub password_hash_concurrency: Option<usize>,
    pub password_hash_wait: Option<u64>,
    pub http_header_timeout: Option<u64>,
    pub http_body_timeout: Option<u64>,
    pub http_idle_timeout: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub ws_buffer_budget: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum KeyKind {
    Str,
    Int,
    Bool,
    List,
}

/// Every key with its kind; the environment variable is `FINWISE_<KEY>` (upper case).
const KEYS: &[(&str, KeyKind)] = &[
    ("addr", KeyKind::Str),
    ("data_dir", KeyKind::Str),
    ("database_url", KeyKind::Str),
    ("database_pool_size", KeyKind::Int),
    ("database_pool_wait", KeyKind::Int),
    ("allow_legacy_clients", KeyKind::Bool),
    ("jwt_secret", KeyKind::Str),
    ("access_token_ttl", KeyKind::Int),
    ("refresh_token_ttl", KeyKind::Int),
    ("registration_enabled", KeyKind::Bool),
    ("max_clock_skew", KeyKind::Int),
    ("tombstone_days", KeyKind::Int),
    ("messages_per_second", KeyKind::Int),
    ("idle_tenant_secs", KeyKind::Int),
    ("max_open_tenants", KeyKind::Int),
    ("heartbeat_interval", KeyKind::Int),
    ("send_timeout", KeyKind::Int),
    ("max_message_bytes", KeyKind::Int),
    ("max_import_bytes", KeyKind::Int),
    ("max_logo_bytes", KeyKind::Int),
    ("max_batch_bytes", KeyKind::Int),
    ("outbound_queue", KeyKind::Int),
    ("tenant_queue", KeyKind::Int),
    ("max_group_commit", KeyKind::Int),
    ("max_in_flight", KeyKind::Int),
    ("writer_threads", KeyKind::Int),
    ("web_dir", KeyKind::Str),
    ("cors_origins", KeyKind::List),
    ("trusted_proxies", KeyKind::List),
    ("login_attempts_per_account", KeyKind::Int),
    ("login_attempts_per_address", KeyKind::Int),
    ("login_window", KeyKind::Int),
    ("login_address_delay", KeyKind::Int),
    ("registrations_per_address", KeyKind::Int),
    ("password_hash_concurrency", KeyKind::Int),
    ("password_hash_wait", KeyKind::Int),
    ("http_header_timeout", KeyKind::Int),
    ("http_body_timeout", KeyKind::Int),
    ("http_idle_timeout", KeyKind::Int),
    ("max_connections", KeyKind::Int),
    ("max_connections_per_user", KeyKind::Int),
    ("ws_buffer_budget", KeyKind::Int),
];

/// Keys whose values are secrets: masked when printed.
pub const SECRET_KEYS: &[&str] = &["jwt_secret", "database_url"];

/// An error in a configuration source, naming the source and the key.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl Settings {
    /// Reads a TOML file. Unknown keys are errors (a typo must not be silently ignored).
    pub fn from_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { source_name: name.clone(), message: format!("cannot read: {e}") })?;
        toml::from_str(&text).map_err(|e| ConfigError { source_name: name, message: e.to_string() })
    }

    /// Reads `FINWISE_<KEY>` variables through `lookup` (plus the older names
    /// `FINWISE_DISABLE_REGISTRATION` and `CORS_ORIGINS`).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut table = toml::Table::new();
        let err = |var: &str, m: String| ConfigError { source_name: format!("environment variable {var}"), message: m };
        for (key, kind) in KEYS {
            let var = format!("FINWISE_{}", key.to_ascii_uppercase());
            let raw = match lookup(&var) {
                Some(v) => v,
                None if *key == "cors_origins" => match lookup("CORS_ORIGINS") {
                    Some(v) => v,
                    None => continue,
                },
                None => continue,
            };
            let value = match kind {
                KeyKind::Str => toml::Value::String(raw),
                KeyKind::Int => toml::Value::Integer(
                    raw.trim().parse().map_err(|_| err(&var, format!("'{raw}' is not a whole number")))?,
                ),
                KeyKind::Bool => toml::Value::Boolean(
                    parse_bool(&raw).ok_or_else(|| err(&var, format!("'{raw}' is not true/false")))?,
                ),
                KeyKind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ),
            };
            table.insert((*key).into(), value);
        }
        if let Some(v) = lookup("FINWISE_DISABLE_REGISTRATION") {
            if !table.contains_key("registration_enabled") {
                let b = parse_bool(&v)
                    .ok_or_else(|| err("FINWISE_DISABLE_REGISTRATION", format!("'{v}' is not true/false")))?;
                table.insert("registration_enabled".into(), toml::Value::Boolean(!b));
            }
        }
        Settings::deserialize_table(table).map_err(|m| ConfigError { source_name: "environment".into(), message: m })
    }

    fn deserialize_table(t: toml::Table) -> Result<Settings, String> {
        toml::Value::Table(t).try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    }

    /// Every key set from a full configuration (what the defaults layer looks like).
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            addr: Some(c.addr),
            data_dir: Some(c.data_dir.clone()),
            database_url: c.database_url.clone(),
            database_pool_size: Some(c.database_pool_size),
            database_pool_wait: Some(c.database_pool_wait.as_secs()),
            allow_legacy_clients: Some(c.allow_legacy_clients),
            jwt_secret: c.jwt_secret.clone(),
            access_token_ttl: Some(c.access_token_ttl.as_secs()),
            refresh_token_ttl: Some(c.refresh_token_ttl.as_secs()),
            registration_enabled: Some(c.registration_enabled),
            max_clock_skew: Some(c.max_clock_skew.as_secs()),
            tombstone_days: Some(c.tombstone_horizon.as_secs() / (24 * 3600)),
            messages_per_second: Some(c.messages_per_second),
            idle_tenant_secs: Some(c.idle_tenant_close.as_secs()),
            max_open_tenants: c.max_open_tenants,
            heartbeat_interval: Some(c.heartbeat_interval.as_secs()),
            send_timeout: Some(c.send_timeout.as_secs()),
            max_message_bytes: Some(c.max_message_bytes),
            max_import_bytes: Some(c.max_import_bytes),
            max_logo_bytes: Some(c.max_logo_bytes),
            max_batch_bytes: Some(c.max_batch_bytes),
            outbound_queue: Some(c.outbound_queue),
            tenant_queue: Some(c.tenant_queue),
            max_group_commit: Some(c.max_group_commit),
            max_in_flight: Some(c.max_in_flight),
            writer_threads: Some(c.writer_threads),
            web_dir: c.web_dir.clone(),
            cors_origins: Some(c.cors_origins.clone()),
            trusted_proxies: Some(c.trusted_proxies.clone()),
            login_attempts_per_account: Some(c.login_attempts_per_account),
            login_attempts_per_address: Some(c.login_attempts_per_address),
            login_window: Some(c.login_window.as_secs()),
            login_address_delay: Some(c.login_address_delay.as_secs()),
            registrations_per_address: Some(c.registrations_per_address),
            password_hash_concurrency: Some(c.password_hash_concurrency),
            password_hash_wait: Some(c.password_hash_wait.as_secs()),
            http_header_timeout: Some(c.http_header_timeout.as_secs()),
            http_body_timeout: Some(c.http_body_timeout.as_secs()),
            http_idle_timeout: Some(c.http_idle_timeout.as_secs()),
            max_connections: Some(c.max_connections),
            max_connections_per_user: Some(c.max_connections_per_user),
            ws_buffer_budget: Some(c.ws_buffer_budget),
        }
    }

    /// Applies the keys that are set over `base`.
    pub fn apply(&self, base: Config) -> Config {
        let secs = Duration::from_secs;
        let mps = self.messages_per_second.unwrap_or(base.messages_per_second);
        Config {
            addr: self.addr.unwrap_or(base.addr),
            data_dir: self.data_dir.clone().unwrap_or(base.data_dir),
            database_url: self.database_url.clone().or(base.database_url),
            database_pool_size: self.database_pool_size.unwrap_or(base.database_pool_size).max(1),
            database_pool_wait: self.database_pool_wait.map(secs).unwrap_or(base.database_pool_wait),
            allow_legacy_clients: self.allow_legacy_clients.unwrap_or(base.allow_legacy_clients),
            jwt_secret: self.jwt_secret.clone().or(base.jwt_secret),
            access_token_ttl: self.access_token_ttl.map(secs).unwrap_or(base.access_token_ttl),
            refresh_token_ttl: self.refresh_token_ttl.map(secs).unwrap_or(base.refresh_token_ttl),
            registration_enabled: self.registration_enabled.unwrap_or(base.registration_enabled),
            max_clock_skew: self.max_clock_skew.map(secs).unwrap_or(base.max_clock_skew),
            tombstone_horizon: self.tombstone_days.map(|d| secs(d * 24 * 3600)).unwrap_or(base.tombstone_horizon),
            messages_per_second: mps,
            message_burst: if self.messages_per_second.is_some() { mps.saturating_mul(2) } else { base.message_burst },
            idle_tenant_close: self.idle_tenant_secs.map(secs).unwrap_or(base.idle_tenant_close),
            max_open_tenants: self.max_open_tenants.map(|n| n.max(1)).or(base.max_open_tenants),
            heartbeat_interval: self.heartbeat_interval.map(secs).unwrap_or(base.heartbeat_interval),
            send_timeout: self.send_timeout.map(secs).unwrap_or(base.send_timeout),
            max_message_bytes: self.max_message_bytes.unwrap_or(base.max_message_bytes),
            max_import_bytes: self.max_import_bytes.unwrap_or(base.max_import_bytes),
            max_logo_bytes: self.max_logo_bytes.unwrap_or(base.max_logo_bytes),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(base.max_batch_bytes),
            outbound_queue: self.outbound_queue.unwrap_or(base.outbound_queue),
            tenant_queue: self.tenant_queue.unwrap_or(base.tenant_queue),
            max_group_commit: self.max_group_commit.unwrap_or(base.max_group_commit),
            max_in_flight: self.max_in_flight.unwrap_or(base.max_in_flight),
            writer_threads: self.writer_threads.unwrap_or(base.writer_threads).max(1),
            web_dir: self.web_dir.clone().or(base.web_dir),
            cors_origins: self.cors_origins.clone().unwrap_or(base.cors_origins),
            trusted_proxies: self.trusted_proxies.clone().unwrap_or(base.trusted_proxies),
            login_attempts_per_account: self.login_attempts_per_account.unwrap_or(base.login_attempts_per_account),
            login_attempts_per_address: self.login_attempts_per_address.unwrap_or(base.login_attempts_per_address),
            login_window: self.login_window.map(secs).unwrap_or(base.login_window),
            login_address_delay: self.login_address_delay.map(secs).unwrap_or(base.login_address_delay),
            registrations_per_address: self.registrations_per_address.unwrap_or(base.registrations_per_address),
            password_hash_concurrency: self.password_hash_concurrency.unwrap_or(base.password_hash_concurrency).max(1),
            password_hash_wait: self.password_hash_wait.map(secs).unwrap_or(base.password_hash_wait),
            http_header_timeout: self.http_header_timeout.map(secs).unwrap_or(base.http_header_timeout),
            http_body_timeout: self.http_body_timeout.map(secs).unwrap_or(base.http_body_timeout),
            http_idle_timeout: self.http_idle_timeout.map(secs).unwrap_or(base.http_idle_timeout),
            max_connections: self.max_connections.unwrap_or(base.max_connections).max(1),
            max_connections_per_user: self.max_connections_per_user.unwrap_or(base.max_connections_per_user).max(1),
            ws_buffer_budget: self.ws_buffer_budget.unwrap_or(base.ws_buffer_budget),
            ..base
        }
    }
}

/// The effective configuration and, per key, which layer set it.
pub struct Resolved {
    pub config: Config,
    /// `(key, value as TOML, source)` in key order; secrets masked.
    pub entries: Vec<(String, String, &'static str)>,
}

impl Resolved {
    /// The effective configuration as a TOML document with the source of each key as a comment.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# effective configuration (precedence: flag > env > file > default)\n");
        for (k, v, src) in &self.entries {
            if *src == "unset" {
                let why = match k.as_str() {
                    "jwt_secret" => "generated and kept in <data_dir>/jwt.secret, or in the database",
                    "database_url" => "all state in the data dir's SQLite files",
                    "max_open_tenants" => "derived from the open-file limit at start",
                    _ => "none",
                };
                out.push_str(&format!("# {k} is unset ({why})\n"));
            } else {
                out.push_str(&format!("{k} = {v}  # {src}\n"));
            }
        }
        out
    }
}

/// Layers `file`, `env` and `flags` (each optional key) over `defaults`.
pub fn resolve(defaults: Config, file: &Settings, env: &Settings, flags: &Settings) -> Resolved {
    let layers: [(&'static str, toml::Table); 4] = [
        ("default", Settings::from_config(&defaults).to_table()),
        ("file", file.to_table()),
        ("env", env.to_table()),
        ("flag", flags.to_table()),
    ];
    let config = flags.apply(env.apply(file.apply(defaults)));
    let mut entries = Vec::new();
    for (key, _) in KEYS {
        let found = layers.iter().rev().find_map(|(src, t)| t.get(*key).map(|v| (*src, v.clone())));
        let (src, shown) = match found {
            Some((src, _)) if SECRET_KEYS.contains(key) => (src, "\"***\"".to_owned()),
            Some((src, v)) => (src, v.to_string()),
            None => ("unset", String::new()),
        };
        entries.push(((*key).to_owned(), shown, src));
    }
    Resolved { config, entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flag_env_file_default() {
        let file: Settings = toml::from_str(
            "addr = \"0.0.0.0:9000\"\ndata_dir = \"/file\"\nmessages_per_second = 10\njwt_secret = \"file-secret\"\n",
        )
        .unwrap();
        let env = Settings::from_env(|k| match k {
            "FINWISE_DATA_DIR" => Some("/env".into()),
            "FINWISE_MESSAGES_PER_SECOND" => Some("20".into()),
            "CORS_ORIGINS" => Some("https://a.example, https://b.example".into()),
            "FINWISE_DISABLE_REGISTRATION" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        let flags = Settings { messages_per_second: Some(30), ..Settings::default() };
        let r = resolve(Config::default(), &file, &env, &flags);
        assert_eq!(r.config.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(r.config.data_dir, PathBuf::from("/env"));
        assert_eq!(r.config.messages_per_second, 30);
        assert_eq!(r.config.message_burst, 60);
        assert!(!r.config.registration_enabled);
        assert_eq!(r.config.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(r.config.max_in_flight, Config::default().max_in_flight);
        let text = r.to_toml();
        assert!(text.contains("messages_per_second = 30  # flag"), "{text}");
        assert!(text.contains("data_dir = \"/env\"  # env"), "{text}");
        assert!(text.contains("addr = \"0.0.0.0:9000\"  # file"), "{text}");
        assert!(text.contains("max_in_flight = 512  # default"), "{text}");
        assert!(text.contains("jwt_secret = \"***\"  # file"), "{text}");
        assert!(!text.contains("file-secret"));
    }

    #[test]
    fn printed_configuration_is_a_valid_config_file() {
        let flags = Settings {
            max_in_flight: Some(7),
            cors_origins: Some(vec!["https://x.example".into()]),
            ..Settings::default()
        };
        let r = resolve(Config::default(), &Settings::default(), &Settings::default(), &flags);
        let text = r.to_toml();
        let back: Settings = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let again = back.apply(Config::default());
        assert_eq!(again.max_in_flight, 7);
        assert_eq!(again.cors_origins, vec!["https://x.example"]);
        assert_eq!(again.refresh_token_ttl, r.config.refresh_token_ttl);
        assert_eq!(again.tombstone_horizon, r.config.tombstone_horizon);
        assert!(back.jwt_secret.is_none(), "an unset secret stays unset");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("finwise-cfg-{}", std::process::id()));
        std::fs::write(&dir, "adr = \"x\"\n").unwrap();
        let e = Settings::from_file(&dir).unwrap_err();
        assert!(e.to_string().contains("adr"), "{e}");
        let _ = std::fs::remove_file(&dir);
        let e = Settings::from_env(|k| (k == "FINWISE_MAX_IN_FLIGHT").then(|| "many".into())).unwrap_err();
        assert!(e.to_string().contains("FINWISE_MAX_IN_FLIGHT"), "{e}");
    }
}
