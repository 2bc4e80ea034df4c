//! Protocol v2: sequence numbers, delta sync, tombstones, idempotency, batches, convergence, digest.

use std::{collections::HashMap, time::Duration};

use finwise_testkit::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn offline_device_learns_delete_create_and_update_from_one_delta() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("ola").await;
    let (x, y, z) = (new_id(), new_id(), new_id());
    for id in [&x, &y] {
        a.entry(&entry(&tenant, "Tag", "create", json!({"id": id, "name": "orig", "updated_at": ts(-9000)}))).await;
    }
    // Device B loads, remembers its cursor, goes offline.
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let full = b.load(&tenant).await;
    let cursor = full["seq"].as_i64().unwrap();
    assert_eq!(cursor, 2);
    drop(b);
    // Meanwhile A deletes x, updates y, creates z.
    let del = a.entry(&entry(&tenant, "Tag", "delete", json!({"id": x, "updated_at": ts(-5000)}))).await;
    assert_eq!(del["seq"], 3);
    assert_eq!(
        a.entry(&entry(&tenant, "Tag", "update", json!({"id": y, "name": "edited", "updated_at": ts(-4000)}))).await
            ["seq"],
        4
    );
    assert_eq!(
        a.entry(&entry(&tenant, "Tag", "create", json!({"id": z, "name": "new", "updated_at": ts(-3000)}))).await
            ["seq"],
        5
    );
    // B comes back and asks for what changed after its cursor.
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let delta = b.load_since(&tenant, cursor).await;
    assert_eq!(delta["delta"], true);
    assert_eq!(delta["seq"], 5);
    assert_eq!(delta["deleted"], json!({"Tag": [x]}));
    let tags = delta["payload"]["tags"].as_array().unwrap();
    let names: HashMap<&str, &str> =
        tags.iter().map(|t| (t["id"].as_str().unwrap(), t["name"].as_str().unwrap())).collect();
    assert_eq!(names.len(), 2);
    assert_eq!((names[y.as_str()], names[z.as_str()]), ("edited", "new"));
    // An up-to-date cursor gets an empty delta.
    let empty = b.load_since(&tenant, 5).await;
    assert_eq!(empty["payload"]["tags"], json!([]));
    assert!(empty.get("deleted").is_none() || empty["deleted"] == json!({}));
    // A stale update cannot resurrect x; a newer one can.
    let stale =
        b.entry(&entry(&tenant, "Tag", "update", json!({"id": x, "name": "zombie", "updated_at": ts(-6000)}))).await;
    assert_eq!(stale["applied"], false);
    let winner = b.recv().await;
    assert_eq!(winner["operation_type"], "delete");
    let newer =
        b.entry(&entry(&tenant, "Tag", "update", json!({"id": x, "name": "back", "updated_at": ts(-1000)}))).await;
    assert_eq!(newer["applied"], true);
}

#[tokio::test]
async fn cursor_older_than_the_tombstone_horizon_gets_a_full_reset_load() {
    let s = TestServer::start(|c| {
        c.tombstone_horizon = Duration::from_millis(1);
        c.idle_tenant_close = Duration::from_millis(100);
    })
    .await;
    let (_, tenant, mut a) = s.connected("pia").await;
    let (x, y) = (new_id(), new_id());
    a.entry(&entry(&tenant, "Tag", "create", json!({"id": x, "name": "x", "updated_at": ts(-9000)}))).await;
    a.entry(&entry(&tenant, "Tag", "create", json!({"id": y, "name": "y", "updated_at": ts(-9000)}))).await;
    a.entry(&entry(&tenant, "Tag", "delete", json!({"id": x, "updated_at": ts(-8000)}))).await;
    // Let the writer close; it compacts the expired tombstone when it reopens.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.entry(&entry(&tenant, "Tag", "update", json!({"id": y, "name": "y2", "updated_at": ts(-7000)}))).await;
    let load = a.load_since(&tenant, 1).await;
    assert_eq!(load["reset"], true);
    assert!(load.get("delta").is_none());
    assert_eq!(load["payload"]["tags"].as_array().unwrap().len(), 1);
    // A cursor from the future (e.g. another server's) is reset too.
    assert_eq!(a.load_since(&tenant, 999).await["reset"], true);
}

