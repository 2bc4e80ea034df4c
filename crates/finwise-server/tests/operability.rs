//! Operability over real sockets: /metrics counting, /health, /ready, /ping, request ids,
//! and graceful shutdown losing nothing in flight.

use std::{collections::HashSet, time::Duration};

use finwise_testkit::*;
use serde_json::{json, Value};

/// The value of one sample line (`name{labels} value`) in a Prometheus text page.
async fn metrics(s: &TestServer) -> String {
    let r = s.http().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_are_present_and_count() {
    let s = TestServer::start(|_| {}).await;
    let page = metrics(&s).await;
    for name in [
        "finwise_connections",
        "finwise_connections_open",
        "finwise_acks",
        "finwise_commit_batch_entries",
        "finwise_commit_seconds",
        "finwise_writer_queue_depth",
        "finwise_open_tenants",
        "finwise_tenant_evictions",
        "finwise_commit_failures",
    ] {
        assert!(page.contains(&format!("# TYPE {name} ")), "{name} missing:\n{page}");
    }
    assert_eq!(metric(&page, "finwise_connections_total"), Some(0.0));

    let (_token, tenant, mut ws) = s.connected("metrics").await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    for id in &ids {
        let e = entry(&tenant, "Tag", "create", json!({"id": id, "name": "t", "updated_at": ts(0)}));
        assert_eq!(ws.entry(&e).await["type"], "sync_ack");
    }
    // A change far in the future is refused with clock_skew.
    let skewed = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "t", "updated_at": ts(3_600_000)}));
    let n = ws.entry(&skewed).await;
    assert_eq!(n["type"], "sync_nack");
    assert_eq!(n["reason"], "clock_skew");
    ws.send(&json!({"type": "ping", "timestamp": 1})).await;
    ws.recv_until(|v| v["type"] == "pong").await;

    let page = metrics(&s).await;
    // Labelled families appear with their first sample.
    for name in ["finwise_messages_in", "finwise_messages_out", "finwise_nacks", "finwise_http_requests"] {
        assert!(page.contains(&format!("# TYPE {name} counter")), "{name} missing:\n{page}");
    }
    assert_eq!(metric(&page, "finwise_connections_total"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "finwise_connections_open"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "finwise_messages_in_total{type=\"process_sync_entry\"}"), Some(4.0), "{page}");
    assert_eq!(metric(&page, "finwise_messages_in_total{type=\"ping\"}"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "finwise_messages_out_total{type=\"sync_ack\"}"), Some(3.0), "{page}");
    assert_eq!(metric(&page, "finwise_messages_out_total{type=\"sync_nack\"}"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "finwise_messages_out_total{type=\"pong\"}"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "finwise_acks_total"), Some(3.0), "{page}");
    assert_eq!(metric(&page, "finwise_nacks_total{reason=\"clock_skew\"}"), Some(1.0), "{page}");
    // Three commits of one entry each (the nack never reaches the database).
    assert_eq!(metric(&page, "finwise_commit_batch_entries_count"), Some(3.0), "{page}");
    assert_eq!(metric(&page, "finwise_commit_batch_entries_sum"), Some(3.0), "{page}");
    assert!(metric(&page, "finwise_commit_seconds_count").unwrap() >= 3.0, "{page}");
    assert_eq!(metric(&page, "finwise_writer_queue_depth"), Some(0.0), "{page}");
    assert_eq!(metric(&page, "finwise_open_tenants"), Some(1.0), "{page}");
    assert!(metric(&page, "finwise_http_requests_total{status=\"200\"}").unwrap() >= 2.0, "{page}");

    drop(ws);
    for _ in 0..100 {
        let page = metrics(&s).await;
        if metric(&page, "finwise_connections_open") == Some(0.0) {
            assert_eq!(metric(&page, "finwise_connection_closes_total{code=\"peer\"}"), Some(1.0), "{page}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connections_open did not go back to 0");
}

#[tokio::test]
async fn closes_are_counted_by_code() {
    let s = TestServer::start(|c| c.max_message_bytes = 1000).await;
    let (_token, _tenant, mut ws) = s.connected("closes").await;
    ws.send(&json!({"type": "ping", "timestamp": "x".repeat(2000)})).await;
    assert_eq!(ws.recv().await["closed"], 1009);
    for _ in 0..100 {
        let page = metrics(&s).await;
        if metric(&page, "finwise_connection_closes_total{code=\"1009\"}") == Some(1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the 1009 close was not counted:\n{}", metrics(&s).await);
}

#[tokio::test]
async fn health_ready_ping_and_request_ids() {
    let s = TestServer::start(|_| {}).await;
    let r = s.http().get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.len() >= 16, "{generated}");
    let r = s.http().get(s.url("/ready")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["migrations_applied"], true);
    assert_eq!(v["storage_writable"], true);
    let v: Value = s.http().get(s.url("/ping")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "online");
    // A hostile request id is replaced, not echoed.
    let r = s.http().get(s.url("/health")).header("x-request-id", "a b\"c").send().await.unwrap();
    assert_ne!(r.headers()["x-request-id"], "a b\"c");
}

#[tokio::test]
async fn ready_reports_unapplied_migrations() {
    let s = TestServer::start(|_| {}).await;
    // Simulate a database whose migrations were not applied.
    match finwise_testkit::backend::database_url(&s.dir) {
        None => rusqlite_version_reset(&s.dir.join("auth.db")),
        Some(url) => std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute("DELETE FROM schema_migrations").unwrap();
        })
        .join()
        .unwrap(),
    }
    let r = s.http().get(s.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["migrations_applied"], false);
}

