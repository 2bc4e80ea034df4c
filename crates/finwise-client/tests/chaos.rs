//! Chaos convergence. Several devices (the Rust client library, each with its own
//! store) create, update and delete entities of all nine types while:
//!
//! * a fault-injecting TCP proxy between them and the server cuts connections and delays bytes;
//! * entries are duplicated and reordered at the client level (earlier queue entries are resent,
//!   pending ones are sent shuffled across several batches on a separate connection);
//! * device clocks are skewed (within ±4 min; the server refuses more than 5 min ahead);
//! * devices "crash" (their sync task is aborted mid-flight, the store reopened);
//! * the server — the real `finwise` binary — is killed with SIGKILL and restarted on the same
//!   data dir at random moments. On PostgreSQL (`FINWISE_TEST_BACKEND=postgres`) there are
//!   three servers on one database (`FINWISE_CHAOS_NODES`), the proxy spreads connections over
//!   them round-robin (a plain balancer), and the killer kills and restarts one at a time.
//!
//! The proxy also taps the WebSocket frames in both directions (it parses them, it forwards the
//! bytes unchanged) and keeps a log of every entry sent and every ack the server gave. At the end
//! every replica's digest must equal the server's `tenant_digest`, all replicas must be equal,
//! and the server's state must equal LWW over all acked changes (no acked change missing, no
//! change without an ack).
//!
//! Short configuration (CI): 3 seeds × 400 operations (about 30 s). Long configuration:
//! `FINWISE_CHAOS_SEEDS=20 FINWISE_CHAOS_OPS=3000 cargo nextest run -p finwise-client --test chaos`;
//! replay one seed with `FINWISE_CHAOS_SEED=<seed>` (the operation sequence and the fault
//! schedule are replayed; thread timing is not deterministic). Needs the binary:
//! `cargo build -p finwise-cli`.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{dump, fast_options};
use finwise_client::{store::Store, Auth, Client, EntityType, EntryStatus, Operation};
use finwise_testkit::{process::ServerProcess, random_payload};
use futures_util::{SinkExt, StreamExt};
use rand::{
    rngs::StdRng,
    seq::{IndexedRandom, SliceRandom},
    Rng, SeedableRng,
};
use serde_json::{json, Map, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// The real server binary

/// The real binary on `dir` (on `database`, when nodes share one), with the rate limit out of
/// the way; killed when dropped.
fn start_server(dir: &Path, database: Option<&str>) -> (ServerProcess, SocketAddr) {
    let server = ServerProcess::start_cmd(dir, |c| {
        c.args(["--messages-per-second", "1000000"]).env("FINWISE_LOG", "error");
        if let Some(url) = database {
            c.env("FINWISE_DATABASE_URL", url);
        }
    });
    let addr = server.addr.parse().expect("a socket address");
    (server, addr)
}

// ---------------------------------------------------------------------------------------------
// The ack log, filled by the proxy's tap

#[derive(Debug, Clone)]
struct AckRec {
    entity_type: EntityType,
    entity_id: String,
    op: String,
    payload: Value,
    updated_at_ms: i64,
    applied: bool,
    duplicate: bool,
    /// A field-level update: the fields it named.
    fields: Option<Vec<String>>,
}

/// The `updated_at` an entry's payload carries (its stamp).
fn stamp_of(payload: &Value) -> Option<i64> {
    payload["updated_at"].as_str().and_then(finwise_protocol::time::parse_ms)
}

/// Whether an entry (as sent) writes field `f`: a create or whole update writes every field, a
/// field-level update those it names.
fn writes_field(entry: &Value, f: &str) -> bool {
    entry["operationType"] != "delete" && entry["fields"].as_array().is_none_or(|names| names.iter().any(|n| n == f))
}

#[derive(Default)]
struct Log {
    /// Every entry seen going to the server: entry id → entry.
    sent: HashMap<String, Value>,
    acks: Vec<AckRec>,
    nacks: BTreeMap<String, u64>,
    frames_c2s: u64,
    frames_s2c: u64,
}

impl Log {
    fn client_frame(&mut self, text: &str) {
        self.frames_c2s += 1;
        let Ok(v) = serde_json::from_str::<Value>(text) else { return };
        match v["type"].as_str() {
            Some("process_sync_batch") => {
                for e in v["entries"].as_array().into_iter().flatten() {
                    if let Some(id) = e["id"].as_str() {
                        self.sent.insert(id.to_owned(), e.clone());
                    }
                }
            }
            Some("process_sync_entry") => {
                if let Some(id) = v["payload"]["id"].as_str() {
                    self.sent.insert(id.to_owned(), v["payload"].clone());
                }
            }
            _ => {}
        }
    }

    fn result(&mut self, r: &Value) {
        let id = r["id"].as_str().unwrap_or_default();
        if r["status"] != "processed" {
            *self.nacks.entry(r["reason"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
            return;
        }
        let e = self.sent.get(id).unwrap_or_else(|| panic!("ack for an entry never seen going out: {r}"));
        let ms = r["updated_at"]
            .as_str()
            .and_then(finwise_protocol::time::parse_ms)
            .unwrap_or_else(|| panic!("ack without updated_at: {r}"));
        self.acks.push(AckRec {
            entity_type: EntityType::parse(e["entityType"].as_str().unwrap()).unwrap(),
            entity_id: e["entityId"].as_str().unwrap().to_owned(),
            op: e["operationType"].as_str().unwrap().to_lowercase(),
            payload: e["payload"].clone(),
            updated_at_ms: ms,
            applied: r["applied"].as_bool().unwrap_or(true),
            duplicate: r["duplicate"].as_bool().unwrap_or(false),
            fields: e["fields"].as_array().map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect()),
        });
    }

    fn server_frame(&mut self, text: &str) {
        self.frames_s2c += 1;
        let Ok(v) = serde_json::from_str::<Value>(text) else { return };
        match v["type"].as_str() {
            Some("sync_batch_result") => {
                for r in v["results"].as_array().into_iter().flatten() {
                    self.result(r);
                }
            }
            Some("sync_ack") | Some("sync_nack") => {
                let mut r = v.clone();
                r["status"] = json!(if v["type"] == "sync_ack" { "processed" } else { "failed" });
                self.result(&r);
            }
            _ => {}
        }
    }
}

/// Reassembles WebSocket text messages from a byte stream (either direction; client frames are
/// masked). Only observes: the proxy forwards the bytes unchanged.
#[derive(Default)]
struct WsTap {
    buf: Vec<u8>,
    upgraded: bool,
    dead: bool,
    frag: Vec<u8>,
    in_text: bool,
}

impl WsTap {
    fn feed(&mut self, data: &[u8], server_side: bool, out: &mut Vec<String>) {
        if self.dead {
            return;
        }
        self.buf.extend_from_slice(data);
        if !self.upgraded {
            let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            if server_side && !self.buf.starts_with(b"HTTP/1.1 101") {
                self.dead = true;
                return;
            }
            self.buf.drain(..p + 4);
            self.upgraded = true;
        }
        let mut start = 0;
        loop {
            let b = &self.buf[start..];
            if b.len() < 2 {
                break;
            }
            let fin = b[0] & 0x80 != 0;
            let op = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let mut len = (b[1] & 0x7f) as usize;
            let mut pos = 2;
            if len == 126 {
                if b.len() < 4 {
                    break;
                }
                len = u16::from_be_bytes([b[2], b[3]]) as usize;
                pos = 4;
            } else if len == 127 {
                if b.len() < 10 {
                    break;
                }
                len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
                pos = 10;
            }
            let mask = if masked {
                if b.len() < pos + 4 {
                    break;
                }
                let m = [b[pos], b[pos + 1], b[pos + 2], b[pos + 3]];
                pos += 4;
                Some(m)
            } else {
                None
            };
            if b.len() < pos + len {
                break;
            }
            let mut payload = b[pos..pos + len].to_vec();
            if let Some(m) = mask {
                for (i, x) in payload.iter_mut().enumerate() {
                    *x ^= m[i % 4];
                }
            }
            start += pos + len;
            match op {
                1 if fin => out.push(String::from_utf8_lossy(&payload).into_owned()),
                1 => {
                    self.frag = payload;
                    self.in_text = true;
                }
                0 if self.in_text => {
                    self.frag.extend_from_slice(&payload);
                    if fin {
                        out.push(String::from_utf8_lossy(&self.frag).into_owned());
                        self.frag.clear();
                        self.in_text = false;
                    }
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
    }
}

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    cuts: AtomicU64,
    delays: AtomicU64,
    refused: AtomicU64,
    kills: AtomicU64,
    injected_batches: AtomicU64,
    injected_entries: AtomicU64,
    device_crashes: AtomicU64,
    sync_errors: AtomicU64,
}

struct ProxyState {
    /// The nodes; each connection goes to the next one that accepts it.
    targets: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
    chaos: AtomicBool,
    seed: u64,
    log: Mutex<Log>,
    stats: Stats,
    /// Connections opened before this generation are cut.
    cut_gen: tokio::sync::watch::Sender<u64>,
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.cut_gen.send_replace(u64::MAX);
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<ProxyState>,
    server_side: bool,
    mut rng: StdRng,
) {
    let mut tap = WsTap::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tap.feed(&buf[..n], server_side, &mut frames);
        if !frames.is_empty() {
            let mut log = st.log.lock().unwrap();
            for f in frames.drain(..) {
                if server_side {
                    log.server_frame(&f);
                } else {
                    log.client_frame(&f);
                }
            }
        }
        if st.chaos.load(Ordering::Relaxed) && rng.random_bool(0.08) {
            st.stats.delays.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..60))).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start(targets: Vec<SocketAddr>, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut_gen, _) = tokio::sync::watch::channel(0u64);
        let state = Arc::new(ProxyState {
            targets: Mutex::new(targets),
            next: AtomicUsize::new(0),
            chaos: AtomicBool::new(false),
            seed,
            log: Mutex::new(Log::default()),
            stats: Stats::default(),
            cut_gen,
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else { return };
                let n = st.stats.connections.fetch_add(1, Ordering::Relaxed);
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(st.seed ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                    let targets = st.targets.lock().unwrap().clone();
                    let mut up = None;
                    for _ in 0..targets.len() {
                        let t = targets[st.next.fetch_add(1, Ordering::Relaxed) % targets.len()];
                        if let Ok(s) = TcpStream::connect(t).await {
                            up = Some(s);
                            break;
                        }
                    }
                    let Some(up) = up else {
                        st.stats.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let chaos = st.chaos.load(Ordering::Relaxed);
                    // Some connections are cut after a random lifetime.
                    let lifetime =
                        (chaos && rng.random_bool(0.3)).then(|| Duration::from_millis(rng.random_range(20..2500)));
                    let gen = *st.cut_gen.borrow();
                    let mut cut = st.cut_gen.subscribe();
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    let c2s = pump(dr, uw, Arc::clone(&st), false, StdRng::seed_from_u64(rng.random()));
                    let s2c = pump(ur, dw, Arc::clone(&st), true, StdRng::seed_from_u64(rng.random()));
                    let cut_by_timer = async {
                        match lifetime {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = c2s => {}
                        _ = s2c => {}
                        _ = cut_by_timer => { st.stats.cuts.fetch_add(1, Ordering::Relaxed); }
                        _ = cut.wait_for(|g| *g > gen) => { st.stats.cuts.fetch_add(1, Ordering::Relaxed); }
                    }
                });
            }
        });
        Proxy { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut_all(&self) {
        self.state.cut_gen.send_modify(|g| *g += 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads for the nine entity types

// ---------------------------------------------------------------------------------------------
// Devices

struct Device {
    auth: Arc<Auth>,
    dir: tempfile::TempDir,
    client: Client,
    /// A second handle on the same store file: local changes stamped with this device's skewed
    /// clock (the library stamps with the system clock, which the test cannot skew).
    store: Store,
    offset_ms: i64,
    watching: bool,
    watch: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<finwise_client::Result<()>>)>,
}

impl Device {
    fn open(auth: Arc<Auth>, tenant: &str, dir: tempfile::TempDir, offset_ms: i64, watching: bool) -> Device {
        let client = Client::open(Arc::clone(&auth), tenant, dir.path(), fast_options()).unwrap();
        let store = Store::open(&Client::store_path(dir.path(), &auth.user_id(), tenant)).unwrap();
        let mut d = Device { auth, dir, client, store, offset_ms, watching, watch: None };
        if watching {
            d.start_watch();
        }
        d
    }

    fn start_watch(&mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = self.client.clone();
        let h = tokio::spawn(async move {
            c.watch(async {
                let _ = rx.await;
            })
            .await
        });
        self.watch = Some((tx, h));
    }

    async fn stop_watch(&mut self) {
        if let Some((tx, h)) = self.watch.take() {
            let _ = tx.send(());
            let r = tokio::time::timeout(Duration::from_secs(30), h).await.expect("watch stops").unwrap();
            r.expect("watch ends without a permanent error");
        }
    }

    /// A device crash: its sync task dies mid-flight and the store is reopened.
    fn crash(self, tenant: &str) -> Device {
        let Device { auth, dir, client, store, offset_ms, watching, watch } = self;
        if let Some((_, h)) = watch {
            h.abort();
        }
        drop(client);
        drop(store);
        Device::open(auth, tenant, dir, offset_ms, watching)
    }

    /// A local create/update/delete with this device's clock; returns what it did.
    fn local_op(&mut self, t: EntityType, id: &str, marker: &str, rng: &mut StdRng) -> &'static str {
        // A watching device may apply a remote version between the look and the change: the
        // library then refuses the change (exists / not found) and the test looks again.
        for _ in 0..10 {
            let row = self.store.get(t, id).unwrap();
            let live = row.as_ref().is_some_and(|r| !r.deleted);
            let now = finwise_protocol::time::now_ms() + self.offset_ms;
            let ms = row.as_ref().map_or(now, |r| now.max(r.updated_at_ms + 1));
            let (op, entity) = if !live {
                (Operation::Create, Some(random_payload(t, id, marker, rng)))
            } else if rng.random_bool(0.3) {
                (Operation::Delete, None)
            } else {
                (Operation::Update, Some(random_payload(t, id, marker, rng)))
            };
            if self.offset_ms == 0 {
                // The library's own API (system clock).
                let r = match (op, entity) {
                    (Operation::Create, Some(p)) => self.client.create(t, p).map(drop),
                    (Operation::Update, Some(p)) => self.client.update(t, id, p).map(drop),
                    _ => self.client.delete(t, id),
                };
                match r {
                    Ok(()) => return op.as_str(),
                    Err(finwise_client::Error::NotFound { .. }) => continue,
                    Err(finwise_client::Error::Validation { error: source, .. })
                        if source.message.contains("already exists") =>
                    {
                        continue
                    }
                    Err(e) => panic!("local {} of {t} {id}: {e}", op.as_str()),
                }
            } else {
                let entity = entity.map(|p| t.def().normalize(&p, ms).unwrap());
                self.store.local_change(t, id, op, entity.as_ref(), ms, None).unwrap();
                return op.as_str();
            }
        }
        panic!("{t} {id} keeps changing under the device");
    }
}

/// Sends a device's queue entries on a separate connection: earlier (done) entries again, and
/// pending ones in shuffled order across several batches. The device's queue is not touched, so
/// it sends them again itself later (duplicates of entries the server has, in the other order).
async fn inject(proxy: &Proxy, tenant: &str, dev: &Device, rng: &mut StdRng) {
    let mut entries = dev.store.entries(EntryStatus::Pending).unwrap();
    let done = dev.store.entries(EntryStatus::Done).unwrap();
    for e in done.choose_multiple(rng, 5) {
        entries.push(e.clone());
    }
    if entries.is_empty() {
        return;
    }
    entries.shuffle(rng);
    let url = format!("ws://{}/ws_finwise/ws/{tenant}?token={}", proxy.addr, dev.auth.access_token());
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
    else {
        return;
    };
    let n = entries.len();
    let parts = rng.random_range(1..=3.min(n));
    let per = n.div_ceil(parts);
    for chunk in entries.chunks(per) {
        let wire: Vec<Value> = chunk
            .iter()
            .map(|e| {
                json!({"id": e.id, "tenantId": tenant, "entityType": e.entity_type.as_str(), "entityId": e.entity_id,
                    "operationType": e.operation.as_str(), "payload": e.payload, "timestamp": e.timestamp,
                    "fields": e.fields})
            })
            .collect();
        if ws
            .send(Message::Text(json!({"type": "process_sync_batch", "entries": wire}).to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        proxy.state.stats.injected_batches.fetch_add(1, Ordering::Relaxed);
        proxy.state.stats.injected_entries.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        // Wait for the result (or give up: the link may be cut, the server killed).
        let wait = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if t.contains("\"sync_batch_result\"") {
                        return true;
                    }
                }
            }
            false
        });
        if !matches!(wait.await, Ok(true)) {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn next_where(ws: &mut RawWs, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m =
            tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("server answers").unwrap().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap_or(Value::Null);
        if pred(&v) {
            return v;
        }
    }
}

/// The server's digest and full state, read directly (not through the proxy).
async fn server_state(addr: SocketAddr, tenant: &str, token: &str) -> (String, Value) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::Text(
        json!({"type": "data_status_request", "tenant_id": tenant, "entity_types": null}).to_string().into(),
    ))
    .await
    .unwrap();
    let st = next_where(&mut ws, |v| v["type"] == "data_status_response").await;
    ws.send(Message::Text(json!({"type": "request_initial_data", "tenant_id": tenant}).to_string().into()))
        .await
        .unwrap();
    let load = next_where(&mut ws, |v| v["event_type"] == "initial_data_load").await;
    (st["tenant_digest"].as_str().unwrap().to_owned(), load)
}

/// JSON equality with numbers compared as f64 (the wire turns 1.0 into 1.0 or 1).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn content(v: &Value) -> Map<String, Value> {
    let mut m = v.as_object().cloned().unwrap_or_default();
    for k in ["updated_at", "updatedAt", "createdAt"] {
        m.remove(k);
    }
    m
}

struct Summary {
    ops: u64,
    acks: usize,
    applied_acks: usize,
    duplicate_acks: usize,
    lost_acks: usize,
    entities: usize,
    live: usize,
    kills: u64,
    cuts: u64,
    delays: u64,
    refused: u64,
    injected: (u64, u64),
    crashes: u64,
    sync_errors: u64,
    nacks: BTreeMap<String, u64>,
    secs: f64,
}

async fn run(seed: u64, ops: u64) -> Summary {
    let started = Instant::now();
    println!("chaos: seed {seed} (replay with FINWISE_CHAOS_SEED={seed}), {ops} operations");
    let mut rng = StdRng::seed_from_u64(seed);
    // one node on SQLite (one server per data dir), three on PostgreSQL sharing one database
    let default_nodes = if finwise_testkit::backend::postgres() { 3 } else { 1 };
    let node_count: usize =
        std::env::var("FINWISE_CHAOS_NODES").ok().and_then(|s| s.parse().ok()).unwrap_or(default_nodes);
    let dirs: Vec<tempfile::TempDir> = (0..node_count).map(|_| tempfile::tempdir().unwrap()).collect();
    let database = finwise_testkit::backend::database_url(dirs[0].path());
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for dir in &dirs {
        let (d, db) = (dir.path().to_path_buf(), database.clone());
        let (c, a) = tokio::task::spawn_blocking(move || start_server(&d, db.as_deref())).await.unwrap();
        children.push(Arc::new(Mutex::new(c)));
        addrs.push(a);
    }
    let proxy = Proxy::start(addrs, seed).await;
    println!("chaos: {node_count} server node(s) behind the proxy");
    let url = proxy.url();
    Auth::register(&url, "chaos", "chaos@example.org", "correct horse battery").await.unwrap();
    let login = || Auth::login(&url, "chaos@example.org", "correct horse battery", None);
    let first = Arc::new(login().await.unwrap());
    let tenant = first.create_tenant("Chaos").await.unwrap().uuid;

    // Four devices: clock offsets within ±4 min (device 0 uses the library's API with the system
    // clock); devices 0 and 1 stay connected (`watch`), 2 and 3 sync now and then.
    let offsets = [
        0i64,
        rng.random_range(-240_000..240_000),
        rng.random_range(-240_000..240_000),
        rng.random_range(-240_000..240_000),
    ];
    let mut devices = Vec::new();
    for (i, off) in offsets.iter().enumerate() {
        let auth = if i == 0 { Arc::clone(&first) } else { Arc::new(login().await.unwrap()) };
        devices.push(Some(Device::open(auth, &tenant, tempfile::tempdir().unwrap(), *off, i < 2)));
    }
    println!("chaos: clock offsets {offsets:?} ms");
    let ids: Vec<Vec<String>> = EntityType::ALL
        .iter()
        .enumerate()
        .map(|(ti, _)| (0..5).map(|k| format!("00000000-0000-4000-9{ti:03}-{k:012}")).collect())
        .collect();

    // The killer: SIGKILL one node and restart it on its data dir at random moments.
    proxy.state.chaos.store(true, Ordering::SeqCst);
    let stop_killer = Arc::new(AtomicBool::new(false));
    let killer = {
        let (children, state, stop, database) =
            (children.clone(), Arc::clone(&proxy.state), Arc::clone(&stop_killer), database.clone());
        let dirs: Vec<_> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        let mut krng = StdRng::seed_from_u64(seed.wrapping_add(1));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(krng.random_range(700..2500))).await;
                let n = krng.random_range(0..children.len());
                children[n].lock().unwrap().kill();
                state.stats.kills.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(krng.random_range(0..400))).await;
                let (d, db) = (dirs[n].clone(), database.clone());
                let (c, a) = tokio::task::spawn_blocking(move || start_server(&d, db.as_deref())).await.unwrap();
                *children[n].lock().unwrap() = c;
                state.targets.lock().unwrap()[n] = a;
            }
        })
    };

    for step in 0..ops {
        let d = rng.random_range(0..devices.len());
        match rng.random_range(0..100) {
            0..=59 => {
                let ti = rng.random_range(0..EntityType::ALL.len());
                let t = EntityType::ALL[ti];
                let id = ids[ti][rng.random_range(0..5)].clone();
                let marker = format!("s{seed} op{step} d{d}");
                devices[d].as_mut().unwrap().local_op(t, &id, &marker, &mut rng);
            }
            60..=74 => {
                let dev = devices[d].as_ref().unwrap();
                if !dev.watching {
                    let r = tokio::time::timeout(Duration::from_secs(20), dev.client.sync_once()).await;
                    if !matches!(r, Ok(Ok(_))) {
                        proxy.state.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            75..=83 => inject(&proxy, &tenant, devices[d].as_ref().unwrap(), &mut rng).await,
            84..=87 => {
                let dev = devices[d].take().unwrap();
                devices[d] = Some(dev.crash(&tenant));
                proxy.state.stats.device_crashes.fetch_add(1, Ordering::Relaxed);
            }
            88..=89 => proxy.cut_all(),
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..8))).await;
    }

    // Calm: stop killing (the server runs), stop faults, stop the watchers, settle everyone.
    stop_killer.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    proxy.state.chaos.store(false, Ordering::SeqCst);
    let mut devices: Vec<Device> = devices.into_iter().map(Option::unwrap).collect();
    for dev in &mut devices {
        dev.stop_watch().await;
    }
    let addr = proxy.state.targets.lock().unwrap()[0];
    let token = devices[0].auth.access_token();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (server_digest, load) = loop {
        for dev in &devices {
            let _ = tokio::time::timeout(Duration::from_secs(20), dev.client.sync_once()).await;
        }
        let (digest, load) = server_state(addr, &tenant, &token).await;
        let settled = devices.iter().all(|d| {
            let st = d.client.status().unwrap();
            st.queue.pending + st.queue.processing == 0 && st.local_digest == digest
        });
        if settled {
            break (digest, load);
        }
        assert!(Instant::now() < deadline, "seed {seed}: replicas did not settle within 60 s after the chaos");
    };

    // 1. Every replica equals the server (digest) and each other (content).
    let reference = dump(&devices[0].client);
    for (i, dev) in devices.iter().enumerate() {
        let st = dev.client.status().unwrap();
        assert_eq!(
            (st.queue.pending, st.queue.processing, st.queue.failed),
            (0, 0, 0),
            "seed {seed} device {i}: {:?}",
            dev.client.queue_entries(EntryStatus::Failed).unwrap()
        );
        assert_eq!(st.local_digest, server_digest, "seed {seed} device {i}: digest differs from the server's");
        assert_eq!(dump(&dev.client), reference, "seed {seed} device {i}: content differs from device 0");
    }

    // 2. The server equals LWW over every acked change; no acked change is missing.
    let log = proxy.state.log.lock().unwrap();
    let mut winners: HashMap<(EntityType, String), &AckRec> = HashMap::new();
    for a in &log.acks {
        let key = (a.entity_type, a.entity_id.clone());
        if !a.applied {
            continue;
        }
        match winners.get(&key) {
            Some(w) if w.updated_at_ms > a.updated_at_ms => {}
            Some(w) if w.updated_at_ms == a.updated_at_ms => {
                // The same version acked twice (a duplicate, or an identical resend).
                assert_eq!(w.op == "delete", a.op == "delete", "seed {seed}: two versions of {key:?} share updated_at");
                if a.op != "delete" {
                    assert!(
                        same(&Value::Object(content(&w.payload)), &Value::Object(content(&a.payload))),
                        "seed {seed}: two contents of {key:?} share updated_at"
                    );
                }
            }
            _ => {
                winners.insert(key, a);
            }
        }
    }
    let mut live: HashMap<(EntityType, String), &Value> = HashMap::new();
    for t in EntityType::ALL {
        for e in load["payload"][t.collection()].as_array().unwrap() {
            live.insert((*t, e["id"].as_str().unwrap().to_owned()), e);
        }
    }
    for (key, w) in &winners {
        match (w.op.as_str(), live.get(key)) {
            ("delete", None) => {}
            ("delete", Some(e)) => {
                panic!("seed {seed}: {key:?} acked as deleted at {} but the server has {e}", w.updated_at_ms)
            }
            (_, None) => panic!("seed {seed}: acked {key:?} at {} is missing on the server", w.updated_at_ms),
            (_, Some(e)) => {
                let ms = e["updated_at"].as_str().and_then(finwise_protocol::time::parse_ms).unwrap();
                assert_eq!(ms, w.updated_at_ms, "seed {seed}: {key:?}: server version is not the newest acked one");
                let stamp = stamp_of(&w.payload);
                if w.fields.is_none() && stamp == Some(w.updated_at_ms) {
                    // decided as a whole (neither merged nor restamped): exactly the acked version
                    assert!(
                        same(&Value::Object(content(e)), &Value::Object(content(&w.payload))),
                        "seed {seed}: {key:?}: server {e} != acked {}",
                        w.payload
                    );
                    continue;
                }
                // merged field by field: every value was written by an entry of this entity, and
                // where the winner wrote a field the server holds another value of, that value
                // comes from an entry stamped at least as late (the newer edit was kept)
                let entries: Vec<&Value> = log
                    .sent
                    .values()
                    .filter(|s| s["entityId"] == key.1.as_str() && s["entityType"] == key.0.as_str())
                    .collect();
                let names_field = |f: &str| w.fields.as_ref().is_none_or(|names| names.iter().any(|n| n == f));
                for (f, v) in content(e) {
                    let sources: Vec<&&Value> =
                        entries.iter().filter(|s| writes_field(s, &f) && same(&s["payload"][f.as_str()], &v)).collect();
                    assert!(!sources.is_empty(), "seed {seed}: {key:?}: {f} = {v} was never written");
                    if names_field(&f) && !same(&w.payload[f.as_str()], &v) {
                        assert!(
                            sources.iter().any(|s| stamp_of(&s["payload"]) >= stamp),
                            "seed {seed}: {key:?}: the acked {f} = {} lost to the older {v}",
                            w.payload[f.as_str()]
                        );
                    }
                }
            }
        }
    }
    for key in live.keys() {
        assert!(winners.contains_key(key), "seed {seed}: the server has {key:?} but no change of it was acked");
    }
    let permanent: u64 =
        log.nacks.iter().filter(|(r, _)| !matches!(r.as_str(), "storage_error" | "overloaded")).map(|(_, n)| n).sum();
    assert_eq!(permanent, 0, "seed {seed}: permanent refusals {:?}", log.nacks);
    assert!(
        log.acks.len() as u64 >= ops / 4,
        "seed {seed}: too few acks ({}): the chaos starved the load",
        log.acks.len()
    );

    let s = &proxy.state.stats;
    let summary = Summary {
        ops,
        acks: log.acks.len(),
        applied_acks: log.acks.iter().filter(|a| a.applied && !a.duplicate).count(),
        duplicate_acks: log.acks.iter().filter(|a| a.duplicate).count(),
        lost_acks: log.acks.iter().filter(|a| !a.applied && !a.duplicate).count(),
        entities: winners.len(),
        live: live.len(),
        kills: s.kills.load(Ordering::Relaxed),
        cuts: s.cuts.load(Ordering::Relaxed),
        delays: s.delays.load(Ordering::Relaxed),
        refused: s.refused.load(Ordering::Relaxed),
        injected: (s.injected_batches.load(Ordering::Relaxed), s.injected_entries.load(Ordering::Relaxed)),
        crashes: s.device_crashes.load(Ordering::Relaxed),
        sync_errors: s.sync_errors.load(Ordering::Relaxed),
        nacks: log.nacks.clone(),
        secs: started.elapsed().as_secs_f64(),
    };
    drop(log);
    for c in &children {
        c.lock().unwrap().kill();
    }
    finwise_testkit::process::storage_intact(dirs[0].path(), &tenant);
    println!(
        "chaos: seed {seed}: {} ops, {} acks ({} applied, {} duplicates, {} lost to newer), {} entities ({} live), \
         {} server kills, {} cuts, {} delays, {} refused connects, {} injected batches ({} entries), {} device crashes, \
         {} failed syncs, retryable nacks {:?}, {:.1} s: converged, nothing lost",
        summary.ops, summary.acks, summary.applied_acks, summary.duplicate_acks, summary.lost_acks, summary.entities, summary.live,
        summary.kills, summary.cuts, summary.delays, summary.refused, summary.injected.0, summary.injected.1, summary.crashes,
        summary.sync_errors, summary.nacks, summary.secs
    );
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_convergence() {
    let ops: u64 = std::env::var("FINWISE_CHAOS_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let seeds: Vec<u64> = match std::env::var("FINWISE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => {
            let n: u64 = std::env::var("FINWISE_CHAOS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
            let base = chrono::Utc::now().timestamp_millis() as u64;
            (0..n).map(|i| base.wrapping_add(i * 7919)).collect()
        }
    };
    let mut total = (0u64, 0usize, 0u64, 0u64);
    for seed in seeds.iter().copied() {
        let s = run(seed, ops).await;
        total = (total.0 + s.ops, total.1 + s.acks, total.2 + s.kills, total.3 + s.cuts);
    }
    println!(
        "chaos: {} seeds, {} operations, {} acks, {} server kills, {} connection cuts: every replica equals the server, nothing lost",
        seeds.len(), total.0, total.1, total.2, total.3
    );
}
