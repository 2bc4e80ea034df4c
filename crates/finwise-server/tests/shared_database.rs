//! Several servers on one PostgreSQL database (PostgreSQL only: a data dir has one server).
//! What must hold across them without any cross-node messaging: one account's password guesses
//! are counted together, the JWT secret is the one the first server stored, an account made on
//! one server logs in on the other, and a refresh token replayed on another server revokes its
//! family there too.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use finwise_testkit::{
    backend,
    process::{account, ServerProcess},
    TestServer,
};
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
        c.registrations_per_address = 3;
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

    // three registrations from one address in all, wherever they land (one was "shared" on A)
    let register = |s: &TestServer, name: &str| {
        let (http, url) = (s.http(), s.url("/register"));
        let body = json!({"name": name, "email": format!("{name}@example.org"), "password": "correct horse battery"});
        async move { http.post(url).json(&body).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(register(&b, "second").await, 201);
    assert_eq!(register(&a, "third").await, 201);
    assert_eq!(register(&b, "fourth").await, 429, "the fourth registration is refused on the other server too");
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

/// Three nodes take writes for one tenant at once: the seqs are dense, a socket on every node
/// sees every change once, in order, as a `create` (the 0.4 frontend ignores an update of an
/// entity it does not have), a delta from any cursor on any node is exactly what changed after
/// it, and every node reports the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_writing_one_tenant_at_once_agree_on_everything() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let a = TestServer::start(|_| {}).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut config = a.config.clone();
        config.addr = "127.0.0.1:0".parse().unwrap();
        others.push(TestServer::start_with(config).await);
    }
    let nodes: Vec<&TestServer> = std::iter::once(&a).chain(others.iter()).collect();
    let (_, token, _) = a.user("three").await;
    let tenant = a.tenant(&token, "Three nodes").await;
    let mut watchers = Vec::new();
    for n in &nodes {
        watchers.push(finwise_testkit::Ws::connect(&n.ws_url(&tenant, Some(&token))).await);
    }
    let loads: Vec<Load> = nodes.iter().map(|n| Load::start(n.ws_url(&tenant, Some(&token)), &tenant, 2)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut acked = 0;
    for l in loads {
        acked += l.finish().await.acked.lock().unwrap().len();
    }
    for (i, w) in watchers.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        while let Some(v) = w.try_recv(Duration::from_millis(2500)).await {
            if v["event_type"] == "data_update" {
                assert_eq!(v["operation_type"], "create", "node {i}: {v}");
                seqs.push(v["seq"].as_i64().unwrap());
            }
        }
        assert_eq!(seqs, (1..=acked as i64).collect::<Vec<_>>(), "node {i} saw every change once, in order");
    }
    let mut digests = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut ws = finwise_testkit::Ws::connect(&n.ws_url(&tenant, Some(&token))).await;
        let full = ws.load(&tenant).await;
        assert_eq!(full["seq"], acked, "node {i}: head");
        let all = full["payload"]["tags"].as_array().unwrap().clone();
        for cursor in [0, acked as i64 / 3, acked as i64 - 7, acked as i64] {
            let delta = ws.load_since(&tenant, cursor.max(0)).await;
            let mut got: Vec<String> =
                delta["payload"]["tags"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().into()).collect();
            got.sort();
            // each tag was written once, at the seq of its ack: the delta after `cursor` is the
            // tags whose names were acked after it, i.e. as many as the seqs after it
            assert_eq!(got.len() as i64, acked as i64 - cursor.max(0), "node {i}: delta after {cursor}");
            assert!(got.iter().all(|id| all.iter().any(|t| t["id"] == *id)), "node {i}: delta ids are live tags");
        }
        digests.push(ws.status(&tenant).await["tenant_digest"].clone());
    }
    assert!(digests.iter().all(|d| *d == digests[0] && d.is_string()), "{digests:?}");
    println!("{acked} changes written through three nodes at once");
}