#[tokio::test]
async fn retried_entry_after_a_dropped_connection_is_acked_and_broadcast_once() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut listener) = s.connected("quin").await;
    let e = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "once", "updated_at": ts(-1000)}));
    {
        let mut w = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
        w.send(&json!({"type": "process_sync_entry", "payload": e})).await;
        // The connection drops before the client saw its ack.
    }
    let mut w = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let again = w.entry(&e).await;
    assert_eq!(again["type"], "sync_ack");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], 1);
    let first = listener.recv().await;
    assert_eq!(first["event_type"], "data_update");
    listener.assert_silent(300).await;
    // Same entry id, other content.
    let mut conflict = e.clone();
    conflict["payload"]["name"] = json!("different");
    let nack = w.entry(&conflict).await;
    assert_eq!(nack["reason"], "duplicate_id_conflict");
    assert_eq!(nack["retryable"], false);
    assert_eq!(w.status(&tenant).await["seq"], 1);
}

#[tokio::test]
async fn clock_skew_is_refused() {
    let s = TestServer::start(|_| {}).await;
    let (_, tenant, mut a) = s.connected("ron").await;
    let nack = a
        .entry(&entry(
            &tenant,
            "Tag",
            "create",
            json!({"id": new_id(), "name": "future", "updated_at": ts(10 * 60 * 1000)}),
        ))
        .await;
    assert_eq!(nack["reason"], "clock_skew");
    let ok = a
        .entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "near", "updated_at": ts(60 * 1000)})))
        .await;
    assert_eq!(ok["type"], "sync_ack");
}

#[tokio::test]
async fn batches_apply_in_order_and_a_bad_entry_fails_alone() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("sam").await;
    let mut other = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let id = new_id();
    let entries = vec![
        entry(&tenant, "Tag", "create", json!({"id": id, "name": "one", "updated_at": ts(-5000)})),
        entry(&tenant, "Tag", "update", json!({"id": id, "name": "two", "updated_at": ts(-4000)})),
        entry(&tenant, "Account", "create", json!({"id": new_id(), "name": "broken"})),
        json!({"id": "no-envelope"}),
        entry(&tenant, "Recipient", "create", json!({"id": new_id(), "name": "R", "updated_at": ts(-3000)})),
    ];
    a.send(&json!({"type": "process_sync_batch", "entries": entries})).await;
    let res = a.recv_until(|v| v["type"] == "sync_batch_result").await;
    let r = res["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    let statuses: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["processed", "processed", "failed", "failed", "processed"]);
    assert_eq!((r[0]["seq"].as_i64(), r[1]["seq"].as_i64(), r[4]["seq"].as_i64()), (Some(1), Some(2), Some(3)));
    assert_eq!(r[2]["reason"], "validation_error");
    assert_eq!(r[3]["id"], "no-envelope");
    for i in 0..3 {
        let u = other.recv().await;
        assert_eq!(u["seq"], i + 1);
    }
    let load = a.load(&tenant).await;
    assert_eq!(find(&load, "Tag", &id).unwrap()["name"], "two");
    // Retrying the whole batch applies nothing twice.
    a.send(&json!({"type": "process_sync_batch", "entries": entries})).await;
    let res = a.recv_until(|v| v["type"] == "sync_batch_result").await;
    assert_eq!(res["results"][0]["duplicate"], true);
    other.assert_silent(300).await;
    // Too many entries.
    let many: Vec<Value> =
        (0..1001).map(|_| entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "n"}))).collect();
    a.send(&json!({"type": "process_sync_batch", "entries": many})).await;
    let e = a.recv().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("batch_too_large")));
}

/// Applies a server message to a replica with the client rule; the replica maps id → entity.
fn apply_to_replica(replica: &mut HashMap<String, Value>, msg: &Value) {
    if msg["event_type"] != "data_update" {
        return;
    }
    let e = &msg["data"]["single_entity"];
    let id = e["id"].as_str().unwrap().to_owned();
    let incoming = finwise_protocol::time::parse_ms(msg["updated_at"].as_str().unwrap()).unwrap();
    let local = replica.get(&id).and_then(|l| l["updated_at"].as_str()).and_then(finwise_protocol::time::parse_ms);
    if finwise_protocol::lww::client_accepts(local, false, incoming) {
        let mut v = e.clone();
        v["updated_at"] = msg["updated_at"].clone();
        if msg["operation_type"] == "delete" {
            v["__deleted"] = json!(true);
        }
        replica.insert(id, v);
    }
}

