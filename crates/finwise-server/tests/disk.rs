//! Disk trouble. The real `finwise` binary with its tenant databases on storage that
//! fails for real (the tests run as root, so `chmod` would not stop writes):
//!
//! * `full_and_read_only_disk` — `tenants/` is a small tmpfs (16 MiB). It is filled up (ENOSPC), then
//!   remounted read-only (EROFS). Entries sent meanwhile get the retryable NACK `storage_error`
//!   (or, when SQLite could still write, an ack that must then be durable), the server logs the
//!   failure, and after the trouble clears the same entries (same ids) are accepted. Finally the
//!   server is killed with SIGKILL: every acked change is there and the files pass
//!   `PRAGMA integrity_check`. Skipped (with a message) where `mount` is not permitted.
//! * `unopenable_tenant_database` — no privileges needed: the tenant's database file is replaced
//!   by a directory of the same name while the server is down, which makes opening it fail.
//!
//! Needs the binary: `cargo build -p finwise-cli`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use finwise_testkit::process::{account, integrity_ok, ServerProcess as Server};

/// A user with one tenant; returns (token, tenant).
async fn setup(addr: &str) -> (String, String) {
    let (token, mut tenants) = account(addr, "disk", 1).await;
    (token, tenants.remove(0))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, tenant: &str, token: &str) -> Ws {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws
}

async fn next_where(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("an answer").unwrap().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap_or(Value::Null);
        if pred(&v) {
            return v;
        }
    }
}

/// `n` new Tag entries with `note_bytes` of colour text each (so that they need new pages).
fn entries(tenant: &str, n: usize, bytes: usize, tag: &str) -> Vec<Value> {
    let at = finwise_protocol::time::format_ms(chrono::Utc::now().timestamp_millis() - 1000);
    (0..n)
        .map(|k| {
            let id = uuid::Uuid::new_v4().to_string();
            json!({"id": uuid::Uuid::new_v4().to_string(), "tenantId": tenant, "entityType": "Tag", "entityId": id,
                "operationType": "create", "payload": {"id": id, "name": format!("{tag}-{k}"), "color": "x".repeat(bytes), "updated_at": at}})
        })
        .collect()
}

async fn send_batch(ws: &mut Ws, batch: &[Value]) -> Vec<Value> {
    ws.send(Message::Text(json!({"type": "process_sync_batch", "entries": batch}).to_string().into())).await.unwrap();
    let r = next_where(ws, |v| v["type"] == "sync_batch_result").await;
    r["results"].as_array().unwrap().clone()
}

/// What the server acknowledged: entity id → updated_at.
type Acked = HashMap<String, String>;