/// A tenant is deleted on one server while another is writing it: the writer's sockets close,
/// and nothing of the tenant is left in the database afterwards — no group the other server
/// still had in flight writes its data (or its head) anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_deleted_on_one_server_while_another_writes_it_stays_deleted() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let a = TestServer::start(|_| {}).await;
    let mut config = a.config.clone();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let url = config.database_url.clone().unwrap();
    let b = TestServer::start_with(config).await;
    let (_, token, _) = a.user("deleter").await;
    let tenant = a.tenant(&token, "Doomed").await;
    let mut on_b = finwise_testkit::Ws::connect(&b.ws_url(&tenant, Some(&token))).await;
    let load = Load::start(b.ws_url(&tenant, Some(&token)), &tenant, 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = a.http().delete(a.url(&format!("/tenants/{tenant}/complete"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_b.recv_until(|v| v.get("closed").is_some()).await, json!({"closed": 1001}));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let acked = load.acked();
    load.stop.store(true, Ordering::SeqCst);
    let t = tenant.clone();
    let left = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut count = |sql: &str| c.query_one(sql, &[&t]).unwrap().get::<_, i64>(0);
        (
            count("SELECT count(*) FROM entities WHERE tenant_id = $1::text::uuid"),
            count("SELECT count(*) FROM applied_entries WHERE tenant_id = $1::text::uuid"),
            count("SELECT count(*) FROM tenant_heads WHERE tenant_id = $1::text::uuid AND NOT deleted"),
        )
    })
    .await
    .unwrap();
    assert_eq!(left, (0, 0, 0), "nothing of the deleted tenant is left ({acked} changes were acked before)");
    assert!(acked > 0);
    let r = b.http().get(b.url("/tenants/")).bearer_auth(&token).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains(&tenant), "the tenant is gone on the other server too");
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

/// Every commit that raises a head is announced on `finwise_heads` as `tenant:from:to`, in the
/// tenant's commit order: the hint the other servers' relays act on (their 2 s poll only backs it
/// up, so without this test a broken announcer would pass every other one, only slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raised_head_is_announced_in_commit_order() {
    use postgres::fallible_iterator::FallibleIterator;
    if backend::postgres_only("announcements exist on PostgreSQL only") {
        return;
    }
    let a = TestServer::start(|_| {}).await;
    let url = a.config.database_url.clone().unwrap();
    let (_, token, _) = a.user("announced").await;
    let tenant = a.tenant(&token, "Announced").await;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let prefix = format!("{tenant}:");
    // other tests on the same PostgreSQL announce too: only this tenant's heads count
    let listener = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("LISTEN finwise_heads").unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut notes = c.notifications();
        let mut it = notes.timeout_iter(Duration::from_secs(10));
        while got.len() < 3 {
            match it.next() {
                Ok(Some(n)) if n.payload().starts_with(&prefix) => got.push(n.payload().to_owned()),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    });
    tokio::task::spawn_blocking(move || ready_rx.recv().unwrap()).await.unwrap();
    let mut writer = finwise_testkit::Ws::connect(&a.ws_url(&tenant, Some(&token))).await;
    for i in 0..3i64 {
        let e = finwise_testkit::entry(&tenant, "Tag", "create", json!({"id": finwise_testkit::new_id(), "name": "t"}));
        assert_eq!(writer.entry(&e).await["seq"], i + 1);
    }
    let got = tokio::task::spawn_blocking(move || listener.join().unwrap()).await.unwrap();
    assert_eq!(got, (0..3).map(|i| format!("{tenant}:{i}:{}", i + 1)).collect::<Vec<_>>());
}

/// The notifier fails in the three known ways, and changes still cross: (1) the other server's
/// listening connection is killed: it reconnects and catches up what it missed; (2) the
/// notifications silently stop (the announcing function is replaced by one that does nothing):
/// the safety poll delivers within seconds, in order; (3) announcing fails with an error: the
/// poll delivers, and the writing server counts the heads in `finwise_unannounced_heads_total`.
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
    write_and_expect(&mut writer, &mut reader, &tenant, 1, "caught up after the reconnect").await;

    // (2) notifications stop without any error: the poll still delivers, in order
    let schema = url.rsplit("%3D").next().unwrap().to_owned();
    admin_exec(format!(
        "CREATE OR REPLACE FUNCTION {schema}.finwise_announce_heads(heads text[]) RETURNS void \
         LANGUAGE plpgsql AS $$ BEGIN END $$"
    ));
    let started = std::time::Instant::now();
    write_and_expect(&mut writer, &mut reader, &tenant, 4, "delivered by the safety poll").await;
    println!("without notifications, delivered after {:?}", started.elapsed());
    reader.assert_silent(300).await;

    // (3) announcing fails: counted on the writing server, delivered by the poll
    let unannounced = || async {
        let text = a.http().get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("finwise_unannounced_heads_total "))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .expect("the counter is exported on PostgreSQL")
    };
    assert_eq!(unannounced().await, 0.0);
    admin_exec(format!(
        "CREATE OR REPLACE FUNCTION {schema}.finwise_announce_heads(heads text[]) RETURNS void \
         LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'announcing is broken'; END $$"
    ));
    write_and_expect(&mut writer, &mut reader, &tenant, 7, "delivered by the safety poll").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while unannounced().await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "3 failed announcements were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(unannounced().await, 3.0);
}

