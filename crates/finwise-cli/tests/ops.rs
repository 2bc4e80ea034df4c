//! Operator commands of the `finwise` binary: `config` precedence, `backup`/`restore` under
//! write load, `import-legacy` (a synthetic 0.4 dir, and the real sample from ../shared when
//! present), `doctor` on planted problems. Servers run in-process on 127.0.0.1:0; the commands
//! run as separate processes, as an operator would run them.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use finwise_testkit::{get_json, process::ServerProcess, TestServer, Ws};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_finwise");
const SECRET: &str = "ops-test-secret-ops-test-secret-ops!";

fn finwise(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    for k in [
        "FINWISE_CONFIG",
        "FINWISE_DATA_DIR",
        "FINWISE_ADDR",
        "FINWISE_MESSAGES_PER_SECOND",
        "FINWISE_LOG",
        "CORS_ORIGINS",
    ] {
        c.env_remove(k);
    }
    c.args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

// ---- servers from the test kit, and what these tests ask of them ----

/// A server to talk to: in-process (from the kit) or the address of a process.
struct Server {
    addr: SocketAddr,
    inner: Option<TestServer>,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let config = finwise_testkit::base_config(dir);
        let config = finwise_server::Config { jwt_secret: Some(SECRET.into()), ..config };
        let inner = TestServer::start_with(config).await;
        Server { addr: inner.addr, inner: Some(inner) }
    }

    /// The server process's address.
    fn at(p: &ServerProcess) -> Server {
        Server { addr: p.addr.parse().unwrap(), inner: None }
    }

    fn url(&self, p: &str) -> String {
        format!("http://{}{p}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(s) = self.inner.as_mut() {
            s.stop().await;
        }
    }

    /// Logs in; returns (user id, access token).
    async fn login(&self, login: &str, password: &str) -> (String, String) {
        let r = reqwest::Client::new()
            .post(self.url("/login"))
            .json(&json!({"username_or_email": login, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login {login}: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        (v["uuid"].as_str().unwrap().into(), v["access_token"].as_str().unwrap().into())
    }

    async fn register(&self, name: &str, password: &str) -> (String, String) {
        let v = finwise_testkit::register_and_login(&self.url(""), name, password).await;
        (v["uuid"].as_str().unwrap().into(), v["access_token"].as_str().unwrap().into())
    }

    async fn tenant(&self, token: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let r = reqwest::Client::new()
            .post(self.url("/tenants/"))
            .bearer_auth(token)
            .json(&json!({"uuid": id, "name": format!("T {}", &id[..8])}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        id
    }

    async fn ws(&self, tenant: &str, token: &str) -> Ws {
        Ws::connect(&format!("ws://{}/ws_finwise/ws/{tenant}?token={token}", self.addr)).await
    }
}

/// The tenant's digest and entity count.
async fn digest(ws: &mut Ws, tenant: &str) -> (String, u64) {
    let v = ws.status(tenant).await;
    (v["tenant_digest"].as_str().unwrap().to_owned(), v["entity_count"].as_u64().unwrap())
}

fn tag_entry(tenant: &str, id: &str, name: &str) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "tenantId": tenant, "entityType": "Tag", "entityId": id,
        "operationType": "create", "timestamp": now, "status": "processing", "attempts": 1,
        "payload": {"id": id, "name": name, "updated_at": finwise_protocol::time::format_ms(now)},
    })
}

// ---- config ----

#[test]
fn config_precedence_flag_over_env_over_file_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("finwise.toml");
    std::fs::write(
        &file,
        "addr = \"0.0.0.0:9999\"\ndata_dir = \"/from/file\"\nmessages_per_second = 11\nmax_in_flight = 64\njwt_secret = \"do-not-print-me\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = ok(finwise(
        &["config", "--messages-per-second", "33"],
        &[("FINWISE_CONFIG", f), ("FINWISE_DATA_DIR", "/from/env"), ("FINWISE_MESSAGES_PER_SECOND", "22")],
    ));
    assert!(out.contains("messages_per_second = 33  # flag"), "{out}");
    assert!(out.contains("data_dir = \"/from/env\"  # env"), "{out}");
    assert!(out.contains("addr = \"0.0.0.0:9999\"  # file"), "{out}");
    assert!(out.contains("max_in_flight = 64  # file"), "{out}");
    assert!(out.contains("tenant_queue = 4096  # default"), "{out}");
    assert!(out.contains("jwt_secret = \"***\"  # file"), "{out}");
    assert!(!out.contains("do-not-print-me"), "{out}");
    // --config on the command line works too, and no file at all gives the defaults.
    let out = ok(finwise(&["config", "--config", f], &[]));
    assert!(out.contains("data_dir = \"/from/file\"  # file"), "{out}");
    let out = ok(finwise(&["config"], &[]));
    assert!(out.contains("addr = \"127.0.0.1:8000\"  # default"), "{out}");
    assert!(out.contains("# jwt_secret is unset"), "{out}");
    // A typo in the file is an error naming the key.
    std::fs::write(&file, "max_in_fligt = 3\n").unwrap();
    let o = finwise(&["config", "--config", f], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_in_fligt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("finwise.toml");
    std::fs::write(&file, format!("addr = \"127.0.0.1:0\"\ndata_dir = {:?}\n", data.to_str().unwrap())).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env("FINWISE_LOG", "warn")
        .env_remove("FINWISE_DATA_DIR")
        .env_remove("FINWISE_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let url = format!("{}/ready", line.trim().strip_prefix("listening on ").unwrap_or_default());
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(ready, "the server became ready");
    assert!(data.join("auth.db").exists(), "the data dir of the file was used");
}

// ---- backup and restore ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_restores_to_a_server_with_the_same_data() {
    if finwise_testkit::backend::sqlite_only("`finwise backup`/`restore` copy a data dir's SQLite files (PostgreSQL is backed up with pg_dump or its replicas)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let (_, token) = server.register("backup", "correct horse battery").await;
    let tenants = [server.tenant(&token).await, server.tenant(&token).await];

    // Writers keep going during the backup; we record what was acked before it started.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut writers = Vec::new();
    for t in &tenants {
        let mut ws = server.ws(t, &token).await;
        let (t, stop_rx, acked_tx) = (t.clone(), stop_rx.clone(), acked_tx.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !*stop_rx.borrow() {
                let id = uuid::Uuid::new_v4().to_string();
                let e = tag_entry(&t, &id, &format!("tag {n}"));
                ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
                let eid = e["id"].clone();
                let a = ws.recv_until(|v| v["id"] == eid).await;
                assert_eq!(a["type"], "sync_ack", "{a}");
                let _ = acked_tx.send((t.clone(), id));
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut acked_before: Vec<(String, String)> = Vec::new();
    while let Ok(x) = acked_rx.try_recv() {
        acked_before.push(x);
    }
    let backup = dir.path().join("backup");
    let (d, b) = (data.to_str().unwrap().to_owned(), backup.to_str().unwrap().to_owned());
    let out =
        tokio::task::spawn_blocking(move || ok(finwise(&["backup", "--data-dir", &d, "--to", &b], &[]))).await.unwrap();
    assert!(out.contains("2 tenant database(s)"), "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(true).unwrap();
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    assert!(total as usize > acked_before.len(), "writes went on during the backup");
    assert!(!acked_before.is_empty());
    server.stop().await;

    // The backup's own digests (computed from its files), then a restore served by a new server.
    let mut expected = BTreeMap::new();
    for t in &tenants {
        let id = finwise_server::TenantId::parse(t).unwrap();
        let mut reader =
            finwise_server::storage::sqlite::SqliteReader::open(&backup.join("tenants").join(format!("{t}.db")))
                .unwrap();
        let st = reader.read(|r| finwise_server::loads::status_of(r, &id, &[])).unwrap();
        expected.insert(t.clone(), (st.tenant_digest, st.entity_count));
    }
    let restored = dir.path().join("restored");
    ok(finwise(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()], &[]));
    // Restoring over a data dir that has databases is refused.
    let o = finwise(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    let server = Server::start(&restored).await;
    // The same account works (auth.db restored); the old token too (same signing secret).
    let (_, token) = server.login("backup@example.org", "correct horse battery").await;
    for t in &tenants {
        let mut ws = server.ws(t, &token).await;
        let (digest, count) = digest(&mut ws, t).await;
        assert_eq!((digest, count), expected[t], "tenant {t} serves what the backup holds");
        let load = ws.load(t).await;
        let ids: HashSet<&str> =
            load["payload"]["tags"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len() as u64, count);
        for (tt, id) in &acked_before {
            if tt == t {
                assert!(ids.contains(id.as_str()), "{id} was acked before the backup began but is missing");
            }
        }
    }
    server.stop().await;
    let out = ok(finwise(&["doctor", "--data-dir", restored.to_str().unwrap()], &[]));
    assert!(out.contains("no problems found"), "{out}");
}

// ---- import-legacy ----

const NUMERIC_TOLERANCE: f64 = 1e-9;

/// Field values equal, numbers compared as numbers (0.4 sent `3850.0` where we may send `3850`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < NUMERIC_TOLERANCE,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A logo file of the synthetic 0.4 dir, and its bytes (a 1×1 PNG).
const LOGO_ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const ONE_PIXEL_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x01, 0x7a, 0x5e, 0xab, 0x3f, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A FinWise 0.4 data dir as the Python backend leaves it: `db/users.db`, `tenant_databases/`,
/// an older tenant schema (missing columns), an unknown account type, an orphan tenant file.
fn synthetic_legacy_dir(root: &Path, password: &str) -> (String, String) {
    let user = "0b7e3c3a-1111-4c1e-9d2f-000000000001";
    let tenant = "5d1f9a52-2222-4b8a-8a1b-000000000002";
    std::fs::create_dir_all(root.join("db")).unwrap();
    std::fs::create_dir_all(root.join("tenant_databases")).unwrap();
    let logos = root.join("logo_storage").join(tenant);
    std::fs::create_dir_all(&logos).unwrap();
    std::fs::write(logos.join(format!("{LOGO_ID}.png")), ONE_PIXEL_PNG).unwrap();
    std::fs::write(logos.join("notes.txt"), "not a logo").unwrap();
    let c = rusqlite::Connection::open(root.join("db/users.db")).unwrap();
    let hash = bcrypt::hash(password, 4).unwrap();
    c.execute_batch(
        "CREATE TABLE users (uuid VARCHAR NOT NULL PRIMARY KEY, name VARCHAR, email VARCHAR NOT NULL, hashed_password VARCHAR, \"createdAt\" DATETIME, \"updatedAt\" DATETIME);
         CREATE TABLE tenants (uuid VARCHAR NOT NULL PRIMARY KEY, name VARCHAR, user_id VARCHAR NOT NULL, \"createdAt\" DATETIME, \"updatedAt\" DATETIME);
         CREATE TABLE user_settings (id VARCHAR NOT NULL PRIMARY KEY, user_id VARCHAR NOT NULL, log_level VARCHAR NOT NULL, log_categories TEXT NOT NULL, history_retention_days INTEGER NOT NULL, created_at DATETIME, updated_at DATETIME);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO users VALUES (?1, 'Jörg Ölsen', 'joerg@example.de', ?2, '2025-03-01 10:00:00.123456', '2025-03-01 10:00:00.123460')",
        rusqlite::params![user, hash],
    )
    .unwrap();
    c.execute("INSERT INTO users VALUES ('0b7e3c3a-1111-4c1e-9d2f-000000000009', 'Sync Only', 'sync@example.de', NULL, NULL, NULL)", []).unwrap();
    c.execute(
        "INSERT INTO user_settings VALUES ('s-1', ?1, 'DEBUG', '[\"store\", \"sync\"]', 30, '2025-03-01 10:00:00.000000', '2025-03-04 09:00:00.500000')",
        rusqlite::params![user],
    )
    .unwrap();
    c.execute(
        "INSERT INTO tenants VALUES (?1, 'Haushalt', ?2, '2025-03-01 10:00:01.000000', '2025-03-02 11:00:00.000000')",
        rusqlite::params![tenant, user],
    )
    .unwrap();
    let t = rusqlite::Connection::open(root.join(format!("tenant_databases/finwiseTenantDB_{tenant}.db"))).unwrap();
    t.execute_batch(
        r#"CREATE TABLE account_groups (id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, "sortOrder" INTEGER NOT NULL, "createdAt" DATETIME, "updatedAt" DATETIME);
        CREATE TABLE accounts (id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, description TEXT, note TEXT, "accountType" VARCHAR NOT NULL,
            "isActive" BOOLEAN NOT NULL, "isOfflineBudget" BOOLEAN NOT NULL, "accountGroupId" VARCHAR NOT NULL, "sortOrder" INTEGER NOT NULL,
            iban VARCHAR, balance NUMERIC(10,2) NOT NULL, "creditLimit" NUMERIC(10,2), "offset" INTEGER NOT NULL, "createdAt" DATETIME, "updatedAt" DATETIME);
        CREATE TABLE tags (id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, "parentTagId" VARCHAR, color VARCHAR, icon VARCHAR, "createdAt" DATETIME, "updatedAt" DATETIME);
        CREATE TABLE transactions (id VARCHAR PRIMARY KEY, "accountId" VARCHAR NOT NULL, "categoryId" VARCHAR, date VARCHAR NOT NULL, "valueDate" VARCHAR NOT NULL,
            amount NUMERIC(10,2) NOT NULL, description TEXT NOT NULL, note TEXT, "tagIds" JSON NOT NULL, type VARCHAR NOT NULL,
            "runningBalance" NUMERIC(10,2) NOT NULL, "counterTransactionId" VARCHAR, "planningTransactionId" VARCHAR,
            "isReconciliation" BOOLEAN NOT NULL, "isCategoryTransfer" BOOLEAN NOT NULL, "transferToAccountId" VARCHAR, reconciled BOOLEAN NOT NULL,
            "toCategoryId" VARCHAR, payee VARCHAR, "createdAt" DATETIME, "updatedAt" DATETIME);
        INSERT INTO account_groups VALUES ('g1', 'Girokonten', 0, '2025-03-01 10:00:02.000000', '2025-03-01 10:00:01.500000');
        INSERT INTO accounts VALUES ('a1', 'Girokonto', NULL, 'Müller ü', 'giro', 1, 0, 'g1', 2, 'DE89 3704', 3850, 1500.0, 0, '2025-03-01 10:00:03.000000', '2025-03-01 10:00:02.250000');
        INSERT INTO accounts VALUES ('a2', 'Old', NULL, NULL, 'checking', 0, 1, 'g1', 0, NULL, -87.43, NULL, 0, '2025-03-01 10:00:04.000000', '2025-03-01 10:00:03.000000');
        INSERT INTO tags VALUES ('t1', 'Urlaub 🏖', NULL, '#FF9800', 'mdi-beach', '2025-03-01 10:00:05.000000', '2025-03-01 10:00:04.000000');
        INSERT INTO transactions VALUES ('x1', 'a1', 'deleted-category', '2025-02-28', '2025-03-01', -12.345, 'Einkauf', NULL, '["t1", "g\u00f6ne"]', 'EXPENSE',
            3837.66, NULL, NULL, 0, 0, NULL, 1, NULL, 'Supermarkt', '2025-03-01 10:00:06.000000', '2025-03-01 10:00:05.999000');"#,
    )
    .unwrap();
    // An orphan file: a tenant deleted in 0.4 (row gone, file left).
    std::fs::write(root.join("tenant_databases/finwiseTenantDB_not-a-real-tenant.db"), b"").unwrap();
    (user.into(), tenant.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_synthetic_dir_over_the_wire() {
    if finwise_testkit::backend::sqlite_only(
        "`finwise import-legacy` writes a data dir (move it to PostgreSQL with `finwise migrate`)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy/data");
    let password = "Grüne Wiese 42";
    let (user, tenant) = synthetic_legacy_dir(&legacy, password);
    let data = dir.path().join("data");
    let out =
        ok(finwise(&["import-legacy", "--from", legacy.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], &[]));
    assert!(out.contains("users:    2 (1 without a password"), "{out}");
    assert!(out.contains("tenants:  1 (1 logo files)"), "{out}");
    assert!(out.contains("logo file notes.txt is not a PNG or JPEG logo"), "{out}");
    assert!(out.contains("accountType"), "the unknown account type is reported: {out}");
    assert!(out.contains("not-a-real-tenant"), "the orphan file is reported: {out}");

    let server = Server::start(&data).await;
    let (uid, token) = server.login("joerg@example.de", password).await;
    assert_eq!(uid, user);
    server.login("Jörg Ölsen", password).await;
    assert!(out.contains("settings: 1"), "{out}");
    let logo = reqwest::Client::new()
        .get(server.url(&format!("/api/v1/logos/{tenant}/{LOGO_ID}.png")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logo.status(), 200, "the 0.4 logo came along");
    assert_eq!(&logo.bytes().await.unwrap()[..], ONE_PIXEL_PNG);
    let settings = get_json(&server.url(&format!("/api/v1/user/settings/{user}")), &token).await;
    assert_eq!(
        (settings["log_level"].clone(), settings["log_categories"].clone(), settings["history_retention_days"].clone()),
        (json!("DEBUG"), json!(["store", "sync"]), json!(30)),
        "the 0.4 settings came along"
    );
    assert_eq!(settings["updated_at"], "2025-03-04T09:00:00.500000");
    let tenants = get_json(&server.url("/tenants/"), &token).await;
    assert_eq!(tenants[0]["uuid"], tenant);
    assert_eq!(tenants[0]["name"], "Haushalt");
    assert_eq!(tenants[0]["createdAt"], "2025-03-01T10:00:01.000000");
    let mut ws = server.ws(&tenant, &token).await;
    let load = ws.load(&tenant).await;
    let p = &load["payload"];
    let a1 = p["accounts"].as_array().unwrap().iter().find(|a| a["id"] == "a1").unwrap();
    assert_eq!(a1["name"], "Girokonto");
    assert_eq!(a1["note"], "Müller ü");
    assert_eq!(a1["isActive"], true);
    assert_eq!(a1["balance"].as_f64(), Some(3850.0));
    assert_eq!(a1["creditLimit"].as_f64(), Some(1500.0));
    assert_eq!(a1["sortOrder"], 2);
    assert_eq!(a1["logo_path"], Value::Null, "a column the old schema lacks is null");
    assert_eq!(a1["updated_at"], "2025-03-01T10:00:02.250Z");
    let a2 = p["accounts"].as_array().unwrap().iter().find(|a| a["id"] == "a2").unwrap();
    assert_eq!(a2["balance"].as_f64(), Some(-87.43));
    assert_eq!(a2["isOfflineBudget"], true);
    let t1 = &p["tags"][0];
    assert_eq!(t1["name"], "Urlaub 🏖");
    assert_eq!(t1["updated_at"], "2025-03-01T10:00:04.000Z");
    let x1 = &p["transactions"][0];
    assert_eq!(x1["tagIds"], json!(["t1", "göne"]), "0.4's JSON escapes are decoded");
    assert_eq!(x1["categoryId"], "deleted-category", "dangling references are kept");
    assert_eq!(x1["amount"].as_f64(), Some(-12.35));
    assert_eq!(x1["reconciled"], true);
    assert_eq!(x1["updated_at"], "2025-03-01T10:00:05.999Z");
    assert_eq!(x1["createdAt"], "2025-03-01T10:00:06.000Z");
    // Shared with a second user on the new server.
    server.register("zweite", "another good password").await;
    let r = reqwest::Client::new()
        .post(server.url(&format!("/tenants/{tenant}/members")))
        .bearer_auth(&token)
        .json(&json!({"email": "zweite@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;

    // Importing again changes nothing, and keeps what happened here since (members, the
    // password hash upgraded at the login).
    let out =
        ok(finwise(&["import-legacy", "--from", legacy.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], &[]));
    assert!(out.contains("unchanged (already imported, same or newer here): 5"), "{out}");
    let server = Server::start(&data).await;
    let (_, token) = server.login("joerg@example.de", password).await;
    let members = get_json(&server.url(&format!("/tenants/{tenant}/members")), &token).await;
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    server.stop().await;
    let auth = rusqlite::Connection::open(data.join("auth.db")).unwrap();
    let hash: String = auth.query_row("SELECT password_hash FROM users WHERE id = ?1", [&user], |r| r.get(0)).unwrap();
    assert!(hash.starts_with("$argon2"), "{hash}");

    // Unreadable input: a clear error, exit status 1.
    let o = finwise(
        &[
            "import-legacy",
            "--from",
            dir.path().join("nothing").to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory"));
    let bad = dir.path().join("bad/db");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("users.db"), b"this is not sqlite, it is a text file that is long enough to look like one")
        .unwrap();
    let o = finwise(
        &["import-legacy", "--from", dir.path().join("bad").to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a readable SQLite database"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// 0.4 installs often keep the central database and the tenant files apart (HOST_DB_PATH,
/// TENANT_DATABASE_DIR): `--central-db` and `--tenant-dir` name them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_with_separate_central_db_and_tenant_dir() {
    if finwise_testkit::backend::sqlite_only(
        "`finwise import-legacy` writes a data dir (move it to PostgreSQL with `finwise migrate`)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("made");
    let (_, tenant) = synthetic_legacy_dir(&legacy, "password 1234");
    let central = dir.path().join("etc/finwise/central.db");
    let tenants = dir.path().join("srv/tenants");
    std::fs::create_dir_all(central.parent().unwrap()).unwrap();
    std::fs::create_dir_all(tenants.parent().unwrap()).unwrap();
    std::fs::rename(legacy.join("db/users.db"), &central).unwrap();
    std::fs::rename(legacy.join("tenant_databases"), &tenants).unwrap();
    let data = dir.path().join("data");
    let (c, t, d) = (central.to_str().unwrap(), tenants.to_str().unwrap(), data.to_str().unwrap());
    // Without --tenant-dir nothing finds the tenant files: imported without data, and said so.
    let out = ok(finwise(&["import-legacy", "--central-db", c, "--data-dir", d], &[]));
    assert!(out.contains(&format!("tenant {tenant} ('Haushalt') has no database file")), "{out}");
    let out = ok(finwise(&["import-legacy", "--central-db", c, "--tenant-dir", t, "--data-dir", d], &[]));
    assert!(out.contains("transactions         1"), "{out}");
    let o = finwise(&["import-legacy", "--central-db", "/nonexistent/users.db", "--data-dir", d], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file (--central-db)"));
    let o = finwise(&["import-legacy", "--data-dir", d], &[]);
    assert!(!o.status.success(), "--from or --central-db is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_sample_matches_expected_over_the_wire() {
    if finwise_testkit::backend::sqlite_only(
        "`finwise import-legacy` writes a data dir (move it to PostgreSQL with `finwise migrate`)",
    ) {
        return;
    }
    let Some(sample) = finwise_testkit::backend::shared_legacy_sample() else {
        println!("NOTE: ../shared/spec/legacy-data is absent; the real 0.4 sample is not tested here");
        return;
    };
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(sample.join("EXPECTED.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = ok(finwise(
        &["import-legacy", "--from", sample.join("data").to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[],
    ));
    println!("{out}");
    let server = Server::start(&data).await;
    let mut tokens = BTreeMap::new();
    for u in expected["users"].as_array().unwrap() {
        let pw = u["password"].as_str().unwrap();
        let (uid, token) = server.login(u["email"].as_str().unwrap(), pw).await;
        assert_eq!(uid, u["uuid"].as_str().unwrap());
        server.login(u["name"].as_str().unwrap(), pw).await;
        tokens.insert(uid, token);
    }
    for t in expected["tenants"].as_array().unwrap() {
        let tid = t["uuid"].as_str().unwrap();
        let token = &tokens[t["owner"].as_str().unwrap()];
        let listed: Value = reqwest::Client::new()
            .get(server.url("/tenants/"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mine = listed.as_array().unwrap().iter().find(|x| x["uuid"] == tid).expect("the owner is a member");
        assert_eq!(mine["name"], t["name"]);
        assert_eq!(mine["createdAt"], t["createdAt"]);

        let td = &expected["tenant_data"][tid];
        let mut ws = server.ws(tid, token).await;
        let load = ws.load(tid).await;
        let mut compared = 0;
        for (etype, key) in expected["entity_type_keys"].as_object().unwrap() {
            let key = key.as_str().unwrap();
            let ours: BTreeMap<&str, &Value> =
                load["payload"][key].as_array().unwrap().iter().map(|e| (e["id"].as_str().unwrap(), e)).collect();
            let live: HashSet<&str> =
                td["live_ids"][etype].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(ours.keys().copied().collect::<HashSet<_>>(), live, "{tid} {etype}: live ids");
            for d in td["deleted_ids"][etype].as_array().into_iter().flatten() {
                assert!(!ours.contains_key(d.as_str().unwrap()), "deleted {etype} {d} came back");
            }
            for theirs in td["initial_data_load"]["payload"][key].as_array().unwrap() {
                let id = theirs["id"].as_str().unwrap();
                let mine = ours[id];
                for (field, v) in theirs.as_object().unwrap() {
                    if ["updated_at", "updatedAt", "createdAt"].contains(&field.as_str()) {
                        continue;
                    }
                    assert!(same(&mine[field], v), "{tid} {etype} {id}.{field}: ours {} vs 0.4 {}", mine[field], v);
                }
                let stored = &td["stored_timestamps"][etype][id];
                let want = finwise_protocol::time::format_ms(
                    finwise_protocol::time::parse_ms(stored["updatedAt"].as_str().unwrap()).unwrap(),
                );
                assert_eq!(mine["updated_at"], want.as_str(), "{etype} {id}: updated_at is 0.4's updatedAt");
                if etype == "Transaction" {
                    let created = finwise_protocol::time::format_ms(
                        finwise_protocol::time::parse_ms(stored["createdAt"].as_str().unwrap()).unwrap(),
                    );
                    assert_eq!(mine["createdAt"], created.as_str());
                }
                compared += 1;
            }
        }
        assert!(compared > 0);
        println!("tenant {tid}: {compared} entities match EXPECTED.json");
    }
    server.stop().await;
}

// ---- doctor ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_planted_problems_and_names_the_fix() {
    if finwise_testkit::backend::sqlite_only(
        "plants problems in a data dir's files (`finwise doctor --database-url` is tested in migrate.rs)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let (_, token) = server.register("doctor", "correct horse battery").await;
    let (good, lost) = (server.tenant(&token).await, server.tenant(&token).await);
    let mut ws = server.ws(&good, &token).await;
    for i in 0..5 {
        let e = tag_entry(&good, &uuid::Uuid::new_v4().to_string(), &format!("t{i}"));
        ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
        ws.recv_until(|v| v["type"] == "sync_ack").await;
    }
    let (digest, _) = digest(&mut ws, &good).await;
    drop(ws);
    server.stop().await;
    let d = data.to_str().unwrap();

    let healthy = ok(finwise(&["doctor", "--data-dir", d, "--tenant", &good], &[]));
    assert!(healthy.contains("no problems found"), "{healthy}");
    assert!(healthy.contains(&digest), "the recomputed digest is the one served: {healthy}");

    // Plant: a tenant without a file, a file without a tenant, a damaged file, an old schema,
    // a secret others can read.
    std::fs::remove_file(data.join(format!("tenants/{lost}.db"))).unwrap();
    let orphan = uuid::Uuid::new_v4().to_string();
    std::fs::copy(data.join(format!("tenants/{good}.db")), data.join(format!("tenants/{orphan}.db"))).unwrap();
    let damaged = uuid::Uuid::new_v4().to_string();
    std::fs::write(data.join(format!("tenants/{damaged}.db")), vec![0x42u8; 8192]).unwrap();
    let old = uuid::Uuid::new_v4().to_string();
    let c = rusqlite::Connection::open(data.join(format!("tenants/{old}.db"))).unwrap();
    c.execute_batch("CREATE TABLE x (a); PRAGMA user_version = 0;").unwrap();
    drop(c);
    std::fs::write(data.join("jwt.secret"), "c2VjcmV0").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("jwt.secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let o = finwise(&["doctor", "--data-dir", d], &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let problem = |needle: &str| {
        let i = out
            .lines()
            .position(|l| l.starts_with("PROBLEM") && l.contains(needle))
            .unwrap_or_else(|| panic!("no problem about {needle}:\n{out}"));
        let fix = out.lines().nth(i + 1).unwrap();
        assert!(fix.trim_start().starts_with("fix: "), "{fix}");
        fix.to_owned()
    };
    assert!(problem(&format!("tenant {lost}")).contains("restore"));
    assert!(problem(&format!("{orphan}.db has no tenant")).contains("mv "));
    problem(&format!("{damaged}.db"));
    assert!(problem(&format!("{old}.db: schema version 0")).contains("finwise serve --data-dir"));
    #[cfg(unix)]
    assert!(problem("jwt.secret is readable by others").contains("chmod 600"));
    assert!(out.contains("problem(s) found"), "{out}");
}

// ---- logs ----

/// `--log-json`: every line of a connection carries its `conn` id and tenant, every line of an
/// HTTP request its `request_id`; the human format shows the same spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_connection_and_request_ids() {
    for json_logs in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = ServerProcess::start_cmd(dir.path(), |c| {
            if json_logs {
                c.arg("--log-json");
            }
            c.env("FINWISE_LOG", "debug");
        });
        let server = Server::at(&child);
        for _ in 0..200 {
            if reqwest::get(server.url("/ready")).await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (_, token) = server.register("logs", "correct horse battery").await;
        let tenant = server.tenant(&token).await;
        let mut ws = server.ws(&tenant, &token).await;
        let e = tag_entry(&tenant, &uuid::Uuid::new_v4().to_string(), "x");
        ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
        ws.recv_until(|v| v["type"] == "sync_ack").await;
        drop(ws);
        tokio::time::sleep(Duration::from_millis(300)).await;
        child.kill();
        let log = child.log();
        if json_logs {
            let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            assert!(!lines.is_empty(), "{log}");
            let ws_lines: Vec<&Value> = lines.iter().filter(|l| l["target"] == "finwise_server::ws").collect();
            assert!(ws_lines.iter().any(|l| l["fields"]["message"] == "connected"), "{log}");
            assert!(ws_lines.iter().any(|l| l["fields"]["message"] == "disconnected"), "{log}");
            for l in &ws_lines {
                assert!(l["span"]["conn"].is_u64(), "a connection line without its conn id: {l}");
                assert_eq!(l["span"]["tenant"], tenant.as_str(), "{l}");
            }
            let answered: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "answered").collect();
            assert!(answered.len() >= 4, "{log}");
            let mut ids = HashSet::new();
            for l in &answered {
                let id = l["span"]["request_id"].as_str().unwrap_or_else(|| panic!("no request id: {l}"));
                ids.insert(id.to_owned());
            }
            assert_eq!(ids.len(), answered.len(), "one id per request");
            // The registration's own line is inside its request span.
            let registered = lines.iter().find(|l| l["fields"]["message"] == "user registered").unwrap();
            assert!(registered["span"]["request_id"].is_string(), "{registered}");
        } else {
            assert!(log.lines().any(|l| l.contains("conn{conn=1") && l.contains("connected")), "{log}");
            assert!(log.lines().any(|l| l.contains("request{request_id=") && l.contains("user registered")), "{log}");
        }
    }
}

// ---- the real binary as a process ----

/// Starts `finwise serve` on port 0 over `dir` (the kit's process); returns it and its address.
fn spawn_server(dir: &Path, extra: &[&str]) -> (ServerProcess, Server) {
    let p = ServerProcess::start(dir, extra);
    let server = Server::at(&p);
    (p, server)
}

async fn wait_ready(server: &Server) {
    for _ in 0..200 {
        if reqwest::get(server.url("/ready")).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server not ready");
}

// ---- threads of the process ----

/// The binary's threads as the decisions in docs/ARCHITECTURE.md set them: the async runtime's
/// threads run `RUNTIME_NICE` levels below the tenant writers (which must therefore be started
/// from the main thread: a thread inherits its creator's nice value), and the `mem-purge` thread
/// runs. Read from `/proc` of the real process.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_threads_yield_to_the_writers_and_memory_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = spawn_server(&dir.path().join("data"), &[]);
    wait_ready(&server).await;
    let pid = child.child.id();
    // (thread name, nice) of every thread; the nice value is field 19 of `stat`, and the name in
    // parentheses may hold spaces, so the fields are counted after its closing parenthesis
    let threads: Vec<(String, i32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
            let (head, rest) = stat.rsplit_once(')').unwrap();
            let name = head.split_once('(').unwrap().1.to_owned();
            (name, rest.split_whitespace().nth(16).unwrap().parse().unwrap())
        })
        .collect();
    let nice_of =
        |prefix: &str| -> Vec<i32> { threads.iter().filter(|(n, _)| n.starts_with(prefix)).map(|&(_, v)| v).collect() };
    // the main thread carries the program's name; the hashing threads' names start with it too
    let main: Vec<i32> = threads.iter().filter(|(n, _)| n == "finwise").map(|&(_, v)| v).collect();
    assert_eq!(main.len(), 1, "{threads:?}");
    let (writers, runtime) = (nice_of("writer-"), nice_of("tokio-rt"));
    assert!(!writers.is_empty() && !runtime.is_empty(), "{threads:?}");
    let lowered = (main[0] + finwise_server::writer::RUNTIME_NICE).min(19);
    assert!(writers.iter().all(|&n| n == main[0]), "writers at the main thread's nice: {threads:?}");
    assert!(runtime.iter().all(|&n| n == lowered), "runtime threads {lowered}: {threads:?}");
    assert_eq!(nice_of("mem-purge").len(), 1, "{threads:?}");
    child.kill();
}

// ---- one server per data dir ----

/// A second server on a data dir in use is refused with the holder's pid (and never says
/// `listening on`); so are restore and import-legacy into it; backup and doctor work beside it;
/// after the holder is SIGKILLed the dir is free again and nothing was changed meanwhile.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_data_dir() {
    if finwise_testkit::backend::sqlite_only("the data dir lock; any number of servers share a PostgreSQL database") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, server) = spawn_server(&data, &[]);
    wait_ready(&server).await;
    let (_, token) = server.register("lock", "correct horse battery").await;
    let tenant = server.tenant(&token).await;
    let mut ws = server.ws(&tenant, &token).await;
    let e = tag_entry(&tenant, &uuid::Uuid::new_v4().to_string(), "before");
    ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
    assert_eq!(ws.recv_until(|v| v["id"] == e["id"]).await["type"], "sync_ack");
    let before = digest(&mut ws, &tenant).await;
    let holder = format!("in use by finwise serve (pid {})", child.child.id());
    let d = data.to_str().unwrap().to_owned();

    let second = finwise(&["serve", "--addr", "127.0.0.1:0", "--data-dir", &d], &[]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.starts_with("error: ") && err.contains(&holder), "{err}");
    assert!(!stdout(&second).contains("listening on"), "{}", stdout(&second));

    let backup = dir.path().join("backup");
    let out = ok(finwise(&["backup", "--data-dir", &d, "--to", backup.to_str().unwrap()], &[]));
    assert!(out.contains("1 tenant database(s)"), "{out}");
    let out = stdout(&finwise(&["doctor", "--data-dir", &d], &[]));
    assert!(out.contains(&holder), "doctor names the running server: {out}");

    let restore = finwise(&["restore", "--from", backup.to_str().unwrap(), "--data-dir", &d], &[]);
    assert_eq!(restore.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&restore.stderr).contains(&holder));
    let legacy = dir.path().join("legacy/data");
    synthetic_legacy_dir(&legacy, "Grüne Wiese 42");
    let import = finwise(&["import-legacy", "--from", legacy.to_str().unwrap(), "--data-dir", &d], &[]);
    assert_eq!(import.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&import.stderr).contains(&holder));

    assert_eq!(digest(&mut ws, &tenant).await, before, "the refused commands changed nothing");
    drop(ws);
    child.kill();
    let (mut child, server) = spawn_server(&data, &[]);
    wait_ready(&server).await;
    let mut ws = server.ws(&tenant, &token).await;
    assert_eq!(digest(&mut ws, &tenant).await, before);
    child.kill();
}

// ---- the web app inside the binary ----

/// A copy of the binary, run from a directory without `web/`, serves the app built into it;
/// a `--web-dir` without `index.html` is named in a warning instead of a silent 404.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_built_in_web_app_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("finwise");
    std::fs::copy(BIN, &copy).unwrap();
    let run = |extra: &[&str]| {
        let mut child = Command::new(&copy)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir", "d"])
            .args(extra)
            .current_dir(dir.path())
            .env("FINWISE_LOG", "warn")
            .env_remove("FINWISE_CONFIG")
            .env_remove("FINWISE_WEB_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
        (child, url)
    };
    let (mut child, url) = run(&["--web-dir", "no-such-dir"]);
    let index = reqwest::get(format!("{url}/")).await.unwrap();
    let status = index.status();
    let body = index.text().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("no-such-dir") && log.contains("no index.html"), "the missing web dir is named: {log}");
    if !finwise_server::web::embedded() {
        // built without Node.js: the server must say so, never answer a silent 404
        assert_eq!(status, 404);
        assert!(log.contains("built without the web app"), "{log}");
        eprintln!("note: this build carries no web app (web/dist was not built); only the warning was checked");
        return;
    }
    assert_eq!(status, 200);
    assert!(body.contains("<div id=\"app\">"), "{body}");
    let (mut child, url) = run(&[]);
    for path in ["/", "/sw.js", "/some/app/route"] {
        let r = reqwest::get(format!("{url}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        let etag = r.headers()["etag"].clone();
        let again =
            reqwest::Client::new().get(format!("{url}{path}")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let html = reqwest::get(format!("{url}/")).await.unwrap().text().await.unwrap();
    let script = html.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("a script in index.html");
    let r = reqwest::get(format!("{url}{script}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(reqwest::get(format!("{url}/assets/missing.js")).await.unwrap().status(), 404);
    child.kill().unwrap();
    child.wait().unwrap();
}

// ---- SIGTERM ----

/// The real binary on SIGTERM: clients get `status: shutdown` after the acks of what they sent,
/// the process exits 0, and a restart serves every acked change.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| spawn_server(dir, &[]);
    let (mut child, server) = start(dir.path());
    wait_ready(&server).await;
    let (_, token) = server.register("sigterm", "correct horse battery").await;
    let tenant = server.tenant(&token).await;
    let mut ws = server.ws(&tenant, &token).await;
    let mut sent = HashSet::new();
    for i in 0..200 {
        let e = tag_entry(&tenant, &uuid::Uuid::new_v4().to_string(), &format!("t{i}"));
        sent.insert(e["payload"]["id"].as_str().unwrap().to_owned());
        ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
    }
    ws.send(&json!({"type": "ping", "timestamp": 1})).await;
    let mut acks = 0;
    loop {
        let v = ws.recv().await;
        if v["type"] == "sync_ack" {
            acks += 1;
        }
        if v["type"] == "pong" {
            break;
        }
    }
    let pid = child.child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let mut shutdown = false;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.inner.next()).await.expect("the server answers");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "sync_ack" {
                    assert!(!shutdown);
                    acks += 1;
                } else if v["type"] == "status" && v["status"] == "shutdown" {
                    shutdown = true;
                }
            }
            Some(Ok(Message::Close(f))) => {
                assert_eq!(f.map(|f| u16::from(f.code)), Some(1001));
                break;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    assert!(shutdown, "status: shutdown was sent");
    assert_eq!(acks, sent.len(), "every entry read before SIGTERM was acked");
    let status = tokio::task::spawn_blocking(move || child.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit status {status}");

    let (mut child, server) = start(dir.path());
    wait_ready(&server).await;
    let mut ws = server.ws(&tenant, &token).await;
    let load = ws.load(&tenant).await;
    let got: HashSet<String> =
        load["payload"]["tags"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, sent);
    child.kill();
}
