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
    /// Remembered entry ids (idempotency) the writers of all open SQLite tenants hold in memory
    /// together, about 32 bytes each; a tenant beyond it indexes its ids on disk (slower
    /// writes). PostgreSQL does not use it.
    pub max_ids_in_memory: usize,
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
            max_ids_in_memory: 2_000_000,
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

/// The keys of a settings layer (a TOML file, the environment, the flags), in the order
/// `finwise config` prints them: `key: type of its value => the Config field, conversion;`.
/// One line per key generates the [`Settings`] field, its entry in `KEYS` (its kind follows from
/// its type) and both directions between a layer and a [`Config`] (see [`conv`]).
macro_rules! settings_keys {
    ($($key:ident: $ty:ty => $field:ident, $conv:ident;)*) => {
        /// One layer of settings (a TOML file, the environment, the flags): every key optional.
        /// Durations are whole seconds; `tombstone_days` is days.
        #[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(pub $key: Option<$ty>,)*
        }

        /// Every key with its kind; the environment variable is `FINWISE_<KEY>` (upper case).
        const KEYS: &[(&str, KeyKind)] = &[$((stringify!($key), <$ty as Kind>::KIND),)*];

        impl Settings {
            /// Every key set from a full configuration (what the defaults layer looks like).
            pub fn from_config(c: &Config) -> Settings {
                Settings { $($key: conv::$conv::setting(&c.$field),)* }
            }

            /// The keys that are set, applied over `base`.
            fn apply_keys(&self, base: Config) -> Config {
                Config { $($field: conv::$conv::over(self.$key.clone(), base.$field),)* ..base }
            }
        }
    };
}

settings_keys! {
    addr: SocketAddr => addr, plain;
    data_dir: PathBuf => data_dir, plain;
    database_url: String => database_url, optional;
    database_pool_size: usize => database_pool_size, at_least_one;
    database_pool_wait: u64 => database_pool_wait, secs;
    allow_legacy_clients: bool => allow_legacy_clients, plain;
    jwt_secret: String => jwt_secret, optional;
    access_token_ttl: u64 => access_token_ttl, secs;
    refresh_token_ttl: u64 => refresh_token_ttl, secs;
    registration_enabled: bool => registration_enabled, plain;
    max_clock_skew: u64 => max_clock_skew, secs;
    tombstone_days: u64 => tombstone_horizon, days;
    max_ids_in_memory: usize => max_ids_in_memory, plain;
    messages_per_second: u32 => messages_per_second, plain;
    idle_tenant_secs: u64 => idle_tenant_close, secs;
    max_open_tenants: usize => max_open_tenants, optional_at_least_one;
    heartbeat_interval: u64 => heartbeat_interval, secs;
    send_timeout: u64 => send_timeout, secs;
    max_message_bytes: usize => max_message_bytes, plain;
    max_import_bytes: usize => max_import_bytes, plain;
    max_logo_bytes: usize => max_logo_bytes, plain;
    max_batch_bytes: usize => max_batch_bytes, plain;
    outbound_queue: usize => outbound_queue, plain;
    tenant_queue: usize => tenant_queue, plain;
    max_group_commit: usize => max_group_commit, plain;
    max_in_flight: usize => max_in_flight, plain;
    writer_threads: usize => writer_threads, at_least_one;
    web_dir: PathBuf => web_dir, optional;
    cors_origins: Vec<String> => cors_origins, plain;
    trusted_proxies: Vec<String> => trusted_proxies, plain;
    login_attempts_per_account: u32 => login_attempts_per_account, plain;
    login_attempts_per_address: u32 => login_attempts_per_address, plain;
    login_window: u64 => login_window, secs;
    login_address_delay: u64 => login_address_delay, secs;
    registrations_per_address: u32 => registrations_per_address, plain;
    password_hash_concurrency: usize => password_hash_concurrency, at_least_one;
    password_hash_wait: u64 => password_hash_wait, secs;
    http_header_timeout: u64 => http_header_timeout, secs;
    http_body_timeout: u64 => http_body_timeout, secs;
    http_idle_timeout: u64 => http_idle_timeout, secs;
    max_connections: usize => max_connections, at_least_one;
    max_connections_per_user: usize => max_connections_per_user, at_least_one;
    ws_buffer_budget: usize => ws_buffer_budget, plain;
}