/// Sends a batch while storage is failing: every result is either a retryable `storage_error`
/// or an ack (recorded; it must be durable). Returns how many were refused.
async fn send_in_trouble(ws: &mut Ws, batch: &[Value], acked: &mut Acked) -> usize {
    let results = send_batch(ws, batch).await;
    assert_eq!(results.len(), batch.len());
    let mut refused = 0;
    for (e, r) in batch.iter().zip(&results) {
        if r["status"] == "processed" {
            acked.insert(e["entityId"].as_str().unwrap().to_owned(), r["updated_at"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(r["reason"], "storage_error", "{r}");
            // Batch results carry no `retryable` flag: the reason says it (PROTOCOL.md).
            assert!(r.get("retryable").is_none_or(|v| *v == true), "{r}");
            refused += 1;
        }
    }
    refused
}

/// Sends a batch on healthy storage: everything must be acked.
async fn send_ok(ws: &mut Ws, batch: &[Value], acked: &mut Acked) {
    for (e, r) in batch.iter().zip(&send_batch(ws, batch).await) {
        assert_eq!(r["status"], "processed", "{r}");
        acked.insert(e["entityId"].as_str().unwrap().to_owned(), r["updated_at"].as_str().unwrap().to_owned());
    }
}

async fn verify(addr: &str, tenant: &str, token: &str, acked: &Acked) -> usize {
    let mut ws = connect(addr, tenant, token).await;
    ws.send(Message::Text(json!({"type": "request_initial_data", "tenant_id": tenant}).to_string().into()))
        .await
        .unwrap();
    let load = next_where(&mut ws, |v| v["event_type"] == "initial_data_load").await;
    let stored: HashMap<&str, &str> = load["payload"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["updated_at"].as_str().unwrap()))
        .collect();
    for (id, at) in acked {
        assert_eq!(stored.get(id.as_str()), Some(&at.as_str()), "acked {id} missing or changed");
    }
    stored.len()
}

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// Fills the filesystem of `dir` with a file until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).and_then(|_| f.flush()).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_read_only_disk() {
    if finwise_testkit::backend::sqlite_only("fills and remounts the file system of the tenant files; on PostgreSQL the data dir holds no data (a database that fails is tested by restarting it)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    if let Err(e) = sh("mount", &["-t", "tmpfs", "-o", "size=16m", "tmpfs", tenants.to_str().unwrap()]) {
        println!(
            "SKIPPED: cannot mount a tmpfs here ({}); the full/read-only disk test needs root with mount",
            e.trim()
        );
        return;
    }
    let _mount = Mount(tenants.clone());
    let mut server = Server::start(dir.path(), &["--idle-tenant-secs", "1"]);
    let (token, tenant) = setup(&server.addr).await;
    let mut acked = Acked::new();
    let mut ws = connect(&server.addr, &tenant, &token).await;
    send_ok(&mut ws, &entries(&tenant, 50, 200, "before"), &mut acked).await;

    // 1. Full disk.
    let filler = fill(&tenants);
    let big = entries(&tenant, 400, 4096, "full");
    let mut refused = 0;
    for chunk in big.chunks(100) {
        refused += send_in_trouble(&mut ws, chunk, &mut acked).await;
    }
    println!("disk full: {refused} of {} entries refused with storage_error, {} acked", big.len(), big.len() - refused);
    assert!(refused > 0, "a full disk refused nothing");
    let log = server.log();
    assert!(
        log.contains("commit failed") || log.contains("cannot open tenant database"),
        "no log line about the failure:\n{log}"
    );
    let line =
        log.lines().find(|l| l.contains("storage_error") || l.contains("cannot open")).unwrap_or_default().to_owned();
    println!("log line: {line}");
    std::fs::remove_file(&filler).unwrap();
    // The same entries (same ids) are accepted once there is space again.
    for chunk in big.chunks(100) {
        send_ok(&mut ws, chunk, &mut acked).await;
    }
    let n = verify(&server.addr, &tenant, &token, &acked).await;
    println!("after the disk full episode: {} acked, {n} stored, none lost", acked.len());

    // 2. Read-only filesystem. A filesystem with files open for writing cannot be remounted
    // read-only: close the socket and wait for the idle writer to close the file (1 s).
    drop(ws);
    let ro = entries(&tenant, 100, 300, "ro");
    let mut remounted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if sh("mount", &["-o", "remount,ro", tenants.to_str().unwrap()]).is_ok() {
            remounted = true;
            break;
        }
    }
    assert!(remounted, "could not remount the tenants tmpfs read-only");
    let mut ws = connect(&server.addr, &tenant, &token).await;
    let refused = send_in_trouble(&mut ws, &ro, &mut acked).await;
    println!("read-only: {refused} of {} entries refused with storage_error", ro.len());
    assert_eq!(refused, ro.len(), "a read-only filesystem acked something");
    sh("mount", &["-o", "remount,rw", tenants.to_str().unwrap()]).unwrap();
    let mut accepted = false;
    for _ in 0..20 {
        // The writer that failed to open retires; the next entries open the file again.
        let mut tmp = Acked::new();
        if send_in_trouble(&mut ws, &ro, &mut tmp).await == 0 {
            acked.extend(tmp);
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !accepted {
        let r = send_batch(&mut ws, &ro[..1]).await;
        let log = server.log();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        panic!("the entries refused on a read-only filesystem were not accepted after it became writable: {r:?}\nlog tail: {tail:#?}");
    }
    let log = server.log();
    println!("log lines about storage trouble: {}", log.lines().filter(|l| l.contains("ERROR")).count());

    // 3. SIGKILL, restart: every acked change is there; the files are intact.
    drop(ws);
    server.kill();
    let server = Server::start(dir.path(), &["--idle-tenant-secs", "1"]);
    let n = verify(&server.addr, &tenant, &token, &acked).await;
    println!("after SIGKILL and restart: {} acked changes all present ({n} stored)", acked.len());
    drop(server);
    integrity_ok(&dir.path().join("auth.db"));
    integrity_ok(&tenants.join(format!("{tenant}.db")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_tenant_database() {
    if finwise_testkit::backend::sqlite_only("replaces a tenant's SQLite file by a directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--idle-tenant-secs", "1"]);
    let (token, tenant) = setup(&server.addr).await;
    let mut acked = Acked::new();
    let mut ws = connect(&server.addr, &tenant, &token).await;
    send_ok(&mut ws, &entries(&tenant, 30, 100, "before"), &mut acked).await;
    drop(ws);
    server.kill();

    // Move the database (and its WAL: it holds committed changes after a kill) aside and put a
    // directory in its place.
    let db = dir.path().join(format!("tenants/{tenant}.db"));
    let aside = dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let files = ["", "-wal", "-shm"];
    for s in files {
        let p = PathBuf::from(format!("{}{s}", db.display()));
        if p.exists() {
            std::fs::rename(&p, aside.join(format!("db{s}"))).unwrap();
        }
    }
    std::fs::create_dir(&db).unwrap();
    let server = Server::start(dir.path(), &["--idle-tenant-secs", "1"]);
    let mut ws = connect(&server.addr, &tenant, &token).await;
    let batch = entries(&tenant, 20, 100, "blocked");
    let refused = send_in_trouble(&mut ws, &batch, &mut acked).await;
    assert_eq!(refused, batch.len(), "an unopenable database acked something");
    // The log is read by a background thread; give it a moment to catch up.
    let mut log = server.log();
    for _ in 0..50 {
        if log.contains("cannot open tenant database") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = server.log();
    }
    let line = log
        .lines()
        .find(|l| l.contains("cannot open tenant database"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    println!("unopenable database: {refused} entries refused with storage_error; log: {line}");

    // Trouble cleared: the database is back, the same entries are accepted.
    std::fs::remove_dir(&db).unwrap();
    for s in files {
        let p = aside.join(format!("db{s}"));
        if p.exists() {
            std::fs::rename(&p, format!("{}{s}", db.display())).unwrap();
        }
    }
    send_ok(&mut ws, &batch, &mut acked).await;
    let n = verify(&server.addr, &tenant, &token, &acked).await;
    assert_eq!(n, acked.len());
    drop(ws);
    drop(server);
    integrity_ok(&db);
    println!("unopenable database: after recovery {n} changes stored, all acked ones present, integrity ok");
}
