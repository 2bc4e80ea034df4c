//! `finwise doctor`: checks a data dir and prints each problem with the command that fixes it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use finwise_server::storage::{
    postgres::{self, PgStore},
    Store,
};
use finwise_server::{
    storage::sqlite::{DataDir, SqliteReader, CENTRAL_SCHEMA_VERSION as AUTH_SCHEMA_VERSION, TENANT_SCHEMA_VERSION},
    TenantId,
};
use rusqlite::{Connection, OpenFlags};

#[derive(Args)]
pub struct DoctorArgs {
    /// The data dir to check [default: FINWISE_DATA_DIR, the config file's data_dir, or data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Check this PostgreSQL database instead of a data dir [env FINWISE_DATABASE_URL].
    #[arg(long, env = "FINWISE_DATABASE_URL", conflicts_with = "data_dir")]
    pub database_url: Option<String>,
    /// Also check this tenant's entities and recompute its digest.
    #[arg(long)]
    pub tenant: Option<String>,
}

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: impl std::fmt::Display) {
        println!("ok       {what}");
    }
    fn note(&self, what: impl std::fmt::Display) {
        println!("note     {what}");
    }
    fn warning(&self, what: impl std::fmt::Display, fix: impl std::fmt::Display) {
        println!("WARNING  {what}\n         fix: {fix}");
    }
    fn problem(&mut self, what: impl std::fmt::Display, fix: impl std::fmt::Display) {
        self.problems += 1;
        println!("PROBLEM  {what}\n         fix: {fix}");
    }
}

