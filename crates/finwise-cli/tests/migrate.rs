//! `finwise migrate` over the real binary: a populated data dir is copied into an empty
//! PostgreSQL schema, served from there (same digest and seqs; an old cursor gets a delta, not a
//! reload; the old tokens and password work), copied back into a new data dir, and checked with
//! `finwise doctor --database-url`. A non-empty target is refused.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use finwise_testkit::{
    backend, entry, find, new_id,
    process::{account, ServerProcess},
    ts, Ws,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_finwise");

fn database() -> Option<String> {
    backend::fresh_schema_url("t_migrate")
}

fn finwise(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("FINWISE_")) {
            c.env_remove(k);
        }
    }
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "failed: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A server on the data dir `dir` (SQLite) or, with `url`, on PostgreSQL.
fn server(dir: &Path, url: Option<&str>) -> ServerProcess {
    let url = url.map(str::to_owned);
    ServerProcess::start_cmd(dir, move |c| {
        c.env_remove("FINWISE_DATABASE_URL");
        if let Some(u) = url {
            c.env("FINWISE_DATABASE_URL", u);
        }
    })
}

async fn ws(s: &ServerProcess, tenant: &str, token: &str) -> Ws {
    Ws::connect(&format!("ws://{}/ws_finwise/ws/{tenant}?token={token}", s.addr)).await
}

async fn status(s: &ServerProcess, tenant: &str, token: &str) -> (String, u64, i64) {
    let mut w = ws(s, tenant, token).await;
    let st = w.status(tenant).await;
    (st["tenant_digest"].as_str().unwrap().into(), st["entity_count"].as_u64().unwrap(), st["seq"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_moves_to_postgres_and_back_and_clients_resume() {
    let Some(url) = database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A populated data dir: two tenants, creates, updates, deletes (tombstones), retried entries.
    let source = server(&data, None);
    let (token, tenants) = account(&source.addr, "mover", 2).await;
    let mut cursor = 0;
    let mut late = Vec::new();
    for (n, tenant) in tenants.iter().enumerate() {
        let mut w = ws(&source, tenant, &token).await;
        let mut ids = Vec::new();
        for i in 0..40 {
            let id = new_id();
            let e = entry(tenant, "Tag", "create", json!({"id": id, "name": format!("t{n}-{i}"), "updated_at": ts(i)}));
            assert_eq!(w.entry(&e).await["type"], "sync_ack");
            ids.push(id);
        }
        for id in &ids[..5] {
            let e = entry(tenant, "Tag", "delete", json!({"id": id, "updated_at": ts(100)}));
            assert_eq!(w.entry(&e).await["type"], "sync_ack");
        }
        if n == 0 {
            cursor = w.load(tenant).await["seq"].as_i64().unwrap();
            // changes after the device's cursor: one update, one delete
            let e = entry(tenant, "Tag", "update", json!({"id": ids[10], "name": "renamed", "updated_at": ts(200)}));
            assert_eq!(w.entry(&e).await["type"], "sync_ack");
            let e = entry(tenant, "Tag", "delete", json!({"id": ids[11], "updated_at": ts(200)}));
            assert_eq!(w.entry(&e).await["type"], "sync_ack");
            late = vec![ids[10].clone(), ids[11].clone()];
        }
    }
    // an entry whose retry must stay a duplicate after the move
    let retried = entry(&tenants[1], "Tag", "create", json!({"id": new_id(), "name": "once", "updated_at": ts(300)}));
    let first_ack = ws(&source, &tenants[1], &token).await.entry(&retried).await;
    let mut before = Vec::new();
    for t in &tenants {
        before.push(status(&source, t, &token).await);
    }
    drop(source); // SIGKILL: migrate reads what was acked

    // Into PostgreSQL; a second run into the now non-empty target is refused.
    let out = ok(finwise(&["migrate", "--data-dir", data.to_str().unwrap(), "--to-database-url", &url]));
    assert!(out.contains("verified"), "{out}");
    let again = finwise(&["migrate", "--data-dir", data.to_str().unwrap(), "--to-database-url", &url]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty"), "{:?}", again);
    let report = ok(finwise(&["doctor", "--database-url", &url, "--tenant", &tenants[0]]));
    assert!(report.contains("no problems found"), "{report}");
    // the data dir's JWT secret went along (tokens of a server without a configured one stay valid)
    let secret = std::fs::read_to_string(data.join("jwt.secret")).unwrap();
    let u = url.clone();
    let stored: String = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&u, postgres::NoTls).unwrap();
        c.query_one("SELECT value FROM settings WHERE key = 'jwt_secret'", &[]).unwrap().get(0)
    })
    .join()
    .unwrap();
    assert_eq!(stored.trim(), secret.trim());

    // Served from PostgreSQL: same digests and seqs; the old token, the password, the cursor.
    let empty = dir.path().join("empty");
    let pg = server(&empty, Some(&url));
    for (t, b) in tenants.iter().zip(&before) {
        assert_eq!(&status(&pg, t, &token).await, b, "tenant {t} after the move");
    }
    let mut w = ws(&pg, &tenants[0], &token).await;
    let delta = w.load_since(&tenants[0], cursor).await;
    assert_eq!(delta["delta"], true, "{delta}");
    assert_ne!(delta["reset"], true, "a device's cursor stays valid: {delta}");
    assert_eq!(find(&delta, "Tag", &late[0]).unwrap()["name"], "renamed");
    assert_eq!(delta["deleted"]["Tag"], json!([late[1]]), "{delta}");
    let again = ws(&pg, &tenants[1], &token).await.entry(&retried).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["seq"], first_ack["seq"]);
    let login: Value = reqwest::Client::new()
        .post(format!("http://{}/login", pg.addr))
        .json(&json!({"username_or_email": "MOVER@example.org", "password": "mover-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(login["access_token"].is_string(), "the password hash moved along: {login}");
    drop(pg);

    // And back into a new data dir.
    let back = dir.path().join("back");
    let out = ok(finwise(&["migrate", "--database-url", &url, "--to-data-dir", back.to_str().unwrap()]));
    assert!(out.contains("verified"), "{out}");
    let sqlite = server(&back, None);
    for (t, b) in tenants.iter().zip(&before) {
        assert_eq!(&status(&sqlite, t, &token).await, b, "tenant {t} after the way back");
    }
    let v: Value = ws(&sqlite, &tenants[0], &token).await.load_since(&tenants[0], cursor).await;
    assert_eq!(v["delta"], true);
    assert_ne!(v["reset"], true);
}

/// The real FinWise 0.4 sample (when `../shared` is present): imported into a data dir, migrated
/// to PostgreSQL (migrate verifies every tenant's digest, count and seq), and the doctor agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_0_4_sample_migrates_with_every_digest_equal() {
    let Some(sample) = backend::shared_legacy_sample() else {
        println!("NOTE: ../shared/spec/legacy-data is absent; the real 0.4 sample is not migrated here");
        return;
    };
    let Some(url) = database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(finwise(&[
        "import-legacy",
        "--from",
        sample.join("data").to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    let out = ok(finwise(&["migrate", "--data-dir", data.to_str().unwrap(), "--to-database-url", &url]));
    assert!(out.contains("verified"), "{out}");
    assert!(!out.contains("migrated 0 users"), "{out}");
    println!("{out}");
    let report = ok(finwise(&["doctor", "--database-url", &url]));
    assert!(report.contains("no problems found"), "{report}");
}
