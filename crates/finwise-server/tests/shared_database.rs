//! Several servers on one PostgreSQL database (PostgreSQL only: a data dir has one server).
//! What must hold across them without any cross-node messaging: one account's password guesses
//! are counted together, the JWT secret is the one the first server stored, an account made on
//! one server logs in on the other, and a refresh token replayed on another server revokes its
//! family there too.

use finwise_testkit::{backend, TestServer};
use serde_json::{json, Value};

async fn login(s: &TestServer, login: &str, password: &str) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/login"))
        .json(&json!({"username_or_email": login, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn refresh(s: &TestServer, token: &str) -> u16 {
    refresh_body(s, token).await.0
}

async fn refresh_body(s: &TestServer, token: &str) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_accounts_secret_guesses_and_token_families() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    // no configured secret: both servers must use the one the first stored in the database
    let a = TestServer::start(|c| {
        c.jwt_secret = None;
        c.login_attempts_per_account = 5;
    })
    .await;
    let mut config = a.config.clone();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let b = TestServer::start_with(config).await;

    let (_, token, refresh_token) = a.user("shared").await;
    // a token issued by A is accepted by B
    let r = b.http().get(b.url("/tenants/")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "same signing secret on both servers");
    let (status, _) = login(&b, "shared@example.org", "correct horse battery").await;
    assert_eq!(status, 200, "the account made on A logs in on B");

    // five guesses in all, wherever they land
    for (i, s) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (status, _) = login(s, "shared@example.org", "wrong").await;
        assert_eq!(status, 401, "guess {i}");
    }
    for s in [&a, &b] {
        let (status, _) = login(s, "shared@example.org", "correct horse battery").await;
        assert_eq!(status, 429, "the sixth attempt is refused on every server");
    }

    // refresh on A, replay the used token on B: the family is revoked for both
    let (status, rotated) = refresh_body(&a, &refresh_token).await;
    assert_eq!(status, 200, "{rotated}");
    let next = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&b, &refresh_token).await, 401, "replay detected on the other server");
    assert_eq!(refresh(&a, &next).await, 401, "the whole family is revoked");
}

/// The database kills every connection of the server (`pg_terminate_backend`, as a failover or
/// an operator would): writes in that moment get the retryable `storage_error`, never a false
/// ack; the server reconnects by itself, the retried entries land once, and loads work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_are_replaced_without_a_restart() {
    if backend::postgres_only("PostgreSQL connections") {
        return;
    }
    let app = format!("finwise_kill_{}", uuid::Uuid::new_v4().simple());
    let name = app.clone();
    let s = TestServer::start(move |c| {
        let url = c.database_url.take().unwrap();
        c.database_url = Some(format!("{url}&application_name={name}"));
    })
    .await;
    let (_, tenant, mut ws) = s.connected("survivor").await;
    let mut acked: Vec<(String, String)> = Vec::new();
    let tag = |i: usize| {
        let id = finwise_testkit::new_id();
        (id.clone(), finwise_testkit::entry(&tenant, "Tag", "create", json!({"id": id, "name": format!("k{i}")})))
    };
    for i in 0..20 {
        let (id, e) = tag(i);
        assert_eq!(ws.entry(&e).await["type"], "sync_ack");
        acked.push((id, format!("k{i}")));
    }
    let kill = |app: String| {
        let admin = backend::server_url();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .unwrap()
                .get(0);
            n
        })
        .join()
        .unwrap()
    };
    let killed = kill(app.clone());
    assert!(killed >= 1, "the server's pooled connections were there to kill");
    // Every entry now is acked (after a reconnect) or refused as retryable; retried until acked.
    let mut refused = 0;
    for i in 20..40 {
        let (id, e) = tag(i);
        loop {
            let r = ws.entry(&e).await;
            if r["type"] == "sync_ack" {
                break;
            }
            assert_eq!(r["reason"], "storage_error", "{r}");
            assert_eq!(r["retryable"], true, "{r}");
            refused += 1;
            assert!(refused < 50, "the server did not reconnect");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        acked.push((id, format!("k{i}")));
    }
    println!("{killed} connections killed; {refused} entries refused meanwhile, all acked on retry");
    // Loads read through new connections too (another kill in between).
    kill(app);
    let mut load = Value::Null;
    for _ in 0..20 {
        ws.send(&json!({"type": "request_initial_data", "tenant_id": tenant})).await;
        let v = ws.recv_until(|v| v["event_type"] == "initial_data_load" || v["type"] == "error").await;
        if v["event_type"] == "initial_data_load" {
            load = v;
            break;
        }
        assert_eq!(v["code"], "storage_error", "{v}");
    }
    let tags = load["payload"]["tags"].as_array().expect("a load after the reconnect");
    assert_eq!(tags.len(), acked.len(), "every acked change once");
    for (id, name) in &acked {
        assert!(tags.iter().any(|t| t["id"] == *id && t["name"] == *name), "{id} {name}");
    }
    assert_eq!(load["seq"], 40);
}

