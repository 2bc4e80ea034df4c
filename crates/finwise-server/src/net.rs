//! The accept loop: every TCP connection, from `accept` to close, with the limits that keep
//! clients that send nothing (or almost nothing) from holding the server.
//!
//! - **Connection cap.** At most `max_connections` sockets (HTTP and WebSocket), clamped below
//!   the process's open-file limit so that `accept` never fails for lack of descriptors and the
//!   databases keep theirs. When the cap is reached, the connection idle for longest that has
//!   never been upgraded (a keep-alive socket between requests, or one that has sent nothing) is
//!   closed to make room; if there is none, the new connection is closed at once. So a flood of
//!   idle sockets cannot keep `/health` or a real client out.
//! - **Timeouts.** A new connection must complete its first request's headers within
//!   `http_header_timeout` (hyper's header timeout covers trickled headers of later requests);
//!   a keep-alive connection with no request for `http_idle_timeout` is closed; a request body
//!   must arrive within `http_body_timeout` (a tower layer in [`crate::http::router`]).
//! - **WebSocket buffer budget.** Every socket is read through a [`Metered`] stream that counts
//!   the bytes of the WebSocket message being received. A message that grows beyond
//!   `max_message_bytes` while all connections together hold more than `ws_buffer_budget` in
//!   unfinished messages is refused: the read fails and the connection closes with 1013.
//!   The same stream follows the frames ([`crate::frames`]): only a `process_sync_batch` may
//!   grow beyond `max_message_bytes` (1009 otherwise, as soon as it does).

use finwise_protocol::locks::LockExt;
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
};
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Descriptors kept free for database files, the log and new accepts: the larger of 64 and an
/// eighth of the limit.
fn headroom(nofile: u64) -> u64 {
    (nofile / 8).max(64)
}

/// The process's open-file limit (`ulimit -n`).
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// `max_connections` clamped to what the process's open-file limit allows.
pub fn effective_max_connections(configured: usize) -> usize {
    let nofile = nofile_limit();
    let allowed = nofile.saturating_sub(headroom(nofile)).max(16);
    configured.min(usize::try_from(allowed).unwrap_or(usize::MAX)).max(1)
}

struct Entry {
    /// Requests being handled now.
    busy: usize,
    /// Handed over to a WebSocket: counted, never evicted or timed out here.
    upgraded: bool,
    /// Whether a request has completed on it (then `http_idle_timeout` applies, else the header timeout).
    served: bool,
    /// Told to close (evicted); not chosen again.
    closing: bool,
    idle_since: Instant,
    close: Arc<Notify>,
}

/// The bytes WebSocket connections hold, against one budget (`ws_buffer_budget`): unfinished
/// incoming messages, and outgoing messages not yet handed to the kernel (broadcasts that a
/// listener has not taken yet, and what sits in a socket's write buffer).
pub struct Buffers {
    inbound: AtomicUsize,
    outbound: AtomicUsize,
    budget: usize,
    pressure: Notify,
    last_notice: Mutex<Instant>,
}

impl Buffers {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Buffers {
            inbound: AtomicUsize::new(0),
            outbound: AtomicUsize::new(0),
            budget,
            pressure: Notify::new(),
            last_notice: Mutex::new(Instant::now()),
        })
    }

    pub fn inbound(&self) -> usize {
        self.inbound.load(Ordering::Relaxed)
    }

    pub fn outbound(&self) -> usize {
        self.outbound.load(Ordering::Relaxed)
    }

    pub fn over_budget(&self) -> bool {
        self.inbound() + self.outbound() > self.budget
    }

    pub fn add_outbound(&self, n: usize) {
        self.outbound.fetch_add(n, Ordering::Relaxed);
        self.notice_pressure();
    }

    pub fn sub_outbound(&self, n: usize) {
        self.outbound.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts `n` outgoing bytes until the returned charge is dropped.
    pub fn charge_outbound(self: &Arc<Self>, n: usize) -> Arc<OutboundCharge> {
        self.add_outbound(n);
        Arc::new(OutboundCharge { bytes: n, buffers: Arc::clone(self) })
    }

    /// Over budget: wakes the connections waiting in a send (at most every 50 ms), so that the
    /// ones that have waited long close and give their buffers back.
    fn notice_pressure(&self) {
        if !self.over_budget() {
            return;
        }
        let mut last = self.last_notice.locked();
        if last.elapsed() >= Duration::from_millis(50) {
            *last = Instant::now();
            self.pressure.notify_waiters();
        }
    }

    /// Resolves when the buffers are over budget and `since` is at least `patience` ago: a send
    /// that started at `since` and still waits is one of the slowest.
    pub async fn slow_under_pressure(&self, since: Instant, patience: Duration) {
        loop {
            let notified = self.pressure.notified();
            if self.over_budget() && since.elapsed() >= patience {
                return;
            }
            notified.await;
        }
    }
}

