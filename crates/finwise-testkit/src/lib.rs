//! The test kit of FinWise Sync (dev-only, not published): what every test suite of the
//! workspace needs to talk to a real server over real sockets, written once.
//!
//! - [`TestServer`]: the server in-process on 127.0.0.1 (port 0, or the same port again after a
//!   stop), with a temporary data dir, and account/tenant fixtures over REST.
//! - [`process::ServerProcess`]: the `finwise` binary as a child process (for SIGKILL, `/proc`,
//!   its log); [`process::binary`] builds it when it is missing or stale, so plain `cargo test`
//!   works.
//! - [`Ws`]: a WebSocket test client; [`raw_upgrade`] a socket upgraded by hand (for peers that
//!   never read or send half a frame).
//! - Fixtures: [`entry`], [`full_entities`] (one valid entity of every type), [`new_id`], [`ts`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub mod backend;
pub mod process;

use finwise_protocol::entity::EntityType;
use finwise_server::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<ServerTask>,
    pub config: Config,
}

/// The configuration of test servers: port 0, `dir` (on PostgreSQL: the schema named after it,
/// see [`backend`]), a fixed JWT secret (tokens survive a restart), no heartbeats.
pub fn base_config(dir: &std::path::Path) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url: backend::database_url(dir),
        // many test servers share one PostgreSQL server (max_connections)
        database_pool_size: 6,
        jwt_secret: Some("test-secret-test-secret-test-secret!".into()),
        heartbeat_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

type ServerTask = JoinHandle<anyhow::Result<()>>;

/// Binds `config.addr`, runs the server on it and waits until it answers `/health` (its data
/// dir is open and migrated by then).
async fn launch(config: &Config) -> (SocketAddr, oneshot::Sender<()>, ServerTask) {
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(finwise_server::serve(listener, config.clone(), async {
        let _ = rx.await;
    }));
    let url = format!("http://{addr}/health");
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            return (addr, stop, task);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not become ready");
}

