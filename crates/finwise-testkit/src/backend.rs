//! Which storage engine the tests run on. `FINWISE_TEST_BACKEND=postgres` runs every server of
//! the suite on PostgreSQL (`FINWISE_TEST_DATABASE_URL`, which `scripts/test-all` provides with a
//! throwaway cluster); anything else runs them on SQLite data dirs.
//!
//! On PostgreSQL each test's data dir names its own schema (`t_<hash of the dir>`, selected
//! through the connection's `search_path`), so tests run in parallel on one database, a restart
//! on the same dir finds the same data, and a schema costs a few milliseconds to create.

use std::path::Path;

/// True when the suite runs on PostgreSQL.
pub fn postgres() -> bool {
    std::env::var("FINWISE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// For a test that only runs on SQLite: true (and says why on stderr) when the suite runs on
/// PostgreSQL, so the test returns early.
pub fn sqlite_only(why: &str) -> bool {
    if postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    postgres()
}

/// The PostgreSQL server of the test suite. Under `FINWISE_TEST_BACKEND=postgres` a missing URL
/// fails the test (never a silent skip).
pub fn server_url() -> String {
    std::env::var("FINWISE_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("FINWISE_TEST_BACKEND=postgres needs FINWISE_TEST_DATABASE_URL (./scripts/test-all starts a cluster)")
    })
}

/// The `database_url` for the data dir `dir` on PostgreSQL (its own schema, created when
/// missing), or `None` on SQLite.
pub fn database_url(dir: &Path) -> Option<String> {
    postgres().then(|| schema_url(&schema_for(dir)))
}

/// A database URL whose connections use schema `schema` (created when missing).
pub fn schema_url(schema: &str) -> String {
    let base = server_url();
    let s = schema.to_owned();
    let admin = base.clone();
    // the sync driver runs its own runtime: not on a tokio worker thread
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to FINWISE_TEST_DATABASE_URL");
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}")).expect("create the test schema");
    })
    .join()
    .expect("schema creation");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

fn schema_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("t_{:016x}", h.finish())
}

/// For a PostgreSQL-only test: a URL of a fresh schema named `<prefix>_<random>` on the test
/// server, or `None` (with a note) when `FINWISE_TEST_DATABASE_URL` is unset. Under `CI=true` a
/// missing server fails the test instead.
pub fn fresh_schema_url(prefix: &str) -> Option<String> {
    match std::env::var("FINWISE_TEST_DATABASE_URL") {
        Ok(_) => Some(schema_url(&format!("{prefix}_{}", uuid::Uuid::new_v4().simple()))),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true: FINWISE_TEST_DATABASE_URL must point at a PostgreSQL server")
        }
        Err(_) => {
            eprintln!("skipped: PostgreSQL-only, and FINWISE_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// For a test of several servers on one database: true (with a note) on SQLite, so it returns.
pub fn postgres_only(why: &str) -> bool {
    if !postgres() {
        eprintln!("skipped on SQLite: {why} (run with FINWISE_TEST_BACKEND=postgres)");
    }
    !postgres()
}

/// The real FinWise 0.4 data sample of `../shared`, when present (never required).
pub fn shared_legacy_sample() -> Option<std::path::PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../../../shared/spec/legacy-data", "/work/shared/spec/legacy-data"]
        .iter()
        .map(|p| manifest.join(p))
        .find(|p| p.join("EXPECTED.json").is_file())
}

/// Terminates every PostgreSQL backend whose connection named itself `application_name`
/// (`pg_terminate_backend`, as an administrator or a failover would), through the server of
/// `url`; returns how many there were.
pub fn terminate_backends(url: &str, application_name: &str) -> i64 {
    let (url, name) = (url.to_owned(), application_name.to_owned());
    // the sync driver runs its own runtime: not on a tokio worker thread
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect to terminate backends");
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .expect("pg_terminate_backend");
        row.get(0)
    })
    .join()
    .expect("terminating backends")
}

/// A PostgreSQL cluster of one test's own (`scripts/pg-cluster`), for tests that restart the
/// database server under load: the suite's shared server cannot be restarted. Stopped and
/// removed on drop.
pub struct OwnCluster {
    dir: std::path::PathBuf,
    pub url: String,
}

fn pg_cluster() -> std::process::Command {
    std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-cluster"))
}

impl OwnCluster {
    /// Starts a fresh cluster. Under `FINWISE_TEST_BACKEND=postgres` the PostgreSQL binaries
    /// must be there (`scripts/test-all` installs them), so a failure to start fails the test.
    pub fn start() -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("finwise-own-pg-{}", uuid::Uuid::new_v4().simple()));
        let out = pg_cluster().arg("start").arg(&dir).output().expect("run scripts/pg-cluster");
        assert!(out.status.success(), "scripts/pg-cluster start: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).expect("a URL").trim().to_owned();
        OwnCluster { dir, url }
    }

    /// Fast shutdown (every connection cut), `down` with no server, then up again on the same
    /// port. Blocks.
    pub fn restart(&self, down: std::time::Duration) {
        let out = pg_cluster()
            .arg("restart")
            .arg(&self.dir)
            .arg(format!("{:.1}", down.as_secs_f64()))
            .output()
            .expect("run scripts/pg-cluster");
        assert!(out.status.success(), "scripts/pg-cluster restart: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = pg_cluster().arg("stop").arg(&self.dir).output();
    }
}