/// Writes three tags (`n{from}` on) through `writer` and expects them on `reader` in seq order
/// (`from + 1` to `from + 3`: the tenant's seq is `from` before), `why` naming the path.
async fn write_and_expect(
    writer: &mut finwise_testkit::Ws,
    reader: &mut finwise_testkit::Ws,
    tenant: &str,
    from: i64,
    why: &str,
) {
    for i in from..from + 3 {
        let e = finwise_testkit::entry(
            tenant,
            "Tag",
            "create",
            json!({"id": finwise_testkit::new_id(), "name": format!("n{i}")}),
        );
        assert_eq!(writer.entry(&e).await["type"], "sync_ack");
    }
    for seq in from + 1..=from + 3 {
        let v = next_update(reader, 10_000).await.unwrap_or_else(|| panic!("seq {seq} not {why}"));
        assert_eq!(v["seq"], seq, "{v}");
    }
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

/// Clients writing one tenant through `url` (a balancer, or one node): each sends one entry at a
/// time and waits for its answer; an entry left unanswered (the connection died or went silent)
/// or refused as retryable is sent again, with the same entry id, on a new connection if need be.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    seen: Arc<Seen>,
}

/// What the clients of a [`Load`] saw.
#[derive(Default)]
struct Seen {
    /// entity id -> (name, acked seq)
    acked: Mutex<HashMap<String, (String, i64)>>,
    duplicates: AtomicUsize,
    /// NACK reason -> count (every one of them was retryable)
    nacks: Mutex<HashMap<String, usize>>,
    /// connections opened after the first one of each client
    reconnects: AtomicUsize,
    /// `status: shutdown` messages received (a node draining)
    shutdowns: AtomicUsize,
}

impl Load {
    fn start(url: String, tenant: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let workers = (0..clients)
            .map(|w| {
                tokio::spawn(Self::client(w, url.clone(), tenant.to_owned(), Arc::clone(&stop), Arc::clone(&seen)))
            })
            .collect();
        Load { stop, workers, seen }
    }

    async fn client(w: usize, url: String, tenant: String, stop: Arc<AtomicBool>, seen: Arc<Seen>) {
        let mut i = 0;
        let mut pending: Option<Value> = None;
        let mut ws: Option<finwise_testkit::Ws> = None;
        let mut connected_once = false;
        while !stop.load(Ordering::SeqCst) {
            let e = pending.take().unwrap_or_else(|| {
                i += 1;
                let id = finwise_testkit::new_id();
                finwise_testkit::entry(&tenant, "Tag", "create", json!({"id": id, "name": format!("w{w}-{i}")}))
            });
            if ws.is_none() {
                match tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url.as_str())).await
                {
                    Ok(Ok((inner, _))) => {
                        if connected_once {
                            seen.reconnects.fetch_add(1, Ordering::SeqCst);
                        }
                        connected_once = true;
                        ws = Some(finwise_testkit::Ws { inner });
                    }
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
                    Some(v) if (v["type"] == "sync_ack" || v["type"] == "sync_nack") && v["id"] == id => break Some(v),
                    Some(v) if v["type"] == "status" && v["status"] == "shutdown" => {
                        seen.shutdowns.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(v) if v.get("closed").is_some() => break None,
                    Some(_) => continue,
                    None => break None,
                }
            };
            match answer {
                Some(v) if v["type"] == "sync_ack" => {
                    if v["duplicate"] == true {
                        seen.duplicates.fetch_add(1, Ordering::SeqCst);
                    }
                    let name = e["payload"]["name"].as_str().unwrap().to_owned();
                    let eid = e["entityId"].as_str().unwrap().to_owned();
                    let seq = v["seq"].as_i64().unwrap();
                    if let Some((_, before)) = seen.acked.lock().unwrap().insert(eid, (name, seq)) {
                        assert_eq!(before, seq, "a resend acked with another seq");
                    }
                }
                Some(v) => {
                    assert_eq!(v["retryable"], true, "only retryable refusals: {v}");
                    *seen.nacks.lock().unwrap().entry(v["reason"].as_str().unwrap().to_owned()).or_default() += 1;
                    pending = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None => {
                    // the node is gone, draining, or silent: resend on a new connection
                    ws = None;
                    pending = Some(e);
                }
            }
        }
    }