/// Outgoing bytes counted against the budget while this lives (shared by every listener's copy
/// of a broadcast: dropped when the last one has taken it).
#[derive(Debug)]
pub struct OutboundCharge {
    bytes: usize,
    buffers: Arc<Buffers>,
}

impl Drop for OutboundCharge {
    fn drop(&mut self) {
        self.buffers.sub_outbound(self.bytes);
    }
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffers")
            .field("inbound", &self.inbound())
            .field("outbound", &self.outbound())
            .field("budget", &self.budget)
            .finish()
    }
}

/// Every open connection, for the cap, the idle sweep and the WebSocket budget.
pub struct Connections {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    buffers: Arc<Buffers>,
    large_message: usize,
}

impl Connections {
    pub fn new(buffers: Arc<Buffers>, large_message: usize) -> Arc<Self> {
        Arc::new(Connections { entries: Mutex::new(HashMap::new()), next: AtomicU64::new(1), buffers, large_message })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.locked()
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }

    pub fn buffers(&self) -> &Arc<Buffers> {
        &self.buffers
    }

    /// Makes room for one more connection under `cap`: closes the longest-idle evictable one
    /// if needed. False when every connection is busy or upgraded.
    fn make_room(&self, cap: usize) -> bool {
        let map = self.lock();
        if map.len() < cap {
            return true;
        }
        let victim = map
            .iter()
            .filter(|(_, e)| e.busy == 0 && !e.upgraded && !e.closing)
            .min_by_key(|(_, e)| e.idle_since)
            .map(|(id, e)| (*id, e.close.clone()));
        drop(map);
        match victim {
            Some((id, close)) => {
                debug!(conn = id, "connection cap reached: closing the longest-idle connection");
                // the entry goes when its stream is dropped; until then it must not be chosen again
                if let Some(e) = self.lock().get_mut(&id) {
                    e.closing = true;
                }
                close.notify_one();
                true
            }
            None => false,
        }
    }

    fn register(self: &Arc<Self>) -> (Arc<Meter>, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.lock().insert(
            id,
            Entry {
                busy: 0,
                upgraded: false,
                served: false,
                closing: false,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        let meter = Arc::new(Meter {
            id,
            conns: Arc::clone(self),
            websocket: AtomicBool::new(false),
            unfinished: AtomicUsize::new(0),
            refused: AtomicU8::new(REFUSED_NONE),
        });
        (meter, close)
    }

    fn request_started(&self, id: u64) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.busy += 1;
        }
    }

    fn request_ended(&self, id: u64) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
            e.served = true;
            e.idle_since = Instant::now();
        }
    }

    /// Closes connections idle beyond their timeout.
    fn sweep(&self, header_timeout: Duration, idle_timeout: Duration) {
        let now = Instant::now();
        for (id, e) in self.lock().iter() {
            let limit = if e.served { idle_timeout } else { header_timeout };
            if e.busy == 0 && !e.upgraded && now.duration_since(e.idle_since) > limit {
                debug!(conn = id, "closing an idle connection");
                e.close.notify_one();
            }
        }
    }
}

const REFUSED_NONE: u8 = 0;
const REFUSED_BUDGET: u8 = 1;
const REFUSED_TOO_BIG: u8 = 2;
const REFUSED_MALFORMED: u8 = 3;

/// Why the reads of a WebSocket connection were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// All connections together hold `ws_buffer_budget` in unfinished messages (close 1013).
    Budget,
    /// A message that is not a batch grew beyond `max_message_bytes` (close 1009).
    TooBig,
    /// The bytes are not WebSocket client frames (close 1002).
    Malformed,
}

/// One connection's share of the bookkeeping; carried in each request's extensions, so that
/// the WebSocket upgrade can mark it and the WebSocket task can report finished messages.
pub struct Meter {
    id: u64,
    conns: Arc<Connections>,
    websocket: AtomicBool,
    unfinished: AtomicUsize,
    refused: AtomicU8,
}

impl Meter {
    /// The connection now carries a WebSocket: no idle timeout or eviction, budgeted reads.
    pub fn upgraded(&self) {
        self.websocket.store(true, Ordering::Relaxed);
        if let Some(e) = self.conns.lock().get_mut(&self.id) {
            e.upgraded = true;
        }
    }

    /// A WebSocket message has been received completely: its bytes no longer count.
    pub fn message_done(&self) {
        let n = self.unfinished.swap(0, Ordering::Relaxed);
        self.conns.buffers.inbound.fetch_sub(n, Ordering::Relaxed);
    }

    /// Why the connection's reads were refused, if they were.
    pub fn refusal(&self) -> Option<Refusal> {
        match self.refused.load(Ordering::Relaxed) {
            REFUSED_BUDGET => Some(Refusal::Budget),
            REFUSED_TOO_BIG => Some(Refusal::TooBig),
            REFUSED_MALFORMED => Some(Refusal::Malformed),
            _ => None,
        }
    }

    fn refuse(&self, why: u8, message: &'static str) -> io::Result<()> {
        self.refused.store(why, Ordering::Relaxed);
        Err(io::Error::other(message))
    }