fn rusqlite_version_reset(path: &std::path::Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.pragma_update(None, "user_version", 0).unwrap();
}

/// Entries the server has read when shutdown starts are committed and acked before the socket
/// closes with `status: shutdown`, and are all there after a restart.
#[tokio::test]
async fn graceful_shutdown_acks_and_keeps_everything_in_flight() {
    let s = TestServer::start(|c| {
        // Small groups: the entries are still being committed when the shutdown begins.
        c.max_group_commit = 8;
    })
    .await;
    let (token, tenant, mut ws) = s.connected("shutdown").await;
    let n = 400;
    let ids: Vec<String> = (0..n).map(|_| new_id()).collect();
    let mut entry_ids = HashSet::new();
    for id in &ids {
        let e = entry(
            &tenant,
            "Transaction",
            "create",
            json!({
                "id": id, "accountId": "a", "date": "2026-01-01", "valueDate": "2026-01-01", "amount": -1.5,
                "type": "EXPENSE", "runningBalance": 0, "updated_at": ts(0),
            }),
        );
        entry_ids.insert(e["id"].as_str().unwrap().to_owned());
        ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
    }
    // The pong is answered right away, after every entry before it was read and queued.
    ws.send(&json!({"type": "ping", "timestamp": 7})).await;
    let mut acked = HashSet::new();
    loop {
        let v = ws.recv().await;
        if v["type"] == "sync_ack" {
            acked.insert(v["id"].as_str().unwrap().to_owned());
        }
        if v["type"] == "pong" {
            break;
        }
    }
    let in_flight_at_shutdown = n - acked.len();
    let mut s = s;
    let stopper = tokio::spawn(async move {
        s.stop().await;
        s
    });
    let mut saw_shutdown = false;
    let close = loop {
        let v = ws.recv().await;
        match v["type"].as_str() {
            Some("sync_ack") => {
                assert!(!saw_shutdown, "ack after the shutdown status");
                acked.insert(v["id"].as_str().unwrap().to_owned());
            }
            Some("sync_nack") => panic!("nack during shutdown: {v}"),
            Some("status") => {
                assert_eq!(v["status"], "shutdown");
                saw_shutdown = true;
            }
            _ if v.get("closed").is_some() => break v["closed"].clone(),
            _ => {}
        }
    };
    assert!(saw_shutdown, "no status: shutdown before the close");
    assert_eq!(close, json!(1001));
    assert_eq!(acked, entry_ids, "every entry in flight at shutdown ({in_flight_at_shutdown}) is acked");
    println!("{in_flight_at_shutdown} of {n} entries were in flight when the shutdown began");

    let s = stopper.await.unwrap();
    let s = s.restart().await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let load = ws.load(&tenant).await;
    let got: HashSet<&str> =
        load["payload"]["transactions"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(got.len(), n);
    for id in &ids {
        assert!(got.contains(id.as_str()), "{id} lost");
    }
}

#[tokio::test]
async fn openapi_document_and_browsable_page() {
    let s = TestServer::start(|_| {}).await;
    let r = s.http().get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/register", "post"),
        ("/login", "post"),
        ("/token", "post"),
        ("/tenants/", "get"),
        ("/tenants/", "post"),
        ("/tenants/{id}", "put"),
        ("/tenants/{id}/complete", "delete"),
        ("/tenants/{id}/sync-queue", "delete"),
        ("/tenants/{id}/members", "get"),
        ("/tenants/{id}/members", "post"),
        ("/tenants/{id}/members/{user_id}", "delete"),
        ("/ping", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/api/v1/websocket/health", "get"),
        ("/api/v1/sync/data-status/{tenant_id}", "get"),
        ("/ws_finwise/ws/{tenant_id}", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["RegisterBody", "LoginBody", "CreateTenantBody", "User", "Tenant", "Member", "ErrorBody"] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(paths["/tenants/"]["get"]["security"].is_array());
    let user = &schemas["User"]["properties"];
    assert!(user.get("createdAt").is_some(), "the schema follows the serde renames: {user}");

    let page = s.http().get(s.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("fetch('openapi.json')"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the page loads nothing from elsewhere");
}

#[tokio::test]
async fn an_api_path_that_names_no_endpoint_is_a_json_404_not_the_web_app() {
    let s = TestServer::start(|_| {}).await;
    for path in ["/api/v1/no-such-endpoint", "/api/v2/tenant/export-database", "/api/"] {
        let r = s.http().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["detail"], "Not Found", "{path}");
    }
    // the endpoints under /api still answer
    let r = s.http().get(s.url("/api/v1/websocket/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
