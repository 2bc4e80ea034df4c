//! A tenant as a FinWise 0.4 file over HTTP (O9, O10): export, import as a new tenant (the
//! round trip keeps every entity and the digest), the real 0.4 sample tenants when `../shared`
//! is there, and the hostile cases: a non-member's export, files that are not 0.4 tenant files,
//! crafted ones, bad rows (nothing imported), an oversized upload.

use finwise_testkit::{backend, entry, new_id, ts, TestServer, Ws};
use serde_json::{json, Value};

async fn export(s: &TestServer, token: &str, tenant: &str) -> reqwest::Response {
    s.http()
        .get(s.url(&format!("/api/v1/tenant/export-database?tenant_id={tenant}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn import(s: &TestServer, token: &str, file: Vec<u8>, filename: &str, name: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .part("database_file", reqwest::multipart::Part::bytes(file).file_name(filename.to_owned()))
        .text("new_tenant_name", name.to_owned());
    let r =
        s.http().post(s.url("/api/v1/tenant/import-database")).bearer_auth(token).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Every collection of a full load, sorted by id, and the digest.
async fn contents(s: &TestServer, token: &str, tenant: &str) -> (Value, Value) {
    let mut ws = Ws::connect(&s.ws_url(tenant, Some(token))).await;
    let mut load = ws.load(tenant).await["payload"].clone();
    for (_, list) in load.as_object_mut().unwrap() {
        if let Some(items) = list.as_array_mut() {
            items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
    }
    (load, ws.status(tenant).await["tenant_digest"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_keeps_every_entity_and_the_digest() {
    let s = TestServer::start(|_| {}).await;
    let (_, token, _) = s.user("exporter").await;
    let tenant = s.tenant(&token, "Haushalt Müller").await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let (group, account, category) = (new_id(), new_id(), new_id());
    let writes = [
        ("AccountGroup", json!({"id": group, "name": "Konten", "sortOrder": 1})),
        (
            "Account",
            json!({"id": account, "name": "Giro", "accountType": "giro", "isActive": true, "isOfflineBudget": false,
            "accountGroupId": group, "balance": 1250.5, "offset": 0, "iban": "DE02 1203 0000 0000 2020 51"}),
        ),
        ("CategoryGroup", json!({"id": new_id(), "name": "Leben", "sortOrder": 0, "isIncomeGroup": false})),
        (
            "Category",
            json!({"id": category, "name": "Lebensmittel", "budgeted": 400, "activity": -123.45, "available": 276.55,
            "isIncomeCategory": false, "isHidden": false, "isActive": true, "sortOrder": 2, "note": "Wocheneinkauf"}),
        ),
        ("Tag", json!({"id": new_id(), "name": "Urlaub ☀", "color": "#ffcc00"})),
        (
            "AutomationRule",
            json!({"id": new_id(), "name": "Bäcker", "stage": "DEFAULT", "priority": 1, "isActive": true,
            "conditions": [{"field": "payee", "operator": "contains", "value": "Bäcker"}],
            "actions": [{"type": "setCategory", "value": category}]}),
        ),
        (
            "Transaction",
            json!({"id": new_id(), "accountId": account, "categoryId": category, "date": "2026-11-30",
            "valueDate": "2026-12-01", "amount": -12.5, "description": "Bäckerei", "tagIds": ["a", "b"], "type": "EXPENSE",
            "runningBalance": 1238, "payee": "Bäcker Müller", "createdAt": "2026-11-30T08:15:00.123Z"}),
        ),
    ];
    for (i, (t, mut payload)) in writes.into_iter().enumerate() {
        payload["updated_at"] = json!(ts(-60_000 + i as i64 * 1000));
        assert_eq!(ws.entry(&entry(&tenant, t, "create", payload)).await["type"], "sync_ack");
    }
    // a deleted entity is not exported
    let gone = new_id();
    ws.entry(&entry(&tenant, "Tag", "create", json!({"id": gone, "name": "weg", "updated_at": ts(-5000)}))).await;
    ws.entry(&entry(&tenant, "Tag", "delete", json!({"id": gone, "updated_at": ts(-4000)}))).await;

    let r = export(&s, &token, &tenant).await;
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"mandant_Haushalt M_ller_"), "{disposition}");
    assert!(disposition.contains("filename*=UTF-8''mandant_Haushalt%20M%C3%BCller_"), "{disposition}");
    let file = r.bytes().await.unwrap().to_vec();
    assert!(file.starts_with(b"SQLite format 3\0"));

    // the file has the 0.4 layout: nine tables, camelCase columns, 0.4's value forms
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.sqlite");
    std::fs::write(&path, &file).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = c.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 9);
    let (active, tag_ids, created): (i64, String, String) = c
        .query_row("SELECT a.\"isActive\", t.\"tagIds\", t.\"createdAt\" FROM accounts a, transactions t", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((active, tag_ids.as_str(), created.as_str()), (1, r#"["a", "b"]"#, "2026-11-30 08:15:00.123000"));
    let tags: i64 = c.query_row("SELECT count(*) FROM tags", [], |r| r.get(0)).unwrap();
    assert_eq!(tags, 1, "the tombstone stays behind");
    drop(c);

    let (status, body) = import(&s, &token, file, "finwise_tenant_backup_2026-12-02.sqlite", "Wiederhergestellt").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entities"], 7);
    let copy = body["tenant_id"].as_str().unwrap().to_owned();
    assert_ne!(copy, tenant);
    let (original, copied) = (contents(&s, &token, &tenant).await, contents(&s, &token, &copy).await);
    assert_eq!(copied.1, original.1, "the same digest");
    assert_eq!(copied.0, original.0, "the same entities");
    let list = s.http().get(s.url("/tenants/")).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert!(list.contains("Wiederhergestellt"), "owned by the caller: {list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_exports_and_imports_are_refused_and_import_nothing() {
    let s = TestServer::start(|c| c.max_import_bytes = 256 * 1024).await;
    let (_, token, _) = s.user("careful").await;
    let (_, stranger, _) = s.user("stranger").await;
    let tenant = s.tenant(&token, "Mine").await;
    assert_eq!(export(&s, &stranger, &tenant).await.status(), 403, "not a member");
    // an unknown tenant answers like a foreign one: which ids exist is not revealed
    let unknown = export(&s, &stranger, &new_id()).await;
    assert_eq!(unknown.status(), 403);
    assert_eq!(unknown.text().await.unwrap(), export(&s, &stranger, &tenant).await.text().await.unwrap());
    let tenants_before =
        s.http().get(s.url("/tenants/")).bearer_auth(&token).send().await.unwrap().text().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str, sql: &str| {
        let p = dir.path().join(name);
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(sql).unwrap();
        drop(c);
        std::fs::read(&p).unwrap()
    };
    let layout = {
        let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
        ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "x", "updated_at": ts(-1000)}))).await;
        export(&s, &token, &tenant).await.bytes().await.unwrap().to_vec()
    };
    let with = |name: &str, sql: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, &layout).unwrap();
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(sql).unwrap();
        drop(c);
        std::fs::read(&p).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage.sqlite", b"definitely not a database".to_vec(), "not a SQLite database"),
        ("other.sqlite", sqlite("other.db", "CREATE TABLE notes (id TEXT)"), "not a FinWise 0.4 tenant file"),
        // a view where a table must be, reading something else: refused, never run
        (
            "view.sqlite",
            sqlite(
                "view.db",
                "CREATE TABLE account_groups (id TEXT); CREATE TABLE categories (id TEXT);
            CREATE TABLE category_groups (id TEXT); CREATE TABLE transactions (id TEXT);
            CREATE VIEW accounts AS SELECT * FROM sqlite_master",
            ),
            "no table accounts",
        ),
        (
            "bad-row.sqlite",
            with(
                "bad.db",
                "INSERT INTO transactions (id, \"accountId\", date, \"valueDate\", amount, description,
            \"tagIds\", type, \"runningBalance\", \"isReconciliation\", \"isCategoryTransfer\", reconciled)
            VALUES ('t1', 'a', 'not a date', '2026-01-01', 1, '', '[]', 'EXPENSE', 0, 0, 0, 0)",
            ),
            "cannot be imported, nothing was",
        ),
        ("notes.txt", layout.clone(), ".sqlite or .db"),
    ];
    for (filename, file, says) in cases {
        let (status, body) = import(&s, &token, file, filename, "Hostile").await;
        assert_eq!(status, 422, "{filename}: {body}");
        assert!(body.to_string().contains(says), "{filename}: {body} should say {says}");
    }
    // a trigger in the file never fires: the file is only read
    let trap = with(
        "trap.db",
        "CREATE TABLE fired (x); CREATE TRIGGER t AFTER INSERT ON tags BEGIN INSERT INTO fired VALUES (1); END;",
    );
    let (status, body) = import(&s, &token, trap, "trap.db", "Trap").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = import(&s, &token, layout.clone(), "x.sqlite", " ").await;
    assert_eq!(status, 422, "a blank name");
    let url = s.url("/api/v1/tenant/import-database");
    let too_large =
        finwise_testkit::status_for_declared_body(&url, &token, "multipart/form-data; boundary=x", 257 * 1024);
    assert_eq!(too_large.await, 413);
    let tenants_after =
        s.http().get(s.url("/tenants/")).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert_eq!(tenants_after.matches("\"uuid\"").count(), tenants_before.matches("\"uuid\"").count() + 1, "only Trap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_0_4_sample_tenants_import_over_http() {
    let Some(sample) = backend::shared_legacy_sample() else {
        eprintln!("skipped: the 0.4 sample (../shared) is not here");
        return;
    };
    let s = TestServer::start(|_| {}).await;
    let (_, token, _) = s.user("switcher").await;
    let dir = sample.join("data/tenant_databases");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = f.path();
        let rows: i64 = {
            let c = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            [
                "accounts",
                "account_groups",
                "categories",
                "category_groups",
                "recipients",
                "tags",
                "automation_rules",
                "planning_transactions",
                "transactions",
            ]
            .iter()
            .map(|t| c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).unwrap_or(0))
            .sum()
        };
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (status, body) =
            import(&s, &token, std::fs::read(&path).unwrap(), &format!("{name}.db"), &name[..30]).await;
        assert_eq!(status, 200, "{}: {body}", path.display());
        assert_eq!(body["entities"], rows, "{}: every row", path.display());
    }
}
