//! One writer per tenant: a thread that owns the tenant's SQLite connection, drains its bounded
//! queue, applies everything it drained in one transaction (group commit), and only after the
//! commit publishes the changes and answers the connections. Idle writers close their file.
//!
//! Architecture invariant: a reply (ack) is sent only after `COMMIT` returned.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use finwise_protocol::messages::{NackReason, SyncNack};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::{
    engine::{self, Item, Outcome},
    hub::{Event, Hub},
    metrics::Metrics,
    storage::sqlite::{DataDir, SqliteTenant},
    TenantId,
};

/// How often a busy writer compacts tombstones (an idle one compacts when it reopens).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Work for a tenant writer.
pub enum Job {
    /// Entries from connection `origin`, answered in order through `reply`.
    Entries { origin: u64, items: Vec<Item>, reply: oneshot::Sender<Vec<Outcome>> },
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

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the tenant's write queue is full")]
    Overloaded,
}

/// Tuning of the writers.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub queue_capacity: usize,
    pub max_group: usize,
    pub idle_close: Duration,
    pub tombstone_horizon_ms: i64,
}

struct Slot {
    generation: u64,
    tx: mpsc::SyncSender<Job>,
}

/// The registry of running tenant writers.
pub struct Writers {
    data: DataDir,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    cfg: WriterConfig,
    slots: Mutex<HashMap<TenantId, Slot>>,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Writers {
    pub fn new(data: DataDir, hub: Arc<Hub>, metrics: Arc<Metrics>, cfg: WriterConfig) -> Arc<Self> {
        Arc::new(Writers {
            data,
            hub,
            metrics,
            cfg,
            slots: Mutex::new(HashMap::new()),
            next_generation: 0.into(),
        })
    }

    /// Queues a job for a tenant, starting its writer when needed. Never blocks.
    pub fn submit(self: &Arc<Self>, tenant: &TenantId, job: Job) -> Result<(), SubmitError> {
        let mut slots = self.slots.lock().expect("writers lock");
        let mut job = job;
        let weight = job.weight() as i64;
        if let Some(slot) = slots.get(tenant) {
            match slot.tx.try_send(job) {
                Ok(()) => {
                    self.metrics.writer_queue_depth.inc_by(weight);
                    return Ok(());
                }
                Err(mpsc::TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
                Err(mpsc::TrySendError::Disconnected(j)) => {
                    slots.remove(tenant);
                    job = j;
                }
            }
        }
        let (tx, rx) = mpsc::sync_channel(self.cfg.queue_capacity);
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tx.try_send(job).map_err(|_| SubmitError::Overloaded)?;
        self.metrics.writer_queue_depth.inc_by(weight);
        let me = Arc::clone(self);
        let t = tenant.clone();
        std::thread::Builder::new()
            .name(format!("writer-{}", &tenant.as_str()[..8]))
            .spawn(move || me.run(t, generation, rx))
            .expect("spawn writer thread");
        slots.insert(tenant.clone(), Slot { generation, tx });
        Ok(())
    }

    /// Number of open tenant writers (open database files).
    pub fn open_count(&self) -> usize {
        self.slots.lock().expect("writers lock").len()
    }

    /// Closes one tenant's writer after it has finished its queue.
    pub async fn close(self: &Arc<Self>, tenant: &TenantId) {
        let (reply, done) = oneshot::channel();
        let running = {
            let slots = self.slots.lock().expect("writers lock");
            slots.get(tenant).map(|s| s.tx.clone())
        };
        if let Some(tx) = running {
            // A blocking send is fine here: it waits only for queue space, never for a client.
            let sent = tokio::task::spawn_blocking(move || tx.send(Job::Close { reply }).is_ok()).await.unwrap_or(false);
            if sent {
                let _ = done.await;
            }
        }
    }

    /// Closes every writer, committing what is queued. Used by graceful shutdown.
    pub async fn close_all(self: &Arc<Self>) {
        let tenants: Vec<TenantId> = self.slots.lock().expect("writers lock").keys().cloned().collect();
        for t in tenants {
            self.close(&t).await;
        }
    }

    fn run(self: Arc<Self>, tenant: TenantId, generation: u64, rx: mpsc::Receiver<Job>) {
        let path = self.data.tenant_db(&tenant);
        let mut db = match SqliteTenant::open(&path) {
            Ok(db) => db,
            Err(e) => {
                error!(tenant = %tenant, error = %e, "cannot open tenant database; refusing its writes (retryable)");
                self.retire(&tenant, generation);
                while let Ok(job) = rx.try_recv() {
                    self.metrics.writer_queue_depth.dec_by(job.weight() as i64);
                    fail_job(job, &format!("tenant database unavailable: {e}"));
                }
                return;
            }
        };
        let cutoff = finwise_protocol::time::now_ms() - self.cfg.tombstone_horizon_ms;
        match db.compact(cutoff) {
            Ok(n) if n > 0 => info!(tenant = %tenant, tombstones = n, "compacted tombstones"),
            Ok(_) => {}
            Err(e) => warn!(tenant = %tenant, error = %e, "tombstone compaction failed"),
        }
        debug!(tenant = %tenant, seq = db.seq(), "tenant writer started");
        let mut last_compaction = std::time::Instant::now();
        loop {
            if last_compaction.elapsed() > COMPACTION_INTERVAL {
                last_compaction = std::time::Instant::now();
                if let Err(e) = db.compact(finwise_protocol::time::now_ms() - self.cfg.tombstone_horizon_ms) {
                    warn!(tenant = %tenant, error = %e, "tombstone compaction failed");
                }
            }
            let first = match rx.recv_timeout(self.cfg.idle_close) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Retire under the registry lock so that no job can slip in after the check.
                    let slots = self.slots.lock().expect("writers lock");
                    match rx.try_recv() {
                        Ok(job) => {
                            drop(slots);
                            job
                        }
                        Err(_) => {
                            drop(slots);
                            self.retire(&tenant, generation);
                            debug!(tenant = %tenant, "idle tenant writer closed");
                            return;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut jobs = Vec::new();
            let mut weight = first.weight();
            jobs.push(first);
            while weight < self.cfg.max_group {
                match rx.try_recv() {
                    Ok(job) => {
                        weight += job.weight();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.metrics.writer_queue_depth.dec_by(weight as i64);
            if !self.process(&tenant, &mut db, jobs) {
                self.retire(&tenant, generation);
                // Anything that raced into the queue is answered rather than dropped.
                while let Ok(job) = rx.try_recv() {
                    self.metrics.writer_queue_depth.dec_by(job.weight() as i64);
                    fail_job(job, "tenant is closing");
                }
                return;
            }
        }
    }

    /// Applies a group of jobs in one transaction. Returns false when a `Close` was among them.
    fn process(&self, tenant: &TenantId, db: &mut SqliteTenant, jobs: Vec<Job>) -> bool {
        let now = finwise_protocol::time::now_ms();
        let entries: usize = jobs.iter().map(|j| if let Job::Entries { items, .. } = j { items.len() } else { 0 }).sum();
        let started = std::time::Instant::now();
        let result = db.write(|txn| {
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
                        Job::Entries { origin, reply, .. } => {
                            let outs = outcomes.next().unwrap_or_default();
                            // The texts to publish are taken before the reply goes out, and the
                            // reply goes first: the writer's task is woken before the listeners'
                            // (a wake from this thread queues in FIFO order on the runtime).
                            let texts: Vec<Utf8Bytes> =
                                outs.iter().filter_map(|o| o.broadcast.as_deref().map(Utf8Bytes::from)).collect();
                            let _ = reply.send(outs);
                            for text in texts {
                                self.hub.publish(tenant, Event::Change { origin, text });
                            }
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
        keep_running
    }

    fn retire(&self, tenant: &TenantId, generation: u64) {
        let mut slots = self.slots.lock().expect("writers lock");
        if slots.get(tenant).is_some_and(|s| s.generation == generation) {
            slots.remove(tenant);
        }
    }
}

fn fail_job(job: Job, detail: &str) {
    match job {
        Job::Entries { items, reply, .. } => {
            let outs = items
                .iter()
                .map(|item| match item {
                    Item::Ready(p) => Outcome::nack(SyncNack::for_entry(&p.entry, NackReason::StorageError, detail)),
                    Item::Refused(n) => Outcome::nack(n.clone()),
                })
                .collect();
            let _ = reply.send(outs);
        }
        Job::Open { reply } => {
            let _ = reply.send(Err(detail.to_owned()));
        }
        Job::Close { reply } => {
            let _ = reply.send(());
        }
    }
}