fn open_ro(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

/// Integrity and schema version of one database; false when it cannot be used at all.
fn check_db(r: &mut Report, path: &Path, expected: usize, what: &str, data: &Path) -> bool {
    let shown = path.display();
    let conn = match open_ro(path) {
        Ok(c) => c,
        Err(e) => {
            r.problem(format!("{what} {shown} cannot be opened: {e}"), format!("check its owner and permissions (`ls -l {shown}`), or restore it: finwise restore --from <backup dir> --data-dir <new dir>"));
            return false;
        }
    };
    let rows: Result<Vec<String>, _> =
        conn.prepare("PRAGMA integrity_check").and_then(|mut s| s.query_map([], |row| row.get(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(rows) => {
            r.problem(
                format!("{what} {shown} is damaged: {}", rows.into_iter().take(3).collect::<Vec<_>>().join("; ")),
                format!(
                    "stop the server and restore the latest backup: finwise restore --from <backup dir> --data-dir <new dir>; \
                     or salvage: sqlite3 {shown} .recover | sqlite3 {shown}.recovered && mv {shown}.recovered {shown}"
                ),
            );
            return false;
        }
        Err(e) => {
            r.problem(
                format!("{what} {shown} is not a readable SQLite database: {e}"),
                "restore it: finwise restore --from <backup dir> --data-dir <new dir>",
            );
            return false;
        }
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap_or(-1);
    let expected = expected as i64;
    if version == expected {
        r.ok(format!("{what} {shown}: integrity ok, schema version {version}"));
    } else if version < expected {
        r.problem(
            format!(
                "{what} {shown}: schema version {version}, this finwise expects {expected} (migrations not applied)"
            ),
            format!("start the server once, it migrates on open: finwise serve --data-dir {}", data.display()),
        );
    } else {
        r.problem(
            format!("{what} {shown}: schema version {version} is newer than this finwise ({expected})"),
            "run the finwise version that wrote it (or newer); never downgrade a data dir",
        );
    }
    true
}

pub fn doctor(a: DoctorArgs) -> anyhow::Result<()> {
    if let Some(url) = &a.database_url {
        let store = PgStore::attach(url).map_err(|e| anyhow::anyhow!("cannot use the database: {e}"))?;
        let problems = run_postgres(&store, a.tenant.as_deref())?;
        let place = store.pool().location();
        if problems == 0 {
            println!("no problems found in {place}");
            return Ok(());
        }
        println!("{problems} problem(s) found in {place}");
        std::process::exit(1);
    }
    let data = super::data_dir(a.data_dir);
    let problems = run(&data, a.tenant.as_deref())?;
    if problems == 0 {
        println!("no problems found in {}", data.display());
        Ok(())
    } else {
        println!("{problems} problem(s) found in {}", data.display());
        std::process::exit(1);
    }
}

/// Runs every check, printing as it goes; returns the number of problems.
pub fn run(data: &Path, tenant: Option<&str>) -> anyhow::Result<usize> {
    let mut r = Report { problems: 0 };
    if !data.is_dir() {
        anyhow::bail!("{} is not a directory (give the data dir with --data-dir)", data.display());
    }
    let dir = DataDir { root: data.to_path_buf() };
    if let Some(holder) = dir.holder() {
        println!("in use by {holder}: the checks read beside it");
    }
    let auth = dir.auth_db();
    let mut tenant_rows: Vec<(String, String)> = Vec::new();
    if !auth.exists() {
        r.problem(
            format!("{} has no auth.db", data.display()),
            format!("start the server to create one (finwise serve --data-dir {d}), or restore a backup: finwise restore --from <backup dir> --data-dir {d}", d = data.display()),
        );
    } else if check_db(&mut r, &auth, AUTH_SCHEMA_VERSION, "auth database", data) {
        let conn = open_ro(&auth).context("auth.db")?;
        let found: rusqlite::Result<Vec<(String, String)>> = conn
            .prepare("SELECT id, name FROM tenants ORDER BY id")
            .and_then(|mut stmt| stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect());
        tenant_rows = found?;
    }

    let files = dir.tenant_files()?;
    for (stem, path) in &files {
        if TenantId::parse(stem).is_none() {
            r.problem(
                format!(
                    "{} is not named after a tenant id (a canonical lowercase UUID); the server never opens it",
                    path.display()
                ),
                format!("move it out of the data dir: mv {} <somewhere else>", path.display()),
            );
            continue;
        }
        check_db(&mut r, path, TENANT_SCHEMA_VERSION, "tenant database", data);
        if auth.exists() && !tenant_rows.iter().any(|(id, _)| id == stem) {
            r.problem(
                format!("tenant file {} has no tenant in auth.db (deleted tenant, or a backup taken while it was created)", path.display()),
                format!("if nobody needs it, move it away: mv {} <somewhere else>; otherwise restore auth.db from a backup that has the tenant", path.display()),
            );
        }
    }
    for (id, name) in &tenant_rows {
        if !files.iter().any(|(stem, _)| stem == id) {
            r.problem(
                format!("tenant {id} ('{name}') has no database file: its data is missing"),
                format!(
                    "restore it from a backup (copy <backup dir>/tenants/{id}.db to {}/tenants/ while the server is stopped); \
                     without one, the file is created empty on the next sync and devices re-upload only their unsynced changes",
                    data.display()
                ),
            );
        }
    }
    if !files.is_empty() || !tenant_rows.is_empty() {
        r.ok(format!("{} tenant(s) in auth.db, {} tenant file(s)", tenant_rows.len(), files.len()));
    }

    let secret = dir.jwt_secret();
    match std::fs::metadata(&secret) {
        Ok(m) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    r.problem(
                        format!(
                            "{} is readable by others (mode {mode:o}): anyone who reads it can sign tokens",
                            secret.display()
                        ),
                        format!("chmod 600 {}", secret.display()),
                    );
                } else {
                    r.ok(format!("{} is private (mode {mode:o})", secret.display()));
                }
            }
            #[cfg(not(unix))]
            let _ = m;
        }
        Err(_) => {
            r.note(format!("no {}: created at the next start unless FINWISE_JWT_SECRET is set", secret.display()))
        }
    }

    #[cfg(unix)]
    check_modes(&r, &dir, &files);

    if let Some(t) = tenant {
        let Some(id) = TenantId::parse(t) else {
            anyhow::bail!("--tenant {t}: not a canonical lowercase UUID");
        };
        let path = dir.tenant_db(&id);
        if !path.exists() {
            r.problem(format!("tenant {id} has no file {}", path.display()), "see above: restore it from a backup");
        } else {
            check_tenant(&mut r, &path, &id)?;
        }
    }
    Ok(r.problems)
}

/// The data dir and its databases should be private to the server's user (the server creates
/// them 0700/0600; older versions and copies made by hand may be wider). A warning, not a
/// problem: the server works, but other local users can read the households' books.
#[cfg(unix)]
fn check_modes(r: &Report, data: &DataDir, files: &[(String, PathBuf)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = vec![data.root.clone(), data.tenants_dir()];
    for db in std::iter::once(data.auth_db()).chain(files.iter().map(|(_, p)| p.clone())) {
        for suffix in ["", "-wal", "-shm"] {
            paths.push(PathBuf::from(format!("{}{suffix}", db.display())));
        }
    }
    let wide: Vec<(PathBuf, u32)> = paths
        .into_iter()
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.permissions().mode() & 0o777)))
        .filter(|(_, mode)| mode & 0o077 != 0)
        .collect();
    if wide.is_empty() {
        r.ok("the data dir and its databases are private to their owner");
        return;
    }
    for (p, mode) in &wide {
        r.warning(
            format!("{} is readable by other local users (mode {mode:o})", p.display()),
            format!("chmod {} {}", if p.is_dir() { "700" } else { "600" }, p.display()),
        );
    }
}