#[tokio::test]
async fn two_writers_with_equal_timestamps_converge_with_the_server() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, mut a) = s.connected("tia").await;
    let mut b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let id = new_id();
    let stamp = ts(-10_000);
    let base = json!({"id": id, "name": "base", "updated_at": stamp});
    a.entry(&entry(&tenant, "Tag", "create", base.clone())).await;
    let mut ra: HashMap<String, Value> = HashMap::new();
    let mut rb: HashMap<String, Value> = HashMap::new();
    ra.insert(id.clone(), base.clone());
    apply_to_replica(&mut rb, &b.recv().await);
    // Both edit the same version offline, keeping its updated_at (the 0.4 edit dialog).
    let ea = entry(&tenant, "Tag", "update", json!({"id": id, "name": "from A", "updated_at": stamp}));
    let eb = entry(&tenant, "Tag", "update", json!({"id": id, "name": "from B", "updated_at": stamp}));
    ra.insert(id.clone(), ea["payload"].clone());
    rb.insert(id.clone(), eb["payload"].clone());
    a.send(&json!({"type": "process_sync_entry", "payload": ea})).await;
    b.send(&json!({"type": "process_sync_entry", "payload": eb})).await;
    // Each device drains what it gets and applies it by the client rule once its ack is in.
    for (ws, replica) in [(&mut a, &mut ra), (&mut b, &mut rb)] {
        while let Some(m) = ws.try_recv(Duration::from_millis(500)).await {
            if m["type"] == "sync_ack" {
                let mut mine = replica[&id].clone();
                mine["updated_at"] = m["updated_at"].clone();
                replica.insert(id.clone(), mine);
            }
            apply_to_replica(replica, &m);
        }
    }
    let load = a.load(&tenant).await;
    let server = find(&load, "Tag", &id).unwrap();
    for r in [&ra, &rb] {
        assert_eq!(r[&id]["name"], server["name"]);
        assert_eq!(r[&id]["updated_at"], server["updated_at"]);
    }
    assert!(server["name"] == "from A" || server["name"] == "from B", "a tie never keeps the old version: {server}");
    assert!(server["updated_at"].as_str().unwrap() > stamp.as_str(), "the tie winner was restamped");
}

#[tokio::test]
async fn digest_computed_from_the_load_equals_the_servers() {
    let s = TestServer::start(|_| {}).await;
    let (_, tenant, mut a) = s.connected("uwe").await;
    for (t, p) in full_entities(&ts(-3000)) {
        a.entry(&entry(&tenant, t, "create", p)).await;
    }
    let gone = new_id();
    a.entry(&entry(&tenant, "Tag", "create", json!({"id": gone, "name": "temp", "updated_at": ts(-2000)}))).await;
    a.entry(&entry(&tenant, "Tag", "delete", json!({"id": gone, "updated_at": ts(-1000)}))).await;
    let load = a.load(&tenant).await;
    let mut lines = Vec::new();
    for t in finwise_protocol::EntityType::ALL {
        for e in load["payload"][t.collection()].as_array().unwrap() {
            lines.push(format!(
                "{}\t{}\t{}\n",
                t.as_str(),
                e["id"].as_str().unwrap(),
                e["updated_at"].as_str().unwrap()
            ));
        }
    }
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    let mine = hex::encode(h.finalize());
    let status = a.status(&tenant).await;
    assert_eq!(status["tenant_digest"], mine.as_str());
    assert_eq!(status["entity_count"], 9);
    assert_eq!(status["seq"], load["seq"]);
}

#[tokio::test]
async fn chunked_full_load_streams_in_parts() {
    let s = TestServer::start(|_| {}).await;
    let (_, tenant, mut a) = s.connected("vera").await;
    let entries: Vec<Value> = (0..2500)
        .map(|i| {
            entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": format!("t{i}"), "updated_at": ts(-1000)}))
        })
        .collect();
    for chunk in entries.chunks(1000) {
        a.send(&json!({"type": "process_sync_batch", "entries": chunk})).await;
        let r = a.recv_until(|v| v["type"] == "sync_batch_result").await;
        assert!(r["results"].as_array().unwrap().iter().all(|x| x["status"] == "processed"));
    }
    a.send(&json!({"type": "request_initial_data", "tenant_id": tenant, "chunk_size": 1000})).await;
    let mut total = 0;
    let mut parts = 0;
    loop {
        let m = a.recv_until(|v| v["event_type"] == "initial_data_load").await;
        assert_eq!(m["part"], parts);
        parts += 1;
        total += m["payload"]["tags"].as_array().unwrap().len();
        assert_eq!(m["seq"], 2500);
        if m.get("more").is_none() {
            break;
        }
    }
    assert_eq!((parts, total), (3, 2500));
}

