//! The tenant writers: one actor per open tenant that owns the tenant's SQLite connection and a
//! bounded queue, run by a small pool of threads. A pool thread takes a tenant that has work,
//! applies everything queued (up to `max_group` entries) in one transaction (group commit), and
//! only after the commit answers the connections and publishes the changes. A tenant is handled
//! by at most one thread at a time, so its changes are applied in arrival order. Idle tenants
//! close their file.
//!
//! Architecture invariant: a reply (ack) is sent only after `COMMIT` returned.
//!
//! Why a pool and not a thread per tenant: with more busy tenants than cores, threads per tenant
//! only take turns on the cores, each committing small groups; a tenant that waits for a pool
//! thread instead collects a larger group for its next commit. And 10,000 tenants do not mean
//! 10,000 threads (each with its own allocator caches).

use finwise_protocol::locks::LockExt;
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use finwise_protocol::messages::NackReason;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::{
    engine::{self, Item, Outcome},
    hub::Hub,
    metrics::Metrics,
    storage::{Store, TenantDb},
    TenantId,
};

/// How often a tenant compacts tombstones: while open, and at an open unless it did within this
/// time (a tenant closed for room under `max_open_tenants` reopens often).
/// (A tombstone horizon shorter than this, as in tests, shortens it.)
const COMPACTION_INTERVAL: Duration = Duration::from_secs(3600);

/// How many nice levels below the tenant writers the async runtime's threads run.
pub const RUNTIME_NICE: i32 = 4;

/// Sets the calling thread's nice value to the main thread's plus [`RUNTIME_NICE`] (the binary
/// calls it at the start of each of the async runtime's threads). When the cores are short, the
/// tenant writers go first:
/// every ack of a tenant waits for its one writer's commit, while the connection tasks that
/// compete with it for the cores only parse and queue more entries for it. Lowering a thread's
/// own priority needs no privilege; raising the writers' would. A thread inherits the value of
/// the thread that starts it, so the writer pool is started from the main thread. Measured in
/// docs/PERFORMANCE.md ("Issue 21, ingest: the allocator and the writers' precedence").
pub fn yield_to_writers() {
    use rustix::{process, thread};
    // relative to the main thread (whose id is the process id), not to the calling thread: the
    // runtime's blocking threads are started by its workers and inherit their lowered value
    let base = process::getpriority_process(Some(process::getpid())).unwrap_or(0);
    // best effort: a thread that cannot be lowered (seccomp, say) runs as before
    let _ = process::setpriority_process(Some(thread::gettid()), (base + RUNTIME_NICE).min(19));
}

/// Work for a tenant writer.
pub enum Job {
    /// Entries from connection `origin`, answered in order through `reply`.
    Entries { origin: u64, items: Vec<Item>, reply: oneshot::Sender<Answer> },
    /// Make sure the database exists (tenant creation).
    Open { reply: oneshot::Sender<Result<(), String>> },
    /// Finish what is queued, close the file and stop (tenant deletion, shutdown).
    Close { reply: oneshot::Sender<()> },
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Entries { items, .. } => items.len(),
            _ => 1,
        }
    }
}

/// The answer to a [`Job::Entries`]: an outcome per item, in order, and the items themselves.
/// The items go back so that the connection's thread, which allocated them, frees them: a free
/// from another thread costs the allocator more, and the writer's time is the tenant's bound.
pub struct Answer {
    pub outcomes: Vec<Outcome>,
    pub items: Vec<Item>,
}

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the tenant's write queue is full")]
    Overloaded,
}

/// Tuning of the writers.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Messages (a single entry or a batch) a tenant may have queued; beyond, their entries are
    /// refused with `overloaded`.
    pub queue_capacity: usize,
    pub max_group: usize,
    pub idle_close: Duration,
    pub tombstone_horizon_ms: i64,
    /// Threads that run tenant writers.
    pub threads: usize,
    /// Tenants open at most (see [`tenant_cap`]): a tenant that needs to open first closes the
    /// least recently active idle ones, and when every open tenant has work it waits for a slot
    /// (its jobs stay queued). Pool threads that open at the same moment may exceed it by one each.
    pub max_open: usize,
}

