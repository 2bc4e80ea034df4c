//! Crash durability. The real `finwise` binary ingests under load and is killed with
//! SIGKILL at random moments; after every restart each acked change must be there with the acked
//! version, and every database file must pass SQLite's integrity check.
//!
//! `FINWISE_CRASH_FAULT` picks the fault of each round: `kill` (default: SIGKILL of the server,
//! then a restart), and on PostgreSQL `pg-terminate` (`pg_terminate_backend` of every connection
//! of the server, which keeps running) or `pg-restart` (a fast shutdown of a PostgreSQL cluster
//! of the test's own, down for half a second, under load). In the PostgreSQL faults the clients
//! may get the retryable `storage_error` refusal; nothing acked may be missing.
//!
//! After each round the changes acked since the previous check are read back through a delta load;
//! every `FULL_CHECK_EVERY` rounds and at the end, everything acked through a full load.
//!
//! Short configuration (CI): `FINWISE_CRASH_ROUNDS` rounds (default 6). Long configuration: see
//! docs/RELIABILITY.md. Needs the binary: `cargo build -p finwise-cli` (scripts/test-all does).
//! The clients refresh their access token before it expires, as a real client does, so a run may
//! last longer than a token; a round in which nothing is acked says whether the clients could
//! not connect (and why: an expired token is told apart) or the server took no writes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use finwise_testkit::{
    backend,
    process::{pg_intact, storage_intact, ServerProcess},
};

/// What happens to the server in each round.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    Kill,
    PgTerminate,
    PgRestart,
}

fn fault() -> Fault {
    match std::env::var("FINWISE_CRASH_FAULT").as_deref() {
        Err(_) | Ok("kill") => Fault::Kill,
        Ok("pg-terminate") => Fault::PgTerminate,
        Ok("pg-restart") => Fault::PgRestart,
        Ok(other) => panic!("FINWISE_CRASH_FAULT={other}: kill, pg-terminate or pg-restart"),
    }
}

/// Retryable refusals the clients got (PostgreSQL faults): counted, never acked.
type Refused = Arc<std::sync::atomic::AtomicU64>;

/// A tiny deterministic generator, so a failing seed can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// What the clients saw acked: entity id → (updated_at, name).
type Acked = Arc<Mutex<HashMap<String, (String, String)>>>;

/// Why the clients of a round could not connect (the round's failure message shows them).
type ConnectErrors = Arc<Mutex<Vec<String>>>;

/// The test's login, refreshed like a real client's: a new access token (with the refresh token,
/// which rotates) once less than a minute of the current one is left.
struct Session {
    http: reqwest::Client,
    base: String,
    access: String,
    refresh: String,
    expires_at: std::time::Instant,
    refreshes: u32,
}