    fn acked(&self) -> usize {
        self.seen.acked.lock().unwrap().len()
    }

    /// Stops the clients (each finishes the entry it has in flight) and returns what they saw.
    async fn finish(self) -> Arc<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            tokio::time::timeout(Duration::from_secs(20), w).await.expect("a client finishes").unwrap();
        }
        self.seen
    }
}

/// The `data_update` seqs `ws` receives until it is quiet for 2.5 s.
async fn seqs_until_quiet(ws: &mut finwise_testkit::Ws) -> Vec<i64> {
    let mut seen = Vec::new();
    while let Some(v) = ws.try_recv(Duration::from_millis(2500)).await {
        if v["event_type"] == "data_update" {
            seen.push(v["seq"].as_i64().unwrap());
        }
        assert!(v.get("closed").is_none(), "the watching socket stayed open: {v}");
    }
    seen
}

/// Every acked change is stored under the head `addr` loads, and `watched` (the seqs a socket
/// received) is every seq once, in order. Returns the head.
async fn everything_acked_is_there(addr: &str, tenant: &str, token: &str, seen: &Seen, watched: &[i64]) -> i64 {
    let url = format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}");
    let load = finwise_testkit::Ws::connect(&url).await.load(tenant).await;
    let head = load["seq"].as_i64().unwrap();
    let tags = load["payload"]["tags"].as_array().unwrap();
    for (id, (name, _)) in seen.acked.lock().unwrap().iter() {
        assert!(tags.iter().any(|t| t["id"] == *id && t["name"] == *name), "acked {id} is stored");
    }
    assert_eq!(watched, (1..=head).collect::<Vec<_>>(), "the watching socket saw every change once, in order");
    head
}

/// Nodes on one database (`url`), each with its own data dir (for its log and pid only).
fn nodes(url: &str, n: usize) -> (Vec<tempfile::TempDir>, Vec<ServerProcess>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let procs = dirs
        .iter()
        .map(|d| {
            let u = url.to_owned();
            ServerProcess::start_cmd(d.path(), move |c| {
                c.env("FINWISE_DATABASE_URL", u);
            })
        })
        .collect();
    (dirs, procs)
}

/// A node is SIGKILLed under load behind a balancer: its clients reconnect (to the other node)
/// and resend what was not acked, with the same entry ids; every acked change is there with its
/// acked seq, a resend of a change that had committed is a duplicate with the original seq, and a
/// socket on the surviving node saw every change of the tenant once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_nothing_behind_a_balancer() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let url = backend::database_url(scratch.path()).unwrap();
    let (_dirs, mut procs) = nodes(&url, 2);
    let lb = balancer(procs.iter().map(|p| p.addr.clone()).collect()).await;
    let survivor = procs[1].addr.clone();
    let (token, tenants) = account(&survivor, "balanced", 1).await;
    let tenant = tenants[0].clone();
    let ws_url = |addr: &str| format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}");
    let mut watcher = finwise_testkit::Ws::connect(&ws_url(&survivor)).await;

    let load = Load::start(ws_url(&lb), &tenant, 4);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_kill = load.acked();
    procs[0].kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = load.finish().await;
    let acked = seen.acked.lock().unwrap().len();
    assert!(acked > before_kill, "writes went on through the other node");
    println!(
        "{acked} changes acked ({before_kill} before the kill), {} resends were duplicates, {} reconnects",
        seen.duplicates.load(Ordering::SeqCst),
        seen.reconnects.load(Ordering::SeqCst)
    );
    let watched = seqs_until_quiet(&mut watcher).await;
    everything_acked_is_there(&survivor, &tenant, &token, &seen, &watched).await;
}