#[tokio::test]
async fn one_writer_thread_serves_many_busy_tenants_and_closes_idle_ones() {
    let s = TestServer::start(|c| {
        c.writer_threads = 1;
        c.idle_tenant_close = Duration::from_millis(300);
    })
    .await;
    let (_, token, _) = s.user("pool").await;
    let mut tenants = Vec::new();
    for i in 0..6 {
        tenants.push(s.tenant(&token, &format!("household {i}")).await);
    }
    // Every tenant gets 50 pipelined entries at once; all must be acked in order, per tenant.
    let mut tasks = Vec::new();
    for tenant in tenants.clone() {
        let url = s.ws_url(&tenant, Some(&token));
        tasks.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url).await;
            let entries: Vec<Value> = (0..50)
                .map(|i| {
                    entry(
                        &tenant,
                        "Tag",
                        "create",
                        json!({"id": new_id(), "name": format!("t{i}"), "updated_at": ts(-1000)}),
                    )
                })
                .collect();
            for e in &entries {
                ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
            }
            for (i, e) in entries.iter().enumerate() {
                let ack = ws.recv_until(|m| m["type"] == "sync_ack" || m["type"] == "sync_nack").await;
                assert_eq!(ack["type"], "sync_ack", "{ack}");
                assert_eq!(ack["id"], e["id"]);
                assert_eq!(ack["seq"], i as i64 + 1);
            }
            assert_eq!(ws.load(&tenant).await["payload"]["tags"].as_array().unwrap().len(), 50);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let open = || async {
        let v: Value = s.http().get(s.url("/api/v1/websocket/health")).send().await.unwrap().json().await.unwrap();
        v["open_tenant_databases"].as_u64().unwrap()
    };
    // Idle tenants close their files (checked by the writer thread every 100 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open().await > 0 {
        assert!(std::time::Instant::now() < deadline, "idle tenants stayed open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And reopen on the next change.
    let mut ws = Ws::connect(&s.ws_url(&tenants[0], Some(&token))).await;
    let ack = ws
        .entry(&entry(&tenants[0], "Tag", "create", json!({"id": new_id(), "name": "again", "updated_at": ts(-500)})))
        .await;
    assert_eq!(ack["seq"], 51);
}

/// Tenant database files (`<data dir>/tenants/*.db`) open in this process (the test server runs in it).
fn open_tenant_files(dir: &std::path::Path) -> usize {
    let dir = dir.join("tenants");
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.starts_with(&dir) && p.to_string_lossy().ends_with(".db"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn open_tenants_stay_under_max_open_tenants_and_reopen_where_they_were() {
    let s = TestServer::start(|c| {
        c.max_open_tenants = Some(2);
        c.writer_threads = 1;
    })
    .await;
    let (_, token, _) = s.user("many").await;
    let mut tenants = Vec::new();
    for i in 0..6 {
        tenants.push(s.tenant(&token, &format!("household {i}")).await);
    }
    let health = || async {
        let v: Value = s.http().get(s.url("/api/v1/websocket/health")).send().await.unwrap().json().await.unwrap();
        v["open_tenant_databases"].as_u64().unwrap()
    };
    // Three rounds over six tenants with room for two: every write after the first two opens a
    // tenant that was closed for another, and its seq goes on where it stopped.
    for round in 0..3i64 {
        for tenant in &tenants {
            let mut ws = Ws::connect(&s.ws_url(tenant, Some(&token))).await;
            let name = format!("round {round}");
            let ack = ws
                .entry(&entry(tenant, "Tag", "create", json!({"id": new_id(), "name": name, "updated_at": ts(-100)})))
                .await;
            assert_eq!(ack["type"], "sync_ack", "{ack}");
            assert_eq!(ack["seq"], round + 1, "{ack}");
            assert!(health().await <= 2, "more tenants open than max_open_tenants");
        }
    }
    // the evicted tenants' files are closed (by the pool, right after the eviction)
    if !backend::postgres() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // a writer's connection holds the database file once; a reader's goes with its read
        while open_tenant_files(&s.dir) > 2 {
            assert!(std::time::Instant::now() < deadline, "{} tenant files open", open_tenant_files(&s.dir));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for tenant in &tenants {
        let mut ws = Ws::connect(&s.ws_url(tenant, Some(&token))).await;
        let mut names: Vec<String> = ws.load(tenant).await["payload"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["round 0", "round 1", "round 2"]);
    }
    let metrics = s.http().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let evictions = metric(&metrics, "finwise_tenant_evictions_total")
        .unwrap_or_else(|| panic!("no eviction counter in {metrics}"));
    assert!(evictions >= 16.0, "{evictions} evictions for 18 writes to 6 tenants with room for 2");
}