impl Session {
    async fn register(addr: &str, name: &str) -> (Session, String) {
        let base = format!("http://{addr}");
        let v = finwise_testkit::register_and_login(&base, name, &format!("{name}-password")).await;
        let mut s = Session {
            http: reqwest::Client::new(),
            base,
            access: String::new(),
            refresh: String::new(),
            expires_at: std::time::Instant::now(),
            refreshes: 0,
        };
        s.take(&v);
        let tenant = uuid::Uuid::new_v4().to_string();
        let r = s
            .http
            .post(format!("{}/tenants", s.base))
            .bearer_auth(&s.access)
            .json(&json!({"uuid": tenant, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (s, tenant)
    }

    fn take(&mut self, v: &Value) {
        self.access = v["access_token"].as_str().expect("an access token").to_owned();
        self.refresh = v["refresh_token"].as_str().expect("a refresh token").to_owned();
        let ttl = v["expires_in"].as_u64().unwrap_or(900);
        self.expires_at = std::time::Instant::now() + Duration::from_secs(ttl);
    }

    /// The access token, refreshed first when it is about to expire (`addr`: the server now).
    async fn token(&mut self, addr: &str) -> String {
        if self.expires_at.saturating_duration_since(std::time::Instant::now()) < Duration::from_secs(60) {
            self.base = format!("http://{addr}");
            let r = self
                .http
                .post(format!("{}/token", self.base))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", self.refresh.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "refreshing the access token");
            let v: Value = r.json().await.unwrap();
            self.take(&v);
            self.refreshes += 1;
        }
        self.access.clone()
    }
}

#[allow(clippy::too_many_arguments)] // one per aspect of a client, named at the call site
async fn ingest(
    addr: String,
    tenant: String,
    token: String,
    acked: Acked,
    worker: usize,
    batch: bool,
    errors: ConnectErrors,
    refused: Refused,
) {
    let ws = match tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}")).await {
        Ok((ws, _)) => ws,
        Err(e) => return errors.lock().unwrap().push(format!("worker {worker}: {e}")),
    };
    let (mut sink, mut stream) = ws.split();
    // entry id → (entity id, name, updated_at) of what was sent and not yet answered
    type Pending = Arc<Mutex<HashMap<String, (String, String, String)>>>;
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let p2 = Arc::clone(&pending);
    // FINWISE_CRASH_PACE_MS between frames (default 0: as fast as the server acks): long runs
    // pace the load so that a thousand rounds do not build a database that takes minutes to load
    let pace: u64 = std::env::var("FINWISE_CRASH_PACE_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    // aborted with this worker: in the PostgreSQL faults the test aborts the workers while the
    // server (and so the socket) lives on, and a sender left running would keep writing
    let sender = AbortOnDrop(tokio::spawn(async move {
        for n in 0.. {
            let per = if batch { 20 } else { 1 };
            let mut entries = Vec::new();
            for k in 0..per {
                let id = uuid::Uuid::new_v4().to_string();
                let name = format!("w{worker}-{n}-{k}");
                let at = finwise_protocol::time::format_ms(chrono::Utc::now().timestamp_millis() - 1000);
                let entry_id = uuid::Uuid::new_v4().to_string();
                p2.lock().unwrap().insert(entry_id.clone(), (id.clone(), at.clone(), name.clone()));
                entries.push(json!({"id": entry_id, "tenantId": tenant, "entityType": "Tag", "entityId": id,
                    "operationType": "create", "payload": {"id": id, "name": name, "updated_at": at}}));
            }
            let frame = if batch {
                json!({"type": "process_sync_batch", "entries": entries})
            } else {
                json!({"type": "process_sync_entry", "payload": entries[0]})
            };
            if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                return;
            }
            if pace > 0 {
                tokio::time::sleep(Duration::from_millis(pace)).await;
            } else if n % 16 == 15 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }));
    while let Some(Ok(Message::Text(t))) = stream.next().await {
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        let record = |id: &str, updated_at: &str| {
            if let Some((eid, _, name)) = pending.lock().unwrap().remove(id) {
                acked.lock().unwrap().insert(eid, (updated_at.to_owned(), name));
            }
        };
        let retryable = |r: &Value| {
            let reason = r["reason"].as_str().unwrap_or_default();
            assert!(["storage_error", "overloaded"].contains(&reason), "unexpected refusal {r}");
            pending.lock().unwrap().remove(r["id"].as_str().unwrap_or_default());
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        match v["type"].as_str() {
            Some("sync_ack") => record(v["id"].as_str().unwrap(), v["updated_at"].as_str().unwrap()),
            Some("sync_batch_result") => {
                for r in v["results"].as_array().unwrap() {
                    if r["status"] == "processed" {
                        record(r["id"].as_str().unwrap(), r["updated_at"].as_str().unwrap());
                    } else {
                        retryable(r);
                    }
                }
            }
            Some("sync_nack") => retryable(&v),
            _ => {}
        }
    }
    drop(sender);
}

/// A task that is aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Access tokens live `FINWISE_CRASH_TOKEN_TTL` seconds (default 62, refreshed with less than 60 s left): even the short
/// configuration outlives a token, so the refresh path runs in CI too.
///
/// `database_url`: the PostgreSQL database to use instead of the kit's (PostgreSQL faults).
fn start_server(dir: &std::path::Path, database_url: Option<&str>) -> ServerProcess {
    let ttl = std::env::var("FINWISE_CRASH_TOKEN_TTL").unwrap_or_else(|_| "62".into());
    ServerProcess::start_cmd(dir, |c| {
        c.args(["--messages-per-second", "1000000"]).env("FINWISE_ACCESS_TOKEN_TTL", ttl);
        if let Some(url) = database_url {
            c.env("FINWISE_DATABASE_URL", url);
        }
    })
}

/// A full check of everything acked every this many rounds (and after the last); the rounds in
/// between check the changes acked since the previous check, through a delta load. A full load
/// every round made long unpaced runs quadratic (rounds of ~8 s after 190).
const FULL_CHECK_EVERY: u64 = 50;

/// The tenant's tags changed after `since` (all of them when 0) as a fresh socket loads them
/// (chunked: long runs store far more than one 16 MiB frame holds), and the load's seq. After a
/// PostgreSQL fault the first tries may be refused: retried for 30 s.
async fn load_tags(addr: &str, tenant: &str, token: &str, since: i64) -> (Vec<Value>, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'attempt: loop {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}"))
            .await
            .unwrap();
        ws.next().await.unwrap().unwrap();
        let mut request = json!({"type": "request_initial_data", "tenant_id": tenant, "chunk_size": 10_000});
        if since > 0 {
            request["since"] = json!(since);
        }
        ws.send(Message::Text(request.to_string().into())).await.unwrap();
        let mut tags: Vec<Value> = Vec::new();
        loop {
            let m = ws.next().await.unwrap().unwrap();
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap_or(Value::Null);
            if v["event_type"] == "initial_data_load" {
                tags.extend(v["payload"]["tags"].as_array().unwrap().iter().cloned());
                if v["more"] != true {
                    return (tags, v["seq"].as_i64().expect("a load carries the tenant's seq"));
                }
            } else if v["type"] == "error" {
                assert!(tokio::time::Instant::now() < deadline, "the load kept failing: {v}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'attempt;
            }
        }
    }
}

/// Checks that the acked changes are stored with their acked versions: every one when `full`,
/// else those not yet seen in the version acked, through a delta load after `checked_seq`.
/// Returns how many were checked, how many tags the load held and the seq it read after.
#[allow(clippy::too_many_arguments)]
async fn check_acked(
    addr: &str,
    tenant: &str,
    token: &str,
    acked: &Acked,
    verified: &mut HashMap<String, (String, String)>,
    checked_seq: &mut i64,
    full: bool,
    seed: u64,
    round: u64,
) -> (usize, usize, i64) {
    let since = if full { 0 } else { *checked_seq };
    let (tags, seq) = load_tags(addr, tenant, token, since).await;
    let stored: HashMap<&str, &Value> = tags.iter().map(|t| (t["id"].as_str().unwrap(), t)).collect();
    let mut checked = 0;
    for (id, version) in acked.lock().unwrap().iter() {
        if !full && verified.get(id) == Some(version) {
            continue;
        }
        let t = stored.get(id.as_str()).unwrap_or_else(|| panic!("seed {seed} round {round}: acked {id} lost"));
        let (updated_at, name) = version;
        assert_eq!(
            (t["updated_at"].as_str().unwrap(), t["name"].as_str().unwrap()),
            (updated_at.as_str(), name.as_str()),
            "seed {seed} round {round}"
        );
        verified.insert(id.clone(), version.clone());
        checked += 1;
    }
    *checked_seq = seq;
    (checked, stored.len(), since)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_changes_survive_kill_9() {
    let rounds: u64 = std::env::var("FINWISE_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let seed: u64 = std::env::var("FINWISE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() as u64);
    let fault = fault();
    if fault != Fault::Kill && backend::postgres_only("PostgreSQL faults") {
        return;
    }
    println!("crash test: seed {seed} (replay with FINWISE_CRASH_SEED={seed}), {rounds} rounds, fault {fault:?}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL faults: the server's connections carry a name of their own (to be terminated),
    // and pg-restart needs a cluster that may be restarted
    let app = format!("finwise_crash_{}", uuid::Uuid::new_v4().simple());
    let mut cluster = (fault == Fault::PgRestart).then(backend::OwnCluster::start);
    let db_url = match (fault, &cluster) {
        (Fault::Kill, _) => None,
        (_, Some(c)) => Some(format!("{}?application_name={app}", c.url)),
        (_, None) => backend::database_url(dir.path()).map(|u| format!("{u}&application_name={app}")),
    };
    let mut server = start_server(dir.path(), db_url.as_deref());
    let (mut session, tenant) = Session::register(&server.addr, "crash").await;

    let acked: Acked = Arc::new(Mutex::new(HashMap::new()));
    let refused: Refused = Arc::default();
    let mut addr = server.addr.clone();
    // long runs (scripts/long-checks crash --minutes N) stop at the rounds or the deadline
    let deadline: Option<Duration> =
        std::env::var("FINWISE_CRASH_DEADLINE_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs);
    let started = std::time::Instant::now();
    let mut rounds_run = 0;
    // what the checks have found so far: entity id → the version seen, and the seq they read up to
    let mut verified: HashMap<String, (String, String)> = HashMap::new();
    let mut checked_seq = 0;
    for round in 0..rounds {
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            println!("crash test: deadline reached after {round} rounds");
            break;
        }
        rounds_run = round + 1;
        let token = session.token(&addr).await;
        let errors: ConnectErrors = Arc::default();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, tenant, token, acked, errors, refused) = (
                    addr.clone(),
                    tenant.clone(),
                    token.clone(),
                    Arc::clone(&acked),
                    Arc::clone(&errors),
                    Arc::clone(&refused),
                );
                tokio::spawn(ingest(addr, tenant, token, acked, w, w % 2 == 1, errors, refused))
            })
            .collect();
        // The kill window starts at this round's first ack, so long runs keep testing ingest
        // even when a big database makes the restart slow.
        let at_start = acked.lock().unwrap().len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() == at_start && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if acked.lock().unwrap().len() == at_start {
            let errors = errors.lock().unwrap().clone();
            if errors.is_empty() {
                panic!("seed {seed} round {round}: the server accepted the connections but acked nothing within 30 s");
            }
            let expired = std::time::Instant::now() >= session.expires_at;
            panic!(
                "seed {seed} round {round}: nothing acked within 30 s: the clients could not connect ({})",
                if expired { "the access token had expired" } else { "the token was still valid" }.to_owned()
                    + &format!(": {errors:?}")
            );
        }
        let delay = 100 + rng.next() % 700;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match fault {
            Fault::Kill => {
                server.kill(); // SIGKILL
                for w in workers {
                    let _ = w.await;
                }
                server = start_server(dir.path(), db_url.as_deref());
                addr = server.addr.clone();
            }
            Fault::PgTerminate | Fault::PgRestart => {
                if fault == Fault::PgTerminate {
                    let base = db_url.as_deref().expect("a database URL");
                    let n = backend::terminate_backends(base, &app);
                    assert!(n > 0, "seed {seed} round {round}: the server had no connection to terminate");
                } else {
                    let c = cluster.take().expect("the test's cluster");
                    cluster = Some(
                        tokio::task::spawn_blocking(move || {
                            c.restart(Duration::from_millis(500));
                            c
                        })
                        .await
                        .unwrap(),
                    );
                }
                // the load goes on against the recovering server for a moment, then stops
                tokio::time::sleep(Duration::from_millis(300)).await;
                for w in workers {
                    w.abort();
                    let _ = w.await;
                }
                assert!(server.child.try_wait().unwrap().is_none(), "seed {seed} round {round}: the server exited");
            }
        }
        let before = acked.lock().unwrap().len();
        let token = session.token(&addr).await;
        // Every acked change is there, with the acked version: all of them in a full check, the
        // ones acked since the last check (a later seq) otherwise.
        let full = round % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1;
        let (checked, stored, since) =
            check_acked(&addr, &tenant, &token, &acked, &mut verified, &mut checked_seq, full, seed, round).await;
        let what = match fault {
            Fault::Kill => "killed",
            Fault::PgTerminate => "backends terminated",
            Fault::PgRestart => "PostgreSQL restarted",
        };
        println!(
            "round {round}: {what} after {delay} ms; {before} acked changes all present ({checked} checked against the {stored} tags changed after seq {since})"
        );
    }
    // the last check reads everything, whatever the rounds before read
    let token = session.token(&addr).await;
    let (checked, stored, _) =
        check_acked(&addr, &tenant, &token, &acked, &mut verified, &mut checked_seq, true, seed, rounds_run).await;
    println!("final check: {checked} acked changes all present ({stored} stored)");
    server.kill();
    match &cluster {
        Some(c) => pg_intact(&c.url, &tenant),
        None => storage_intact(dir.path(), &tenant),
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 100, "only {total} changes were acked");
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    if fault == Fault::Kill {
        assert_eq!(refused, 0, "refusals without a database fault");
    }
    println!(
        "crash test: {rounds_run} rounds ({fault:?}) in {:.0} s, {total} acked changes, none lost, {refused} retryable refusals, \
         integrity ok ({} token refreshes)",
        started.elapsed().as_secs_f64(),
        session.refreshes
    );
}
