//! One task per WebSocket connection.
//!
//! The task reads frames, answers what needs no database directly, validates entries
//! ([`engine::prepare`]) and queues them on the tenant's writer. Replies come back in order
//! through a `FuturesOrdered`; at most `max_in_flight` entries are outstanding, after which the
//! task stops reading (backpressure to the client instead of buffering). Broadcasts arrive on the
//! tenant's bounded channel; a connection that lags behind it is closed with 1013. Every send has
//! a timeout, so a peer that stops reading is dropped instead of holding resources.

use std::{sync::Arc, time::Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use finwise_protocol::{
    messages::{
        parse_client_message, ClientMessage, ErrorCode, ErrorMessage, Heartbeat, NackReason, StatusMessage,
        SyncBatchResult, SyncNack,
    },
    time, PROTOCOL_VERSION,
};
use futures_util::{
    future::BoxFuture,
    stream::{FuturesOrdered, SplitSink, StreamExt},
    FutureExt, SinkExt,
};
use serde_json::json;
use tokio::sync::{
    broadcast::error::{RecvError, TryRecvError},
    mpsc, oneshot,
};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::{
    engine::{self, Item, Outcome, Reply},
    hub::Event,
    loads::{self, LoadRequest},
    writer::Job,
    App, TenantId,
};

/// WebSocket close codes we use.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

enum Pending {
    Single(Vec<Outcome>),
    Batch(Vec<Outcome>),
}

type Sink = SplitSink<WebSocket, Message>;

struct Conn {
    app: Arc<App>,
    tenant: TenantId,
    id: u64,
    sink: Sink,
    tokens: f64,
    last_refill: Instant,
    /// Bytes fed into the sink since its last flush (counted in the outbound buffers).
    unflushed: usize,
    /// Single entries read but not yet queued: frames that arrived together go to the tenant's
    /// writer as one job ([`flush_singles`]), answered one `sync_ack` each as always.
    singles: Vec<Item>,
    /// Messages whose answers are pending (entries queued on the writer, in `singles`, or
    /// answered without it), against `max_in_flight`.
    in_flight: usize,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.app.hub.buffers.sub_outbound(self.unflushed);
    }
}

/// How long a send may wait while the buffers are over budget before the connection counts as
/// one of the slowest and is closed (1013).
const SLOW_SEND: std::time::Duration = std::time::Duration::from_secs(1);

enum SendResult {
    Done(Result<Result<(), axum::Error>, tokio::time::error::Elapsed>),
    TooSlowUnderPressure,
}

/// Why the loop ended.
enum Stop {
    Closed,
    Close(u16, &'static str),
}

impl Conn {
    /// Puts a message into the socket's write buffer; [`Conn::flush`] writes it. Messages that
    /// are ready together (acks of one group commit, several broadcasts) go out in one write.
    async fn feed_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
        let text: Utf8Bytes = text.into();
        self.app.metrics.message_out(text.as_str());
        self.count_outbound(text.len());
        self.feed_counted(text).await
    }

    /// Counts `bytes` about to be fed against the buffer budget, until a flush has handed them
    /// to the kernel.
    fn count_outbound(&mut self, bytes: usize) {
        self.app.hub.buffers.add_outbound(bytes);
        self.unflushed += bytes;
    }

    /// [`Conn::feed_text`] of a message already counted (metrics and [`Conn::count_outbound`]).
    async fn feed_counted(&mut self, text: Utf8Bytes) -> Result<(), Stop> {
        let r = Self::send_op(&self.app.hub.buffers, self.app.config.send_timeout, self.sink.feed(Message::Text(text)))
            .await;
        self.sent(r)
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        let r = Self::send_op(&self.app.hub.buffers, self.app.config.send_timeout, self.sink.flush()).await;
        let r = self.sent(r);
        if r.is_ok() {
            self.app.hub.buffers.sub_outbound(std::mem::take(&mut self.unflushed));
        }
        r
    }