/// A commit on one server reaches the tenant's sockets on the other, in seq order, each change
/// once, whichever server wrote it; removing a member on one server closes that member's socket
/// on the other; deleting the tenant closes every socket everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_closes_cross_servers_in_order() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let a = TestServer::start(|_| {}).await;
    let mut config = a.config.clone();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let b = TestServer::start_with(config).await;
    let (_, token, _) = a.user("owner").await;
    let tenant = a.tenant(&token, "Two nodes").await;
    let (member_id, member_token, _) = a.user("member").await;
    let r = a
        .http()
        .post(a.url(&format!("/tenants/{tenant}/members")))
        .bearer_auth(&token)
        .json(&json!({"email": "member@example.org", "role": "member"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let mut on_a = finwise_testkit::Ws::connect(&a.ws_url(&tenant, Some(&token))).await;
    let mut on_b = finwise_testkit::Ws::connect(&b.ws_url(&tenant, Some(&token))).await;
    let mut member_on_b = finwise_testkit::Ws::connect(&b.ws_url(&tenant, Some(&member_token))).await;
    // both servers write, interleaved; every socket sees every other socket's change in seq order
    let mut expected = Vec::new();
    for i in 0..30 {
        let (w, name) = if i % 3 == 0 { (&mut on_b, "b") } else { (&mut on_a, "a") };
        let e = finwise_testkit::entry(
            &tenant,
            "Tag",
            "create",
            json!({"id": finwise_testkit::new_id(), "name": format!("{name}{i}")}),
        );
        let ack = w.entry(&e).await;
        assert_eq!(ack["type"], "sync_ack", "{ack}");
        expected.push(ack["seq"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let v = member_on_b.recv().await;
        assert_eq!(v["event_type"], "data_update", "{v}");
        seen.push(v["seq"].as_i64().expect("data_update carries its seq"));
    }
    assert_eq!(seen, expected, "every change once, in seq order, on the other server");
    member_on_b.assert_silent(300).await;

    // the member is removed on A: their socket on B closes with 1008
    let r = a
        .http()
        .delete(a.url(&format!("/tenants/{tenant}/members/{member_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(member_on_b.recv_until(|v| v.get("closed").is_some()).await, json!({"closed": 1008}));

    // the tenant is deleted on A: the owner's socket on B closes too
    let r = a.http().delete(a.url(&format!("/tenants/{tenant}/complete"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_b.recv_until(|v| v.get("closed").is_some()).await, json!({"closed": 1001}));
}

async fn next_update(ws: &mut finwise_testkit::Ws, wait_ms: u64) -> Option<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match ws.try_recv(left).await {
            Some(v) if v["event_type"] == "data_update" => return Some(v),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

fn admin_exec(sql: String) {
    let admin = backend::server_url();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap();
}

/// The notifier fails in both known ways, and changes still cross: (1) the other server's
/// listening connection is killed: it reconnects and catches up what it missed; (2) the
/// notifications silently stop (the trigger is disabled): the safety poll delivers within
/// seconds, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_notifier_delays_changes_but_never_loses_them() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let b_app = format!("finwise_b_{}", uuid::Uuid::new_v4().simple());
    let a = TestServer::start(|_| {}).await;
    let mut config = a.config.clone();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let url = config.database_url.clone().unwrap();
    config.database_url = Some(format!("{url}&application_name={b_app}"));
    let b = TestServer::start_with(config).await;
    let (_, token, _) = a.user("notified").await;
    let tenant = a.tenant(&token, "Notifier").await;
    let mut writer = finwise_testkit::Ws::connect(&a.ws_url(&tenant, Some(&token))).await;
    let mut reader = finwise_testkit::Ws::connect(&b.ws_url(&tenant, Some(&token))).await;
    let write = |i: usize| {
        finwise_testkit::entry(
            &tenant,
            "Tag",
            "create",
            json!({"id": finwise_testkit::new_id(), "name": format!("n{i}")}),
        )
    };
    let e = write(0);
    assert_eq!(writer.entry(&e).await["seq"], 1);
    assert_eq!(next_update(&mut reader, 5000).await.expect("delivered")["seq"], 1);

    // (1) every connection of B dies, its listener's included; A writes meanwhile
    admin_exec(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{b_app}'"));
    for i in 1..4 {
        let e = write(i);
        assert_eq!(writer.entry(&e).await["type"], "sync_ack");
    }
    for seq in 2..=4 {
        let v = next_update(&mut reader, 10_000).await.expect("caught up after the reconnect");
        assert_eq!(v["seq"], seq, "{v}");
    }

    // (2) notifications stop without any error: the poll still delivers, in order
    let schema = url.rsplit("%3D").next().unwrap().to_owned();
    admin_exec(format!("ALTER TABLE {schema}.tenant_heads DISABLE TRIGGER tenant_heads_notify"));
    let started = std::time::Instant::now();
    for i in 4..7 {
        let e = write(i);
        assert_eq!(writer.entry(&e).await["type"], "sync_ack");
    }
    for seq in 5..=7 {
        let v = next_update(&mut reader, 10_000).await.expect("delivered by the safety poll");
        assert_eq!(v["seq"], seq, "{v}");
    }
    println!("without notifications, delivered after {:?}", started.elapsed());
    reader.assert_silent(300).await;
}

/// A plain round-robin TCP balancer on 127.0.0.1 (no stickiness): each connection goes to the
/// next backend that accepts one.
async fn balancer(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            let mut chosen = None;
            for _ in 0..backends.len() {
                let b = backends[next % backends.len()].clone();
                next += 1;
                if let Ok(s) = tokio::net::TcpStream::connect(&b).await {
                    chosen = Some(s);
                    break;
                }
            }
            if let Some(mut outbound) = chosen {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        }
    });
    addr
}

/// A node is SIGKILLed under load behind a balancer: its clients reconnect (to the other node)
/// and resend what was not acked, with the same entry ids; every acked change is there with its
/// acked seq, a resend of a change that had committed is a duplicate with the original seq, and a
/// socket on the surviving node saw every change of the tenant once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_nothing_behind_a_balancer() {
    use finwise_testkit::process::{account, ServerProcess};
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = backend::database_url(dirs.0.path()).unwrap();
    let start = |dir: &std::path::Path| {
        let u = url.clone();
        ServerProcess::start_cmd(dir, move |c| {
            c.env("FINWISE_DATABASE_URL", u);
        })
    };
    let mut doomed = start(dirs.0.path());
    let survivor = start(dirs.1.path());
    let lb = balancer(vec![doomed.addr.clone(), survivor.addr.clone()]).await;
    let (token, tenants) = account(&survivor.addr, "balanced", 1).await;
    let tenant = tenants[0].clone();
    let ws_url = |addr: &str| format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}");
    let mut watcher = finwise_testkit::Ws::connect(&ws_url(&survivor.addr)).await;

    // entry id -> acked seq; and resends that came back as duplicates
    let acked: Arc<Mutex<HashMap<String, (String, i64)>>> = Arc::default();
    let duplicates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (acked, duplicates, stop, url, tenant) =
            (Arc::clone(&acked), Arc::clone(&duplicates), Arc::clone(&stop), ws_url(&lb), tenant.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            let mut pending: Option<Value> = None;
            let mut ws: Option<finwise_testkit::Ws> = None;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let e = pending.take().unwrap_or_else(|| {
                    i += 1;
                    let id = finwise_testkit::new_id();
                    finwise_testkit::entry(&tenant, "Tag", "create", json!({"id": id, "name": format!("w{w}-{i}")}))
                });
                if ws.is_none() {
                    match tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url.as_str()))
                        .await
                    {
                        Ok(Ok((inner, _))) => ws = Some(finwise_testkit::Ws { inner }),
                        _ => {
                            pending = Some(e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let sock = ws.as_mut().unwrap();
                sock.send(&json!({"type": "process_sync_entry", "payload": e})).await;
                let id = e["id"].clone();
                let answer = loop {
                    match sock.try_recv(Duration::from_secs(3)).await {
                        Some(v) if (v["type"] == "sync_ack" || v["type"] == "sync_nack") && v["id"] == id => {
                            break Some(v)
                        }
                        Some(v) if v.get("closed").is_some() => break None,
                        Some(_) => continue,
                        None => break None,
                    }
                };
                match answer {
                    Some(v) if v["type"] == "sync_ack" => {
                        if v["duplicate"] == true {
                            duplicates.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let name = e["payload"]["name"].as_str().unwrap().to_owned();
                        let eid = e["entityId"].as_str().unwrap().to_owned();
                        let seq = v["seq"].as_i64().unwrap();
                        if let Some((_, before)) = acked.lock().unwrap().insert(eid, (name, seq)) {
                            assert_eq!(before, seq, "a resend acked with another seq");
                        }
                    }
                    Some(v) => {
                        assert_eq!(v["retryable"], true, "{v}");
                        pending = Some(e);
                    }
                    None => {
                        // the node is gone (or silent): resend on a new connection
                        ws = None;
                        pending = Some(e);
                    }
                }
            }
        }));
    }
    let began = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_kill = acked.lock().unwrap().len();
    doomed.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(20), w).await.expect("a worker finishes").unwrap();
    }
    println!("workers done after {:?}", began.elapsed());
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > before_kill, "writes went on through the other node");
    println!(
        "{} changes acked ({before_kill} before the kill), {} resends were duplicates",
        acked.len(),
        duplicates.load(std::sync::atomic::Ordering::SeqCst)
    );

    // the watcher saw every seq once, in order; everything acked is stored with its acked seq
    let mut seen = Vec::new();
    while let Some(v) = watcher.try_recv(Duration::from_millis(2500)).await {
        if v["event_type"] == "data_update" {
            seen.push(v["seq"].as_i64().unwrap());
        }
    }
    let load = finwise_testkit::Ws::connect(&ws_url(&survivor.addr)).await.load(&tenant).await;
    let head = load["seq"].as_i64().unwrap();
    let tags = load["payload"]["tags"].as_array().unwrap();
    for (id, (name, _)) in &acked {
        assert!(tags.iter().any(|t| t["id"] == *id && t["name"] == *name), "acked {id} is stored");
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "the surviving node's socket saw every change once, in order");
}