/// The default cap on open tenants: the file descriptors that `ulimit -n` leaves after the
/// connections (`max_connections`, already fitted to the limit) and a reserve for the process's
/// own files, at `files_per_tenant` each (a store whose tenants hold no files of their own: no cap).
pub fn tenant_cap(nofile: u64, max_connections: usize, files_per_tenant: usize) -> usize {
    /// Descriptors kept for the rest: `auth.db`, listeners, the runtime's own, logs.
    const RESERVE: u64 = 128;
    if files_per_tenant == 0 {
        return usize::MAX;
    }
    let left = nofile.saturating_sub(max_connections as u64).saturating_sub(RESERVE);
    usize::try_from(left / files_per_tenant as u64).unwrap_or(usize::MAX).max(16)
}

/// One open tenant: its queue and, while open, its database connection.
struct Tenant {
    id: TenantId,
    state: Mutex<TenantState>,
    /// Touched only by the pool thread that has the tenant scheduled, or by the reaper once the
    /// tenant is unscheduled and out of the registry.
    db: Mutex<Option<Db>>,
}

struct Db {
    conn: Box<dyn TenantDb>,
    last_compaction: Instant,
    _slot: OpenSlot,
}

/// One of the `max_open` slots, held by an open tenant's [`Db`] and given back when it closes.
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn take(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenSlot(Arc::clone(count))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct TenantState {
    queue: VecDeque<Job>,
    /// In the ready queue or being processed by a pool thread.
    scheduled: bool,
    last_active: Instant,
}

/// The pool's queue of tenants that have work.
struct Ready {
    tenants: VecDeque<Arc<Tenant>>,
    last_reap: Instant,
    shutdown: bool,
}

struct Shared {
    store: Arc<dyn Store>,
    relay: Option<Arc<crate::relay::Relay>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    cfg: WriterConfig,
    /// Registry of open tenants. Lock order: `tenants`, then a tenant's `state`.
    tenants: Mutex<HashMap<TenantId, Arc<Tenant>>>,
    /// When each tenant last compacted its tombstones (at an open, or hourly while open): a tenant
    /// closed and opened again within the hour does not scan its tombstones again.
    compacted: Mutex<HashMap<TenantId, Instant>>,
    /// Tenants with an open database (each holds an [`OpenSlot`]).
    open_dbs: Arc<AtomicUsize>,
    ready: Mutex<Ready>,
    wake: Condvar,
}

/// The registry of open tenants and the pool that runs their writers. Dropping it stops the pool.
pub struct Writers {
    shared: Arc<Shared>,
}

impl Drop for Writers {
    fn drop(&mut self) {
        lock(&self.shared.ready).shutdown = true;
        self.shared.wake.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl Writers {
    pub fn new(
        store: Arc<dyn Store>,
        relay: Option<Arc<crate::relay::Relay>>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        cfg: WriterConfig,
    ) -> Arc<Self> {
        let threads = cfg.threads.max(1);
        let shared = Arc::new(Shared {
            store,
            relay,
            hub,
            metrics,
            cfg,
            tenants: Mutex::new(HashMap::new()),
            compacted: Mutex::new(HashMap::new()),
            open_dbs: Arc::new(AtomicUsize::new(0)),
            ready: Mutex::new(Ready { tenants: VecDeque::new(), last_reap: Instant::now(), shutdown: false }),
            wake: Condvar::new(),
        });
        for i in 0..threads {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("writer-{i}"))
                .spawn(move || s.work())
                .expect("spawn writer thread");
        }
        Arc::new(Writers { shared })
    }

    /// Queues a job for a tenant, opening the tenant when needed. Never blocks on I/O.
    pub fn submit(&self, tenant: &TenantId, job: Job) -> Result<(), SubmitError> {
        let s = &self.shared;
        let mut tenants = lock(&s.tenants);
        // the id is copied only for a tenant that is not open yet
        let t = match tenants.get(tenant) {
            Some(t) => Arc::clone(t),
            None => {
                let t = Arc::new(Tenant {
                    id: tenant.clone(),
                    state: Mutex::new(TenantState {
                        queue: VecDeque::new(),
                        scheduled: false,
                        last_active: Instant::now(),
                    }),
                    db: Mutex::new(None),
                });
                tenants.insert(tenant.clone(), Arc::clone(&t));
                t
            }
        };
        let mut st = lock(&t.state);
        s.enqueue(&t, &mut st, job)
    }

    /// The cap on open tenants in effect.
    pub fn max_open(&self) -> usize {
        self.shared.cfg.max_open
    }

    /// Number of tenants with an open database.
    pub fn open_count(&self) -> usize {
        self.shared.open_dbs.load(Ordering::Relaxed)
    }

    /// Closes one tenant after it has finished its queue.
    pub async fn close(&self, tenant: &TenantId) {
        let (reply, done) = oneshot::channel();
        let queued = {
            let tenants = lock(&self.shared.tenants);
            match tenants.get(tenant) {
                Some(t) => {
                    let mut st = lock(&t.state);
                    self.shared.enqueue(t, &mut st, Job::Close { reply }).is_ok()
                }
                None => false,
            }
        };
        if queued {
            let _ = done.await;
        }
    }

    /// Closes every tenant, committing what is queued. Used by graceful shutdown.
    pub async fn close_all(&self) {
        let ids: Vec<TenantId> = lock(&self.shared.tenants).keys().cloned().collect();
        for t in ids {
            self.close(&t).await;
        }
    }
}

impl Shared {
    /// Appends a job to a tenant's queue (held locked by the caller) and schedules the tenant.
    /// Entries beyond the queue's capacity are refused; `Open` and `Close` always fit.
    fn enqueue(&self, t: &Arc<Tenant>, st: &mut TenantState, job: Job) -> Result<(), SubmitError> {
        let weight = job.weight();
        if matches!(job, Job::Entries { .. }) && st.queue.len() >= self.cfg.queue_capacity {
            return Err(SubmitError::Overloaded);
        }
        st.queue.push_back(job);
        self.metrics.writer_queue_depth.inc_by(weight as i64);
        if !st.scheduled {
            st.scheduled = true;
            lock(&self.ready).tenants.push_back(Arc::clone(t));
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A pool thread: runs tenants that have work, and now and then closes idle ones.
    fn work(self: Arc<Self>) {
        let tick = (self.cfg.idle_close / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let next = {
                let mut ready = lock(&self.ready);
                loop {
                    if ready.shutdown {
                        return;
                    }
                    if ready.last_reap.elapsed() >= tick {
                        ready.last_reap = Instant::now();
                        break None;
                    }
                    if let Some(t) = ready.tenants.pop_front() {
                        break Some(t);
                    }
                    ready = self.wake.wait_timeout(ready, tick).unwrap_or_else(|p| p.into_inner()).0;
                }
            };
            match next {
                Some(t) => {
                    // A bug must not take a pool thread (and the tenant) with it: the tenant is
                    // closed, the jobs in the failed group get no reply (their connections answer
                    // "retry"), and what was still queued is refused.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&t)));
                    if run.is_err() {
                        error!(tenant = %t.id, "tenant writer panicked; closing the tenant");
                        lock(&t.db).take();
                        for job in self.retire(&t) {
                            fail_job(job, "the tenant writer failed; retry");
                        }
                    }
                }
                None => self.reap(),
            }
        }
    }

    /// Takes one group from a scheduled tenant, commits it, and schedules the tenant again when
    /// more is queued.
    fn run(&self, t: &Arc<Tenant>) {
        let mut jobs = Vec::new();
        {
            let mut st = lock(&t.state);
            let mut weight = 0;
            while weight < self.cfg.max_group {
                let Some(job) = st.queue.pop_front() else { break };
                weight += job.weight();
                jobs.push(job);
            }
            self.metrics.writer_queue_depth.dec_by(weight as i64);
            if jobs.is_empty() {
                st.scheduled = false;
                return;
            }
        }
        let mut db = lock(&t.db);
        if db.is_none() && self.open_dbs.load(Ordering::Relaxed) >= self.cfg.max_open {
            drop(db);
            if !self.make_room() {
                // every open tenant has work: this one waits for a slot behind them
                self.defer(t, jobs);
                return;
            }
            db = lock(&t.db);
        }
        if db.is_none() {
            match self.open(&t.id) {
                Ok((conn, last_compaction)) => {
                    *db = Some(Db { conn, last_compaction, _slot: OpenSlot::take(&self.open_dbs) })
                }
                Err(e) => {
                    error!(tenant = %t.id, error = %e, "cannot open tenant database; refusing its writes (retryable)");
                    drop(db);
                    let detail = format!("tenant database unavailable: {e}");
                    for job in jobs.into_iter().chain(self.retire(t)) {
                        fail_job(job, &detail);
                    }
                    return;
                }
            }
        }
        let open = db.as_mut().expect("opened above");
        if open.last_compaction.elapsed() > self.compaction_interval() {
            open.last_compaction = Instant::now();
            lock(&self.compacted).insert(t.id.clone(), open.last_compaction);
            if let Err(e) = open.conn.compact(finwise_protocol::time::now_ms() - self.cfg.tombstone_horizon_ms) {
                warn!(tenant = %t.id, error = %e, "tombstone compaction failed");
            }
        }
        let keep_running = self.process(&t.id, open.conn.as_mut(), jobs);
        if !keep_running {
            // Closing the connection checkpoints the WAL into the file.
            *db = None;
            drop(db);
            // Anything that raced into the queue is answered rather than dropped.
            for job in self.retire(t) {
                fail_job(job, "tenant is closing");
            }
            return;
        }
        drop(db);
        let mut st = lock(&t.state);
        st.last_active = Instant::now();
        if st.queue.is_empty() {
            st.scheduled = false;
        } else {
            lock(&self.ready).tenants.push_back(Arc::clone(t));
            self.wake.notify_one();
        }
    }

    /// [`COMPACTION_INTERVAL`], or the tombstone horizon when that is shorter.
    fn compaction_interval(&self) -> Duration {
        COMPACTION_INTERVAL.min(Duration::from_millis(self.cfg.tombstone_horizon_ms.max(0) as u64))
    }

    /// Puts a group taken from a tenant back at the head of its queue, and the tenant at the end
    /// of the ready queue (it stays scheduled).
    fn defer(&self, t: &Arc<Tenant>, jobs: Vec<Job>) {
        let mut st = lock(&t.state);
        self.metrics.writer_queue_depth.inc_by(jobs.iter().map(|j| j.weight() as i64).sum());
        for job in jobs.into_iter().rev() {
            st.queue.push_front(job);
        }
        lock(&self.ready).tenants.push_back(Arc::clone(t));
        drop(st);
        self.wake.notify_one();
        // the tenants ahead of it are running; let them
        std::thread::yield_now();
    }

    /// Opens a tenant's database; compacts its tombstones unless it did within the interval.
    /// Returns the connection and when the tenant last compacted.
    fn open(&self, tenant: &TenantId) -> crate::storage::Result<(Box<dyn TenantDb>, Instant)> {
        let mut conn = self.store.open_tenant(tenant)?;
        let last = lock(&self.compacted).get(tenant).copied().filter(|t| t.elapsed() < self.compaction_interval());
        let compacted = match last {
            Some(t) => t,
            None => {
                let cutoff = finwise_protocol::time::now_ms() - self.cfg.tombstone_horizon_ms;
                match conn.compact(cutoff) {
                    Ok(n) if n > 0 => info!(tenant = %tenant, tombstones = n, "compacted tombstones"),
                    Ok(_) => {}
                    Err(e) => warn!(tenant = %tenant, error = %e, "tombstone compaction failed"),
                }
                let now = Instant::now();
                lock(&self.compacted).insert(tenant.clone(), now);
                now
            }
        };
        debug!(tenant = %tenant, "tenant opened");
        Ok((conn, compacted))
    }

    /// Removes a tenant from the registry; returns what was still queued (to be answered).
    fn retire(&self, t: &Arc<Tenant>) -> Vec<Job> {
        let mut tenants = lock(&self.tenants);
        if tenants.get(&t.id).is_some_and(|x| Arc::ptr_eq(x, t)) {
            tenants.remove(&t.id);
        }
        let mut st = lock(&t.state);
        st.scheduled = false;
        let jobs: Vec<Job> = st.queue.drain(..).collect();
        self.metrics.writer_queue_depth.dec_by(jobs.iter().map(|j| j.weight() as i64).sum());
        jobs
    }

    /// Makes room under `max_open` before an open: closes the least recently active idle tenants,
    /// down to nine tenths of the cap so that the scan is paid once per many opens. Runs on the
    /// pool thread that needs the room, so the descriptors are free before it opens. False when
    /// no tenant is idle (every open one has work queued or running).
    fn make_room(&self) -> bool {
        let target = self.cfg.max_open - self.cfg.max_open / 10 - 1;
        let evicted: Vec<Arc<Tenant>> = {
            let mut tenants = lock(&self.tenants);
            let mut idle: Vec<(Instant, TenantId)> = tenants
                .values()
                .filter_map(|t| {
                    let st = lock(&t.state);
                    (!st.scheduled && st.queue.is_empty()).then(|| (st.last_active, t.id.clone()))
                })
                .collect();
            let excess = self.open_dbs.load(Ordering::Relaxed).saturating_sub(target).min(idle.len());
            if excess == 0 {
                return false;
            }
            idle.select_nth_unstable(excess - 1);
            // out of the registry, a tenant gets no more jobs: its next one opens it as a new entry
            idle.drain(..excess).filter_map(|(_, id)| tenants.remove(&id)).collect()
        };
        for t in &evicted {
            lock(&t.db).take();
        }
        self.metrics.tenant_evictions.inc_by(evicted.len() as u64);
        debug!(closed = evicted.len(), cap = self.cfg.max_open, "closed idle tenants to stay under max_open_tenants");
        true
    }

    /// Closes the files of tenants that have had nothing to do for `idle_close`.
    fn reap(&self) {
        let idle: Vec<Arc<Tenant>> = {
            let mut tenants = lock(&self.tenants);
            let mut idle = Vec::new();
            tenants.retain(|_, t| {
                let st = lock(&t.state);
                let close = !st.scheduled && st.queue.is_empty() && st.last_active.elapsed() >= self.cfg.idle_close;
                if close {
                    idle.push(Arc::clone(t));
                }
                !close
            });
            idle
        };
        for t in idle {
            lock(&t.db).take();
            debug!(tenant = %t.id, "idle tenant closed");
        }
        // a compaction older than the interval is due at the next open anyway
        let interval = self.compaction_interval();
        lock(&self.compacted).retain(|_, at| at.elapsed() < interval);
    }

    /// Applies a group of jobs in one transaction. Returns false when a `Close` was among them.
    fn process(&self, tenant: &TenantId, db: &mut dyn TenantDb, jobs: Vec<Job>) -> bool {
        let now = finwise_protocol::time::now_ms();
        let entries: usize =
            jobs.iter().map(|j| if let Job::Entries { items, .. } = j { items.len() } else { 0 }).sum();
        let started = std::time::Instant::now();
        if let Some(relay) = &self.relay {
            relay.begin_local(tenant);
        }
        // this group's changes, published (or handed to the relay) after every reply of the group
        let mut published: Vec<(i64, u64, Utf8Bytes)> = Vec::new();
        let result = db.write(|txn| {
            // one round trip for the group's lookups where the engine is across a network
            let items = || {
                jobs.iter().flat_map(|j| match j {
                    Job::Entries { items, .. } => items.as_slice(),
                    _ => &[],
                })
            };
            let ready = || items().filter_map(|i| if let Item::Ready(p) = i { Some(p) } else { None });
            let keys: Vec<(finwise_protocol::EntityType, &str)> =
                ready().map(|p| (p.entity_type, p.entry.entity_id.as_str())).collect();
            let ids: Vec<&str> = ready().map(|p| p.entry.id.as_str()).collect();
            txn.prefetch(&keys, &ids)?;
            let mut all = Vec::with_capacity(jobs.len());
            for job in &jobs {
                if let Job::Entries { items, .. } = job {
                    let mut outs = Vec::with_capacity(items.len());
                    for item in items {
                        outs.push(engine::apply(txn, tenant.as_str(), item, now)?);
                    }
                    all.push(outs);
                }
            }
            Ok(all)
        });
        let mut keep_running = true;
        if entries > 0 {
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.commit_batch_entries.observe(entries as f64);
        }
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for job in jobs {
                    match job {
                        Job::Entries { origin, reply, items } => {
                            let outs = outcomes.next().unwrap_or_default();
                            // The texts to publish are taken before the reply goes out, and the
                            // replies go first: the writers' tasks are woken before the listeners'
                            // (a wake from this thread queues in FIFO order on the runtime).
                            published.extend(outs.iter().filter_map(|o| match (&o.reply, &o.broadcast) {
                                (engine::Reply::Ack(a), Some(text)) => Some((a.seq, origin, text.clone())),
                                _ => None,
                            }));
                            let _ = reply.send(Answer { outcomes: outs, items });
                        }
                        Job::Open { reply } => {
                            let _ = reply.send(Ok(()));
                        }
                        Job::Close { reply } => {
                            let _ = reply.send(());
                            keep_running = false;
                        }
                    }
                }
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                error!(tenant = %tenant, error = %e, "commit failed; the group is refused with storage_error (retryable)");
                for job in jobs {
                    if let Job::Close { .. } = job {
                        keep_running = false;
                    }
                    fail_job(job, &format!("the change was not stored: {e}"));
                }
            }
        }
        if let Some(relay) = &self.relay {
            // servers sharing a database: through the tenant's delivery cursor
            relay.finish_local(tenant, &published);
        } else {
            // one event for the whole group, after every reply of it
            self.hub.publish_changes(tenant, published.into_iter().map(|(_, origin, text)| (origin, text)).collect());
        }
        keep_running
    }
}

fn fail_job(job: Job, detail: &str) {
    match job {
        Job::Entries { items, reply, .. } => {
            let outcomes = items.iter().map(|item| item.nack(NackReason::StorageError, detail)).collect();
            let _ = reply.send(Answer { outcomes, items });
        }
        Job::Open { reply } => {
            let _ = reply.send(Err(detail.to_owned()));
        }
        Job::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tenant_cap;

    #[test]
    fn the_tenant_cap_is_what_the_connections_leave_of_the_file_limit() {
        // 20,000 descriptors, 10,000 for connections, 128 kept back, 3 per SQLite tenant
        assert_eq!(tenant_cap(20_000, 10_000, 3), 3_290);
        // connections fitted to the limit (an eighth left): about 790 tenants
        assert_eq!(tenant_cap(20_000, 17_500, 3), 790);
        // never below 16, even when the connections take everything
        assert_eq!(tenant_cap(1_024, 1_024, 3), 16);
        // tenants without files of their own (PostgreSQL): no cap
        assert_eq!(tenant_cap(1_024, 1_000, 0), usize::MAX);
    }
}
