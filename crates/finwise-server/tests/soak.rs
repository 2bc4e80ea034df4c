//! Soak and pressure. The real `finwise` binary under mixed load from many connections
//! (batches of creates and updates, delta loads, data status requests) on two tenants, plus three
//! hostile peers on the busy tenant:
//!
//! * a peer that never reads (tiny receive buffer, never polls its socket),
//! * a peer that writes half a WebSocket frame and then stalls (neither writes nor reads),
//! * a peer that connects and disconnects in a loop.
//!
//! Asserted: the server's RSS (from `/proc/<pid>/status`) stays within a bound and does not grow
//! over the run; every entry of the well-behaved clients is acked or refused with a reason of the
//! closed set; their latency stays bounded; none of them is disconnected; the two stalled peers
//! are closed by the server (1013 or a dropped connection) and the server keeps running.
//!
//! Every `FINWISE_SOAK_SAMPLE_SECS` seconds (default 5) it samples the server's RSS, its open
//! files (`/proc/<pid>/fd`) and the p99 latency of the requests answered in that interval; with
//! `FINWISE_SOAK_CSV=<file>` the samples are written there (`scripts/plot-soak` draws them).
//!
//! Short configuration (CI): `FINWISE_SOAK_SECS` seconds of load (default 40; the stalled peers
//! are closed by the 30 s send timeout, so the test takes about a minute). Long configuration:
//! `scripts/long-checks soak --minutes 60` (24 clients, a sample a minute, the plot in docs/).
//! Needs the binary: `cargo build -p finwise-cli`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// One sample of the server: seconds since the load started, RSS, open files, and the p99 and
/// count of the requests answered since the previous sample.
struct Sample {
    t: f64,
    rss_kib: u64,
    files: usize,
    p99_ms: u64,
    requests: usize,
}

fn sample(t0: Instant, pid: u32, load: &Load) -> Sample {
    let mut window = std::mem::take(&mut *load.window.lock().unwrap());
    window.sort_unstable();
    let p99_ms = if window.is_empty() { 0 } else { window[((window.len() as f64 - 1.0) * 0.99) as usize] };
    Sample {
        t: t0.elapsed().as_secs_f64(),
        rss_kib: rss_kib(pid),
        files: open_files(pid),
        p99_ms,
        requests: window.len(),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

use finwise_testkit::{
    process::{account, ServerProcess},
    raw_upgrade,
};

/// A user with two tenants: a busy one and a quiet one.
async fn setup(addr: &str) -> (String, Vec<String>) {
    account(addr, "soak", 2).await
}

#[derive(Default)]
struct Load {
    batches: AtomicU64,
    acked: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    loads: AtomicU64,
    statuses: AtomicU64,
    broadcasts: AtomicU64,
    /// Request latencies in ms.
    latencies: Mutex<Vec<u64>>,
    /// The latencies since the last sample.
    window: Mutex<Vec<u64>>,
    disconnected: Mutex<Vec<String>>,
}

/// A well-behaved client: batches, delta loads and status requests, reading everything.
async fn client(addr: String, tenant: String, token: String, n: usize, stop: Arc<AtomicBool>, load: Arc<Load>) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{tenant}?token={token}")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let ids: Vec<String> = (0..50).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut cursor = 0i64;
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let (msg, want): (Value, fn(&Value) -> bool) = match k % 20 {
            0 => (
                json!({"type": "request_initial_data", "tenant_id": tenant, "since": cursor, "chunk_size": 200}),
                |v| v["event_type"] == "initial_data_load" && v["more"] != true,
            ),
            10 => (json!({"type": "data_status_request", "tenant_id": tenant, "entity_types": null}), |v| {
                v["type"] == "data_status_response"
            }),
            _ => {
                let at = finwise_protocol::time::format_ms(chrono::Utc::now().timestamp_millis());
                let entries: Vec<Value> = (0..1 + (k as usize * 7 + n) % 10)
                    .map(|j| {
                        let id = &ids[(k as usize * 3 + j) % ids.len()];
                        json!({"id": uuid::Uuid::new_v4().to_string(), "tenantId": tenant, "entityType": "Transaction", "entityId": id,
                            "operationType": "update", "payload": {"id": id, "accountId": "a", "date": "2026-01-01", "valueDate": "2026-01-01",
                            "amount": -(k as f64), "description": format!("c{n} k{k} j{j}"), "type": "EXPENSE", "runningBalance": 0, "updated_at": at}})
                    })
                    .collect();
                (json!({"type": "process_sync_batch", "entries": entries}), |v| v["type"] == "sync_batch_result")
            }
        };
        let t0 = Instant::now();
        if let Err(e) = ws.send(Message::Text(msg.to_string().into())).await {
            load.disconnected.lock().unwrap().push(format!("client {n}: send: {e}"));
            return;
        }
        let answer = loop {
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Err(_) => {
                    load.disconnected.lock().unwrap().push(format!("client {n}: no answer in 30 s"));
                    return;
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if want(&v) {
                        break v;
                    }
                    if v["event_type"] == "data_update" {
                        load.broadcasts.fetch_add(1, Ordering::Relaxed);
                    }
                    assert_ne!(v["type"], "error", "client {n}: {v}");
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    load.disconnected.lock().unwrap().push(format!("client {n}: closed by the server {f:?}"));
                    return;
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => {
                    load.disconnected.lock().unwrap().push(format!("client {n}: {other:?}"));
                    return;
                }
            }
        };
        let ms = t0.elapsed().as_millis() as u64;
        load.latencies.lock().unwrap().push(ms);
        load.window.lock().unwrap().push(ms);
        if answer["type"] == "sync_batch_result" {
            load.batches.fetch_add(1, Ordering::Relaxed);
            for r in answer["results"].as_array().unwrap() {
                if r["status"] == "processed" {
                    load.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    let reason =
                        r["reason"].as_str().unwrap_or_else(|| panic!("a refusal without a reason: {r}")).to_owned();
                    assert!(
                        [
                            "storage_error",
                            "overloaded",
                            "validation_error",
                            "clock_skew",
                            "duplicate_id_conflict",
                            "unknown_entity_type",
                            "tenant_mismatch"
                        ]
                        .contains(&reason.as_str()),
                        "{r}"
                    );
                    *load.refused.lock().unwrap().entry(reason).or_default() += 1;
                }
            }
        } else if answer["type"] == "data_status_response" {
            load.statuses.fetch_add(1, Ordering::Relaxed);
        } else {
            load.loads.fetch_add(1, Ordering::Relaxed);
            cursor = answer["seq"].as_i64().unwrap_or(cursor);
        }
        tokio::time::sleep(Duration::from_millis((k * 13 + n as u64) % 40)).await;
    }
    let _ = ws.close(None).await;
}