    /// Runs a send: at most `send_timeout`, and while the buffers are over budget at most
    /// [`SLOW_SEND`]. A send that completes at once (the common case) costs no more than the send.
    async fn send_op(
        buffers: &crate::net::Buffers,
        timeout: std::time::Duration,
        op: impl std::future::Future<Output = Result<(), axum::Error>>,
    ) -> SendResult {
        let mut op = std::pin::pin!(op);
        if let std::task::Poll::Ready(r) = futures_util::poll!(op.as_mut()) {
            return SendResult::Done(Ok(r));
        }
        let started = Instant::now();
        tokio::select! {
            r = tokio::time::timeout(timeout, op) => SendResult::Done(r),
            _ = buffers.slow_under_pressure(started, SLOW_SEND) => SendResult::TooSlowUnderPressure,
        }
    }

    fn sent(&self, r: SendResult) -> Result<(), Stop> {
        match r {
            SendResult::Done(r) => self.check_sent(r),
            SendResult::TooSlowUnderPressure => {
                warn!(conn = self.id, tenant = %self.tenant, "the WebSocket buffer budget is exhausted and this client has not read for a while; closing");
                Err(Stop::Close(
                    close::TRY_AGAIN_LATER,
                    "too slow while the server is short of buffer space: resync by delta",
                ))
            }
        }
    }

