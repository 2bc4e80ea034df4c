//! `finwise-bench`: drives a real FinWise Sync server over real sockets and reports throughput,
//! latency percentiles and server memory, with the ceilings measured by the same tool in the same
//! run (a trivial server that acks without storing, and the raw SQLite upsert rate).
//!
//! The server is the release binary started as a child process (`--server-bin`), so its resident
//! memory and open files can be read from /proc. Every figure in docs/PERFORMANCE.md comes from
//! this tool; the command for each is given there.

use finwise_protocol::locks::LockExt;
use std::{
    collections::VecDeque,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use finwise_testkit::process::ServerProcess;
use futures_util::{FutureExt, SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Benchmarks for FinWise Sync (see docs/PERFORMANCE.md)")]
struct Cli {
    /// The server binary to start (built with `cargo build --release -p finwise-cli`).
    #[arg(long, default_value = "target/release/finwise")]
    server_bin: PathBuf,
    /// Run the server on this PostgreSQL server (each run in a fresh schema) instead of SQLite;
    /// ingest then measures against PostgreSQL ceilings (batched upserts, pgbench -N).
    #[arg(long, env = "FINWISE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Clone)]
enum Workload {
    /// Pipelined single entries from several connections, batches, and the two ceilings.
    Ingest {
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 200_000)]
        entries: usize,
        /// Entries in flight per connection.
        #[arg(long, default_value_t = 256)]
        window: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Spread the connections over this many tenants (1: all on one tenant, so each
        /// connection also receives the others' changes).
        #[arg(long, default_value_t = 1)]
        tenants: usize,
    },
    /// Updates of stored transactions: whole updates against field-level updates (one field
    /// each), alternating in one run on the same entities.
    Updates {
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Transactions created first; each round updates every one of them once.
        #[arg(long, default_value_t = 40_000)]
        entities: usize,
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Rounds of each kind (the report gives the median).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// One writer, many listeners on one tenant: latency from send to the last listener's receipt.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        listeners: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Servers on one database (needs --database-url): the writer on the first, the
        /// listeners spread over all of them; latency is reported per server.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
    },
    /// What households do: T tenants with D devices online each, an aggregate change rate spread
    /// over the tenants; every change timed from send to its arrival at each other device of its
    /// tenant. Several rates run one after the other on the same sockets.
    Household {
        #[arg(long, default_value_t = 5_000)]
        tenants: usize,
        #[arg(long, default_value_t = 3)]
        devices: usize,
        /// Aggregate changes per second, one step each (e.g. 1000,2000,4000).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        rates: Vec<u64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Many idle authenticated connections: server memory per connection.
    Connections {
        #[arg(long, default_value_t = 15_000)]
        count: usize,
    },
    /// Full load of a large tenant, and a small delta after reconnect, at two tenant sizes.
    Loads {
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        /// Request chunked loads of this many entities per message (protocol v2) and report
        /// the server's peak memory while the load is sent.
        #[arg(long)]
        chunk_size: Option<usize>,
        /// Full loads per tenant size.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Activity spread over many tenants; open files of the server during and after.
    Tenants {
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Rounds of one change per tenant, each followed by 8 s idle (the second round shows
        /// whether memory freed after the first is reused or grows).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.workload.clone() {
        Workload::Ingest { connections, entries, window, batch_size, tenants: t } => {
            ingest(&cli, connections, entries, window, batch_size, t).await
        }
        Workload::Updates { connections, entities, window, rounds } => {
            updates(&cli, connections, entities, window, rounds).await
        }
        Workload::Fanout { listeners, rate, seconds, nodes } => fanout(&cli, listeners, rate, seconds, nodes).await,
        Workload::Household { tenants, devices, rates, seconds } => {
            household(&cli, tenants, devices, &rates, seconds).await
        }
        Workload::Connections { count } => connections(&cli, count).await,
        Workload::Loads { entities, chunk_size, runs } => loads(&cli, entities, chunk_size, runs).await,
        Workload::Tenants { tenants: n, rounds } => tenants(&cli, n, rounds).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test

struct Server {
    process: ServerProcess,
    addr: String,
    _dir: tempfile::TempDir,
    /// The database URL (PostgreSQL), with its schema.
    database: Option<String>,
}

impl Server {
    /// The release binary through the test kit, rate limit out of the way, its log on stderr;
    /// on PostgreSQL in a fresh schema.
    fn start(cli: &Cli, extra: &[&str]) -> Result<Server> {
        Self::start_env(cli, extra, &[])
    }

    /// [`Server::start`] with configuration variables (`FINWISE_<KEY>`) over the tool's own.
    fn start_env(cli: &Cli, extra: &[&str], env: &[(&str, String)]) -> Result<Server> {
        let database = cli.database_url.as_deref().map(fresh_schema).transpose()?;
        Self::start_on(cli, extra, env, database)
    }

    /// [`Server::start`] on `database` (several nodes on one database).
    fn start_on(cli: &Cli, extra: &[&str], env: &[(&str, String)], database: Option<String>) -> Result<Server> {
        let bin = &cli.server_bin;
        let dir = tempfile::tempdir()?;
        let process = ServerProcess::try_start_bin(bin, dir.path(), |c| {
            if let Some(url) = &database {
                c.env("FINWISE_DATABASE_URL", url);
            }
            // a load generator is one user with thousands of sockets and accounts from one
            // address: the per-user, per-address and connection limits are lifted (the rate
            // limit too); the limits themselves are measured by the attack tests
            c.args(["--messages-per-second", "100000000"])
                .args(extra)
                .env("FINWISE_MAX_CONNECTIONS_PER_USER", "1000000")
                .env("FINWISE_MAX_CONNECTIONS", "1000000")
                .env("FINWISE_REGISTRATIONS_PER_ADDRESS", "1000000")
                .env("FINWISE_LOGIN_ATTEMPTS_PER_ADDRESS", "1000000")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stderr(Stdio::inherit());
        })
        .with_context(|| format!("build it with cargo build --release -p finwise-cli ({})", bin.display()))?;
        let addr = process.addr.clone();
        Ok(Server { process, addr, _dir: dir, database })
    }

    fn proc_status(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS:")
    }

    /// CPU time (user + system) the server has used, in seconds.
    fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(&format!("/proc/{}/stat", self.process.child.id()))
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.child.id())).map(|d| d.count()).unwrap_or(0)
    }

    fn open_db_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.child.id()))
            .map(|d| {
                d.flatten()
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p.to_string_lossy().ends_with(".db")))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// utime + stime of a process from its `/proc/<pid>/stat`, in seconds (clock ticks of 10 ms).
fn proc_cpu_secs(stat_path: &str) -> f64 {
    let s = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// `(sum, count)` of the server's `finwise_commit_batch_entries` histogram: entries committed and
/// group commits so far.
async fn group_commits(addr: &str) -> Result<(f64, f64)> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    Ok((value("finwise_commit_batch_entries_sum "), value("finwise_commit_batch_entries_count ")))
}

/// Registers a user, logs in and creates a tenant; returns (token, tenant).
async fn setup(addr: &str, tenants: usize) -> Result<(String, Vec<String>)> {
    let http = reqwest::Client::new();
    let name = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let email = format!("{name}@example.org");
    let r = http
        .post(format!("http://{addr}/register"))
        .json(&json!({"name": name, "email": email, "password": "benchmark-password"}))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("register: {}", r.text().await?);
    }
    let v: Value = http
        .post(format!("http://{addr}/login"))
        .json(&json!({"username_or_email": email, "password": "benchmark-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = v["access_token"].as_str().context("token")?.to_owned();
    // Created 32 at a time: each creates its own database file (and fsyncs), in parallel.
    let pb = progress(tenants as u64, "creating tenants");
    let ids: Vec<String> = futures_util::stream::iter(0..tenants)
        .map(|i| {
            let (http, token, pb) = (http.clone(), token.clone(), pb.clone());
            async move {
                let id = uuid::Uuid::new_v4().to_string();
                let r = http
                    .post(format!("http://{addr}/tenants"))
                    .bearer_auth(&token)
                    .json(&json!({"uuid": id, "name": format!("t{i}")}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("create tenant: {}", r.text().await?);
                }
                pb.inc(1);
                Ok(id)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<Result<String>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    Ok((token, ids))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, tenant: &str, token: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}"),
        None,
        true,
    )
    .await?;
    let hello = ws.next().await.context("no greeting")??;
    if !hello.to_text()?.contains("\"online\"") {
        bail!("unexpected greeting {hello}");
    }
    Ok(ws)
}

fn tag_entry(tenant: &str, name: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "tenantId": tenant, "entityType": "Tag", "entityId": id,
        "operationType": "create", "timestamp": finwise_protocol::time::now_ms() - 1000,
        "payload": {"id": id, "name": name, "color": "primary", "updated_at": finwise_protocol::time::format_ms(finwise_protocol::time::now_ms() - 1000)},
    })
    .to_string()
}

fn progress(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Latencies in microseconds → (p50, p99, max) in milliseconds.
fn percentiles(mut v: Vec<u64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    (at(0.50), at(0.99), *v.last().expect("non-empty") as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// Sends `frames` over `conns` sockets with `window` in flight each; returns (rate/s, latencies).
/// Each frame is answered by exactly one text frame (ack, nack or batch result).
#[allow(clippy::too_many_arguments)] // one knob each of the load shape, named at the call sites
async fn pipeline(
    addr: &str,
    tenants: &[String],
    token: &str,
    conns: usize,
    window: usize,
    frames: Vec<Vec<String>>,
    weight: usize,
    label: &'static str,
) -> Result<(f64, Vec<u64>)> {
    let total: usize = frames.iter().map(Vec::len).sum();
    let pb = progress((total * weight) as u64, label);
    let mut sockets = Vec::new();
    for c in 0..conns {
        sockets.push(connect(addr, &tenants[c % tenants.len()], token).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ws, frames) in sockets.into_iter().zip(frames) {
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let sem = Arc::new(Semaphore::new(window));
            let times: Arc<Mutex<VecDeque<Instant>>> = Arc::new(Mutex::new(VecDeque::new()));
            let n = frames.len();
            let (s2, t2) = (Arc::clone(&sem), Arc::clone(&times));
            let sender = tokio::spawn(async move {
                // Frames are written together while the window has room (one write for many
                // frames, as a pipelining client does); the buffer is flushed before waiting.
                for f in frames {
                    match s2.try_acquire() {
                        Ok(permit) => permit.forget(),
                        Err(_) => {
                            if sink.flush().await.is_err() {
                                break;
                            }
                            s2.acquire().await.expect("semaphore").forget();
                        }
                    }
                    t2.locked().push_back(Instant::now());
                    if sink.feed(Message::Text(f.into())).await.is_err() {
                        break;
                    }
                }
                let _ = sink.flush().await;
                sink
            });
            let mut lat = Vec::with_capacity(n);
            let mut got = 0;
            let mut nacks = 0;
            while got < n {
                let Some(Ok(msg)) = stream.next().await else { break };
                let Message::Text(t) = msg else { continue };
                if t.starts_with("{\"type\":\"ping\"") || t.starts_with("{\"event_type\"") {
                    continue;
                }
                got += 1;
                // A refusal (sync_nack, or a refused entry in a batch result) is not throughput.
                nacks += t.matches("\"reason\":").count();
                if let Some(t0) = times.locked().pop_front() {
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                sem.add_permits(1);
                pb.inc(weight as u64);
            }
            let _ = sender.await;
            (lat, nacks)
        }));
    }
    let mut all = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (lat, nacks) = t.await?;
        all.extend(lat);
        refused += nacks;
    }
    if refused > 0 {
        bail!("{label}: the server refused {refused} entries (see its log); the rate would not be throughput");
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if all.len() != total {
        bail!("{label}: {} of {total} answered", all.len());
    }
    Ok(((total * weight) as f64 / secs, all))
}

fn entry_frames(tenants: &[String], conns: usize, per_conn: usize) -> Vec<Vec<String>> {
    (0..conns)
        .map(|c| {
            let tenant = &tenants[c % tenants.len()];
            (0..per_conn)
                .map(|i| {
                    format!(
                        "{{\"type\":\"process_sync_entry\",\"payload\":{}}}",
                        tag_entry(tenant, &format!("c{c}-{i}"))
                    )
                })
                .collect()
        })
        .collect()
}

/// A server that answers every entry with an ack and stores nothing: the load generator's ceiling.
async fn trivial_server() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener.into_std().expect("std")).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                    let _ = ws.send(Message::Text(r#"{"type":"status","status":"online"}"#.into())).await;
                    // Acks of frames that arrived together go out in one write, as the server does.
                    loop {
                        let msg = match ws.next().now_or_never() {
                            Some(m) => m,
                            None => {
                                if ws.flush().await.is_err() {
                                    return;
                                }
                                ws.next().await
                            }
                        };
                        let Some(Ok(Message::Text(t))) = msg else { return };
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        let id = v["payload"]["id"].as_str().unwrap_or_default();
                        let ack = json!({"type": "sync_ack", "id": id, "status": "processed"}).to_string();
                        if ws.feed(Message::Text(ack.into())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    Ok(addr)
}

/// `(id, canonical JSON)` of `rows` new tags: what both raw ceilings write.
fn ceiling_rows(rows: usize) -> Vec<(String, String)> {
    let def = finwise_protocol::EntityType::Tag.def();
    (0..rows)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            let e = def
                .normalize(&json!({"id": id, "name": format!("r{i}"), "color": "primary"}), 1_790_000_000_000)
                .expect("valid");
            (id, Value::Object(e).to_string())
        })
        .collect()
}

/// The raw SQLite ceiling: the same rows upserted in batched transactions, same pragmas.
/// Returns rows/s and the CPU time per row of the thread that wrote them, in µs.
fn sqlite_ceiling(rows: usize, batch: usize) -> Result<(f64, Option<f64>)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling.db");
    drop(finwise_server::storage::sqlite::SqliteTenant::open(&path)?);
    let mut conn = finwise_server::storage::sqlite::open_rw(&path)?;
    let data = ceiling_rows(rows);
    let (start, cpu0) = (Instant::now(), proc_cpu_secs("/proc/thread-self/stat"));
    for (n, chunk) in data.chunks(batch).enumerate() {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO entities (entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms) VALUES ('Tag', ?1, ?2, 1790000000000, 0, ?3, 0)
                 ON CONFLICT (entity_type, id) DO UPDATE SET seq = excluded.seq, data = excluded.data",
            )?;
            for (i, (id, json)) in chunk.iter().enumerate() {
                stmt.execute(rusqlite::params![id, (n * batch + i) as i64, json])?;
            }
        }
        tx.commit()?;
    }
    let cpu_us = 1e6 * (proc_cpu_secs("/proc/thread-self/stat") - cpu0) / rows as f64;
    Ok((rows as f64 / start.elapsed().as_secs_f64(), Some(cpu_us)))
}

/// A URL of `base` whose connections use a new, empty schema.
fn fresh_schema(base: &str) -> Result<String> {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let (b, s) = (base.to_owned(), schema.clone());
    std::thread::spawn(move || -> Result<()> {
        let mut c = postgres::Client::connect(&b, postgres::NoTls)?;
        c.batch_execute(&format!("CREATE SCHEMA {s}"))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("schema creation panicked"))??;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}

/// The raw PostgreSQL ceiling: the same rows upserted into the server's own `entities` table
/// (a fresh schema, migrated by the server's code) with one `INSERT … SELECT FROM unnest(…) ON
/// CONFLICT` per batch of `batch` rows, each batch its own transaction, spread over `tenants`.
fn postgres_ceiling(base: &str, rows: usize, batch: usize, tenants: usize) -> Result<(f64, Option<f64>)> {
    use finwise_server::storage::postgres::PgStore;
    let url = fresh_schema(base)?;
    let store = PgStore::open(&url, 2, Duration::from_secs(30)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut conn = store.pool().get().map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant_ids: Vec<uuid::Uuid> = (0..tenants.max(1)).map(|_| uuid::Uuid::new_v4()).collect();
    let data = ceiling_rows(rows);
    let start = Instant::now();
    for (n, chunk) in data.chunks(batch).enumerate() {
        let tenant = tenant_ids[n % tenant_ids.len()];
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let seqs: Vec<i64> = (0..chunk.len()).map(|i| (n * batch + i) as i64).collect();
        let json: Vec<&str> = chunk.iter().map(|(_, j)| j.as_str()).collect();
        conn.in_tx("BEGIN", |c| {
            c.execute(
                "INSERT INTO entities (tenant_id, entity_type, id, seq, updated_at_ms, deleted, data, changed_at_ms)
                 SELECT $1, 'Tag', i, s, 1790000000000, false, d, 0 FROM unnest($2::text[], $3::int8[], $4::text[]) AS v(i, s, d)
                 ON CONFLICT (tenant_id, entity_type, id) DO UPDATE SET seq = excluded.seq, data = excluded.data",
                &[&tenant, &ids, &seqs, &json],
            )?;
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // the writing happens in PostgreSQL's processes: no CPU figure of our own to give
    Ok((rows as f64 / start.elapsed().as_secs_f64(), None))
}

/// `pgbench -N` (TPC-B without the contended branch/teller updates: 3 writes and a select per
/// transaction) against the same server for 10 s; transactions per second.
fn pgbench(base: &str, clients: usize) -> Result<f64> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin/pgbench")).filter(|p| p.exists()).max())
        .unwrap_or_else(|| PathBuf::from("pgbench"));
    let url = fresh_schema(base)?;
    let schema = url.rsplit("%3D").next().unwrap_or_default().to_owned();
    let conn = base.split('?').next().unwrap_or(base);
    let env = ("PGOPTIONS", format!("-c search_path={schema}"));
    let init = std::process::Command::new(&bin).args(["-i", "-q", "-s", "10", conn]).env(env.0, &env.1).output()?;
    if !init.status.success() {
        bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    let out = std::process::Command::new(&bin)
        .args(["-N", "-n", "-c", &clients.to_string(), "-j", "2", "-T", "10", conn])
        .env(env.0, &env.1)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()))
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

async fn ingest(
    cli: &Cli,
    conns: usize,
    entries: usize,
    window: usize,
    batch_size: usize,
    tenant_count: usize,
) -> Result<()> {
    let per_conn = entries / conns;
    println!("ingest: {conns} connections x {per_conn} entries on {tenant_count} tenant(s), window {window}");

    let trivial = trivial_server().await?;
    let fake = vec!["00000000-0000-4000-8000-000000000000".to_owned()];
    let frames = entry_frames(&fake, conns, per_conn);
    let (ceiling, lat) = pipeline(&trivial, &fake, "x", conns, window, frames, 1, "trivial server").await?;
    let (p50, p99, max) = percentiles(lat);
    println!("  trivial no-store server : {ceiling:>10.0} acks/s  p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");

    // The disk's speed wanders from run to run: the median of three.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let db = cli.database_url.clone();
        runs.push(
            tokio::task::spawn_blocking(move || match db {
                Some(url) => postgres_ceiling(&url, entries, 1000, tenant_count),
                None => sqlite_ceiling(entries, 1000),
            })
            .await??,
        );
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (sqlite, ceiling_cpu) = runs[1];
    let engine = if cli.database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    match &cli.database_url {
        Some(url) => {
            println!(
                "  raw PostgreSQL upserts  : {sqlite:>10.0} rows/s  (median of {:.0} / {:.0} / {:.0}; unnest batches of 1000 into the server's schema, {tenant_count} tenant(s))",
                runs[0].0, runs[1].0, runs[2].0
            );
            let url = url.clone();
            let tps = tokio::task::spawn_blocking(move || pgbench(&url, conns)).await??;
            println!("  pgbench -N, {conns} clients : {tps:>10.0} transactions/s  (3 writes + 1 read each, one commit each)");
        }
        None => println!(
            "  raw SQLite upserts      : {sqlite:>10.0} rows/s  (median of {:.0} / {:.0} / {:.0}; batches of 1000, WAL, synchronous=FULL); CPU {:.2} us per row",
            runs[0].0, runs[1].0, runs[2].0, ceiling_cpu.unwrap_or(0.0)
        ),
    }

    let server = Server::start(cli, &[])?;
    // Singles and batches each get their own fresh tenants: both start from empty databases.
    let (token, all_tenants) = setup(&server.addr, 2 * tenant_count).await?;
    let (tenants, batch_tenants) = all_tenants.split_at(tenant_count);
    // Server CPU per entry next to the ceiling's CPU per row: unlike the rates, it does not move
    // with the disk's fsync latency from run to run.
    let cpu_line = |cpu_s: f64, n: usize| match ceiling_cpu {
        Some(c) => format!(
            "server CPU {:.2} us per entry ({:.2}x the ceiling's per row)",
            1e6 * cpu_s / n as f64,
            1e6 * cpu_s / n as f64 / c
        ),
        None => format!("server CPU {:.2} us per entry", 1e6 * cpu_s / n as f64),
    };
    let frames = entry_frames(tenants, conns, per_conn);
    let (cpu0, groups0) = (server.cpu_secs(), group_commits(&server.addr).await?);
    let (rate, lat) = pipeline(&server.addr, tenants, &token, conns, window, frames, 1, "single entries").await?;
    let (cpu_single, groups1) = (server.cpu_secs() - cpu0, group_commits(&server.addr).await?);
    // entries per group commit: the commit's cost (WAL frames of the index pages it dirtied, the
    // fsync) is shared by the group
    let per_group = |a: (f64, f64), b: (f64, f64)| (b.0 - a.0) / (b.1 - a.1).max(1.0);
    let (p50, p99, max) = percentiles(lat);
    println!("  server, single entries  : {rate:>10.0} acks/s  p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms  RSS {} KiB", server.rss_kib());
    println!(
        "    = {:.2} of the trivial server, {:.2} of raw {engine}; {}; {:.0} entries per group commit",
        rate / ceiling,
        rate / sqlite,
        cpu_line(cpu_single, conns * per_conn),
        per_group(groups0, groups1)
    );

    let batches: Vec<Vec<String>> = (0..conns)
        .map(|c| {
            let tenant = &batch_tenants[c % batch_tenants.len()];
            (0..per_conn / batch_size)
                .map(|b| {
                    let entries: Vec<String> =
                        (0..batch_size).map(|i| tag_entry(tenant, &format!("b{c}-{b}-{i}"))).collect();
                    format!("{{\"type\":\"process_sync_batch\",\"entries\":[{}]}}", entries.join(","))
                })
                .collect()
        })
        .collect();
    let cpu0 = server.cpu_secs();
    let (brate, lat) = pipeline(&server.addr, batch_tenants, &token, conns, 8, batches, batch_size, "batches").await?;
    let (cpu_batches, groups2) = (server.cpu_secs() - cpu0, group_commits(&server.addr).await?);
    let (p50, p99, max) = percentiles(lat);
    println!("  server, batches of {batch_size:<4} : {brate:>10.0} entries/s  (per batch: p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms)");
    println!(
        "    batches / single = {:.2}; {}; {:.0} entries per group commit",
        brate / rate,
        cpu_line(cpu_batches, conns * (per_conn / batch_size) * batch_size),
        per_group(groups1, groups2)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Updates: whole against field-level

/// One `process_sync_entry` frame for transaction `id`: a create, a whole update, or a
/// field-level update of its note (`fields: ["note"]`), stamped `at_ms`.
fn transaction_frame(tenant: &str, id: &str, kind: &str, at_ms: i64, n: usize) -> String {
    let at = finwise_protocol::time::format_ms(at_ms);
    let whole = json!({"id": id, "accountId": "a1", "categoryId": "c1", "date": "2026-11-30", "valueDate": "2026-11-30",
        "amount": -12.5, "description": format!("Bakery {n}"), "note": format!("note {n}"), "tagIds": ["t1"],
        "type": "EXPENSE", "runningBalance": 0, "payee": "Bakery", "updated_at": at});
    let (op, payload, fields) = match kind {
        "field" => ("update", json!({"id": id, "note": format!("note {n}"), "updated_at": at}), Some(json!(["note"]))),
        "whole" => ("update", whole, None),
        _ => ("create", whole, None),
    };
    let mut e = json!({"id": uuid::Uuid::new_v4().to_string(), "tenantId": tenant, "entityType": "Transaction",
        "entityId": id, "operationType": op, "timestamp": at_ms, "payload": payload});
    if let Some(f) = fields {
        e["fields"] = f;
    }
    format!("{{\"type\":\"process_sync_entry\",\"payload\":{e}}}")
}

async fn updates(cli: &Cli, conns: usize, entities: usize, window: usize, rounds: usize) -> Result<()> {
    let per_conn = entities / conns;
    println!(
        "updates: {conns} connections x {per_conn} transactions on one tenant, window {window}, {rounds} rounds each"
    );
    let server = Server::start(cli, &[])?;
    let (token, tenants) = setup(&server.addr, 1).await?;
    let tenant = &tenants[0];
    let ids: Vec<Vec<String>> =
        (0..conns).map(|_| (0..per_conn).map(|_| uuid::Uuid::new_v4().to_string()).collect()).collect();
    // stamps in the past, one millisecond apart per round, so that every update is newer
    let base = finwise_protocol::time::now_ms() - 3_600_000;
    let frames = |kind: &str, round: usize| -> Vec<Vec<String>> {
        ids.iter()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(i, id)| transaction_frame(tenant, id, kind, base + round as i64, i))
                    .collect()
            })
            .collect()
    };
    pipeline(&server.addr, &tenants, &token, conns, window, frames("create", 0), 1, "creates").await?;
    let (mut whole, mut field) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // alternating, and which goes first too, so that a drift of the machine (or of the
        // database's size) hits both kinds alike
        let mut pair = [("whole", &mut whole), ("field", &mut field)];
        if r % 2 == 1 {
            pair.reverse();
        }
        for (i, (kind, out)) in pair.into_iter().enumerate() {
            let round = 1 + 2 * r + i;
            let (rate, lat) =
                pipeline(&server.addr, &tenants, &token, conns, window, frames(kind, round), 1, "updates").await?;
            let (p50, p99, _) = percentiles(lat);
            println!("  round {r}: {kind:>5} updates {rate:>10.0} acks/s  p50 {p50:.2} ms  p99 {p99:.2} ms");
            out.push(rate);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, f) = (median(&mut whole), median(&mut field));
    println!(
        "  median: whole {w:.0} acks/s, field-level {f:.0} acks/s = {:.2} of whole  RSS {} KiB",
        f / w,
        server.rss_kib()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fan-out

async fn fanout(cli: &Cli, listeners: usize, rate: u64, seconds: u64, nodes: usize) -> Result<()> {
    if nodes > 1 && cli.database_url.is_none() {
        bail!("--nodes {nodes} needs --database-url: several servers share one PostgreSQL database");
    }
    let server = Server::start(cli, &[])?;
    let mut servers = vec![];
    for _ in 1..nodes {
        servers.push(Server::start_on(cli, &[], &[], server.database.clone())?);
    }
    servers.insert(0, server);
    let server = &servers[0];
    let (token, tenants) = setup(&server.addr, 1).await?;
    let tenant = tenants[0].clone();
    let n = (rate * seconds) as usize;
    let origin = Instant::now();
    // per node: when the last of its listeners got change i
    let last_seen: Arc<Vec<Vec<AtomicU64>>> =
        Arc::new((0..nodes).map(|_| (0..n).map(|_| AtomicU64::new(0)).collect()).collect());
    let received = Arc::new(AtomicUsize::new(0));
    let pb = progress(listeners as u64, "connecting");
    let mut tasks = Vec::new();
    for l in 0..listeners {
        let node = l % nodes;
        let mut ws = connect(&servers[node].addr, &tenant, &token).await?;
        let (last_seen, received) = (Arc::clone(&last_seen), Arc::clone(&received));
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                let Some(Ok(Message::Text(t))) = ws.next().await else { break };
                // Cheap extraction of the message number from `"name":"f<i>"`.
                let Some(pos) = t.find("\"name\":\"f") else { continue };
                let digits: String = t[pos + 9..].chars().take_while(char::is_ascii_digit).collect();
                if let Ok(i) = digits.parse::<usize>() {
                    last_seen[node][i].fetch_max(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
                    received.fetch_add(1, Ordering::Relaxed);
                    got += 1;
                }
            }
        }));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let rss_idle = server.rss_kib();
    let cpu = |servers: &[Server]| servers.iter().map(Server::cpu_secs).sum::<f64>();
    let (mut writer, mut writer_rx) = connect(&server.addr, &tenant, &token).await?.split();
    // Acks arrive in order: the i-th ack is the commit of change i.
    let acked_at = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let acks = Arc::clone(&acked_at);
    let ack_reader = tokio::spawn(async move {
        let mut i = 0;
        while i < n {
            let Some(Ok(Message::Text(t))) = writer_rx.next().await else { break };
            if t.contains("\"sync_ack\"") {
                acks[i].store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
                i += 1;
            }
        }
    });
    let mut sent_at = vec![0u64; n];
    let (server_cpu0, bench_cpu0, wall0) = (cpu(&servers), proc_cpu_secs("/proc/self/stat"), Instant::now());
    let pb = progress(n as u64, "sending");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for (i, slot) in sent_at.iter_mut().enumerate() {
        tick.tick().await;
        let frame = format!("{{\"type\":\"process_sync_entry\",\"payload\":{}}}", tag_entry(&tenant, &format!("f{i}")));
        *slot = origin.elapsed().as_micros() as u64;
        writer.send(Message::Text(frame.into())).await?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < n * listeners && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.load(Ordering::Relaxed);
    let (server_cpu, bench_cpu, wall) =
        (cpu(&servers) - server_cpu0, proc_cpu_secs("/proc/self/stat") - bench_cpu0, wall0.elapsed().as_secs_f64());
    let _ = tokio::time::timeout(Duration::from_secs(5), ack_reader).await;
    let last = |i: usize| last_seen.iter().map(|node| node[i].load(Ordering::Relaxed)).max().unwrap_or(0);
    let lat: Vec<u64> = (0..n).map(|i| last(i).saturating_sub(sent_at[i])).collect();
    let commit: Vec<u64> = (0..n).map(|i| acked_at[i].load(Ordering::Relaxed).saturating_sub(sent_at[i])).collect();
    let spread: Vec<u64> = (0..n).map(|i| last(i).saturating_sub(acked_at[i].load(Ordering::Relaxed))).collect();
    let (c50, c99, cmax) = percentiles(commit);
    let (s50, s99, smax) = percentiles(spread);
    let (p50, p99, max) = percentiles(lat);
    println!(
        "fanout: {listeners} listeners, {rate} changes/s for {seconds} s = {} deliveries/s; delivered {got} of {}",
        rate as usize * listeners,
        n * listeners
    );
    println!("  send -> last listener: p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms; server RSS {rss_idle} KiB idle, {} KiB after", server.rss_kib());
    println!("    of which send -> writer's ack (commit + fsync): p50 {c50:.2} ms  p99 {c99:.2} ms  max {cmax:.2} ms");
    println!("    and writer's ack -> last listener (fan-out):    p50 {s50:.2} ms  p99 {s99:.2} ms  max {smax:.2} ms");
    if nodes > 1 {
        for (k, node) in last_seen.iter().enumerate() {
            let lat = (0..n).map(|i| node[i].load(Ordering::Relaxed).saturating_sub(sent_at[i])).collect();
            let (p50, p99, max) = percentiles(lat);
            let role = if k == 0 { "the writer's server" } else { "another server" };
            println!(
                "    node {k} ({role}): send -> its last listener p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms"
            );
        }
    }
    println!(
        "  CPU while sending ({wall:.1} s): server(s) {:.0}% of one core = {:.2} us per delivery; load generator {:.0}% = {:.2} us per delivery",
        100.0 * server_cpu / wall,
        1e6 * server_cpu / got.max(1) as f64,
        100.0 * bench_cpu / wall,
        1e6 * bench_cpu / got.max(1) as f64
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Households

type WsSink = futures_util::stream::SplitSink<Ws, Message>;

/// The change number and sending device of a `data_update` naming a change `h<i>d<device>`.
fn household_change(text: &str) -> Option<(usize, usize)> {
    if !text.contains("\"data_update\"") {
        return None;
    }
    let pos = text.find("\"name\":\"h")? + 9;
    let rest = &text[pos..];
    let i_end = rest.find('d')?;
    let i = rest[..i_end].parse().ok()?;
    let d: String = rest[i_end + 1..].chars().take_while(char::is_ascii_digit).collect();
    Some((i, d.parse().ok()?))
}

async fn household(cli: &Cli, tenants: usize, devices: usize, rates: &[u64], seconds: u64) -> Result<()> {
    if devices < 2 {
        bail!("--devices must be at least 2: a change is timed at the household's other devices");
    }
    // connections sized to the sockets, as an operator would: the file descriptors they leave
    // are the server's budget for open tenant databases (max_open_tenants)
    let sockets = (tenants * devices + 100).to_string();
    let server = Server::start_env(cli, &[], &[("FINWISE_MAX_CONNECTIONS", sockets)])?;
    let (token, ids) = setup(&server.addr, tenants).await?;
    let steps: Vec<(usize, usize)> = {
        // change numbers [from, to) of each rate step
        let mut from = 0;
        rates
            .iter()
            .map(|r| {
                let n = (*r * seconds) as usize;
                from += n;
                (from - n, from)
            })
            .collect()
    };
    let total = steps.last().map_or(0, |s| s.1);
    let origin = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let step_of = {
        let steps = steps.clone();
        move |i: usize| steps.iter().position(|(a, b)| (*a..*b).contains(&i)).unwrap_or(0)
    };
    let latencies: Arc<Vec<Mutex<Vec<u64>>>> = Arc::new(rates.iter().map(|_| Mutex::new(Vec::new())).collect());
    let delivered: Arc<Vec<AtomicUsize>> = Arc::new(rates.iter().map(|_| AtomicUsize::new(0)).collect());

    let sockets = tenants * devices;
    let pb = progress(sockets as u64, "connecting devices");
    let (addr, tok) = (server.addr.clone(), token.clone());
    let connected: Vec<Result<(usize, Ws)>> = futures_util::stream::iter(0..sockets)
        .map(|k| {
            let (addr, tok, tenant, pb) = (addr.clone(), tok.clone(), ids[k / devices].clone(), pb.clone());
            async move {
                let ws = connect(&addr, &tenant, &tok).await?;
                pb.inc(1);
                Ok((k, ws))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    pb.finish_and_clear();
    let mut sinks: Vec<Option<Arc<tokio::sync::Mutex<WsSink>>>> = (0..sockets).map(|_| None).collect();
    let mut readers = Vec::with_capacity(sockets);
    for c in connected {
        let (k, ws) = c?;
        let (sink, mut stream) = ws.split();
        sinks[k] = Some(Arc::new(tokio::sync::Mutex::new(sink)));
        let device = k % devices;
        let (sent_at, latencies, delivered, step_of) =
            (Arc::clone(&sent_at), Arc::clone(&latencies), Arc::clone(&delivered), step_of.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                let Some((i, from)) = household_change(&t) else { continue };
                if from == device || i >= sent_at.len() {
                    continue; // its own change (the writer's echo), not a delivery
                }
                let now = origin.elapsed().as_micros() as u64;
                let step = step_of(i);
                latencies[step].locked().push(now.saturating_sub(sent_at[i].load(Ordering::Relaxed)));
                delivered[step].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let sinks: Vec<Arc<tokio::sync::Mutex<WsSink>>> = sinks.into_iter().map(|s| s.expect("every socket")).collect();
    let rss_idle = server.rss_kib();
    println!(
        "household: {tenants} tenants x {devices} devices = {sockets} sockets; server RSS {} MiB with them idle",
        rss_idle / 1024
    );
    let mut best: Option<u64> = None;
    for (step, (&rate, &(from, to))) in rates.iter().zip(&steps).enumerate() {
        let (cpu0, bench0, wall0) = (server.cpu_secs(), proc_cpu_secs("/proc/self/stat"), Instant::now());
        // the changes are spread evenly over time, tenants and devices
        let mut next = from;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while next < to {
            tick.tick().await;
            let due = from + ((wall0.elapsed().as_secs_f64() * rate as f64) as usize).min(to - from);
            while next < due {
                let i = next;
                next += 1;
                let tenant = (i.wrapping_mul(7919)) % tenants;
                let device = (i / tenants) % devices;
                let frame = format!(
                    "{{\"type\":\"process_sync_entry\",\"payload\":{}}}",
                    tag_entry(&ids[tenant], &format!("h{i}d{device}"))
                );
                sent_at[i].store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
                sinks[tenant * devices + device].lock().await.send(Message::Text(frame.into())).await?;
            }
        }
        let want = (to - from) * (devices - 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while delivered[step].load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = wall0.elapsed().as_secs_f64();
        let (cpu, bench) = (server.cpu_secs() - cpu0, proc_cpu_secs("/proc/self/stat") - bench0);
        let got = delivered[step].load(Ordering::Relaxed);
        let (p50, p99, max) = percentiles(std::mem::take(&mut *latencies[step].locked()));
        let changes = (to - from) as f64;
        println!(
            "  {rate} changes/s for {seconds} s: delivered {got} of {want}; send -> other device p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms"
        );
        println!(
            "    server CPU {:.0}% of one core = {:.1} us per change ({:.2} us per delivery); load generator {:.0}%; server RSS {} MiB",
            100.0 * cpu / wall,
            1e6 * cpu / changes,
            1e6 * cpu / got.max(1) as f64,
            100.0 * bench / wall,
            server.rss_kib() / 1024
        );
        if got == want && p99 <= 50.0 {
            best = Some(best.map_or(rate, |b| b.max(rate)));
        }
    }
    match best {
        Some(r) => println!("  highest rate of these with every change delivered and p99 <= 50 ms: {r} changes/s"),
        None => println!("  no rate of these kept p99 <= 50 ms with every change delivered"),
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Idle connections

async fn connections(cli: &Cli, count: usize) -> Result<()> {
    let server = Server::start(cli, &[])?;
    let (token, tenants) = setup(&server.addr, 10).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let pb = progress(count as u64, "connecting");
    let mut sockets = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        sockets.push(connect(&server.addr, &tenants[i % tenants.len()], &token).await?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    println!(
        "connections: {count} idle authenticated WebSockets on 10 tenants, opened in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
    println!(
        "  server RSS {before} KiB before, {after} KiB after: {:.2} KiB per connection; server fds {}",
        (after.saturating_sub(before)) as f64 / count as f64,
        server.open_fds()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loads

async fn fill(addr: &str, tenant: &str, token: &str, n: usize) -> Result<()> {
    let batch = 1000;
    let frames: Vec<String> = (0..n.div_ceil(batch))
        .map(|b| {
            let k = batch.min(n - b * batch);
            let entries: Vec<String> = (0..k).map(|i| tag_entry(tenant, &format!("l{b}-{i}"))).collect();
            format!("{{\"type\":\"process_sync_batch\",\"entries\":[{}]}}", entries.join(","))
        })
        .collect();
    pipeline(addr, &[tenant.to_owned()], token, 1, 4, vec![frames], batch, "filling").await?;
    Ok(())
}

/// Sends `req` and waits for the first answer `until` accepts; the time includes parsing it.
async fn request(ws: &mut Ws, req: Value, until: impl Fn(&str) -> bool) -> Result<(Duration, Value)> {
    let start = Instant::now();
    ws.send(Message::Text(req.to_string().into())).await?;
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { bail!("socket closed") };
        if until(&t) {
            let v: Value = serde_json::from_str(&t)?;
            return Ok((start.elapsed(), v));
        }
    }
}

/// A chunked full load; returns (time, entities, cursor, peak server RSS while it was sent).
async fn chunked_load(server: &Server, ws: &mut Ws, tenant: &str, chunk: usize) -> Result<(Duration, usize, i64, u64)> {
    let start = Instant::now();
    ws.send(Message::Text(
        json!({"type": "request_initial_data", "tenant_id": tenant, "chunk_size": chunk}).to_string().into(),
    ))
    .await?;
    let (mut n, mut peak) = (0, server.rss_kib());
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { bail!("socket closed") };
        if !t.starts_with("{\"event_type\":\"initial_data_load\"") {
            continue;
        }
        let v: Value = serde_json::from_str(&t)?;
        n += v["payload"]["tags"].as_array().map(Vec::len).unwrap_or(0);
        peak = peak.max(server.rss_kib());
        if v.get("more").is_none() {
            return Ok((start.elapsed(), n, v["seq"].as_i64().unwrap_or(0), peak));
        }
    }
}

async fn loads(cli: &Cli, entities: usize, chunk: Option<usize>, runs: usize) -> Result<()> {
    let server = Server::start(cli, &[])?;
    let (token, tenants) = setup(&server.addr, 2).await?;
    for (tenant, size) in [(&tenants[0], 1_000usize), (&tenants[1], entities)] {
        fill(&server.addr, tenant, &token, size).await?;
        let mut full_times = Vec::new();
        let mut cursor = 0;
        let rss_before = server.rss_kib();
        let mut peak = 0;
        for _ in 0..runs {
            let mut ws = connect(&server.addr, tenant, &token).await?;
            let (d, n, seq) = match chunk {
                Some(c) => {
                    let (d, n, seq, p) = chunked_load(&server, &mut ws, tenant, c).await?;
                    peak = peak.max(p);
                    (d, n, seq)
                }
                None => {
                    let (d, v) = request(&mut ws, json!({"type": "request_initial_data", "tenant_id": tenant}), |t| {
                        t.starts_with("{\"event_type\":\"initial_data_load\"")
                    })
                    .await?;
                    (d, v["payload"]["tags"].as_array().map(Vec::len).unwrap_or(0), v["seq"].as_i64().unwrap_or(0))
                }
            };
            if n != size {
                bail!("load returned {n} of {size}");
            }
            cursor = seq;
            full_times.push(d.as_micros() as u64);
        }
        if let Some(c) = chunk {
            println!("  chunked loads of {c}: server RSS {rss_before} KiB before, peak {peak} KiB while sending");
        }
        let (fp50, _, fmax) = percentiles(full_times);
        let mut writer = connect(&server.addr, tenant, &token).await?;
        let mut delta_times = Vec::new();
        for _ in 0..50 {
            for i in 0..10 {
                let frame = json!({"type": "process_sync_entry", "payload": serde_json::from_str::<Value>(&tag_entry(tenant, &format!("d{i}")))?});
                request(&mut writer, frame, |t| t.contains("\"sync_ack\"")).await?;
            }
            let mut ws = connect(&server.addr, tenant, &token).await?;
            let (d, v) =
                request(&mut ws, json!({"type": "request_initial_data", "tenant_id": tenant, "since": cursor}), |t| {
                    t.starts_with("{\"event_type\":\"initial_data_load\"")
                })
                .await?;
            let n = v["payload"]["tags"].as_array().map(Vec::len).unwrap_or(0);
            if n != 10 {
                bail!("delta returned {n} of 10");
            }
            cursor = v["seq"].as_i64().unwrap_or(cursor);
            delta_times.push(d.as_micros() as u64);
        }
        let (dp50, dp99, dmax) = percentiles(delta_times);
        println!("loads: tenant of {size} entities");
        println!("  full load end to end (request -> every message parsed): median {fp50:.1} ms, max {fmax:.1} ms ({runs} runs)");
        println!("  delta of 10 after reconnect: p50 {dp50:.2} ms  p99 {dp99:.2} ms  max {dmax:.2} ms (50 runs); server RSS {} KiB", server.rss_kib());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tenants

async fn tenants(cli: &Cli, count: usize, rounds: usize) -> Result<()> {
    let server = Server::start(cli, &["--idle-tenant-secs", "5"])?;
    let (token, ids) = setup(&server.addr, count).await?;
    println!("tenants: {count} tenants created; open .db files now {}", server.open_db_files());
    for round in 1..=rounds {
        tenants_round(&server, &token, &ids, round).await?;
    }
    Ok(())
}

async fn tenants_round(server: &Server, token: &str, ids: &[String], round: usize) -> Result<()> {
    let count = ids.len();
    let pb = progress(count as u64, "one change each");
    let start = Instant::now();
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let results: Vec<Result<()>> = futures_util::stream::iter(ids.iter().cloned())
        .map(|t| {
            let (addr, token, pb, peak, done) = (server.addr.clone(), token.to_owned(), pb.clone(), Arc::clone(&peak), Arc::clone(&done));
            let fds = |s: &Server| s.open_db_files();
            let sample = if done.load(Ordering::Relaxed) % 500 == 0 { Some(fds(server)) } else { None };
            async move {
                let mut ws = connect(&addr, &t, &token).await?;
                let frame = json!({"type": "process_sync_entry", "payload": serde_json::from_str::<Value>(&tag_entry(&t, "x"))?});
                request(&mut ws, frame, |m| m.contains("\"sync_ack\"")).await?;
                if let Some(n) = sample {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let peak = peak.load(Ordering::Relaxed).max(server.open_db_files());
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  round {round}: {count} connect+change+ack round trips (32 concurrent) in {secs:.1} s ({:.0} tenants/s); open .db files peak {peak}; server threads {}",
        count as f64 / secs,
        server.proc_status("Threads:")
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    println!(
        "  after 8 s idle: open .db files {} (auth.db stays open), server fds {}, threads {}, RSS {} KiB",
        server.open_db_files(),
        server.open_fds(),
        server.proc_status("Threads:"),
        server.rss_kib()
    );
    Ok(())
}
