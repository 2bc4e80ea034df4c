//! PostgreSQL implementation: every tenant in shared tables keyed by tenant id, for providers
//! that outgrow one machine and for several servers on one database.
//!
//! - `entities` holds every entity of every tenant, keyed `(tenant_id, entity_type, id)`, with
//!   the exact JSON text the server emits (`text`, not `jsonb`, which would reorder keys: loads
//!   stay serialise-once) and an index on `(tenant_id, seq)` for deltas.
//! - `tenant_heads` holds each tenant's last `seq` and compaction floor. A writer locks its
//!   tenant's head row (`SELECT … FOR UPDATE`) for the whole group-commit transaction, so
//!   sequence numbers of one tenant commit in order even with several servers writing it: a
//!   reader never sees seq 7 while seq 6 is still to commit (a plain `nextval` sequence would
//!   allow that, and delta readers would skip 6; `tests/postgres_seq.rs` shows both).
//! - `applied_entries` remembers processed entry ids per tenant (idempotency across servers).
//! - The central tables (users, tenants, members, refresh tokens) and `settings` (the JWT
//!   secret) live in the same database; [`super::sql`] queries them with the SQL SQLite runs.
//!
//! Statements are prepared once per connection. A writer's group costs a fixed number of round
//! trips whatever its size: lock the head, fetch the group's entities and entry ids
//! ([`WriteTxn::prefetch`]), then write all rows with one `INSERT … SELECT FROM unnest(…)` per
//! table. Readers run in `REPEATABLE READ READ ONLY` transactions: one snapshot, never blocking
//! the writers.

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use finwise_protocol::{locks::LockExt, EntityType};
use postgres::{
    fallible_iterator::FallibleIterator,
    types::{ToSql, Type},
    Client, NoTls, Statement,
};
use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use super::{
    sql::{Param, Row, Sql, SqlDb, Val},
    AppliedEntry, EntityRecord, Readiness, Result, Snapshot, StorageError, Store, TenantDb, TenantReader, WriteTxn,
};
use crate::TenantId;

/// Key of the session advisory lock held while migrating ("finwise" in ASCII).
const MIGRATION_LOCK: i64 = 0x0066_696e_7769_7365;

/// Schema migrations, applied in order, each in its own transaction, recorded in
/// `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    r#"
    -- Case-insensitive, accent-sensitive comparison for user names and e-mails (what SQLite's
    -- COLLATE NOCASE gives auth.db, for all of Unicode).
    CREATE COLLATION finwise_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
    CREATE TABLE users (
        id            text PRIMARY KEY,
        name          text COLLATE finwise_nocase NOT NULL UNIQUE,
        email         text COLLATE finwise_nocase NOT NULL UNIQUE,
        password_hash text NOT NULL,
        created_at    text NOT NULL,
        updated_at    text NOT NULL
    );
    CREATE TABLE tenants (
        id          text PRIMARY KEY,
        name        text NOT NULL,
        user_id     text NOT NULL,
        created_at  text NOT NULL,
        updated_at  text NOT NULL,
        legacy_open boolean NOT NULL DEFAULT true
    );
    CREATE TABLE members (
        tenant_id text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        user_id   text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role      text NOT NULL CHECK (role IN ('owner', 'member')),
        PRIMARY KEY (tenant_id, user_id)
    );
    CREATE INDEX members_by_user ON members (user_id);
    CREATE TABLE refresh_tokens (
        token_hash    text PRIMARY KEY,
        user_id       text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        family        text NOT NULL,
        expires_at_ms bigint NOT NULL,
        used          boolean NOT NULL DEFAULT false,
        revoked       boolean NOT NULL DEFAULT false
    );
    CREATE INDEX refresh_by_family ON refresh_tokens (family);
    CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);

    CREATE TABLE tenant_heads (
        tenant_id       uuid PRIMARY KEY,
        seq             bigint NOT NULL DEFAULT 0,
        tombstone_floor bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE entities (
        tenant_id     uuid   NOT NULL,
        entity_type   text   COLLATE "C" NOT NULL,
        id            text   COLLATE "C" NOT NULL,
        seq           bigint NOT NULL,
        updated_at_ms bigint NOT NULL,
        deleted       boolean NOT NULL,
        data          text   NOT NULL,
        changed_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, entity_type, id)
    );
    CREATE INDEX entities_by_seq ON entities (tenant_id, seq);
    CREATE TABLE applied_entries (
        tenant_id       uuid   NOT NULL,
        entry_id        text   COLLATE "C" NOT NULL,
        content_hash    text   NOT NULL,
        seq             bigint NOT NULL,
        applied         boolean NOT NULL,
        updated_at      text   NOT NULL,
        processed_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, entry_id)
    );
    CREATE INDEX applied_entries_by_time ON applied_entries (tenant_id, processed_at_ms);