/// One of three nodes is drained (SIGTERM) under load behind a balancer: it tells its clients
/// (`status: shutdown`), answers what it has in flight, and exits 0; its clients reconnect to
/// the other two and go on; nothing acked is lost, and sockets on the other nodes saw every
/// change once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_hands_its_clients_to_the_others() {
    if backend::postgres_only("one server per data dir") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let url = backend::database_url(scratch.path()).unwrap();
    let (_dirs, mut procs) = nodes(&url, 3);
    let lb = balancer(procs.iter().map(|p| p.addr.clone()).collect()).await;
    let (token, tenants) = account(&procs[1].addr, "drained", 1).await;
    let tenant = tenants[0].clone();
    let ws_url = |addr: &str| format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}");
    let mut watchers = [
        finwise_testkit::Ws::connect(&ws_url(&procs[1].addr)).await,
        finwise_testkit::Ws::connect(&ws_url(&procs[2].addr)).await,
    ];

    // six clients: two on each node
    let load = Load::start(ws_url(&lb), &tenant, 6);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = load.acked();
    let mut drained = procs.remove(0);
    let exited_cleanly = tokio::task::spawn_blocking(move || drained.terminate()).await.unwrap();
    assert!(exited_cleanly, "the drained node exits with 0");
    let at_exit = load.acked();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = load.finish().await;
    let acked = seen.acked.lock().unwrap().len();
    assert!(
        acked > at_exit,
        "the other nodes carried on ({before} acked before the drain, {at_exit} at its exit, {acked} in all)"
    );
    assert!(seen.shutdowns.load(Ordering::SeqCst) >= 1, "the drained node's clients were told");
    assert!(seen.reconnects.load(Ordering::SeqCst) >= 1, "and reconnected elsewhere");
    println!(
        "{acked} acked, {} shutdown notices, {} reconnects, {} duplicates, refusals {:?}",
        seen.shutdowns.load(Ordering::SeqCst),
        seen.reconnects.load(Ordering::SeqCst),
        seen.duplicates.load(Ordering::SeqCst),
        seen.nacks.lock().unwrap()
    );
    for (i, w) in watchers.iter_mut().enumerate() {
        let watched = seqs_until_quiet(w).await;
        everything_acked_is_there(&procs[i].addr, &tenant, &token, &seen, &watched).await;
    }
}

/// PostgreSQL itself restarts under load (fast shutdown: every connection cut, 1 s down): writes
/// meanwhile get the retryable `storage_error` (or wait), the nodes stay up and reconnect by
/// themselves (pool and listener), the sockets stay open, and afterwards writes go on through
/// both nodes; everything acked is there, and a socket on each node saw every change once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_restarted_under_load_needs_no_node_restart() {
    if backend::postgres_only("a restart of the database server") {
        return;
    }
    let cluster = backend::OwnCluster::start();
    let (_dirs, procs) = nodes(&cluster.url, 2);
    let (token, tenants) = account(&procs[0].addr, "restarted", 1).await;
    let tenant = tenants[0].clone();
    let ws_url = |addr: &str| format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}");
    let mut watchers = [
        finwise_testkit::Ws::connect(&ws_url(&procs[0].addr)).await,
        finwise_testkit::Ws::connect(&ws_url(&procs[1].addr)).await,
    ];
    // clients on each node directly: a client's socket has no reason to close
    let loads = [Load::start(ws_url(&procs[0].addr), &tenant, 2), Load::start(ws_url(&procs[1].addr), &tenant, 2)];
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(Duration::from_secs(1));
        cluster
    })
    .await
    .unwrap();
    let after_restart: Vec<usize> = loads.iter().map(Load::acked).collect();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let mut refusals: HashMap<String, usize> = HashMap::new();
    let all = Seen::default();
    for (i, load) in loads.into_iter().enumerate() {
        let seen = load.finish().await;
        let acked = seen.acked.lock().unwrap().clone();
        assert!(acked.len() > after_restart[i], "node {i} took writes again without a restart");
        assert_eq!(seen.reconnects.load(Ordering::SeqCst), 0, "node {i}'s clients kept their sockets");
        for (r, n) in seen.nacks.lock().unwrap().iter() {
            *refusals.entry(r.clone()).or_default() += n;
        }
        all.acked.lock().unwrap().extend(acked);
    }
    println!("{} acked; refusals while the database was away: {refusals:?}", all.acked.lock().unwrap().len());
    assert!(refusals.keys().all(|r| r == "storage_error" || r == "overloaded"), "{refusals:?}");
    for (i, w) in watchers.iter_mut().enumerate() {
        let watched = seqs_until_quiet(w).await;
        everything_acked_is_there(&procs[i].addr, &tenant, &token, &all, &watched).await;
    }
    drop(procs);
    drop(cluster);
}
