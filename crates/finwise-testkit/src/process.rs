//! The real `finwise` binary as a child process, for tests that must kill it (SIGKILL), read its
//! memory from /proc or its log, or check what it prints.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::SystemTime,
};

use serde_json::json;

/// The JWT secret of server processes (tokens stay valid across restarts).
pub const PROCESS_SECRET: &str = "process-test-secret-process-test-secret!";

/// The `finwise` binary: `FINWISE_BIN` when set; else the workspace's debug build (honouring
/// `CARGO_TARGET_DIR`), built first with `cargo build -p finwise-cli` when it is missing or older
/// than a source file of the workspace, so that a plain `cargo test` tests the current code.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("FINWISE_BIN") {
            return PathBuf::from(b);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug/finwise");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        // the crates the binary is built from (not the bench, not this kit)
        let sources = ["finwise-protocol", "finwise-server", "finwise-client", "finwise-cli"]
            .iter()
            .map(|c| newest(&root.join("crates").join(c)))
            .chain([newest(&root.join("Cargo.lock"))])
            .max()
            .flatten();
        if built.is_none() || sources > built {
            // cargo takes a lock on the target dir: test processes that get here together build once
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "finwise-cli"])
                .current_dir(&root)
                .status()
                .expect("run cargo build -p finwise-cli");
            assert!(status.success(), "cargo build -p finwise-cli failed");
        }
        bin
    })
    .clone()
}

/// Newest modification time of the sources below `p` (`src/`, `build.rs`, manifests; not
/// `tests/`, which do not go into the binary).
fn newest(p: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if matches!(name, "tests" | "benches" | "target") {
        return None;
    }
    std::fs::read_dir(p).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest(&e.path())).max()
}

/// A running server process on a data dir; killed (SIGKILL) when dropped, also when a test fails.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `finwise serve` on port 0 with a fixed JWT secret (tokens survive restarts) and
    /// `extra` flags; returns once it printed its address. Its stderr (log) is collected.
    pub fn start(dir: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::start_cmd(dir, |c| {
            c.args(extra);
        })
    }

    /// [`ServerProcess::start`] with the command adjusted by `customize` (more flags, the
    /// environment, the working directory) before it is spawned. The environment is cleared of
    /// `FINWISE_*` settings first, so the caller's shell cannot change the test.
    pub fn start_cmd(dir: &Path, customize: impl FnOnce(&mut Command)) -> ServerProcess {
        ServerProcess::try_start_bin(&binary(), dir, customize).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`ServerProcess::start_cmd`] with another binary (the bench's release build); an error
    /// instead of a panic when it does not start.
    pub fn try_start_bin(
        bin: &Path,
        dir: &Path,
        customize: impl FnOnce(&mut Command),
    ) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"]).arg(dir).args(["--jwt-secret", PROCESS_SECRET]);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("FINWISE_") || k == "CORS_ORIGINS") {
                cmd.env_remove(k);
            }
        }
        cmd.env("FINWISE_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(url) = crate::backend::database_url(dir) {
            cmd.env("FINWISE_DATABASE_URL", url).env("FINWISE_DATABASE_POOL_SIZE", "6");
        }
        customize(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let (l, mut err) = (Arc::clone(&log), BufReader::new(err));
            std::thread::spawn(move || {
                let mut line = String::new();
                while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    l.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on http://").map(str::to_owned) else {
            let _ = child.wait();
            anyhow::bail!("the server did not start: first line {line:?}; log:\n{}", log.lock().unwrap());
        };
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
        });
        Ok(ServerProcess { child, addr, log })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM (a graceful shutdown), and wait for the exit; true when it exited with 0.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Registers `name`, logs in and creates `tenants` tenants; returns the token and tenant ids.
pub async fn account(addr: &str, name: &str, tenants: usize) -> (String, Vec<String>) {
    let http = reqwest::Client::new();
    let login = crate::register_and_login(&format!("http://{addr}"), name, &format!("{name}-password")).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..tenants {
        let tenant = uuid::Uuid::new_v4().to_string();
        let r = http
            .post(format!("http://{addr}/tenants"))
            .bearer_auth(&token)
            .json(&json!({"uuid": tenant, "name": format!("{name}-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(tenant);
    }
    (token, ids)
}

/// Asserts that SQLite's integrity check passes on a database file.
pub fn integrity_ok(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    let r: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(r, "ok", "{}", path.display());
}

/// Asserts that the storage of the data dir `dir` is intact after a crash: on SQLite the
/// integrity check of `auth.db` and of the tenant's file; on PostgreSQL (the schema of `dir`)
/// the B-tree checks of `amcheck` on every index and the tenant's head at or above its rows.
pub fn storage_intact(dir: &Path, tenant: &str) {
    match crate::backend::database_url(dir) {
        Some(url) => pg_intact(&url, tenant),
        None => {
            integrity_ok(&dir.join("auth.db"));
            integrity_ok(&dir.join(format!("tenants/{tenant}.db")));
        }
    }
}

/// [`storage_intact`] on PostgreSQL, for the database (and schema) of `url`.
pub fn pg_intact(url: &str, tenant: &str) {
    let (url, tenant) = (url.to_owned(), uuid::Uuid::parse_str(tenant).unwrap());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public").unwrap();
        let indexes = c
            .query(
                "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
                 WHERE n.nspname = current_schema() AND a.amname = 'btree'",
                &[],
            )
            .unwrap();
        assert!(indexes.len() >= 5, "the schema's indexes are there");
        for r in indexes {
            let name: String = r.get(0);
            c.batch_execute(&format!("SELECT public.bt_index_check('{name}'::regclass, true)"))
                .unwrap_or_else(|e| panic!("amcheck on {name}: {e}"));
        }
        let row = c
            .query_one(
                "SELECT (SELECT seq FROM tenant_heads WHERE tenant_id = $1),
                        (SELECT max(seq) FROM entities WHERE tenant_id = $1)",
                &[&tenant],
            )
            .unwrap();
        let (head, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        assert!(head >= max, "tenant head {head:?} below its highest row {max:?}");
    })
    .join()
    .unwrap();
}
