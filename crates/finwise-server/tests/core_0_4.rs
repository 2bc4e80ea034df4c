//! The server as a drop-in for the FinWise 0.4 backend, over real sockets.

use std::time::Duration;

use finwise_testkit::*;
use serde_json::{json, Value};

/// A 0.4 client in legacy mode: register, login, tenant list (both spellings), create tenant, WS.
#[tokio::test]
async fn legacy_0_4_rest_flow_and_cors() {
    let s = TestServer::start(|c| c.allow_legacy_clients = true).await;
    let http = s.http();
    let r = http
        .post(s.url("/register"))
        .json(&json!({"name": "anna", "email": "anna@example.org", "password": "secret-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    for k in ["name", "email", "uuid", "createdAt", "updatedAt"] {
        assert!(user.get(k).is_some(), "register response lacks {k}: {user}");
    }
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let dup = http
        .post(s.url("/register"))
        .json(&json!({"name": "anna2", "email": "anna@example.org", "password": "secret-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 400);
    assert_eq!(dup.json::<Value>().await.unwrap()["detail"], "Email already registered");
    let bad = http
        .post(s.url("/register"))
        .json(&json!({"name": "x", "email": "nope", "password": "secret-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    let login = http
        .post(s.url("/login"))
        .json(&json!({"username_or_email": "anna@example.org", "password": "secret-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let wrong = http
        .post(s.url("/login"))
        .json(&json!({"username_or_email": "anna@example.org", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_eq!(wrong.json::<Value>().await.unwrap()["detail"], "Incorrect username or password");

    let uid = user["uuid"].as_str().unwrap();
    let tenant = new_id();
    let created = http
        .post(s.url("/tenants/"))
        .header("X-User-Id", uid)
        .json(&json!({"uuid": tenant, "name": "Haushalt", "user_id": uid}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let t: Value = created.json().await.unwrap();
    assert_eq!(
        (t["uuid"].as_str(), t["user_id"].as_str(), t["name"].as_str()),
        (Some(tenant.as_str()), Some(uid), Some("Haushalt"))
    );
    let again = http
        .post(s.url("/tenants"))
        .json(&json!({"uuid": new_id(), "name": "Haushalt", "user_id": uid}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("already exists for this user"));
    for path in ["/tenants", "/tenants/"] {
        let list: Value = http.get(s.url(&format!("{path}?user_id={uid}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1, "{path}");
    }
    let unknown = http.get(s.url(&format!("/tenants/?user_id={}", new_id()))).send().await.unwrap();
    assert_eq!(unknown.status(), 404, "unknown user is 404, not 0.4's 500");

    let ping: Value = http.get(s.url("/ping")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ping["status"], "online");
    assert_eq!(http.get(s.url("/api/v1/websocket/health")).send().await.unwrap().status(), 200);

    let pre = http
        .request(reqwest::Method::OPTIONS, s.url("/tenants/"))
        .header("Origin", "http://127.0.0.1:15173")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,x-tenant-id,x-user-id")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "http://127.0.0.1:15173");
    let allowed = pre.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for h in ["content-type", "x-tenant-id", "x-user-id"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    let normal = http.get(s.url("/ping")).header("Origin", "http://127.0.0.1:15173").send().await.unwrap();
    assert_eq!(normal.headers()["access-control-allow-origin"], "http://127.0.0.1:15173");

    // The 0.4 frontend opens the socket of a new tenant before POST /tenants/ returns.
    let fresh = new_id();
    let mut ws = Ws::connect(&s.ws_url(&fresh, None)).await;
    let load = ws.load(&fresh).await;
    assert!(load.get("type").is_none(), "initial_data_load has no type key");
    for t in finwise_protocol::EntityType::ALL {
        assert_eq!(load["payload"][t.collection()], json!([]));
    }
}

/// Every entity type round-trips create → broadcast → initial load with every field intact.
#[tokio::test]
async fn all_nine_types_round_trip_and_broadcast_to_others_only() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("bob").await;
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let stamp = ts(-1000);
    let entities = full_entities(&stamp);
    for (t, payload) in &entities {
        let ack = a.entry(&entry(&tenant, t, "create", payload.clone())).await;
        assert_eq!(ack["type"], "sync_ack", "{t}: {ack}");
        assert_eq!(ack["status"], "processed");
        assert_eq!(ack["entityType"], *t);
        assert_eq!(ack["applied"], true);
        let update = b.recv().await;
        assert_eq!(update["event_type"], "data_update");
        assert!(update.get("type").is_none());
        assert_eq!(update["entity_type"], *t);
        assert_eq!(update["operation_type"], "create");
        assert_eq!(update["tenant_id"], tenant.as_str());
        let single = &update["data"]["single_entity"];
        assert_same_fields(t, payload, single);
    }
    a.assert_silent(200).await;
    let mut c = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let load = c.load(&tenant).await;
    assert_eq!(load["seq"], 9);
    for (t, payload) in &entities {
        let stored = find(&load, t, payload["id"].as_str().unwrap()).unwrap_or_else(|| panic!("{t} missing"));
        assert_same_fields(t, payload, stored);
    }
}

fn assert_same_fields(t: &str, sent: &Value, got: &Value) {
    for (k, v) in sent.as_object().unwrap() {
        let g = &got[k];
        let same = match (v, g) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            _ => v == g,
        };
        assert!(same, "{t}.{k}: sent {v}, got {g}");
    }
}

#[tokio::test]
async fn lww_in_both_directions_and_ties_keep_the_later_edit() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("carl").await;
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let id = new_id();
    let t0 = ts(-60_000);
    let tag = |name: &str, at: &str| json!({"id": id, "name": name, "updated_at": at});
    assert_eq!(a.entry(&entry(&tenant, "Tag", "create", tag("v1", &t0))).await["applied"], true);
    b.recv().await;

    // Newer wins.
    let t1 = ts(-30_000);
    let ack = b.entry(&entry(&tenant, "Tag", "update", tag("v2", &t1))).await;
    assert_eq!(ack["applied"], true);
    let seen = a.recv().await;
    assert_eq!(seen["data"]["single_entity"]["name"], "v2");
    assert_eq!(seen["data"]["single_entity"]["updated_at"], t1.as_str(), "real updated_at is emitted");

    // Older loses: acked with applied=false, and the writer gets the winner.
    let ack = a.entry(&entry(&tenant, "Tag", "update", tag("stale", &t0))).await;
    assert_eq!(ack["type"], "sync_ack");
    assert_eq!(ack["applied"], false);
    let winner = a.recv().await;
    assert_eq!(winner["event_type"], "data_update");
    assert_eq!(winner["data"]["single_entity"]["name"], "v2");
    b.assert_silent(200).await;

    // Tie with different content (the 0.4 edit dialog keeps updated_at): the edit is kept.
    let ack = a.entry(&entry(&tenant, "Tag", "update", tag("v3-same-stamp", &t1))).await;
    assert_eq!(ack["applied"], true);
    let restamped = ack["updated_at"].as_str().unwrap().to_owned();
    assert!(restamped > t1, "tie winner is restamped after the stored version");
    let to_writer = a.recv().await;
    assert_eq!(to_writer["data"]["single_entity"]["updated_at"], restamped.as_str());
    let other = b.recv().await;
    assert_eq!(other["data"]["single_entity"]["name"], "v3-same-stamp");

    // Identical resend of the stored version: nothing changes, nothing is broadcast.
    let same = json!({"id": id, "name": "v3-same-stamp", "updated_at": restamped});
    let ack = a.entry(&entry(&tenant, "Tag", "update", same)).await;
    assert_eq!(ack["applied"], true);
    b.assert_silent(200).await;

    let load = b.load(&tenant).await;
    assert_eq!(find(&load, "Tag", &id).unwrap()["name"], "v3-same-stamp");
}

#[tokio::test]
async fn create_on_existing_acts_as_update_update_of_missing_creates_delete_of_missing_succeeds() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("dora").await;
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let id = new_id();
    let ack =
        a.entry(&entry(&tenant, "Recipient", "update", json!({"id": id, "name": "R1", "updated_at": ts(-5000)}))).await;
    assert_eq!(ack["applied"], true);
    assert_eq!(b.recv().await["operation_type"], "update");
    let ack =
        a.entry(&entry(&tenant, "Recipient", "create", json!({"id": id, "name": "R2", "updated_at": ts(-4000)}))).await;
    assert_eq!(ack["applied"], true);
    assert_eq!(b.recv().await["operation_type"], "update", "create on an existing id is an update");
    let missing = new_id();
    let ack = a.entry(&entry(&tenant, "Transaction", "delete", json!({"id": missing}))).await;
    assert_eq!(ack["type"], "sync_ack");
    let del = b.recv().await;
    assert_eq!(
        (del["operation_type"].as_str(), del["data"]["single_entity"]["id"].as_str()),
        (Some("delete"), Some(missing.as_str()))
    );
    let ack = a
        .entry(
            &entry(&tenant, "Recipient", "delete", Value::Null)
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .map(|(k, v)| if k == "entityId" { (k, json!(id)) } else { (k, v) })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        )
        .await;
    assert_eq!(ack["type"], "sync_ack", "delete with a null payload: {ack}");
    let load = b.load(&tenant).await;
    assert!(find(&load, "Recipient", &id).is_none());
}

#[tokio::test]
async fn ping_disconnect_status_and_0_4_checksum() {
    let s = TestServer::start(|_| {}).await;
    let (_, tenant, mut a) = s.connected("emil").await;
    a.send(&json!({"type": "ping", "timestamp": 1795618222061i64})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "timestamp": 1795618222061i64}));
    a.send(&json!({"type": "connection_status_request"})).await;
    let st = a.recv().await;
    assert_eq!(
        (st["type"].as_str(), st["backend_status"].as_str()),
        (Some("connection_status_response"), Some("online"))
    );
    // The worked example of the 0.4 description §10.
    let g = json!({"id": "5aea3e0b-2565-449a-946e-29e3860f72db", "name": "G", "sortOrder": 0, "logo_path": null,
        "updated_at": "2026-01-02T03:04:05.678Z"});
    a.entry(&entry(&tenant, "AccountGroup", "create", g)).await;
    let status = a.status(&tenant).await;
    let sums = &status["entity_checksums"]["AccountGroup"];
    assert_eq!(sums[0]["checksum"], "11feba394c772f20aa43260c74c0da0c");
    assert_eq!(sums[0]["last_modified"], 1767323045);
    for k in ["Account", "Category", "CategoryGroup"] {
        assert_eq!(status["entity_checksums"][k], json!([]));
    }
    a.send(&json!({"type": "tenant_disconnect", "tenant_id": tenant, "reason": "user_logout"})).await;
    let ack = a.recv().await;
    assert_eq!((ack["type"].as_str(), ack["status"].as_str()), (Some("tenant_disconnect_ack"), Some("success")));
    for kind in ["get_sync_queue_status", "process_sync_queue", "retry_failed_entries"] {
        a.send(&json!({"type": kind, "tenant_id": tenant})).await;
        assert!(a.recv().await["type"].as_str().unwrap().starts_with("sync_queue_status"));
    }
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_changes_nothing() {
    let s = TestServer::start(|c| c.max_message_bytes = 64 * 1024).await;
    let (token, tenant, mut a) = s.connected("fritz").await;
    let acc = new_id();
    a.entry(&entry(
        &tenant,
        "AccountGroup",
        "create",
        json!({"id": acc, "name": "G", "sortOrder": 0, "updated_at": ts(-1000)}),
    ))
    .await;
    let before = a.status(&tenant).await["tenant_digest"].clone();

    a.send_raw("{not json").await;
    let e = a.recv().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("invalid_json")));
    a.send(&json!({"type": "launch_missiles"})).await;
    let e = a.recv().await;
    assert_eq!((e["code"].as_str(), e["original_type"].as_str()), (Some("unknown_type"), Some("launch_missiles")));
    a.send(&json!({"no_type": 1})).await;
    assert_eq!(a.recv().await["code"], "missing_type");
    a.send_raw("[1,2,3]").await;
    assert_eq!(a.recv().await["code"], "invalid_message");

    // Validation errors name the field.
    let cases = [
        (
            "Account",
            json!({"id": new_id(), "name": "A", "isActive": "yes", "isOfflineBudget": false, "accountGroupId": acc, "balance": 0, "offset": 0}),
            "isActive",
        ),
        (
            "Account",
            json!({"id": new_id(), "name": "A", "isActive": true, "isOfflineBudget": false, "accountGroupId": acc, "offset": 0}),
            "balance",
        ),
        (
            "Account",
            json!({"id": new_id(), "name": "A", "isActive": true, "isOfflineBudget": false, "accountGroupId": acc, "balance": 0, "offset": 0, "accountType": "checking"}),
            "accountType",
        ),
        (
            "Transaction",
            json!({"id": new_id(), "accountId": acc, "date": "02.01.2026", "valueDate": "2026-01-02", "amount": 1, "type": "EXPENSE", "runningBalance": 0}),
            "date",
        ),
        (
            "AutomationRule",
            json!({"id": new_id(), "name": "R", "stage": "LATER", "priority": 1, "isActive": true}),
            "stage",
        ),
        ("AccountGroup", json!({"id": new_id(), "name": "G", "sortOrder": "first"}), "sortOrder"),
        ("Tag", json!({"id": new_id(), "name": "T", "updated_at": "last tuesday"}), "updated_at"),
    ];
    for (t, payload, field) in cases {
        let nack = a.entry(&entry(&tenant, t, "create", payload)).await;
        assert_eq!(nack["type"], "sync_nack", "{t}.{field}");
        assert_eq!(nack["reason"], "validation_error");
        assert!(nack["detail"].as_str().unwrap().contains(field), "{t}: detail {} should name {field}", nack["detail"]);
    }
    let nack = a.entry(&entry(&tenant, "Budget", "create", json!({"id": new_id()}))).await;
    assert_eq!(nack["reason"], "unknown_entity_type");
    let mut broken = entry(&tenant, "Tag", "update", Value::Null);
    broken["entityId"] = json!(new_id());
    let nack = a.entry(&broken).await;
    assert_eq!(
        (nack["reason"].as_str(), nack["detail"].as_str().map(|d| d.contains("payload"))),
        (Some("validation_error"), Some(true))
    );
    let mut no_op = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "x"}));
    no_op.as_object_mut().unwrap().remove("operationType");
    let nack = a.entry(&no_op).await;
    assert!(nack["detail"].as_str().unwrap().contains("operationType"));

    assert_eq!(a.status(&tenant).await["tenant_digest"], before, "nothing was written");

    // An oversized frame closes that socket with 1009; the server and other sockets live on.
    let mut big = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let huge = json!({"type": "process_sync_entry", "payload": entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "x".repeat(100_000)}))});
    big.send(&huge).await;
    assert_eq!(big.recv().await, json!({"closed": 1009}));
    assert_eq!(a.status(&tenant).await["tenant_digest"], before);
}

#[tokio::test]
async fn data_survives_a_restart() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("gina").await;
    let entities = full_entities(&ts(-1000));
    for (t, p) in &entities {
        assert_eq!(a.entry(&entry(&tenant, t, "create", p.clone())).await["type"], "sync_ack");
    }
    let before = a.load(&tenant).await;
    drop(a);
    let s = s.restart().await;
    let mut a = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let after = a.load(&tenant).await;
    assert_eq!(before["payload"], after["payload"]);
    assert_eq!(before["seq"], after["seq"]);
}

#[tokio::test]
async fn a_peer_that_never_reads_does_not_stall_others() {
    let s = TestServer::start(|c| {
        c.outbound_queue = 16;
        c.send_timeout = Duration::from_secs(2);
    })
    .await;
    let (token, tenant, mut writer) = s.connected("hans").await;
    // This peer connects and then never reads a byte.
    let _silent = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let mut reader = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let big = "x".repeat(4000);
    for i in 0..300 {
        let ack =
            writer.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": format!("{i}{big}")}))).await;
        assert_eq!(ack["type"], "sync_ack");
        let got = reader.recv().await;
        assert_eq!(got["event_type"], "data_update");
    }
}

/// A peer that completes no message (a stalled half frame, a dead client keeping its TCP
/// connection) is closed after four heartbeats, even while it keeps reading.
#[tokio::test]
async fn a_peer_that_sends_nothing_is_closed_after_four_heartbeats() {
    let s = TestServer::start(|c| c.heartbeat_interval = Duration::from_millis(300)).await;
    let (_, token, _) = s.user("idle").await;
    let tenant = s.tenant(&token, "Idle").await;
    let mut silent = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    // Half a frame: a text-frame header announcing 100 bytes, then nothing.
    let raw = silent.inner.get_mut();
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = raw {
        use tokio::io::AsyncWriteExt;
        tcp.write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'{']).await.unwrap();
    }
    let start = std::time::Instant::now();
    let closed = silent.recv_until(|v| v.get("closed").is_some()).await;
    assert_eq!(closed, json!({"closed": 1008}));
    assert!(start.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", start.elapsed());
    // A client that keeps talking stays connected well past the limit.
    let mut active = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    for _ in 0..6 {
        active.send(&json!({"type": "ping", "timestamp": 1})).await;
        assert_eq!(active.recv().await["type"], "pong");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