impl TestServer {
    /// Starts a server with a fresh data dir; `tweak` adjusts the configuration.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = base_config(tmp.path());
        tweak(&mut config);
        let mut s = TestServer::start_with(config).await;
        s._tmp = Some(tmp);
        s
    }

    pub async fn start_with(config: Config) -> TestServer {
        let (addr, stop, task) = launch(&config).await;
        TestServer { addr, dir: config.data_dir.clone(), _tmp: None, stop: Some(stop), task: Some(task), config }
    }

    /// Starts the stopped server again on the same address and data dir (clients keep their
    /// server URL across the outage).
    pub async fn start_again(&mut self) {
        for _ in 0..50 {
            if std::net::TcpListener::bind(self.addr).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut config = self.config.clone();
        config.addr = self.addr;
        let (_, stop, task) = launch(&config).await;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// `http://addr`, the server URL clients are given.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully and starts again on the same data dir (new port).
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let tmp = self._tmp.take();
        let mut config = self.config.clone();
        config.addr = "127.0.0.1:0".parse().unwrap();
        let mut s = TestServer::start_with(config).await;
        s._tmp = tmp;
        s
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t).await.expect("server stops").unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, tenant: &str, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/ws_finwise/ws/{}?token={}", self.addr, tenant, t),
            None => format!("ws://{}/ws_finwise/ws/{}", self.addr, tenant),
        }
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Registers a user and logs in; returns (user id, access token, refresh token).
    pub async fn user(&self, name: &str) -> (String, String, String) {
        let v = register_and_login(&self.base(), name, "correct horse battery").await;
        (
            v["uuid"].as_str().unwrap().into(),
            v["access_token"].as_str().unwrap().into(),
            v["refresh_token"].as_str().unwrap().into(),
        )
    }

    /// Creates a tenant owned by the token's user; returns its id.
    pub async fn tenant(&self, token: &str, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let r = self
            .http()
            .post(self.url("/tenants/"))
            .bearer_auth(token)
            .json(&json!({"uuid": id, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        id
    }

    /// A user with a tenant and a connected socket on it.
    pub async fn connected(&self, name: &str) -> (String, String, Ws) {
        let (_, token, _) = self.user(name).await;
        let tenant = self.tenant(&token, "Household").await;
        let ws = Ws::connect(&self.ws_url(&tenant, Some(&token))).await;
        (token, tenant, ws)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The HTTP status of a refused WebSocket upgrade.
pub async fn ws_refusal(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await {
        Ok(_) => panic!("upgrade to {url} was accepted"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

impl Ws {
    /// Connects and consumes the `status: online` greeting.
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        let mut ws = Ws { inner };
        let hello = ws.recv().await;
        assert_eq!(hello["type"], "status");
        assert_eq!(hello["status"], "online");
        ws
    }

    pub async fn send(&mut self, v: &Value) {
        self.inner.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_raw(&mut self, s: &str) {
        self.inner.send(Message::Text(s.to_owned().into())).await.unwrap();
    }

    /// The next JSON message (server heartbeats skipped), or panics after 10 s.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(Duration::from_secs(10)).await.expect("a message within 10 s")
    }

    /// The next JSON message within `wait`, or None.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inner.next()).await.ok()??;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                    if v["type"] == "ping" {
                        continue;
                    }
                    return Some(v);
                }
                Ok(Message::Close(f)) => return Some(json!({"closed": f.map(|f| u16::from(f.code))})),
                Ok(_) => continue,
                Err(_) => return Some(json!({"closed": null})),
            }
        }
    }

    /// Waits until a message satisfies `pred`, returning it.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn assert_silent(&mut self, ms: u64) {
        if let Some(v) = self.try_recv(Duration::from_millis(ms)).await {
            panic!("unexpected message {v}");
        }
    }

    /// Sends one entry and returns the ack/nack for it.
    pub async fn entry(&mut self, e: &Value) -> Value {
        self.send(&json!({"type": "process_sync_entry", "payload": e})).await;
        let id = e["id"].clone();
        self.recv_until(|v| (v["type"] == "sync_ack" || v["type"] == "sync_nack") && v["id"] == id).await
    }

    /// A full initial load.
    pub async fn load(&mut self, tenant: &str) -> Value {
        self.send(&json!({"type": "request_initial_data", "tenant_id": tenant})).await;
        self.recv_until(|v| v["event_type"] == "initial_data_load").await
    }

    pub async fn load_since(&mut self, tenant: &str, since: i64) -> Value {
        self.send(&json!({"type": "request_initial_data", "tenant_id": tenant, "since": since})).await;
        self.recv_until(|v| v["event_type"] == "initial_data_load").await
    }

    pub async fn status(&mut self, tenant: &str) -> Value {
        self.send(&json!({"type": "data_status_request", "tenant_id": tenant, "entity_types": null})).await;
        self.recv_until(|v| v["type"] == "data_status_response").await
    }
}

/// A sync entry.
/// The value of one series on a `/metrics` page, named as the page writes it (`name{labels}`;
/// counters end in `_total`).
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

pub fn entry(tenant: &str, entity_type: &str, op: &str, payload: Value) -> Value {
    let entity_id = payload["id"].clone();
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "tenantId": tenant,
        "entityType": entity_type,
        "entityId": entity_id,
        "operationType": op,
        "payload": payload,
        "timestamp": chrono::Utc::now().timestamp_millis(),
        "status": "processing",
        "attempts": 1,
    })
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An ISO timestamp `offset_ms` from now.
pub fn ts(offset_ms: i64) -> String {
    finwise_protocol::time::format_ms(chrono::Utc::now().timestamp_millis() + offset_ms)
}