/// Waits until the server ends a stalled connection: reads (draining what it buffered) until a
/// close frame with its code, EOF or a reset. Returns what was seen, or None on timeout.
async fn closed_by_server(mut s: tokio::net::TcpStream, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) => {
                // A close frame (0x88, len, code) near the end of the stream says which code.
                let code = tail
                    .windows(4)
                    .rev()
                    .find(|w| w[0] == 0x88 && w[1] >= 2 && w[1] < 126)
                    .map(|w| u16::from_be_bytes([w[2], w[3]]));
                return Some(match code {
                    Some(c) => format!("close {c}"),
                    None => "connection closed".into(),
                });
            }
            Ok(Err(e)) => return Some(format!("connection reset ({e})")),
            Ok(Ok(n)) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_hostile_peers() {
    let secs: u64 = std::env::var("FINWISE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let clients: usize = std::env::var("FINWISE_SOAK_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    // The clients keep their sockets for the whole run (a disconnect fails the test), so their
    // access token must outlive it: a one-hour soak is four default token lifetimes. Refreshing
    // and reconnecting is the crash test's subject, not this one's.
    let ttl = (secs + 600).to_string();
    let mut server = ServerProcess::start_cmd(dir.path(), |c| {
        c.env("FINWISE_ACCESS_TOKEN_TTL", &ttl);
    });
    let (pid, addr) = (server.child.id(), server.addr.clone());
    let (token, tenants) = setup(&addr).await;
    let (busy, quiet) = (tenants[0].clone(), tenants[1].clone());
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());

    // Hostile peers on the busy tenant (they are sent its broadcasts).
    let never_reads = raw_upgrade(&addr, &busy, &token).await;
    let mut half_frame = raw_upgrade(&addr, &busy, &token).await;
    // A masked text frame announcing 1000 bytes, of which 100 are sent.
    let mut frame = vec![0x81u8, 0x80 | 126, (1000u16 >> 8) as u8, (1000u16 & 0xff) as u8, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(b'{' ^ 1, 100));
    half_frame.write_all(&frame).await.unwrap();
    let reconnects = Arc::new(AtomicU64::new(0));
    let reconnector = {
        let (addr, busy, token, stop, reconnects) =
            (addr.clone(), busy.clone(), token.clone(), Arc::clone(&stop), Arc::clone(&reconnects));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws_finwise/ws/{busy}?token={token}")).await
                {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    if reconnects.load(Ordering::Relaxed) % 2 == 0 {
                        let _ = ws
                            .send(Message::Text(
                                json!({"type": "request_initial_data", "tenant_id": busy}).to_string().into(),
                            ))
                            .await;
                    }
                    drop(ws); // no close handshake
                }
            }
        })
    };

    let t0 = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|n| {
            let tenant = if n % 3 == 2 { quiet.clone() } else { busy.clone() };
            tokio::spawn(client(addr.clone(), tenant, token.clone(), n, Arc::clone(&stop), Arc::clone(&load)))
        })
        .collect();
    let every: u64 = std::env::var("FINWISE_SOAK_SAMPLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut samples: Vec<Sample> = vec![sample(t0, pid, &load)];
    // RSS is watched every second (for the peak); the full sample is taken every `every` seconds
    let mut peak = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(pid));
        if t0.elapsed().as_secs() / every > samples.last().unwrap().t as u64 / every {
            samples.push(sample(t0, pid, &load));
        }
    }
    // The stalled peers: the server must have closed them (send timeout 30 s once their buffers
    // are full, or lag beyond the broadcast buffer). Load continues while we wait.
    let never = tokio::spawn(closed_by_server(never_reads, Duration::from_secs(60)));
    let half = tokio::spawn(closed_by_server(half_frame, Duration::from_secs(60)));
    let (never, half) = (never.await.unwrap(), half.await.unwrap());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    reconnector.await.unwrap();
    samples.push(sample(t0, pid, &load));
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(server.child.try_wait().unwrap().is_none(), "the server died");
    let r = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(r.status(), 200);

    let mut lat = load.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    let (p50, p99, max) = (pct(0.5), pct(0.99), *lat.last().unwrap());
    if let Ok(path) = std::env::var("FINWISE_SOAK_CSV") {
        let mut csv = String::from("seconds,rss_mib,open_files,p99_ms,requests\n");
        for s in &samples {
            csv += &format!("{:.0},{:.1},{},{},{}\n", s.t, s.rss_kib as f64 / 1024.0, s.files, s.p99_ms, s.requests);
        }
        std::fs::write(&path, csv).unwrap();
        println!("soak: samples written to {path}");
    }
    // warm-up: the first sample at 5 s or later (the short run) or the second minute (long runs)
    let warm_at = (every as f64).max(5.0);
    let warm_sample = samples.iter().find(|s| s.t >= warm_at).unwrap_or(&samples[0]);
    let (warm, warm_files) = (warm_sample.rss_kib, warm_sample.files);
    let peak = peak.max(samples.iter().map(|s| s.rss_kib).max().unwrap());
    let last = samples.last().unwrap().rss_kib;
    let files_after_warm = samples.iter().filter(|s| s.t >= warm_at).map(|s| s.files).max().unwrap_or(warm_files);
    let refused = load.refused.lock().unwrap().clone();
    let log = server.log();
    println!(
        "soak: {elapsed:.0} s, {clients} clients: {} batches, {} entries acked, refused {refused:?}, {} loads, {} status requests, \
         {} broadcasts received; latency p50 {p50} ms, p99 {p99} ms, max {max} ms; {} reconnects of the looping peer; \
         never-reading peer: {never:?}; half-frame peer: {half:?}; server RSS: {} MiB at 5 s, peak {} MiB, end {} MiB; \
         server log: {} 'stopped reading' / {} 'fell behind' lines",
        load.batches.load(Ordering::Relaxed), load.acked.load(Ordering::Relaxed), load.loads.load(Ordering::Relaxed),
        load.statuses.load(Ordering::Relaxed), load.broadcasts.load(Ordering::Relaxed), reconnects.load(Ordering::Relaxed),
        warm / 1024, peak / 1024, last / 1024,
        log.matches("stopped reading").count(), log.matches("fell behind").count(),
    );
    println!(
        "soak: samples (s, RSS MiB, open files, p99 ms): {:?}",
        samples.iter().map(|s| (s.t as u64, s.rss_kib / 1024, s.files, s.p99_ms)).collect::<Vec<_>>()
    );
    let disconnected = load.disconnected.lock().unwrap().clone();
    assert!(disconnected.is_empty(), "well-behaved clients were disconnected: {disconnected:?}");
    assert!(never.is_some(), "the peer that never reads was not closed by the server");
    assert!(half.is_some(), "the half-frame peer was not closed by the server");
    assert!(load.acked.load(Ordering::Relaxed) > 1000, "too little load");
    assert!(p99 < 3000 && max < 10_000, "latency: p99 {p99} ms, max {max} ms");
    assert!(peak < 512 * 1024, "server RSS peaked at {} MiB", peak / 1024);
    assert!(last < warm + 96 * 1024, "server RSS grew from {} MiB to {} MiB", warm / 1024, last / 1024);
    // open files after warm-up: the clients' sockets, the stalled peers', the looping peer's one or
    // two, the databases; a leak of one per reconnect would pass this bound within seconds
    assert!(
        files_after_warm <= warm_files + 32,
        "the server's open files grew from {warm_files} to {files_after_warm} (a descriptor leak?)"
    );
    drop(server);
}