/// How a key's value maps to its `Config` field and back: `setting` is the field as a key's
/// value (the defaults layer), `over` applies a layer's value (when set) over the field.
mod conv {
    use std::time::Duration;

    /// The value is the field.
    pub mod plain {
        pub fn setting<T: Clone>(field: &T) -> Option<T> {
            Some(field.clone())
        }
        pub fn over<T>(value: Option<T>, field: T) -> T {
            value.unwrap_or(field)
        }
    }

    /// The value is the field; 0 counts as 1 (a pool, a thread count, a connection limit).
    pub mod at_least_one {
        pub use super::plain::setting;
        pub fn over(value: Option<usize>, field: usize) -> usize {
            value.unwrap_or(field).max(1)
        }
    }

    /// An optional field: unset unless some layer sets it.
    pub mod optional {
        pub fn setting<T: Clone>(field: &Option<T>) -> Option<T> {
            field.clone()
        }
        pub fn over<T>(value: Option<T>, field: Option<T>) -> Option<T> {
            value.or(field)
        }
    }

    /// An optional count; 0 counts as 1.
    pub mod optional_at_least_one {
        pub use super::optional::setting;
        pub fn over(value: Option<usize>, field: Option<usize>) -> Option<usize> {
            value.map(|n| n.max(1)).or(field)
        }
    }

    /// A duration given in whole seconds.
    pub mod secs {
        use super::Duration;
        pub fn setting(field: &Duration) -> Option<u64> {
            Some(field.as_secs())
        }
        pub fn over(value: Option<u64>, field: Duration) -> Duration {
            value.map_or(field, Duration::from_secs)
        }
    }

    /// A duration given in whole days.
    pub mod days {
        use super::Duration;
        const DAY: u64 = 24 * 3600;
        pub fn setting(field: &Duration) -> Option<u64> {
            Some(field.as_secs() / DAY)
        }
        pub fn over(value: Option<u64>, field: Duration) -> Duration {
            value.map_or(field, |d| Duration::from_secs(d.saturating_mul(DAY)))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum KeyKind {
    Str,
    Int,
    Bool,
    List,
}

/// How a key of this type is written in an environment variable.
trait Kind {
    const KIND: KeyKind;
}

macro_rules! kind {
    ($kind:ident: $($ty:ty),*) => {
        $(impl Kind for $ty {
            const KIND: KeyKind = KeyKind::$kind;
        })*
    };
}
kind!(Str: SocketAddr, PathBuf, String);
kind!(Int: u32, u64, usize);
kind!(Bool: bool);
kind!(List: Vec<String>);

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

    /// Applies the keys that are set over `base`. Setting `messages_per_second` also sets the
    /// burst to twice the rate.
    pub fn apply(&self, base: Config) -> Config {
        let mut c = self.apply_keys(base);
        if self.messages_per_second.is_some() {
            c.message_burst = c.messages_per_second.saturating_mul(2);
        }
        c
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

    /// Every key, set to a value of its own in the environment, reaches its own `Config` field
    /// and comes back unchanged: no two keys share a field, no conversion loses a value.
    #[test]
    fn every_key_round_trips_through_its_own_field() {
        let value = |i: usize, key: &str, kind: KeyKind| match (key, kind) {
            ("addr", _) => format!("127.0.0.1:{}", 9000 + i),
            ("allow_legacy_clients", _) => "true".into(),
            ("registration_enabled", _) => "false".into(),
            (_, KeyKind::Int) => (i + 2).to_string(),
            (_, KeyKind::List) => format!("https://{key}.example, https://{i}.example"),
            (_, _) => format!("/{key}/{i}"),
        };
        let vars: Vec<(String, String)> = KEYS
            .iter()
            .enumerate()
            .map(|(i, (key, kind))| (format!("FINWISE_{}", key.to_ascii_uppercase()), value(i, key, *kind)))
            .collect();
        let env = Settings::from_env(|k| vars.iter().find(|(v, _)| v == k).map(|(_, x)| x.clone())).unwrap();
        let table = env.to_table();
        for (key, _) in KEYS {
            assert!(table.contains_key(*key), "{key} was not read from the environment");
        }
        let config = env.apply(Config::default());
        assert_eq!(Settings::from_config(&config), env);
        assert_eq!(config.message_burst, config.messages_per_second * 2);
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