/// A valid full payload for each of the nine entity types, with every optional field set.
pub fn full_entities(updated_at: &str) -> Vec<(&'static str, Value)> {
    let (g, a, cg, c, r, t, ar, pt, tx) =
        (new_id(), new_id(), new_id(), new_id(), new_id(), new_id(), new_id(), new_id(), new_id());
    vec![
        (
            "AccountGroup",
            json!({"id": g, "name": "Girokonten", "sortOrder": 1, "logo_path": "x/logo.png", "updated_at": updated_at}),
        ),
        (
            "Account",
            json!({"id": a, "name": "Girokonto", "description": "Haupt", "note": "n", "accountType": "giro",
            "isActive": true, "isOfflineBudget": false, "accountGroupId": g, "sortOrder": 2, "iban": "DE00 1234",
            "balance": 1234.5, "creditLimit": 500.0, "offset": 3, "logo_path": null, "updated_at": updated_at}),
        ),
        (
            "CategoryGroup",
            json!({"id": cg, "name": "Ausgaben", "sortOrder": 0, "isIncomeGroup": false, "updated_at": updated_at}),
        ),
        (
            "Category",
            json!({"id": c, "name": "Lebensmittel", "icon": "mdi:food", "budgeted": 100.0, "activity": -20.25,
            "available": 79.75, "isIncomeCategory": false, "isHidden": false, "isActive": true, "sortOrder": 4,
            "categoryGroupId": cg, "parentCategoryId": null, "isSavingsGoal": true, "goalDate": "2027-01-01",
            "targetAmount": 1000.0, "priority": 2, "proportion": 0.5, "monthlyAmount": 50.0, "note": "ü€ \"quoted\"",
            "updated_at": updated_at}),
        ),
        (
            "Recipient",
            json!({"id": r, "name": "Supermarkt", "defaultCategoryId": c, "note": "n", "updated_at": updated_at}),
        ),
        (
            "Tag",
            json!({"id": t, "name": "Urlaub", "parentTagId": null, "color": "primary", "icon": "mdi:tag", "updated_at": updated_at}),
        ),
        (
            "AutomationRule",
            json!({"id": ar, "name": "R", "description": "d", "stage": "DEFAULT",
            "conditions": [{"type": "RECIPIENT_CONTAINS", "operator": "contains", "value": "x"}],
            "actions": [{"type": "SET_CATEGORY", "value": c}], "priority": 1, "isActive": true, "conditionLogic": "any",
            "updated_at": updated_at}),
        ),
        (
            "PlanningTransaction",
            json!({"id": pt, "name": "Miete", "accountId": a, "categoryId": c, "tagIds": [t],
            "recipientId": r, "amount": -800.0, "amountType": "EXACT", "approximateAmount": 1.0, "minAmount": 2.0,
            "maxAmount": 3.0, "note": "n", "startDate": "2026-01-01", "valueDate": "2026-01-02", "endDate": "2027-01-01",
            "recurrencePattern": "MONTHLY", "recurrenceCount": 12, "recurrenceEndType": "DATE", "executionDay": 1,
            "weekendHandling": "BEFORE", "transactionType": "EXPENSE", "counterPlanningTransactionId": null,
            "transferToAccountId": null, "transferToCategoryId": null, "isActive": true, "forecastOnly": false,
            "autoExecute": true, "updated_at": updated_at}),
        ),
        (
            "Transaction",
            json!({"id": tx, "accountId": a, "categoryId": c, "date": "2026-01-02", "valueDate": "2026-01-03",
            "amount": -10.5, "description": "Einkauf", "note": "n", "tagIds": [t], "type": "EXPENSE", "runningBalance": 1224.0,
            "counterTransactionId": null, "planningTransactionId": pt, "isReconciliation": false, "isCategoryTransfer": false,
            "transferToAccountId": null, "reconciled": true, "toCategoryId": null, "payee": "Supermarkt", "recipientId": r,
            "updated_at": updated_at, "updatedAt": updated_at, "createdAt": updated_at}),
        ),
    ]
}

/// The collection key of an entity type in loads.
pub fn collection(t: &str) -> &'static str {
    finwise_protocol::EntityType::parse(t).unwrap().collection()
}