/// Every stored entity parses and names itself; then the digest as clients compare it.
fn check_tenant(r: &mut Report, path: &Path, id: &TenantId) -> anyhow::Result<()> {
    let conn = open_ro(path)?;
    let mut bad = Vec::new();
    let mut n = 0u64;
    {
        let mut stmt = conn.prepare("SELECT entity_type, id, data, deleted FROM entities")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            n += 1;
            let (t, eid, data, deleted): (String, String, String, bool) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let known = finwise_protocol::EntityType::parse(&t).is_some();
            let parsed: Option<serde_json::Value> = serde_json::from_str(&data).ok();
            let names_itself = parsed.as_ref().and_then(|v| v.get("id")).and_then(|v| v.as_str()) == Some(eid.as_str());
            if !known || !names_itself || (!deleted && !parsed.as_ref().is_some_and(|v| v.is_object())) {
                bad.push(format!("{t}/{eid}"));
            }
        }
    }
    if bad.is_empty() {
        r.ok(format!("tenant {id}: {n} stored rows, every one well-formed"));
    } else {
        r.problem(
            format!("tenant {id}: {} malformed row(s): {}", bad.len(), bad.iter().take(5).cloned().collect::<Vec<_>>().join(", ")),
            "restore the tenant file from a backup; or delete the rows in sqlite3 and let a device re-upload them with a full resync",
        );
    }
    let all: Vec<String> = Vec::new();
    let status = SqliteReader::open(path)
        .and_then(|mut reader| reader.read(|rd| finwise_server::loads::status_of(rd, id, &all)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "digest   tenant {id}: {} live entities, seq {}, digest {}",
        status.entity_count, status.seq, status.tenant_digest
    );
    println!("         a device whose `finwise status` shows another digest for this tenant disagrees: see docs/TROUBLESHOOTING.md");
    Ok(())
}

/// The checks of a PostgreSQL database: schema version, the JWT secret, tenants against their
/// data, every tenant's head at or above its rows; with `tenant`, its rows and digest.
pub fn run_postgres(store: &PgStore, tenant: Option<&str>) -> anyhow::Result<usize> {
    let mut r = Report { problems: 0 };
    let mut conn = store.pool().get().map_err(|e| anyhow::anyhow!("{e}"))?;
    r.ok(format!("connected to {}", store.pool().location()));
    let version = postgres::schema_version(&mut conn).map_err(|e| anyhow::anyhow!("{e}"))?;
    let expected = postgres::SCHEMA_VERSION as i64;
    if version == expected {
        r.ok(format!("schema version {version}"));
    } else if version < expected {
        r.problem(
            format!("schema version {version}, this finwise expects {expected} (migrations not applied)"),
            "start a server on the database once: it migrates at start (finwise serve --database-url URL)",
        );
        return Ok(r.problems);
    } else {
        r.problem(
            format!("schema version {version} is newer than this finwise ({expected})"),
            "run the finwise version that wrote it (or newer); never downgrade a database",
        );
        return Ok(r.problems);
    }
    let q = |conn: &mut postgres::Conn, sql: &str| conn.query(sql, &[]).map_err(|e| anyhow::anyhow!("{e}"));
    if q(&mut conn, "SELECT 1 FROM settings WHERE key = 'jwt_secret'")?.is_empty() {
        r.note("no JWT secret stored yet: the first server start stores one (unless FINWISE_JWT_SECRET is set)");
    } else {
        r.ok("the JWT secret is stored (table settings): protect the database and its backups like it");
    }
    let orphans = q(
        &mut conn,
        "SELECT h.tenant_id::text FROM tenant_heads h LEFT JOIN tenants t ON t.id = h.tenant_id::text WHERE t.id IS NULL",
    )?;
    for row in &orphans {
        let id: String = row.get(0);
        r.problem(
            format!("tenant data {id} has no tenant (deleted tenant, or a restore of only some tables)"),
            format!("if nobody needs it: DELETE FROM entities WHERE tenant_id = '{id}'; DELETE FROM applied_entries WHERE tenant_id = '{id}'; DELETE FROM tenant_heads WHERE tenant_id = '{id}'"),
        );
    }
    let behind = q(
        &mut conn,
        "SELECT h.tenant_id::text, h.seq, m.max FROM tenant_heads h
         JOIN (SELECT tenant_id, max(seq) AS max FROM entities GROUP BY tenant_id) m ON m.tenant_id = h.tenant_id
         WHERE m.max > h.seq",
    )?;
    for row in &behind {
        let (id, head, max): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        r.problem(
            format!("tenant {id}: head seq {head} is below its highest row ({max}); new changes would reuse seqs"),
            format!("stop the servers, then: UPDATE tenant_heads SET seq = {max} WHERE tenant_id = '{id}'"),
        );
    }
    let counts = q(
        &mut conn,
        "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM tenant_heads), (SELECT count(*) FROM users)",
    )?;
    let (tenants, with_data, users): (i64, i64, i64) = (counts[0].get(0), counts[0].get(1), counts[0].get(2));
    r.ok(format!("{users} user(s), {tenants} tenant(s), {with_data} with data"));
    drop(conn);
    if let Some(t) = tenant {
        let Some(id) = TenantId::parse(t) else {
            anyhow::bail!("--tenant {t}: not a canonical lowercase UUID");
        };
        let store: &dyn Store = store;
        let status = finwise_server::loads::data_status(store, &id, Some(&[])).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "digest   tenant {id}: {} live entities, seq {}, digest {}",
            status.entity_count, status.seq, status.tenant_digest
        );
    }
    Ok(r.problems)
}
