//! The real `finwise` binary as a child process, for tests that must kill it (SIGKILL), read its
//! memory from /proc or its log. Build it first: `cargo build -p finwise-cli` (scripts/test-all
//! does).

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
};

use serde_json::{json, Value};

/// Path of the debug binary (honours `CARGO_TARGET_DIR`).
pub fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug/finwise");
    assert!(bin.exists(), "{} is missing: run `cargo build -p finwise-cli` first", bin.display());
    bin
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
        let mut child = Command::new(binary())
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--jwt-secret", "process-test-secret-process-test-secret!"])
            .args(extra)
            .env("FINWISE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("address line, got {line:?}"))
            .to_owned();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
        });
        let log = Arc::new(Mutex::new(String::new()));
        let (l, mut err) = (Arc::clone(&log), BufReader::new(child.stderr.take().unwrap()));
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                l.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        ServerProcess { child, addr, log }
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
    let email = format!("{name}@example.org");
    let r = http
        .post(format!("http://{addr}/register"))
        .json(&json!({"name": name, "email": email, "password": format!("{name}-password")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login: Value = http
        .post(format!("http://{addr}/login"))
        .json(&json!({"username_or_email": email, "password": format!("{name}-password")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