/// Finds an entity by id in a load.
pub fn find<'a>(load: &'a Value, t: &str, id: &str) -> Option<&'a Value> {
    load["payload"][collection(t)].as_array().unwrap().iter().find(|e| e["id"] == id)
}

/// A TCP connection with a tiny receive buffer, upgraded to a WebSocket by hand.
pub async fn raw_upgrade(addr: &str, tenant: &str, token: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /ws_finwise/ws/{tenant}?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// A valid payload of type `t` with random values, named or described by `marker` (which says
/// who wrote it when), referring to fixed ids: the random edits of the chaos and random tests.
pub fn random_payload(t: EntityType, id: &str, marker: &str, rng: &mut impl rand::Rng) -> Value {
    let n = rng.random_range(0..1000) as f64 / 4.0;
    let k = rng.random_range(0..50);
    let r = |p: &str| format!("00000000-0000-4000-8000-{p}00000000");
    match t {
        EntityType::AccountGroup => json!({"id": id, "name": marker, "sortOrder": k}),
        EntityType::Account => {
            json!({"id": id, "name": marker, "isActive": rng.random_bool(0.5), "isOfflineBudget": false,
            "accountGroupId": r("0001"), "balance": n, "offset": k, "accountType": "giro", "iban": "DE00 1234"})
        }
        EntityType::CategoryGroup => {
            json!({"id": id, "name": marker, "sortOrder": k, "isIncomeGroup": rng.random_bool(0.5)})
        }
        EntityType::Category => json!({"id": id, "name": marker, "budgeted": n, "activity": -n, "available": 0.0,
            "isIncomeCategory": false, "isHidden": false, "isActive": true, "sortOrder": k, "categoryGroupId": r("0002"),
            "goalDate": "2027-01-01", "note": "ü€ \"q\""}),
        EntityType::Recipient => json!({"id": id, "name": marker, "defaultCategoryId": r("0003"), "note": null}),
        EntityType::Tag => json!({"id": id, "name": marker, "color": "primary"}),
        EntityType::AutomationRule => {
            json!({"id": id, "name": marker, "stage": "DEFAULT", "priority": k, "isActive": true,
            "conditions": [{"type": "RECIPIENT_CONTAINS", "value": marker}], "actions": [], "conditionLogic": "any"})
        }
        EntityType::PlanningTransaction => json!({"id": id, "name": marker, "accountId": r("0004"), "amount": -n,
            "amountType": "EXACT", "startDate": "2026-01-01", "recurrencePattern": "MONTHLY", "recurrenceEndType": "NEVER",
            "weekendHandling": "NONE", "isActive": true, "forecastOnly": false, "tagIds": [r("0005")]}),
        EntityType::Transaction => {
            json!({"id": id, "accountId": r("0004"), "date": "2026-02-01", "valueDate": "2026-02-02",
            "amount": -n, "description": marker, "type": "EXPENSE", "runningBalance": n, "recipientId": r("0006")})
        }
    }
}

/// Registers `name` (`name@example.org`) with `password` on the server at `base` and logs in;
/// returns the login answer (the user and its tokens).
pub async fn register_and_login(base: &str, name: &str, password: &str) -> Value {
    let http = reqwest::Client::new();
    let email = format!("{name}@example.org");
    let r = http
        .post(format!("{base}/register"))
        .json(&json!({"name": name, "email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{base}/login"))
        .json(&json!({"username_or_email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `GET url` with a bearer token; the JSON answer.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// The status a server answers to a `POST` to `url` that declares a `len`-byte body it never
/// sends: how a limit on the declared size is tested without racing the server's early answer
/// (a client still writing the body when the server answers and closes gets a broken pipe).
pub async fn status_for_declared_body(url: &str, token: &str, content_type: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text}"))
}

/// Shuffles `items` in place, deterministically from `*state` (which moves on): property tests
/// deliver their messages in a scrambled order that a failing case replays.
pub fn scramble<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        items.swap(i, (*state >> 33) as usize % (i + 1));
    }
}