    fn check_sent(&self, r: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>) -> Result<(), Stop> {
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => {
                warn!(conn = self.id, tenant = %self.tenant, "client stopped reading; closing");
                Err(Stop::Close(close::TRY_AGAIN_LATER, "send timeout: resync by delta"))
            }
        }
    }

    /// Writes what was fed, unless feeding already failed.
    async fn flush_after(&mut self, fed: Result<(), Stop>) -> Result<(), Stop> {
        fed?;
        self.flush().await
    }

    async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
        let fed = self.feed_text(text).await;
        self.flush_after(fed).await
    }

    async fn feed_json<T: serde::Serialize>(&mut self, v: &T) -> Result<(), Stop> {
        let s = serde_json::to_string(v).expect("server messages serialise");
        self.feed_text(s).await
    }

    async fn send_json<T: serde::Serialize>(&mut self, v: &T) -> Result<(), Stop> {
        let fed = self.feed_json(v).await;
        self.flush_after(fed).await
    }

    /// Answers everything in flight (it is committed or being committed), sends `last` and
    /// ends the connection with `code` (shutdown, expired token).
    async fn answer_in_flight_and_close<T: serde::Serialize>(
        &mut self,
        pending: &mut FuturesOrdered<BoxFuture<'static, Pending>>,
        last: &T,
        code: u16,
        reason: &'static str,
    ) -> Result<(), Stop> {
        let mut r = Ok(());
        while let Some(p) = pending.next().await {
            r = r.and(self.feed_outcomes(p).await);
        }
        r = r.and(self.flush().await);
        let _ = self.send_json(last).await;
        r.and(Err(Stop::Close(code, reason)))
    }

    /// Feeds one tenant event (call [`Conn::flush`] afterwards).
    async fn feed_event(&mut self, ev: Result<Event, RecvError>, user: Option<&str>) -> Result<(), Stop> {
        match ev {
            Ok(Event::Changes { changes, .. }) => {
                // counted once for the event (every change is a `data_update`), fed one by one
                let (n, bytes) = changes
                    .iter()
                    .filter(|(origin, _)| *origin != self.id)
                    .fold((0, 0), |(n, b), (_, t)| (n + 1, b + t.len()));
                if n == 0 {
                    return Ok(());
                }
                self.app.metrics.data_updates_out(n);
                self.count_outbound(bytes);
                for (origin, text) in changes.iter() {
                    if *origin != self.id {
                        self.feed_counted(text.clone()).await?;
                    }
                }
                Ok(())
            }
            Ok(Event::Revoke { user_id }) if user == Some(user_id.as_str()) => {
                Err(Stop::Close(close::POLICY, "membership revoked"))
            }
            Ok(Event::Members { user_ids }) if user.is_some_and(|u| !user_ids.iter().any(|m| m == u)) => {
                Err(Stop::Close(close::POLICY, "membership revoked"))
            }
            Ok(Event::Revoke { .. }) | Ok(Event::Members { .. }) | Ok(Event::Shutdown) => Ok(()),
            Ok(Event::Close { code, reason }) => Err(Stop::Close(code, reason)),
            Err(RecvError::Lagged(n)) => {
                warn!(conn = self.id, tenant = %self.tenant, missed = n, "slow consumer fell behind the broadcast; closing");
                Err(Stop::Close(close::TRY_AGAIN_LATER, "too slow: resync by delta"))
            }
            Err(RecvError::Closed) => Err(Stop::Closed),
        }
    }

    /// Token bucket per connection; false when the client is over its message rate.
    fn take_token(&mut self) -> bool {
        let cfg = &self.app.config;
        let now = Instant::now();
        let refill = now.duration_since(self.last_refill).as_secs_f64() * cfg.messages_per_second as f64;
        self.tokens = (self.tokens + refill).min(cfg.message_burst as f64);
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Feeds the answers of one writer job (call [`Conn::flush`] afterwards).
    async fn feed_outcomes(&mut self, p: Pending) -> Result<(), Stop> {
        let (outs, batch) = match p {
            Pending::Single(o) => (o, false),
            Pending::Batch(o) => (o, true),
        };
        self.in_flight = self.in_flight.saturating_sub(if batch { 1 } else { outs.len() });
        for o in &outs {
            match &o.reply {
                Reply::Ack(_) => {
                    self.app.metrics.acks.inc();
                }
                Reply::Nack(n) => {
                    let reason = serde_json::to_value(n.reason).ok();
                    self.app.metrics.nack(reason.as_ref().and_then(|v| v.as_str()).unwrap_or("other"));
                }
            };
        }
        if batch {
            let results = outs
                .iter()
                .map(|o| match &o.reply {
                    Reply::Ack(a) => a.clone().into(),
                    Reply::Nack(n) => n.clone().into(),
                })
                .collect();
            self.feed_json(&SyncBatchResult { r#type: "sync_batch_result".into(), results }).await?;
        } else {
            for o in &outs {
                match &o.reply {
                    Reply::Ack(a) => self.feed_json(a).await?,
                    Reply::Nack(n) => self.feed_json(n).await?,
                }
            }
        }
        // The ack goes first: a client keeps its queued version until the ack, so a winner sent
        // before it would be ignored.
        for o in outs {
            if let Some(t) = o.to_writer {
                self.feed_text(t).await?;
            }
        }
        Ok(())
    }
}

const MAX_IN_FLIGHT_FLOOR: usize = 1;

/// What an upgraded connection is: its tenant, its user (`None`: a legacy client), until when
/// its token is valid, its connection's meter, and its place among the user's connections.
pub struct Session {
    pub tenant: TenantId,
    pub user: Option<String>,
    pub token_valid_until_ms: Option<i64>,
    pub meter: Option<Arc<crate::net::Meter>>,
    pub _place: crate::limits::CountGuard,
}

/// Most broadcasts put into one write (bounds the write buffer of a connection).
const FEED_MAX: usize = 64;

/// Runs one connection until it closes, inside a `conn` span (connection id, tenant, user) so
/// that every log line of the connection carries them.
///
/// A socket opened with an access token ends when the token does (`token_valid_until_ms`: its
/// `exp` plus the leeway): the server answers what is in flight, sends an `error` with code
/// `token_expired` and closes with 1008; the client reconnects with a refreshed token. So a
/// leaked access token is worth no more on an open socket than on a new request.
pub async fn run(app: Arc<App>, socket: WebSocket, session: Session) {
    let Session { tenant, user, token_valid_until_ms, meter, _place } = session;
    let id = app.next_conn_id();
    let _running = app.conn_guard();
    let span = info_span!("conn", conn = id, tenant = %tenant, user = user.as_deref().unwrap_or("legacy"));
    app.metrics.connections_total.inc();
    app.metrics.connections_open.inc();
    let metrics = Arc::clone(&app.metrics);
    run_conn(app, socket, tenant, user, id, token_valid_until_ms, meter).instrument(span).await;
    metrics.connections_open.dec();
}

async fn run_conn(
    app: Arc<App>,
    socket: WebSocket,
    tenant: TenantId,
    user: Option<String>,
    id: u64,
    token_valid_until_ms: Option<i64>,
    meter: Option<Arc<crate::net::Meter>>,
) {
    let (sink, stream) = socket.split();
    let mut stream = stream.peekable();
    let (mut tenant_rx, mut all_rx) = app.hub.subscribe(&tenant);
    if let Some(relay) = &app.relay {
        // the tenant's delivery cursor starts at the head this socket's load will show
        let (r, t) = (Arc::clone(relay), tenant.clone());
        let _ = tokio::task::spawn_blocking(move || r.watch(&t)).await;
    }
    info!(conn = id, tenant = %tenant, user = user.as_deref().unwrap_or("legacy"), "connected");
    let burst = app.config.message_burst as f64;
    let mut c = Conn {
        app: Arc::clone(&app),
        tenant: tenant.clone(),
        id,
        sink,
        tokens: burst,
        last_refill: Instant::now(),
        unflushed: 0,
        singles: Vec::new(),
        in_flight: 0,
    };
    let max_in_flight = app.config.max_in_flight.max(MAX_IN_FLIGHT_FLOOR);
    let mut pending: FuturesOrdered<BoxFuture<'static, Pending>> = FuturesOrdered::new();
    let mut heartbeat = tokio::time::interval(app.config.heartbeat_interval);
    heartbeat.tick().await;
    // A client that completes no message for four heartbeats (a stalled half frame, a dead
    // peer that keeps its TCP connection) is closed. Clients ping every 20 s (0.4 frontend).
    let idle_limit = app.config.heartbeat_interval * 4;
    let mut last_heard = Instant::now();
    let token_expiry = async move {
        match token_valid_until_ms {
            Some(ms) => tokio::time::sleep(std::time::Duration::from_millis((ms - time::now_ms()).max(0) as u64)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(token_expiry);

    let hello = StatusMessage {
        r#type: "status".into(),
        status: "online".into(),
        protocol: Some(PROTOCOL_VERSION),
        server_time: Some(time::format_ms(time::now_ms())),
        message: None,
    };
    let mut stop = c.send_json(&hello).await.err();
    while stop.is_none() {
        let may_read = c.in_flight < max_in_flight;
        let result: Result<(), Stop> = tokio::select! {
            Some(p) = pending.next(), if !pending.is_empty() => {
                let mut r = c.feed_outcomes(p).await;
                // Answers that are ready too (the same group commit) go out in the same write.
                while r.is_ok() {
                    match pending.next().now_or_never() {
                        Some(Some(p)) => r = c.feed_outcomes(p).await,
                        _ => break,
                    }
                }
                c.flush_after(r).await
            }
            ev = tenant_rx.recv() => {
                let mut r = c.feed_event(ev, user.as_deref()).await;
                // Broadcasts already waiting are written together, at most FEED_MAX per write.
                for _ in 1..FEED_MAX {
                    if r.is_err() {
                        break;
                    }
                    let ev = match tenant_rx.try_recv() {
                        Ok(ev) => Ok(ev),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    };
                    r = c.feed_event(ev, user.as_deref()).await;
                }
                c.flush_after(r).await
            }
            ev = all_rx.recv() => match ev {
                Ok(Event::Shutdown) => {
                    let bye = StatusMessage { r#type: "status".into(), status: "shutdown".into(), protocol: None, server_time: None, message: Some("server is shutting down".into()) };
                    c.answer_in_flight_and_close(&mut pending, &bye, close::GOING_AWAY, "server shutdown").await
                }
                _ => Ok(()),
            },
            msg = stream.next(), if may_read => {
              if matches!(msg, Some(Ok(_))) {
                  last_heard = Instant::now();
                  if let Some(m) = &meter {
                      m.message_done();
                  }
              }
              match msg {
                None => Err(Stop::Closed),
                Some(Err(_)) if meter.as_ref().is_some_and(|m| m.refusal().is_some()) => {
                    use crate::net::Refusal;
                    match meter.as_ref().and_then(|m| m.refusal()) {
                        Some(Refusal::Budget) => {
                            warn!(conn = id, "unfinished message refused: the server's WebSocket buffer budget is exhausted");
                            Err(Stop::Close(close::TRY_AGAIN_LATER, "server busy: too much unfinished data; retry"))
                        }
                        Some(Refusal::TooBig) => Err(Stop::Close(close::TOO_BIG, "message larger than the limit")),
                        _ => Err(Stop::Close(close::PROTOCOL_ERROR, "not a WebSocket client frame")),
                    }
                }
                Some(Err(e)) => {
                    debug!(conn = id, error = %e, "read error");
                    // tungstenite's own size limits (a batch over max_batch_bytes) by their type,
                    // not by the wording of the message
                    let inner = e.into_inner();
                    let too_big = matches!(inner.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)));
                    if too_big {
                        Err(Stop::Close(close::TOO_BIG, "message too big"))
                    } else {
                        Err(Stop::Closed)
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    let mut r = handle_text(&mut c, &mut pending, text.as_str()).await;
                    // Text frames that have arrived already are read now, so that consecutive
                    // single entries reach the tenant's writer as one job: one queue operation
                    // and one reply for all of them instead of one each.
                    while r.is_ok() && c.in_flight < max_in_flight {
                        let next = std::pin::Pin::new(&mut stream).next_if(|m| matches!(m, Ok(Message::Text(_))));
                        let Some(Some(Ok(Message::Text(text)))) = next.now_or_never() else { break };
                        last_heard = Instant::now();
                        if let Some(m) = &meter {
                            m.message_done();
                        }
                        r = handle_text(&mut c, &mut pending, text.as_str()).await;
                    }
                    flush_singles(&mut c, &mut pending);
                    r
                }
                // binary frames count against the message rate like text; over it, no answer
                // (an answer per frame would let a client make the server write as much as it reads)
                Some(Ok(Message::Binary(_))) if !c.take_token() => Ok(()),
                Some(Ok(Message::Binary(_))) => {
                    c.send_json(&ErrorMessage::new(ErrorCode::BinaryNotSupported, "send JSON in text frames")).await
                }
                Some(Ok(Message::Close(_))) => Err(Stop::Closed),
                Some(Ok(_)) => Ok(()),
              }
            }
            _ = &mut token_expiry => {
                info!(conn = id, tenant = %tenant, "access token expired; closing");
                let e = ErrorMessage::new(ErrorCode::TokenExpired, "the access token has expired: reconnect with a refreshed token");
                c.answer_in_flight_and_close(&mut pending, &e, close::POLICY, "access token expired").await
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > idle_limit {
                    warn!(conn = id, tenant = %tenant, "no complete message from the client for {} s; closing", idle_limit.as_secs());
                    Err(Stop::Close(close::POLICY, "idle: no complete message"))
                } else {
                    let secs = app.started.elapsed().as_secs_f64();
                    c.send_json(&Heartbeat::ping(json!(secs))).await
                }
            }
        };
        stop = result.err();
    }
    match &stop {
        Some(Stop::Close(code, _)) => app.metrics.close(&code.to_string()),
        _ => app.metrics.close("peer"),
    }
    if let Some(Stop::Close(code, reason)) = stop {
        // The closing handshake (RFC 6455 §7.1.1): send the Close, then read (and drop) what the
        // client still sends until its Close or EOF, 2 s at most. A socket closed with frames of
        // the client unread goes out as a TCP reset, and a browser that gets the reset before it
        // has read the Close reports 1006 and loses the code: a deleted tenant or a revoked
        // membership then looks like a network failure, and the app reconnects into a 403.
        let frame = CloseFrame { code, reason: reason.into() };
        let handshake = async {
            if c.sink.send(Message::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(crate::secs(2), handshake).await;
    }
    drop(tenant_rx);
    app.hub.unsubscribe(&tenant);
    info!(conn = id, tenant = %tenant, "disconnected");
}

fn ready(p: Pending) -> BoxFuture<'static, Pending> {
    async move { p }.boxed()
}

/// Queues the single entries read so far on the tenant's writer, as one job.
fn flush_singles(c: &mut Conn, pending: &mut FuturesOrdered<BoxFuture<'static, Pending>>) {
    if !c.singles.is_empty() {
        let items = std::mem::take(&mut c.singles);
        pending.push_back(submit(c, items, false));
    }
}

/// Queues items on the tenant writer; the returned future yields their outcomes in order.
fn submit(c: &Conn, items: Vec<Item>, batch: bool) -> BoxFuture<'static, Pending> {
    let wrap = move |o: Vec<Outcome>| if batch { Pending::Batch(o) } else { Pending::Single(o) };
    let refuse = |items: &[Item], reason: NackReason, detail: &str| -> Vec<Outcome> {
        items.iter().map(|i| i.nack(reason, detail)).collect()
    };
    if items.iter().all(|i| matches!(i, Item::Refused(_))) {
        let outs = refuse(&items, NackReason::StorageError, "");
        return ready(wrap(outs));
    }
    let fallback = refuse(&items, NackReason::StorageError, "the tenant writer stopped before answering; retry");
    let (reply, rx) = oneshot::channel();
    match c.app.writers.submit(&c.tenant, Job::Entries { origin: c.id, items, reply }) {
        // the items come back with the outcomes and are dropped here, on the thread that made them
        Ok(()) => async move { wrap(rx.await.map_or(fallback, |a| a.outcomes)) }.boxed(),
        Err(_) => {
            let outs = fallback
                .into_iter()
                .map(|o| match o.reply {
                    Reply::Nack(n) if n.reason == NackReason::StorageError => {
                        let mut n = n;
                        n.reason = NackReason::Overloaded;
                        n.retryable = true;
                        n.detail = "the tenant's write queue is full; retry with backoff".into();
                        Outcome::nack(n)
                    }
                    _ => o,
                })
                .collect();
            ready(wrap(outs))
        }
    }
}

async fn handle_text(
    c: &mut Conn,
    pending: &mut FuturesOrdered<BoxFuture<'static, Pending>>,
    text: &str,
) -> Result<(), Stop> {
    let cfg = &c.app.config;
    let oversized = text.len() > cfg.max_message_bytes;
    let parsed = parse_client_message(text);
    // anything but a single entry is answered after the single entries read before it
    if !matches!(parsed, Ok(ClientMessage::ProcessSyncEntry(Ok(_)))) {
        flush_singles(c, pending);
    }
    if oversized && !matches!(parsed, Ok(ClientMessage::ProcessSyncBatch(_))) {
        return Err(Stop::Close(close::TOO_BIG, "message larger than the limit"));
    }
    let rate_ok = c.take_token();
    let msg = match parsed {
        Ok(m) => m,
        Err(e) => {
            c.app.metrics.message_in("invalid");
            return c.send_json(&ErrorMessage::from(e)).await;
        }
    };
    c.app.metrics.message_in(match &msg {
        ClientMessage::ProcessSyncEntry(_) => "process_sync_entry",
        ClientMessage::ProcessSyncBatch(_) => "process_sync_batch",
        ClientMessage::RequestInitialData { .. } => "request_initial_data",
        ClientMessage::Ping { .. } => "ping",
        ClientMessage::DataStatusRequest { .. } => "data_status_request",
        ClientMessage::TenantDisconnect { .. } => "tenant_disconnect",
        ClientMessage::ConnectionStatusRequest => "connection_status_request",
        ClientMessage::QueueStatus { .. } => "queue_status",
    });
    let now = time::now_ms();
    let limits = c.app.engine_limits();
    let prepare = |e: finwise_protocol::messages::SyncQueueEntry| -> Item {
        if !rate_ok {
            return Item::Refused(SyncNack::for_entry(
                &e,
                NackReason::Overloaded,
                "message rate limit exceeded; retry with backoff",
            ));
        }
        match engine::prepare(e, c.tenant.as_str(), now, limits) {
            Ok(p) => Item::Ready(Box::new(p)),
            Err(n) => Item::Refused(n),
        }
    };
    match msg {
        ClientMessage::ProcessSyncEntry(Ok(entry)) => {
            // queued with the single entries read right after it ([`flush_singles`])
            let item = prepare(*entry);
            c.singles.push(item);
            c.in_flight += 1;
            Ok(())
        }
        ClientMessage::ProcessSyncEntry(Err(e)) => match e.id {
            Some(id) => {
                let n = SyncNack::new(&id, NackReason::ValidationError, e.error.to_string());
                pending.push_back(ready(Pending::Single(vec![Outcome::nack(n)])));
                c.in_flight += 1;
                Ok(())
            }
            None => c.send_json(&ErrorMessage::new(ErrorCode::ValidationError, e.error.to_string())).await,
        },
        ClientMessage::ProcessSyncBatch(entries) => {
            let items = entries
                .into_iter()
                .map(|r| match r {
                    Ok(e) => prepare(e),
                    Err(e) => Item::Refused(SyncNack::new(
                        e.id.as_deref().unwrap_or(""),
                        NackReason::ValidationError,
                        e.error.to_string(),
                    )),
                })
                .collect();
            let f = submit(c, items, true);
            pending.push_back(f);
            c.in_flight += 1;
            Ok(())
        }
        _ if !rate_ok => {
            c.send_json(&ErrorMessage::new(ErrorCode::RateLimited, "message rate limit exceeded; slow down")).await
        }
        ClientMessage::RequestInitialData { tenant_id, since, chunk_size } => {
            if tenant_id.as_deref().is_some_and(|t| t != c.tenant.as_str()) {
                return c.send_json(&ErrorMessage::tenant_mismatch("Failed to load initial data")).await;
            }
            send_load(c, LoadRequest { since, chunk_size }).await
        }
        ClientMessage::Ping { timestamp } => c.send_json(&Heartbeat::pong(timestamp)).await,
        ClientMessage::DataStatusRequest { tenant_id, entity_types } => {
            if tenant_id.as_deref().is_some_and(|t| t != c.tenant.as_str()) {
                return c.send_json(&ErrorMessage::tenant_mismatch("Failed to read the data status")).await;
            }
            let store = std::sync::Arc::clone(&c.app.store);
            let tenant = c.tenant.clone();
            let res =
                tokio::task::spawn_blocking(move || loads::data_status(&*store, &tenant, entity_types.as_deref()))
                    .await;
            match res {
                Ok(Ok(status)) => c.send_json(&status).await,
                Ok(Err(e)) => {
                    warn!(tenant = %c.tenant, error = %e, "data status failed");
                    c.send_json(&ErrorMessage::new(ErrorCode::StorageError, "could not read the tenant's data; retry"))
                        .await
                }
                Err(_) => Err(Stop::Closed),
            }
        }
        ClientMessage::TenantDisconnect { tenant_id, reason } => {
            let tid = tenant_id.unwrap_or_else(|| c.tenant.as_str().to_owned());
            let reply = json!({
                "type": "tenant_disconnect_ack",
                "tenant_id": tid,
                "status": "success",
                "message": format!("disconnect acknowledged ({})", reason.as_deref().unwrap_or("unspecified")),
            });
            c.send_json(&reply).await
        }
        ClientMessage::ConnectionStatusRequest => {
            let (total, tenants) = c.app.hub.stats();
            let reply = json!({
                "type": "connection_status_response",
                "tenant_id": c.tenant.as_str(),
                "backend_status": "online",
                "connection_healthy": true,
                "stats": { "total_connections": total, "healthy_connections": total, "tenant_count": tenants, "heartbeat_active": true },
            });
            c.send_json(&reply).await
        }
        ClientMessage::QueueStatus { kind } => {
            // This server keeps no queue: every entry is acked or refused on arrival.
            let reply = match kind.as_str() {
                "get_sync_queue_status" => json!({
                    "type": "sync_queue_status_info", "tenant_id": c.tenant.as_str(),
                    "pending_count": 0, "failed_count": 0, "retryable_count": 0, "has_pending_entries": false,
                }),
                "trigger_cyclic_sync" => json!({
                    "type": "cyclic_sync_result", "tenant_id": c.tenant.as_str(), "status": "success",
                    "message": "nothing to do: every entry is answered on arrival",
                }),
                _ => json!({
                    "type": "sync_queue_status", "tenant_id": c.tenant.as_str(), "processed_count": 0,
                    "successful_count": 0, "failed_count": 0, "failed_entries": [], "has_pending_entries": false,
                }),
            };
            c.send_json(&reply).await
        }
    }
}

/// Streams a load to the client through a small bounded channel (see [`loads::stream_load`]).
async fn send_load(c: &mut Conn, req: LoadRequest) -> Result<(), Stop> {
    let (tx, mut rx) = mpsc::channel::<String>(2);
    let store = std::sync::Arc::clone(&c.app.store);
    let tenant = c.tenant.clone();
    let producer = tokio::task::spawn_blocking(move || loads::stream_load(&*store, &tenant, req, tx));
    while let Some(msg) = rx.recv().await {
        c.send_text(msg).await?;
    }
    match producer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            warn!(tenant = %c.tenant, error = %e, "initial data load failed");
            c.send_json(&ErrorMessage::new(ErrorCode::StorageError, format!("Failed to load initial data: {e}"))).await
        }
        Err(_) => Err(Stop::Closed),
    }
}