"#,
    r#"
    -- v2: attempt counters shared by every server on the database (login guesses per account)
    CREATE TABLE limiter_counts (
        name            text   NOT NULL,
        key             text   NOT NULL,
        count           bigint NOT NULL,
        window_start_ms bigint NOT NULL,
        PRIMARY KEY (name, key)
    );
"#,
    r#"
    -- v3: every raised head is announced to every server on the database (cross-node fan-out):
    -- ids and numbers only, delivered at commit in commit order
    CREATE FUNCTION finwise_head_notify() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        PERFORM pg_notify('finwise_heads', NEW.tenant_id::text || ':' || OLD.seq || ':' || NEW.seq);
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER tenant_heads_notify AFTER UPDATE OF seq ON tenant_heads
        FOR EACH ROW WHEN (NEW.seq > OLD.seq) EXECUTE FUNCTION finwise_head_notify();
"#,
    r#"
    -- v4: field-level merge keeps a stamp per field (NULL: every field carries updated_at, which
    -- is what every version written before had), and the seq that created each entity (a version
    -- another server reads back by seq is a create for sockets that have not seen that seq)
    ALTER TABLE entities ADD COLUMN stamps text;
    ALTER TABLE entities ADD COLUMN created_seq bigint NOT NULL DEFAULT 0;
"#,
    r#"
    -- v5: a deleted tenant's head row stays, marked, so that a group another server commits
    -- after the deletion finds it and is refused instead of writing the tenant's data anew
    ALTER TABLE tenant_heads ADD COLUMN deleted boolean NOT NULL DEFAULT false;
"#,
    r#"
    -- v6: the 0.4 frontend's per-user settings (log level, categories, history retention)
    CREATE TABLE user_settings (
        user_id                text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        id                     text NOT NULL,
        log_level              text NOT NULL,
        log_categories         text NOT NULL,
        history_retention_days bigint NOT NULL,
        created_at             text NOT NULL,
        updated_at             text NOT NULL
    );
"#,
    r#"
    -- v7: account and group logos (128×128 PNG, base64), per tenant
    CREATE TABLE logos (
        tenant_id  text NOT NULL,
        name       text NOT NULL,
        data       text NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
"#,
    r#"
    -- v8: raised heads are announced by each server after its commits, many per transaction
    -- (`Announcer`), no longer by the v3 trigger inside every writing transaction: a transaction
    -- that notifies holds a database-wide lock until its commit is flushed, which serialised the
    -- commits of all tenants (docs/PERFORMANCE.md, Households on PostgreSQL)
    DROP TRIGGER tenant_heads_notify ON tenant_heads;
    DROP FUNCTION finwise_head_notify();
    CREATE FUNCTION finwise_announce_heads(heads text[]) RETURNS void LANGUAGE plpgsql AS $fn$
    DECLARE h text;
    BEGIN
        FOREACH h IN ARRAY heads LOOP
            PERFORM pg_notify('finwise_heads', h);
        END LOOP;
    END
    $fn$;
"#,
];

/// Number of schema migrations of a FinWise PostgreSQL database.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The tables `finwise migrate` requires to be empty in a target database.
pub const DATA_TABLES: &[&str] = &["users", "tenants", "members", "refresh_tokens", "tenant_heads", "entities"];

/// One connection with its prepared statements.
pub struct Conn {
    pub client: Client,
    stmts: HashMap<String, Statement>,
    /// A statement failed in a way that leaves the session unknown (e.g. ROLLBACK failed).
    broken: bool,
}

