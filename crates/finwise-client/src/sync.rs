//! The sync engine: one WebSocket connection per sync, the queue pushed in batches, loads and
//! updates applied by the LWW client rule, convergence checked with the tenant digest.
//!
//! * [`Client::sync_once`]: connect, push the queue, pull the delta since the cursor, compare
//!   digests (full load when they differ), disconnect.
//! * [`Client::watch`]: stay connected, push local changes as they happen, apply updates as
//!   they arrive, ping the server, and reconnect with exponential backoff and jitter.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    ops::ControlFlow,
    pin::Pin,
    time::{Duration, Instant},
};

use finwise_protocol::{
    messages::{
        BatchItemResult, DataStatusResponse, DataUpdate, InitialDataLoad, NackReason, Operation, OutgoingClientMessage,
        ServerMessage, ServerMessageError, SyncBatchResult, SyncQueueEntry,
    },
    time, EntityType,
};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, Message},
    MaybeTlsStream, WebSocketStream,
};
use tracing::{debug, info, warn};

use crate::{
    client::{Client, ConnectionState, Inner, Progress, SyncReport},
    error::{Error, Result},
    store::QueueEntry,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Payload bytes per batch: well under the server's default 8 MiB batch limit.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Errors that retrying cannot fix: `watch` gives up on them instead of reconnecting forever.
fn permanent(e: &Error) -> bool {
    match e {
        Error::SessionExpired(_) | Error::Forbidden(_) => true,
        Error::Http { status, .. } => (400..500).contains(status) && *status != 408 && *status != 429,
        _ => false,
    }
}

/// Exponential backoff with "equal jitter": a random delay in `[d/2, d]`, `d = min(max, base·2^n)`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    let d = base.saturating_mul(factor).min(max);
    let half = d / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

fn ws_url(server: &str, tenant: &str, token: &str) -> String {
    let base = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{server}")
    };
    format!("{base}/ws_finwise/ws/{tenant}?token={token}")
}

/// An open connection and what it did so far.
struct Conn<'a> {
    inner: &'a Inner,
    ws: Ws,
    last_rx: Instant,
    report: SyncReport,
}

async fn connect(inner: &Inner) -> Result<Ws> {
    let mut refreshed = false;
    loop {
        let url = ws_url(&inner.auth.server(), &inner.tenant, &inner.auth.access_token());
        // TCP_NODELAY (the `true`): pipelined entries go out at once instead of waiting in
        // Nagle's buffer for the server's delayed ACK.
        let attempt = tokio::time::timeout(
            inner.opts.request_timeout,
            tokio_tungstenite::connect_async_with_config(url, None, true),
        )
        .await;
        match attempt {
            Err(_) => return Err(Error::Timeout("the WebSocket connection")),
            Ok(Ok((mut ws, _))) => {
                // The greeting: {"type":"status","status":"online","protocol":2}.
                let hello = tokio::time::timeout(inner.opts.request_timeout, ws.next()).await;
                return match hello {
                    Ok(Some(Ok(Message::Text(t)))) => match ServerMessage::parse(&t) {
                        Ok(ServerMessage::Status(s)) if s.status == "online" => {
                            // How far the local clock is from the server's (network delay
                            // included): changes stamped too far ahead are refused (clock_skew).
                            if let Some(server_ms) = s.server_time.as_deref().and_then(time::parse_ms) {
                                let offset = time::now_ms() - server_ms;
                                let _ = inner.store().set_meta("clock_offset_ms", &offset.to_string());
                            }
                            Ok(ws)
                        }
                        _ => {
                            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                            Err(Error::Protocol(format!("unexpected greeting {v}")))
                        }
                    },
                    Ok(_) => Err(Error::Connect("connection closed before the greeting".into())),
                    Err(_) => Err(Error::Timeout("the server's greeting")),
                };
            }
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                match status {
                    401 if !refreshed => {
                        debug!("access token refused; refreshing");
                        inner.auth.refresh().await?;
                        refreshed = true;
                    }
                    401 => return Err(Error::SessionExpired("the server refused a fresh access token".into())),
                    403 => return Err(Error::Forbidden(inner.tenant.clone())),
                    _ => {
                        let body =
                            resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                        return Err(Error::Http { status, message: body });
                    }
                }
            }
            Ok(Err(e)) => return Err(Error::Connect(e.to_string())),
        }
    }
}