    fn on_read(&self, bytes: &[u8], frames: &mut Option<crate::frames::FrameTracker>) -> io::Result<()> {
        let n = bytes.len();
        if n == 0 || !self.websocket.load(Ordering::Relaxed) {
            return Ok(());
        }
        let tracker = frames.get_or_insert_with(|| crate::frames::FrameTracker::new(self.conns.large_message));
        match tracker.feed(bytes) {
            crate::frames::Verdict::Ok => {}
            crate::frames::Verdict::TooBig => {
                return self.refuse(REFUSED_TOO_BIG, "a message other than a batch exceeds max_message_bytes")
            }
            crate::frames::Verdict::Malformed => return self.refuse(REFUSED_MALFORMED, "not a WebSocket client frame"),
        }
        let mine = self.unfinished.fetch_add(n, Ordering::Relaxed) + n;
        let b = &self.conns.buffers;
        let total = b.inbound.fetch_add(n, Ordering::Relaxed) + n + b.outbound();
        b.notice_pressure();
        if mine > self.conns.large_message && total > b.budget {
            return self.refuse(REFUSED_BUDGET, "the server's WebSocket buffer budget is exhausted");
        }
        Ok(())
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let n = self.unfinished.swap(0, Ordering::Relaxed);
        self.conns.buffers.inbound.fetch_sub(n, Ordering::Relaxed);
        self.conns.lock().remove(&self.id);
    }
}

/// A TCP stream that reports what it reads to its [`Meter`]; dropping it (the end of the
/// connection, upgraded or not) removes the connection from the table.
pub struct Metered {
    inner: TcpStream,
    meter: Arc<Meter>,
    /// The client's WebSocket frames, followed from the upgrade on.
    frames: Option<crate::frames::FrameTracker>,
}

impl AsyncRead for Metered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let this = &mut *self;
            this.meter.on_read(&buf.filled()[before..], &mut this.frames)?;
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The accept loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct NetLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts and serves connections until `shutdown` resolves; then closes idle keep-alive
/// connections, lets requests in progress finish (at most `drain`), and returns. Upgraded
/// WebSockets are not waited for here (see [`crate::serve`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    limits: NetLimits,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = {
        let conns = Arc::clone(&conns);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => conns.sweep(limits.header_timeout, limits.idle_timeout),
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let tasks = tokio_util_tasks::Tasks::default();
    tokio::pin!(shutdown);
    // when the last "cap reached" warning was logged (at most one per 10 s)
    let mut refused_logged: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and friends: wait a little instead of spinning
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !conns.make_room(limits.max_connections) {
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached and every connection is busy: refusing new connections"
                );
                refused_logged = Some(Instant::now());
            }
            drop(tcp);
            continue;
        }
        // TCP_NODELAY: a `data_update` must not wait in Nagle's buffer for the ACK of the previous
        // one, which a listener that sends nothing delays by up to 40 ms (delayed ACK).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (meter, close) = conns.register();
        tasks.spawn(serve_connection(tcp, peer, meter, close, router.clone(), limits, stop_rx.clone()));
    }
    info!("stopped accepting connections");
    let _ = stop_tx.send(true);
    if !tasks.wait(drain).await {
        warn!("some HTTP requests did not finish within {drain:?}; closing anyway");
    }
    sweeper.abort();
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    meter: Arc<Meter>,
    close: Arc<Notify>,
    router: Router,
    limits: NetLimits,
    mut stop: watch::Receiver<bool>,
) {
    let id = meter.id;
    let conns = Arc::clone(&meter.conns);
    let io = TokioIo::new(Metered { inner: tcp, meter: Arc::clone(&meter), frames: None });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(Arc::clone(&meter));
        let conns = Arc::clone(&meter.conns);
        conns.request_started(id);
        let call = router.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let res = call.await;
            conns.request_ended(id);
            res
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let shut_down = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(conn = id, error = %e, "connection ended with an error");
            }
            false
        }
        _ = close.notified() => true,
        _ = stop.changed() => true,
    };
    if shut_down {
        // lets a request in progress finish, then closes (an idle connection closes at once)
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), conn.as_mut()).await;
    }
    drop(conns);
}

/// A small set of spawned tasks that can be awaited together (the connections being served).
mod tokio_util_tasks {
    use std::{
        future::Future,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub struct Tasks(Arc<(AtomicUsize, Notify)>);

    impl Tasks {
        pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
            let inner = Arc::clone(&self.0);
            inner.0.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                f.await;
                if inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
                    inner.1.notify_waiters();
                }
            });
        }

        /// Waits until every task has finished, at most `limit`; false on timeout.
        pub async fn wait(&self, limit: Duration) -> bool {
            tokio::time::timeout(limit, async {
                loop {
                    let done = self.0 .1.notified();
                    if self.0 .0.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                    done.await;
                }
            })
            .await
            .is_ok()
        }
    }
}