impl Conn {
    fn stmt(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<postgres::Row>> {
        let st = self.stmt(sql)?;
        Ok(self.client.query(&st, params)?)
    }
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let st = self.stmt(sql)?;
        Ok(self.client.execute(&st, params)?)
    }
    /// Streams the rows of a query to `visit` (which returns false to stop).
    fn stream(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        visit: &mut dyn FnMut(&postgres::Row) -> Result<bool>,
    ) -> Result<()> {
        let st = self.stmt(sql)?;
        let mut rows = self.client.query_raw(&st, params.iter().copied())?;
        while let Some(r) = rows.next()? {
            if !visit(&r)? {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` between `begin` and `COMMIT`; rolls back when it fails.
    pub fn in_tx<T>(&mut self, begin: &str, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        self.client.batch_execute(begin)?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.client.batch_execute("COMMIT") {
                    self.broken = true;
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                if self.client.batch_execute("ROLLBACK").is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }
}

/// A bounded pool of connections. A connection that broke is dropped, and the next request
/// connects anew: the server survives a database restart without being restarted itself.
pub struct PgPool {
    config: postgres::Config,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    wait: Duration,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections handed out or being opened.
    busy: usize,
}

/// A connection borrowed from the pool; returned when dropped.
pub struct Pooled<'a> {
    pool: &'a PgPool,
    conn: Option<Conn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until drop")
    }
}
impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut st = self.pool.state.locked();
        st.busy -= 1;
        if let Some(c) = conn {
            if !c.broken && !c.client.is_closed() && !std::thread::panicking() {
                st.idle.push(c);
            }
        }
        self.pool.freed.notify_one();
    }
}

impl Drop for PgPool {
    fn drop(&mut self) {
        // The driver's connections run their own small runtime, which must not be dropped on an
        // async worker thread (the last `Arc` of the store often goes with the server's task).
        let idle = std::mem::take(&mut self.state.locked().idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl PgPool {
    pub fn new(url: &str, max: usize, wait: Duration) -> Result<Self> {
        let mut config: postgres::Config =
            url.parse().map_err(|e| StorageError::Other(format!("database_url is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("finwise");
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        Ok(PgPool {
            config,
            state: Mutex::new(PoolState { idle: Vec::new(), busy: 0 }),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
        })
    }

    /// Opens a new connection outside the pool (migrations, the notification listener).
    pub fn connect(&self) -> Result<Conn> {
        let client = self.config.connect(NoTls)?;
        Ok(Conn { client, stmts: HashMap::new(), broken: false })
    }

    /// Borrows a connection, waiting at most the pool's wait time for one to come free.
    pub fn get(&self) -> Result<Pooled<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut st = self.state.locked();
        loop {
            while let Some(c) = st.idle.pop() {
                if !c.client.is_closed() {
                    st.busy += 1;
                    return Ok(Pooled { pool: self, conn: Some(c) });
                }
            }
            if st.busy < self.max {
                st.busy += 1;
                drop(st);
                // the slot is counted before connecting; a failure gives it back
                let mut slot = Pooled { pool: self, conn: None };
                slot.conn = Some(self.connect()?);
                return Ok(slot);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StorageError::Other(format!(
                    "all {} database connections stayed busy for {:?} (database_pool_size)",
                    self.max, self.wait
                )));
            }
            st = self.freed.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Where the database is, without the password.
    pub fn location(&self) -> String {
        let c = &self.config;
        let host = c
            .get_hosts()
            .first()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or(""), c.get_dbname().unwrap_or(""))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Text(s) => s.to_sql(ty, out),
            Param::Int(n) if *ty == Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
            Param::Int(n) if *ty == Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
            Param::Int(n) => n.to_sql(ty, out),
            Param::Bool(b) => b.to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

fn to_row(r: &postgres::Row) -> Result<Row> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(Val::Bool),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|n| Val::Int(n.into())),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|n| Val::Int(n.into())),
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Val::Int),
            _ => r.try_get::<_, Option<String>>(i)?.map(Val::Text),
        };
        vals.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

struct PgSql<'a>(&'a mut Conn);

fn dyn_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Sql for PgSql<'_> {
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.0.query(sql, &dyn_params(params))?.iter().map(to_row).collect()
    }
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.0.execute(sql, &dyn_params(params))
    }
}

impl SqlDb for PgPool {
    fn transaction_dyn(&self, f: &mut dyn FnMut(&mut dyn Sql) -> Result<bool>) -> Result<()> {
        let mut conn = self.get()?;
        conn.client.batch_execute("BEGIN")?;
        match f(&mut PgSql(&mut conn)) {
            Ok(true) => {
                if let Err(e) = conn.client.batch_execute("COMMIT") {
                    conn.broken = true;
                    return Err(e.into());
                }
                Ok(())
            }
            other => {
                if conn.client.batch_execute("ROLLBACK").is_err() {
                    conn.broken = true;
                }
                other.map(|_| ())
            }
        }
    }
}

/// All server state in one PostgreSQL database.
pub struct PgStore {
    pool: Arc<PgPool>,
    /// Started by the first tenant opened for writing (`finwise doctor` never starts it).
    announcer: std::sync::OnceLock<Announcer>,
    /// Raised heads that were never announced (queue full, or the announcing transaction failed).
    unannounced: Counter,
}

/// Most raised heads waiting to be announced; beyond it a head is not announced and the other
/// servers' safety poll (2 s) delivers it.
const ANNOUNCE_QUEUE: usize = 16_384;
/// Most heads announced in one transaction.
const ANNOUNCE_BATCH: usize = 1_000;

/// Announces raised heads (`tenant:from:to` on `finwise_heads`) to every server on the database,
/// after their commits and many per transaction, from one thread per store. The announcing
/// transaction commits asynchronously (`synchronous_commit` off): a notification is a hint, and
/// a transaction that notifies holds PostgreSQL's database-wide notify lock until its commit
/// returns, so it must not wait for a WAL flush, and no data commit may hold that lock at all.
/// Heads of one tenant from this server are announced in commit order (its writer sends them).
/// Every head it could not announce is counted in `unannounced`.
#[derive(Clone)]
struct Announcer {
    queue: std::sync::mpsc::SyncSender<String>,
    unannounced: Counter,
}

impl Announcer {
    fn start(pool: &Arc<PgPool>, unannounced: &Counter) -> Announcer {
        let (queue, rx) = std::sync::mpsc::sync_channel::<String>(ANNOUNCE_QUEUE);
        // the thread ends when the store and its tenants (every sender) are gone
        let pool = Arc::clone(pool);
        let failed = unannounced.clone();
        std::thread::Builder::new()
            .name("pg-announce".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut heads = vec![first];
                    heads.extend(rx.try_iter().take(ANNOUNCE_BATCH - 1));
                    let sent = pool.get().and_then(|mut c| {
                        c.in_tx("BEGIN; SET LOCAL synchronous_commit TO off", |c| {
                            c.execute("SELECT finwise_announce_heads($1::text[])", &[&heads])
                        })
                    });
                    if let Err(e) = sent {
                        failed.inc_by(heads.len() as u64);
                        tracing::warn!(heads = heads.len(), error = %e,
                            "cannot announce heads to the other servers; their safety poll delivers them");
                    }
                }
            })
            .expect("spawn the announcer thread");
        Announcer { queue, unannounced: unannounced.clone() }
    }

    /// Queues `tenant`'s head raised from `from` to `to` (never blocks a writer).
    fn raised(&self, tenant: &Uuid, from: i64, to: i64) {
        if self.queue.try_send(format!("{tenant}:{from}:{to}")).is_err() {
            self.unannounced.inc();
        }
    }
}

fn tenant_uuid(t: &TenantId) -> Uuid {
    Uuid::parse_str(t.as_str()).expect("a TenantId is a canonical UUID")
}

fn parse_type(s: &str) -> Result<EntityType> {
    EntityType::parse(s).ok_or_else(|| StorageError::Other(format!("unknown entity type {s:?} in the database")))
}

impl PgStore {
    /// Connects, checks the server, and applies pending migrations (under an advisory lock, so
    /// several servers may start at once).
    pub fn open(url: &str, pool_size: usize, pool_wait: Duration) -> Result<Self> {
        let pool = Arc::new(PgPool::new(url, pool_size, pool_wait)?);
        let mut conn = pool.connect()?;
        check_server(&mut conn)?;
        migrate(&mut conn)?;
        Ok(PgStore { pool, announcer: Default::default(), unannounced: Counter::default() })
    }

    /// Connects to a database without migrating it (`finwise doctor` only looks).
    pub fn attach(url: &str) -> Result<Self> {
        let pool = Arc::new(PgPool::new(url, 2, Duration::from_secs(10))?);
        check_server(&mut *pool.get()?)?;
        Ok(PgStore { pool, announcer: Default::default(), unannounced: Counter::default() })
    }

    pub fn pool(&self) -> &Arc<PgPool> {
        &self.pool
    }
}

fn decode_secret(stored: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(stored.trim())
        .ok()
        .filter(|b| b.len() >= 32)
        .ok_or_else(|| StorageError::Other("the stored JWT secret (settings.jwt_secret) is not valid".into()))
}

/// Refuses servers this code was not written for.
pub fn check_server(conn: &mut Conn) -> Result<()> {
    let row = conn.client.query_one("SELECT current_setting('server_version_num')::int, pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()", &[])?;
    let version: i32 = row.get(0);
    let encoding: String = row.get(1);
    if version < 150000 {
        return Err(StorageError::Other(format!(
            "PostgreSQL 15 or newer is required (found server_version_num {version})"
        )));
    }
    if encoding != "UTF8" {
        return Err(StorageError::Other(format!("the database must use the UTF8 encoding (found {encoding})")));
    }
    Ok(())
}

/// The schema version recorded in the database (0 when none).
pub fn schema_version(conn: &mut Conn) -> Result<i64> {
    let exists: bool = conn.client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = conn.client.query_one("SELECT max(version) FROM schema_migrations", &[])?.get(0);
    Ok(v.unwrap_or(0).into())
}

fn migrate(conn: &mut Conn) -> Result<()> {
    conn.client.query_one("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = (|| {
        conn.client.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let current = schema_version(conn)? as usize;
        if current > MIGRATIONS.len() {
            return Err(StorageError::Other(format!(
                "database schema version {current} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = (i + 1) as i32;
            conn.in_tx("BEGIN", |c| {
                c.client.batch_execute(m)?;
                c.client.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version])?;
                Ok(())
            })?;
            tracing::info!(version, "database migrated");
        }
        Ok(())
    })();
    let unlock = conn.client.query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlock?;
    Ok(())
}

impl Store for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }
    fn unannounced_heads(&self) -> Option<Counter> {
        Some(self.unannounced.clone())
    }
    fn shared_pool(&self) -> Option<Arc<PgPool>> {
        Some(Arc::clone(&self.pool))
    }
    fn location(&self) -> String {
        self.pool.location()
    }
    fn central(&self) -> Arc<dyn SqlDb> {
        Arc::clone(&self.pool) as Arc<dyn SqlDb>
    }
    fn jwt_secret(&self) -> Result<Vec<u8>> {
        use base64::Engine as _;
        use rand::RngCore;
        let mut bytes = vec![0u8; 64];
        rand::rng().fill_bytes(&mut bytes);
        let fresh = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let mut conn = self.pool.get()?;
        // the first server stores its secret; every later one reads that one
        conn.execute("INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT DO NOTHING", &[&fresh])?;
        let stored: String = conn.query("SELECT value FROM settings WHERE key = 'jwt_secret'", &[])?[0].get(0);
        decode_secret(&stored)
    }
    fn adopt_jwt_secret(&self, secret: &[u8]) -> Result<()> {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(secret);
        self.pool
            .get()?
            .execute("INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT DO NOTHING", &[&text])?;
        Ok(())
    }
    fn files_per_tenant(&self) -> usize {
        0 // a tenant's writer borrows the pool's connections
    }
    fn open_tenant(&self, tenant: &TenantId) -> Result<Box<dyn TenantDb>> {
        Ok(Box::new(PgTenant {
            pool: Arc::clone(&self.pool),
            tenant: tenant_uuid(tenant),
            announcer: self.announcer.get_or_init(|| Announcer::start(&self.pool, &self.unannounced)).clone(),
        }))
    }
    fn read_dyn(&self, tenant: &TenantId, f: &mut dyn FnMut(&mut dyn TenantReader) -> Result<()>) -> Result<()> {
        let mut conn = self.pool.get()?;
        let tenant = tenant_uuid(tenant);
        conn.in_tx("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", |c| f(&mut PgReader { conn: c, tenant }))
    }
    fn delete_tenant_data(&self, tenant: &TenantId) -> Result<()> {
        let mut conn = self.pool.get()?;
        let t = tenant_uuid(tenant);
        conn.in_tx("BEGIN", |c| {
            // marked, not removed (see lock_head); the lock waits for a group in flight
            c.execute(
                "INSERT INTO tenant_heads (tenant_id, deleted) VALUES ($1, true)
                 ON CONFLICT (tenant_id) DO UPDATE SET deleted = true",
                &[&t],
            )?;
            c.execute("DELETE FROM entities WHERE tenant_id = $1", &[&t])?;
            c.execute("DELETE FROM applied_entries WHERE tenant_id = $1", &[&t])?;
            Ok(())
        })
    }
    fn tenants_with_data(&self) -> Result<Vec<TenantId>> {
        let mut conn = self.pool.get()?;
        let rows = conn.query("SELECT tenant_id::text FROM tenant_heads WHERE NOT deleted ORDER BY 1", &[])?;
        Ok(rows.iter().filter_map(|r| TenantId::parse(r.get(0))).collect())
    }
    fn readiness(&self) -> Readiness {
        let expected = SCHEMA_VERSION as i64;
        let probe = (|| -> Result<(bool, i64)> {
            let mut conn = self.pool.get()?;
            let recovery: bool = conn.query("SELECT pg_is_in_recovery()", &[])?[0].get(0);
            Ok((!recovery, schema_version(&mut conn)?))
        })();
        match probe {
            Ok((writable, version)) => Readiness {
                ready: writable && version == expected,
                engine: "postgres",
                writable,
                schema_version: Some(version),
                expected_schema_version: expected,
                error: None,
            },
            Err(e) => Readiness {
                ready: false,
                engine: "postgres",
                writable: false,
                schema_version: None,
                expected_schema_version: expected,
                error: Some(e.to_string()),
            },
        }
    }
}

/// A tenant's writer handle. It holds no connection: each group borrows one from the pool.
struct PgTenant {
    pool: Arc<PgPool>,
    tenant: Uuid,
    announcer: Announcer,
}

/// Locks the tenant's head row (creating it on the first write) and returns its seq. A deleted
/// tenant (the row is marked) takes no writes — another server may still have had a group in
/// flight when it was deleted — unless the tenant was created again since (same id).
fn lock_head(c: &mut Conn, tenant: &Uuid) -> Result<i64> {
    const SELECT: &str = "SELECT seq, deleted FROM tenant_heads WHERE tenant_id = $1 FOR UPDATE";
    let row = match c.query(SELECT, &[tenant])?.into_iter().next() {
        Some(r) => r,
        None => {
            c.execute("INSERT INTO tenant_heads (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", &[tenant])?;
            c.query(SELECT, &[tenant])?.into_iter().next().ok_or_else(|| StorageError::Other("no head row".into()))?
        }
    };
    let (seq, deleted): (i64, bool) = (row.get(0), row.get(1));
    if deleted {
        if c.query("SELECT 1 FROM tenants WHERE id = $1", &[&tenant.to_string()])?.is_empty() {
            return Err(StorageError::Other(format!("tenant {tenant} was deleted")));
        }
        c.execute("UPDATE tenant_heads SET deleted = false WHERE tenant_id = $1", &[tenant])?;
    }
    Ok(seq)
}

impl TenantDb for PgTenant {
    fn write_dyn(&mut self, f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<()>) -> Result<()> {
        let mut conn = self.pool.get()?;
        let tenant = self.tenant;
        let raised = conn.in_tx("BEGIN", |c| {
            let seq = lock_head(c, &tenant)?;
            let mut txn = PgTxn {
                conn: c,
                tenant,
                start_seq: seq,
                seq,
                entities: HashMap::new(),
                entries: HashMap::new(),
                puts: HashMap::new(),
                records: Vec::new(),
            };
            f(&mut txn)?;
            txn.flush()
        })?;
        if let Some((from, to)) = raised {
            self.announcer.raised(&tenant, from, to);
        }
        Ok(())
    }

    fn compact(&mut self, cutoff_ms: i64) -> Result<usize> {
        let mut conn = self.pool.get()?;
        let t = self.tenant;
        conn.in_tx("BEGIN", |c| {
            lock_head(c, &t)?;
            let floor: Option<i64> = c.query(
                "SELECT max(seq) FROM entities WHERE tenant_id = $1 AND deleted AND changed_at_ms < $2",
                &[&t, &cutoff_ms],
            )?[0]
                .get(0);
            let mut removed = 0;
            if let Some(floor) = floor {
                removed =
                    c.execute("DELETE FROM entities WHERE tenant_id = $1 AND deleted AND seq <= $2", &[&t, &floor])?;
                c.execute(
                    "UPDATE tenant_heads SET tombstone_floor = GREATEST(tombstone_floor, $2) WHERE tenant_id = $1",
                    &[&t, &floor],
                )?;
            }
            c.execute("DELETE FROM applied_entries WHERE tenant_id = $1 AND processed_at_ms < $2", &[&t, &cutoff_ms])?;
            Ok(removed as usize)
        })
    }
}

type EntityKey = (EntityType, String);

/// One group-commit transaction: reads are served from what [`WriteTxn::prefetch`] fetched (and
/// what this transaction wrote), writes are collected and flushed in one statement per table.
struct PgTxn<'c> {
    conn: &'c mut Conn,
    tenant: Uuid,
    start_seq: i64,
    seq: i64,
    entities: HashMap<EntityKey, Option<EntityRecord>>,
    entries: HashMap<String, Option<AppliedEntry>>,
    puts: HashMap<EntityKey, EntityRecord>,
    records: Vec<AppliedEntry>,
}

const ENTITY_COLS: &str =
    "e.entity_type, e.id, e.seq, e.updated_at_ms, e.deleted, e.data, e.changed_at_ms, e.stamps, e.created_seq";
const ENTRY_COLS: &str = "entry_id, content_hash, seq, applied, updated_at, processed_at_ms";

fn entity_row(r: &postgres::Row) -> Result<EntityRecord> {
    Ok(EntityRecord {
        entity_type: parse_type(r.get(0))?,
        id: r.get(1),
        seq: r.get(2),
        updated_at_ms: r.get(3),
        deleted: r.get(4),
        data: r.get(5),
        changed_at_ms: r.get(6),
        stamps: r.get(7),
        created_seq: r.get(8),
    })
}

fn entry_row(r: &postgres::Row) -> AppliedEntry {
    AppliedEntry {
        entry_id: r.get(0),
        content_hash: r.get(1),
        seq: r.get(2),
        applied: r.get(3),
        updated_at: r.get(4),
        processed_at_ms: r.get(5),
    }
}

impl PgTxn<'_> {
    /// Writes the group's rows and the new head in one statement (one round trip). Returns the
    /// head's rise (`from`, `to`), if any, to be announced after the commit.
    fn flush(self) -> Result<Option<(i64, i64)>> {
        let PgTxn { conn, tenant, start_seq, seq, puts, records, .. } = self;
        if puts.is_empty() && records.is_empty() && seq == start_seq {
            return Ok(None);
        }
        let recs: Vec<&EntityRecord> = puts.values().collect();
        let types: Vec<&str> = recs.iter().map(|r| r.entity_type.as_str()).collect();
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        let seqs: Vec<i64> = recs.iter().map(|r| r.seq).collect();
        let versions: Vec<i64> = recs.iter().map(|r| r.updated_at_ms).collect();
        let deleted: Vec<bool> = recs.iter().map(|r| r.deleted).collect();
        let data: Vec<&str> = recs.iter().map(|r| r.data.as_str()).collect();
        let changed: Vec<i64> = recs.iter().map(|r| r.changed_at_ms).collect();
        let stamps: Vec<Option<&str>> = recs.iter().map(|r| r.stamps.as_deref()).collect();
        let created: Vec<i64> = recs.iter().map(|r| r.created_seq).collect();
        let entry_ids: Vec<&str> = records.iter().map(|e| e.entry_id.as_str()).collect();
        let hashes: Vec<&str> = records.iter().map(|e| e.content_hash.as_str()).collect();
        let entry_seqs: Vec<i64> = records.iter().map(|e| e.seq).collect();
        let applied: Vec<bool> = records.iter().map(|e| e.applied).collect();
        let updated: Vec<&str> = records.iter().map(|e| e.updated_at.as_str()).collect();
        let at: Vec<i64> = records.iter().map(|e| e.processed_at_ms).collect();
        conn.execute(
            "WITH e AS (
               INSERT INTO entities (tenant_id, entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms,
                                     stamps, created_seq)
               SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::bool[], $7::text[], $8::int8[],
                                        $16::text[], $17::int8[])
               ON CONFLICT (tenant_id, entity_type, id) DO UPDATE SET seq = excluded.seq,
                 updated_at_ms = excluded.updated_at_ms, deleted = excluded.deleted, data = excluded.data,
                 changed_at_ms = excluded.changed_at_ms, stamps = excluded.stamps, created_seq = excluded.created_seq
             ), a AS (
               INSERT INTO applied_entries (tenant_id, entry_id, content_hash, seq, applied, updated_at, processed_at_ms)
               SELECT $1, * FROM unnest($9::text[], $10::text[], $11::int8[], $12::bool[], $13::text[], $14::int8[])
             )
             UPDATE tenant_heads SET seq = $15 WHERE tenant_id = $1 AND seq <> $15",
            &[
                &tenant, &types, &ids, &seqs, &versions, &deleted, &data, &changed, &entry_ids, &hashes, &entry_seqs,
                &applied, &updated, &at, &seq, &stamps, &created,
            ],
        )?;
        Ok((seq > start_seq).then_some((start_seq, seq)))
    }
}

impl WriteTxn for PgTxn<'_> {
    fn prefetch(&mut self, entities: &[(EntityType, &str)], entry_ids: &[&str]) -> Result<()> {
        let wanted: Vec<&(EntityType, &str)> =
            entities.iter().filter(|(t, id)| !self.entities.contains_key(&(*t, (*id).to_owned()))).collect();
        if !wanted.is_empty() {
            let types: Vec<&str> = wanted.iter().map(|(t, _)| t.as_str()).collect();
            let ids: Vec<&str> = wanted.iter().map(|(_, id)| *id).collect();
            let sql = format!(
                "SELECT {ENTITY_COLS} FROM unnest($2::text[], $3::text[]) AS k(t, i)
                 JOIN entities e ON e.tenant_id = $1 AND e.entity_type = k.t AND e.id = k.i"
            );
            for r in self.conn.query(&sql, &[&self.tenant, &types, &ids])? {
                let rec = entity_row(&r)?;
                self.entities.insert((rec.entity_type, rec.id.clone()), Some(rec));
            }
            for (t, id) in wanted {
                self.entities.entry((*t, (*id).to_owned())).or_insert(None);
            }
        }
        let wanted: Vec<&str> = entry_ids.iter().copied().filter(|id| !self.entries.contains_key(*id)).collect();
        if !wanted.is_empty() {
            let sql = format!("SELECT {ENTRY_COLS} FROM applied_entries WHERE tenant_id = $1 AND entry_id = ANY($2)");
            for r in self.conn.query(&sql, &[&self.tenant, &wanted])? {
                let e = entry_row(&r);
                self.entries.insert(e.entry_id.clone(), Some(e));
            }
            for id in wanted {
                self.entries.entry(id.to_owned()).or_insert(None);
            }
        }
        Ok(())
    }

    fn entity(&mut self, entity_type: EntityType, id: &str) -> Result<Option<EntityRecord>> {
        let key = (entity_type, id.to_owned());
        if let Some(hit) = self.entities.get(&key) {
            return Ok(hit.clone());
        }
        let sql =
            format!("SELECT {ENTITY_COLS} FROM entities e WHERE e.tenant_id = $1 AND e.entity_type = $2 AND e.id = $3");
        let found = match self.conn.query(&sql, &[&self.tenant, &entity_type.as_str(), &id])?.first() {
            Some(r) => Some(entity_row(r)?),
            None => None,
        };
        self.entities.insert(key, found.clone());
        Ok(found)
    }

    fn put_entity(&mut self, record: &EntityRecord) -> Result<()> {
        let key = (record.entity_type, record.id.clone());
        self.entities.insert(key.clone(), Some(record.clone()));
        self.puts.insert(key, record.clone());
        Ok(())
    }

    fn applied_entry(&mut self, entry_id: &str) -> Result<Option<AppliedEntry>> {
        if let Some(hit) = self.entries.get(entry_id) {
            return Ok(hit.clone());
        }
        let sql = format!("SELECT {ENTRY_COLS} FROM applied_entries WHERE tenant_id = $1 AND entry_id = $2");
        let found = self.conn.query(&sql, &[&self.tenant, &entry_id])?.first().map(entry_row);
        self.entries.insert(entry_id.to_owned(), found.clone());
        Ok(found)
    }

    fn record_entry(&mut self, entry: &AppliedEntry) -> Result<()> {
        self.entries.insert(entry.entry_id.clone(), Some(entry.clone()));
        self.records.push(entry.clone());
        Ok(())
    }

    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    fn restore_head(&mut self, head: &Snapshot) -> Result<()> {
        self.seq = head.seq;
        self.conn.execute(
            "UPDATE tenant_heads SET tombstone_floor = $2 WHERE tenant_id = $1",
            &[&self.tenant, &head.tombstone_floor],
        )?;
        Ok(())
    }
}

/// One read transaction (`REPEATABLE READ READ ONLY`) of one tenant.
struct PgReader<'c> {
    conn: &'c mut Conn,
    tenant: Uuid,
}

impl TenantReader for PgReader<'_> {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let rows =
            self.conn.query("SELECT seq, tombstone_floor FROM tenant_heads WHERE tenant_id = $1", &[&self.tenant])?;
        Ok(rows.first().map(|r| Snapshot { seq: r.get(0), tombstone_floor: r.get(1) }).unwrap_or_default())
    }

    fn live_since(&mut self, since: i64, visit: &mut dyn FnMut(EntityType, &str) -> bool) -> Result<()> {
        let sql = if since > 0 {
            "SELECT entity_type, data FROM entities WHERE tenant_id = $1 AND seq > $2 AND NOT deleted ORDER BY seq"
        } else {
            "SELECT entity_type, data FROM entities WHERE tenant_id = $1 AND NOT deleted AND $2::int8 = 0"
        };
        self.conn.stream(sql, &[&self.tenant, &since], &mut |r| Ok(visit(parse_type(r.get(0))?, r.get(1))))
    }

    fn live_of_type(&mut self, t: EntityType, visit: &mut dyn FnMut(&str) -> bool) -> Result<()> {
        let sql = "SELECT data FROM entities WHERE tenant_id = $1 AND entity_type = $2 AND NOT deleted";
        self.conn.stream(sql, &[&self.tenant, &t.as_str()], &mut |r| Ok(visit(r.get(0))))
    }

    fn deleted_since(&mut self, since: i64) -> Result<Vec<(EntityType, String)>> {
        let rows = self.conn.query(
            "SELECT entity_type, id FROM entities WHERE tenant_id = $1 AND seq > $2 AND deleted ORDER BY seq",
            &[&self.tenant, &since],
        )?;
        rows.iter().map(|r| Ok((parse_type(r.get(0))?, r.get(1)))).collect()
    }

    fn changes(&mut self, from: i64, to: i64, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()> {
        let sql = format!(
            "SELECT {ENTITY_COLS} FROM entities e WHERE e.tenant_id = $1 AND e.seq > $2 AND e.seq <= $3 ORDER BY e.seq"
        );
        self.conn.stream(&sql, &[&self.tenant, &from, &to], &mut |r| {
            visit(entity_row(r)?)?;
            Ok(true)
        })
    }

    fn records(&mut self, visit: &mut dyn FnMut(EntityRecord) -> Result<()>) -> Result<()> {
        let sql = format!("SELECT {ENTITY_COLS} FROM entities e WHERE e.tenant_id = $1 ORDER BY e.seq");
        self.conn.stream(&sql, &[&self.tenant], &mut |r| {
            visit(entity_row(r)?)?;
            Ok(true)
        })
    }

    fn entries(&mut self, visit: &mut dyn FnMut(AppliedEntry) -> Result<()>) -> Result<()> {
        let sql = format!("SELECT {ENTRY_COLS} FROM applied_entries WHERE tenant_id = $1");
        self.conn.stream(&sql, &[&self.tenant], &mut |r| {
            visit(entry_row(r))?;
            Ok(true)
        })
    }

    fn live_versions(&mut self, visit: &mut dyn FnMut(EntityType, &str, i64)) -> Result<()> {
        self.conn.stream(
            "SELECT entity_type, id, updated_at_ms FROM entities WHERE tenant_id = $1 AND NOT deleted",
            &[&self.tenant],
            &mut |r| {
                visit(parse_type(r.get(0))?, r.get(1), r.get(2));
                Ok(true)
            },
        )
    }
}