/// The answers [`Conn::wait_for`] waits for: `Break` with the answer, `Continue` with any
/// other message.
fn batch_result(m: ServerMessage) -> ControlFlow<SyncBatchResult, ServerMessage> {
    match m {
        ServerMessage::SyncBatchResult(r) => ControlFlow::Break(r),
        other => ControlFlow::Continue(other),
    }
}

fn initial_data_load(m: ServerMessage) -> ControlFlow<InitialDataLoad, ServerMessage> {
    match m {
        ServerMessage::InitialDataLoad(l) => ControlFlow::Break(l),
        other => ControlFlow::Continue(other),
    }
}

fn data_status_response(m: ServerMessage) -> ControlFlow<DataStatusResponse, ServerMessage> {
    match m {
        ServerMessage::DataStatusResponse(s) => ControlFlow::Break(s),
        other => ControlFlow::Continue(other),
    }
}

fn wire_entry(tenant: &str, e: &QueueEntry) -> SyncQueueEntry {
    SyncQueueEntry {
        id: e.id.clone(),
        tenant_id: tenant.to_owned(),
        entity_type: e.entity_type.as_str().to_owned(),
        entity_id: e.entity_id.clone(),
        operation_type: e.operation,
        payload: e.payload.clone(),
        timestamp: Some(e.timestamp),
        fields: e.fields.clone(),
    }
}

impl<'a> Conn<'a> {
    async fn open(inner: &'a Inner) -> Result<Conn<'a>> {
        let ws = connect(inner).await?;
        Ok(Conn { inner, ws, last_rx: Instant::now(), report: SyncReport::default() })
    }

    async fn send(&mut self, msg: &OutgoingClientMessage) -> Result<()> {
        let text = serde_json::to_string(msg)?;
        self.ws.send(Message::Text(text.into())).await.map_err(|e| Error::Connect(e.to_string()))
    }

    async fn close(mut self) -> SyncReport {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        self.report
    }

    /// The next server message (cancel-safe). Server heartbeats are skipped, and so is what is
    /// no server message of this protocol (nothing would handle it); a message of a known kind
    /// without that kind's fields is a protocol error.
    async fn read(&mut self) -> Result<ServerMessage> {
        loop {
            let msg = self.ws.next().await;
            self.last_rx = Instant::now();
            match msg {
                None => return Err(Error::Connect("the server closed the connection".into())),
                Some(Err(e)) => return Err(Error::Connect(e.to_string())),
                Some(Ok(Message::Text(t))) => match ServerMessage::parse(&t) {
                    Ok(ServerMessage::Ping(_) | ServerMessage::Pong(_)) => continue,
                    Ok(ServerMessage::Status(s)) if s.status == "shutdown" => {
                        return Err(Error::Connect("the server is shutting down".into()));
                    }
                    Ok(m) => return Ok(m),
                    Err(ServerMessageError::InvalidJson(e)) => {
                        return Err(Error::Protocol(format!("invalid JSON from server: {e}")));
                    }
                    Err(ServerMessageError::Invalid { kind, source }) => {
                        return Err(Error::Protocol(format!("bad {kind}: {source}")));
                    }
                    Err(e) => {
                        debug!(error = %e, "ignoring a message that is not for this client");
                        continue;
                    }
                },
                Some(Ok(Message::Close(f))) => {
                    let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Err(Error::Connect(format!("the server closed the connection {why}")));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Handles a message nobody is waiting for: `data_update`s are applied, errors logged.
    fn dispatch(&mut self, m: &ServerMessage) -> Result<()> {
        match m {
            ServerMessage::DataUpdate(u) => self.apply_update(u),
            ServerMessage::Error(e) => {
                warn!(code = %e.code, message = %e.message, "server error message");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn apply_update(&mut self, u: &DataUpdate) -> Result<()> {
        let Ok(entity) = serde_json::from_str::<Map<String, Value>>(u.data.single_entity.get()) else { return Ok(()) };
        let deleted = u.operation_type == Operation::Delete;
        let ms = time::parse_ms(&u.updated_at).unwrap_or(0);
        let change = self.inner.store().apply_remote(u.entity_type, &entity, deleted, ms)?;
        if let Some(c) = change {
            self.report.received += 1;
            self.inner.publish(vec![c]);
        }
        Ok(())
    }

    /// Reads until `want` takes a message (it hands back the others), applying everything else.
    /// `error` messages fail the wait; so does a silent link (nothing at all for three ping
    /// intervals: presumed dead).
    async fn wait_for<T>(
        &mut self,
        what: &'static str,
        want: impl Fn(ServerMessage) -> ControlFlow<T, ServerMessage>,
    ) -> Result<T> {
        let opts = &self.inner.opts;
        let deadline = tokio::time::Instant::now() + opts.request_timeout;
        let silence = opts.request_timeout.min(opts.ping_interval * 3);
        loop {
            let until = deadline.min(tokio::time::Instant::now() + silence);
            let m = match tokio::time::timeout_at(until, self.read()).await {
                Ok(r) => r?,
                Err(_) if until < deadline => {
                    return Err(Error::Connect(format!(
                        "no answer from the server while waiting for {what}: connection presumed dead"
                    )))
                }
                Err(_) => return Err(Error::Timeout(what)),
            };
            let m = match want(m) {
                ControlFlow::Break(answer) => return Ok(answer),
                ControlFlow::Continue(m) => m,
            };
            if let ServerMessage::Error(e) = &m {
                return Err(Error::Protocol(format!("{}: {}", e.code, e.message)));
            }
            self.dispatch(&m)?;
        }
    }

    /// Sends a request and waits for its answer; a request refused by the server's rate limit
    /// is sent again after a backoff.
    async fn request<T>(
        &mut self,
        msg: &OutgoingClientMessage,
        what: &'static str,
        want: impl Fn(ServerMessage) -> ControlFlow<T, ServerMessage>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            self.send(msg).await?;
            match self.wait_for(what, &want).await {
                Err(Error::Protocol(m)) if m.starts_with("rate_limited") && attempt < 10 => {
                    let o = &self.inner.opts;
                    tokio::time::sleep(backoff(o.retry_base, o.retry_max, attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn progress(&self, p: Progress) {
        if let Some(f) = &self.inner.opts.progress {
            f(&p);
        }
    }

    /// Sends the queue in batches, in order per entity, and handles every result.
    async fn push(&mut self) -> Result<()> {
        // Entries in flight of an instance that is gone since this store was opened.
        self.inner.store().release_orphans()?;
        let total = {
            let c = self.inner.store().queue_counts()?;
            c.pending + c.processing
        };
        let mut sent = 0u64;
        loop {
            let batch = self.inner.store().take_batch_bounded(
                time::now_ms(),
                self.inner.opts.batch_size.clamp(1, 1000),
                MAX_BATCH_BYTES,
            )?;
            if batch.is_empty() {
                return Ok(());
            }
            let entries: Vec<SyncQueueEntry> = batch.iter().map(|e| wire_entry(&self.inner.tenant, e)).collect();
            let r = self.send(&OutgoingClientMessage::ProcessSyncBatch { entries }).await;
            let r = match r {
                Ok(()) => self.wait_for("sync_batch_result", batch_result).await,
                Err(e) => Err(e),
            };
            let result = match r {
                Ok(v) => v,
                Err(e) => {
                    self.inner.store().release_processing()?;
                    return Err(e);
                }
            };
            self.report.sent += batch.len() as u64;
            sent += batch.len() as u64;
            self.handle_results(&batch, &result)?;
            self.progress(Progress::Pushing { sent, total: total.max(sent) });
        }
    }

    fn handle_results(&mut self, batch: &[QueueEntry], result: &SyncBatchResult) -> Result<()> {
        let by_id: HashMap<&str, &BatchItemResult> = result.results.iter().map(|r| (r.id.as_str(), r)).collect();
        let opts = &self.inner.opts;
        let store = self.inner.store();
        for e in batch {
            let Some(r) = by_id.get(e.id.as_str()) else { continue };
            if r.status == "processed" {
                store.mark_done(&e.id)?;
                self.report.acked += 1;
                if r.duplicate {
                    self.report.duplicates += 1;
                }
                if r.applied == Some(false) {
                    self.report.lost += 1;
                }
                if r.updated_at.as_deref().and_then(time::parse_ms).is_some_and(|ms| ms != e.updated_at_ms) {
                    debug!(entity = %e.entity_id, "server restamped or kept a newer version; its data_update follows");
                }
                continue;
            }
            let reason = r.reason;
            let reason_s = reason.map_or("unknown", NackReason::as_str);
            let detail = r.detail.clone().unwrap_or_default();
            let budget = match reason {
                Some(NackReason::StorageError) => opts.storage_error_budget,
                Some(NackReason::Overloaded) => opts.overloaded_budget,
                _ => 0,
            };
            if reason.is_some_and(NackReason::retryable) && e.attempts < budget {
                let delay = backoff(opts.retry_base, opts.retry_max, e.attempts.saturating_sub(1));
                store.mark_retry(&e.id, reason_s, &detail, time::now_ms() + delay.as_millis() as i64)?;
                self.report.retried += 1;
            } else {
                warn!(entry = %e.id, entity = %e.entity_id, reason = %reason_s, %detail, "entry refused; kept as failed");
                store.mark_failed(&e.id, reason_s, &detail)?;
                self.report.failed += 1;
            }
        }
        // Entries without a result (should not happen) go back to the queue.
        store.release_processing()?;
        Ok(())
    }

    /// Pulls changes: a delta since the cursor, or a full load (`full`, or no cursor yet).
    async fn pull(&mut self, full: bool) -> Result<()> {
        let cursor = self.inner.store().cursor()?;
        let since = if full { None } else { cursor };
        let mut total = None;
        if since.is_none() {
            self.report.full_load = true;
            if self.inner.opts.progress.is_some() {
                let st = self.status_request().await?;
                total = Some(st.entity_count);
            }
        }
        let req = OutgoingClientMessage::RequestInitialData {
            tenant_id: self.inner.tenant.clone(),
            chunk_size: Some(self.inner.opts.chunk_size),
            since,
        };
        let mut first = Some(self.request(&req, "initial_data_load", initial_data_load).await?);
        let mut seen: HashSet<(EntityType, String)> = HashSet::new();
        let mut received = 0u64;
        loop {
            let l = match first.take() {
                Some(l) => l,
                None => self.wait_for("initial_data_load", initial_data_load).await?,
            };
            let authoritative = since.is_none() || l.reset;
            if l.reset {
                self.report.full_load = true;
            }
            let payload: Map<String, Value> = serde_json::from_str(l.payload.get())
                .map_err(|e| Error::Protocol(format!("bad initial_data_load: payload: {e}")))?;
            received += payload.values().filter_map(Value::as_array).map(|a| a.len() as u64).sum::<u64>();
            let changes = self.inner.store().apply_load_part(&payload, l.deleted.as_ref(), authoritative, &mut seen)?;
            self.report.received += changes.len() as u64;
            self.inner.publish(changes);
            self.progress(Progress::Loading { received, total });
            if !l.more {
                if authoritative {
                    let changes = self.inner.store().finish_full_load(&seen)?;
                    self.report.received += changes.len() as u64;
                    self.inner.publish(changes);
                }
                self.inner.store().set_cursor(l.seq)?;
                self.report.cursor = Some(l.seq);
                self.report.loaded += received;
                self.progress(Progress::Loaded { received });
                return Ok(());
            }
        }
    }

    async fn status_request(&mut self) -> Result<DataStatusResponse> {
        let req = OutgoingClientMessage::DataStatusRequest { tenant_id: self.inner.tenant.clone(), entity_types: None };
        self.request(&req, "data_status_response", data_status_response).await
    }

    /// Compares the local digest with the server's; on a difference pulls the delta (when the
    /// server is ahead of the cursor) or a full load, and compares again.
    /// `None`: not compared because local changes are still queued.
    async fn verify(&mut self) -> Result<Option<bool>> {
        for round in 0..4 {
            let queued = {
                let c = self.inner.store().queue_counts()?;
                c.pending + c.processing
            };
            if queued > 0 {
                return Ok(None);
            }
            let st = self.status_request().await?;
            let server = st.tenant_digest;
            let (local, cursor) = {
                let s = self.inner.store();
                (s.digest()?, s.cursor()?)
            };
            {
                let s = self.inner.store();
                s.set_meta("server_digest", &server)?;
            }
            if local == server {
                let s = self.inner.store();
                s.set_meta("converged", "true")?;
                // Equal digests: the store holds every change up to the server's seq, so the
                // cursor may move there (watch mode applies updates without loads).
                if cursor.is_none_or(|c| st.seq > c) {
                    s.set_cursor(st.seq)?;
                }
                self.report.digest = Some(local);
                return Ok(Some(true));
            }
            let server_seq = st.seq;
            if round == 3 {
                break;
            }
            if round < 2 && cursor.is_some_and(|c| server_seq > c) {
                debug!(server_seq, ?cursor, "digest differs and the server is ahead: pulling the delta");
                self.pull(false).await?;
            } else {
                info!("digest differs from the server's: full resync");
                self.pull(true).await?;
            }
        }
        self.inner.store().set_meta("converged", "false")?;
        Ok(Some(false))
    }

    /// Push, pull, and (when nothing is queued any more) verify.
    async fn cycle(&mut self) -> Result<()> {
        self.push().await?;
        let full = self.inner.store().cursor()?.is_none();
        self.pull(full).await?;
        // Entries refused with a retryable reason: wait for them when their turn is near (each
        // entry's retry budget bounds this loop).
        let mut pushed_again = false;
        for _ in 0..1000 {
            let Some(next) = self.inner.store().next_attempt()? else { break };
            let wait = next - time::now_ms();
            if wait > self.inner.opts.max_retry_wait.as_millis() as i64 {
                break;
            }
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            self.push().await?;
            pushed_again = true;
        }
        if pushed_again {
            self.pull(false).await?;
        }
        self.report.converged = self.verify().await?;
        self.report.cursor = self.inner.store().cursor()?;
        Ok(())
    }
}

impl Client {
    /// Connects, pushes the queue, pulls the changes since the cursor, verifies the digest
    /// (resyncing when it differs) and disconnects.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        self.session(|conn| Box::pin(conn.cycle())).await
    }

    /// Fetches changes without sending the queue (e.g. on a metered link): a delta since the
    /// cursor, or a full load when `full` or when there is no cursor yet. Local changes that are
    /// still queued are kept whatever arrives.
    pub async fn pull_only(&self, full: bool) -> Result<SyncReport> {
        self.session(move |conn| {
            Box::pin(async move {
                let full = full || conn.inner.store().cursor()?.is_none();
                conn.pull(full).await?;
                conn.report.cursor = conn.inner.store().cursor()?;
                Ok(())
            })
        })
        .await
    }

    /// One connection's worth of work: connects (Connecting, then Online), runs `work`, closes
    /// the socket also when `work` failed, and reports Offline afterwards. One at a time per client.
    async fn session<F>(&self, work: F) -> Result<SyncReport>
    where
        F: for<'c, 'i> FnOnce(&'c mut Conn<'i>) -> futures_util::future::BoxFuture<'c, Result<()>>,
    {
        let inner = &*self.inner;
        let _guard = inner.sync_lock.lock().await;
        inner.conn_state.send_replace(ConnectionState::Connecting);
        let result = async {
            let mut conn = Conn::open(inner).await?;
            inner.conn_state.send_replace(ConnectionState::Online);
            match work(&mut conn).await {
                Ok(()) => Ok(conn.close().await),
                Err(e) => {
                    let _ = conn.close().await;
                    Err(e)
                }
            }
        }
        .await;
        inner.conn_state.send_replace(ConnectionState::Offline);
        self.finish(result)
    }

    fn finish(&self, result: Result<SyncReport>) -> Result<SyncReport> {
        let inner = &*self.inner;
        let store = inner.store();
        store.release_processing()?;
        match &result {
            Ok(_) => {
                store.set_meta("last_sync", &time::format_ms(time::now_ms()))?;
                store.set_meta("last_error", "")?;
                drop(store);
                inner.set_error(None);
            }
            Err(e) => {
                store.set_meta("last_error", &e.to_string())?;
                drop(store);
                inner.set_error(Some(e.to_string()));
            }
        }
        result
    }

    /// Stays connected until `shutdown` resolves: pushes local changes as they are made, applies
    /// incoming updates, checks the link with pings and the data with the digest, and reconnects
    /// with exponential backoff and jitter. Returns an error only for what retrying cannot fix
    /// (expired session, no access to the tenant).
    pub async fn watch(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let inner = &*self.inner;
        let _guard = inner.sync_lock.lock().await;
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(shutdown);
        let mut attempt = 0u32;
        loop {
            inner.watch_state(ConnectionState::Connecting);
            let conn = tokio::select! {
                _ = shutdown.as_mut() => break,
                c = Conn::open(inner) => c,
            };
            let err = match conn {
                Ok(mut conn) => {
                    attempt = 0;
                    inner.watch_state(ConnectionState::Online);
                    inner.set_error(None);
                    info!(tenant = %inner.tenant, "connected");
                    match run_connected(&mut conn, shutdown.as_mut()).await {
                        Ok(()) => {
                            let _ = conn.close().await;
                            break;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            inner.store().release_processing()?;
            if permanent(&err) {
                inner.watch_state(ConnectionState::Offline);
                inner.set_error(Some(err.to_string()));
                return Err(err);
            }
            inner.watch_state(ConnectionState::Offline);
            let delay = backoff(inner.opts.reconnect_base, inner.opts.reconnect_max, attempt);
            attempt = attempt.saturating_add(1);
            warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "sync connection lost; reconnecting");
            inner.set_error(Some(err.to_string()));
            tokio::select! {
                _ = shutdown.as_mut() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        inner.store().release_processing()?;
        inner.watch_state(ConnectionState::Offline);
        let _ = inner.store().delete_meta("watch");
        Ok(())
    }

    /// Test support: sends the queue and receives the server's answers, then "crashes" — drops
    /// the connection without recording them, leaving the entries `processing` as a process
    /// killed at that moment would.
    #[doc(hidden)]
    pub async fn debug_push_and_crash_before_ack(&self) -> Result<usize> {
        let inner = &*self.inner;
        let mut conn = Conn::open(inner).await?;
        let batch = inner.store().take_batch(time::now_ms(), 1000)?;
        let entries: Vec<SyncQueueEntry> = batch.iter().map(|e| wire_entry(&inner.tenant, e)).collect();
        conn.send(&OutgoingClientMessage::ProcessSyncBatch { entries }).await?;
        conn.wait_for("sync_batch_result", batch_result).await?;
        drop(conn);
        Ok(batch.len())
    }
}

async fn run_connected(
    conn: &mut Conn<'_>,
    mut shutdown: Pin<&mut (dyn Future<Output = ()> + Send + '_)>,
) -> Result<()> {
    let inner = conn.inner;
    conn.cycle().await?;
    finish_cycle(conn)?;
    let mut ping = tokio::time::interval(inner.opts.ping_interval);
    ping.tick().await;
    let mut verify = tokio::time::interval(inner.opts.verify_interval);
    verify.tick().await;
    // Changes queued by another process sharing the store are noticed by polling the queue.
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.tick().await;
    enum Ev {
        Poll,
        Shutdown,
        Local,
        Retry,
        Msg(Result<ServerMessage>),
        Ping,
        Verify,
    }
    loop {
        let next_retry = inner.store().next_attempt()?;
        let retry_at = next_retry.map(|ms| {
            let wait = (ms - time::now_ms()).max(100) as u64;
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        let ev = tokio::select! {
            _ = shutdown.as_mut() => Ev::Shutdown,
            _ = inner.local_notify.notified() => Ev::Local,
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => Ev::Retry,
            m = conn.read() => Ev::Msg(m),
            _ = ping.tick() => Ev::Ping,
            _ = verify.tick() => Ev::Verify,
            _ = poll.tick() => Ev::Poll,
        };
        match ev {
            Ev::Shutdown => return Ok(()),
            Ev::Poll => {}
            Ev::Local | Ev::Retry => {
                conn.cycle().await?;
                finish_cycle(conn)?;
            }
            Ev::Msg(m) => {
                let m = m?;
                conn.dispatch(&m)?;
                if let ServerMessage::DataUpdate(u) = &m {
                    // a live change right after the cursor moves it (a gap, e.g. this device's
                    // own writes, waits for the next check or load); `status` sees it either way
                    let s = conn.inner.store();
                    if s.cursor()? == Some(u.seq - 1) {
                        s.set_cursor(u.seq)?;
                    }
                    s.set_meta("last_sync", &time::format_ms(time::now_ms()))?;
                }
            }
            Ev::Ping => {
                if conn.last_rx.elapsed() > inner.opts.ping_interval * 3 {
                    return Err(Error::Connect("no answer from the server: connection presumed dead".into()));
                }
                conn.send(&OutgoingClientMessage::Ping { timestamp: time::now_ms() }).await?;
            }
            Ev::Verify => {
                conn.report.converged = conn.verify().await?;
                finish_cycle(conn)?;
            }
        }
    }
}

fn finish_cycle(conn: &mut Conn<'_>) -> Result<()> {
    let s = conn.inner.store();
    s.set_meta("last_sync", &time::format_ms(time::now_ms()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::EntryStatus;

    /// The requests as this client wrote them with `json!` before it sent typed messages: the
    /// typed ones must give the same bytes.
    #[test]
    fn typed_requests_are_the_bytes_sent_before() {
        for since in [None, Some(0), Some(1234)] {
            let mut old = json!({"type": "request_initial_data", "tenant_id": "t-1", "chunk_size": 1000usize});
            if let Some(s) = since {
                old["since"] = json!(s);
            }
            let new =
                OutgoingClientMessage::RequestInitialData { tenant_id: "t-1".into(), chunk_size: Some(1000), since };
            assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        }

        let old = json!({"type": "data_status_request", "tenant_id": "t-1", "entity_types": null});
        let new = OutgoingClientMessage::DataStatusRequest { tenant_id: "t-1".into(), entity_types: None };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());

        let now = time::now_ms();
        let old = json!({"type": "ping", "timestamp": now});
        assert_eq!(serde_json::to_string(&OutgoingClientMessage::Ping { timestamp: now }).unwrap(), old.to_string());

        let queued = |id: &str, operation, payload| QueueEntry {
            seq: 1,
            id: id.into(),
            entity_type: EntityType::Transaction,
            entity_id: "x1".into(),
            operation,
            payload,
            timestamp: 1_795_618_222_061,
            updated_at_ms: 1_795_618_222_061,
            fields: None,
            status: EntryStatus::Pending,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            reason: None,
        };
        let batch = [
            queued(
                "e1",
                Operation::Create,
                json!({"id": "x1", "amount": -10.5, "note": "Café \"quoted\"\n", "tagIds": ["a", "b"], "n": null}),
            ),
            queued("e2", Operation::Update, json!({"id": "x1", "amount": 1e21, "big": 12345678901234567_i64})),
            queued("e3", Operation::Delete, Value::Null),
        ];
        let entries: Vec<SyncQueueEntry> = batch.iter().map(|e| wire_entry("t-1", e)).collect();
        let old = json!({"type": "process_sync_batch", "entries": entries});
        let new = OutgoingClientMessage::ProcessSyncBatch { entries };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
    }
}
