//! Limits on what unauthenticated callers can make the server do: password guesses per account
//! and per address, registrations per address, concurrent password hashing, and the client
//! address itself (behind a trusted reverse proxy).
//!
//! Every counter is taken **before** the work it limits, under one lock, so that requests that
//! arrive together cannot all pass a check that only one of them should pass.

use finwise_protocol::locks::LockExt;
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use std::sync::Arc;

use crate::storage::sql::SqlDb;

/// The most keys a limiter remembers; entries of ended windows are evicted first.
const MAX_KEYS: usize = 100_000;

/// Why an attempt was not allowed, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for a `Retry-After` header (at least 1).
    pub fn secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A fixed-window attempt counter: at most `limit` attempts per key and window. In memory, or,
/// when several servers share a PostgreSQL database, in its table `limiter_counts`, so that N
/// servers do not give an attacker N times the guesses ([`Attempts::shared`]).
pub struct Attempts {
    limit: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
    shared: Option<(Arc<dyn SqlDb>, &'static str)>,
}

impl Attempts {
    pub fn new(limit: u32, window: Duration) -> Self {
        Attempts { limit, window, entries: Mutex::new(HashMap::new()), shared: None }
    }

    /// Counts in the database's `limiter_counts` under `name` instead of in memory. Its calls
    /// block: call them off the async runtime.
    pub fn shared(limit: u32, window: Duration, db: Arc<dyn SqlDb>, name: &'static str) -> Self {
        Attempts { shared: Some((db, name)), ..Attempts::new(limit, window) }
    }

    /// Counts an attempt for `key` if the window has room for it, atomically (on the database:
    /// the counter's row is locked while it is read and written). A database error lets the
    /// attempt through but is logged: the per-address slowdown still applies.
    pub fn attempt(&self, key: &str) -> Result<(), RetryAfter> {
        if let Some((db, name)) = &self.shared {
            let (limit, window_ms) = (i64::from(self.limit), self.window.as_millis() as i64);
            let now = finwise_protocol::time::now_ms();
            let r = db.tx(|sql| -> crate::storage::Result<Result<(), RetryAfter>> {
                // the row exists before it is locked, so that first attempts take turns too
                sql.execute(
                    "INSERT INTO limiter_counts (name, key, count, window_start_ms) VALUES ($1, $2, 0, $3)
                     ON CONFLICT (name, key) DO NOTHING",
                    crate::sql_params![*name, key, now],
                )?;
                let row = sql.query_opt(
                    "SELECT count, window_start_ms FROM limiter_counts WHERE name = $1 AND key = $2 FOR UPDATE",
                    crate::sql_params![*name, key],
                )?;
                let (count, start) = match row {
                    Some(r) if now - r.int(1)? < window_ms => (r.int(0)?, r.int(1)?),
                    _ => (0, now),
                };
                if count >= limit {
                    let left = (start + window_ms - now).max(0) as u64;
                    return Ok(Err(RetryAfter(Duration::from_millis(left))));
                }
                sql.execute(
                    "INSERT INTO limiter_counts (name, key, count, window_start_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name, key) DO UPDATE SET count = excluded.count, window_start_ms = excluded.window_start_ms",
                    crate::sql_params![*name, key, count + 1, start],
                )?;
                if rand::random::<u8>() == 0 {
                    // now and then, forget the windows that ended
                    sql.execute(
                        "DELETE FROM limiter_counts WHERE name = $1 AND window_start_ms < $2",
                        crate::sql_params![*name, now - window_ms],
                    )?;
                }
                Ok(Ok(()))
            });
            return r.unwrap_or_else(|e| {
                tracing::error!(error = %e, "shared attempt counter unavailable; attempt allowed");
                Ok(())
            });
        }
        let mut map = self.entries.locked();
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, (_, start)| start.elapsed() < window);
        }
        let e = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        if e.0 >= self.limit {
            return Err(RetryAfter(self.window.saturating_sub(e.1.elapsed())));
        }
        e.0 += 1;
        Ok(())
    }

    /// Forgets the attempts of `key` (a successful login refunds its account's guesses).
    pub fn clear(&self, key: &str) {
        if let Some((db, name)) = &self.shared {
            let r = db.tx(|sql| {
                sql.execute("DELETE FROM limiter_counts WHERE name = $1 AND key = $2", crate::sql_params![*name, key])
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not clear a shared attempt counter");
            }
            return;
        }
        self.entries.locked().remove(key);
    }
}

/// Failed logins per client address. An address over its limit is slowed, never locked: it may
/// make one attempt per `delay` until its window ends. Behind a shared proxy address (or a
/// household's NAT) an attacker then gets one guess per `delay` in all, while a user whose
/// account is not under attack still logs in, after a short wait at worst. Locking is the job of
/// the per-account limit.
pub struct AddressSlowdown {
    limit: u32,
    window: Duration,
    delay: Duration,
    /// address → (failures in the window, window start, earliest next attempt)
    entries: Mutex<HashMap<IpAddr, (u32, Instant, Instant)>>,
}

impl AddressSlowdown {
    pub fn new(limit: u32, window: Duration, delay: Duration) -> Self {
        AddressSlowdown { limit, window, delay, entries: Mutex::new(HashMap::new()) }
    }

    /// Admits an attempt from `ip` now, or says when the next one will be admitted.
    pub fn admit(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        let mut map = self.entries.locked();
        let now = Instant::now();
        let Some(e) = map.get_mut(&ip) else { return Ok(()) };
        if now.duration_since(e.1) >= self.window {
            map.remove(&ip);
            return Ok(());
        }
        if e.0 < self.limit {
            return Ok(());
        }
        if now < e.2 {
            return Err(RetryAfter(e.2 - now));
        }
        e.2 = now + self.delay;
        Ok(())
    }

    /// Records a failed attempt from `ip`.
    pub fn fail(&self, ip: IpAddr) {
        let mut map = self.entries.locked();
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, (_, start, _)| start.elapsed() < window);
        }
        let now = Instant::now();
        let e = map.entry(ip).or_insert((0, now, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now, now);
        }
        e.0 += 1;
        if e.0 >= self.limit {
            e.2 = e.2.max(now + self.delay);
        }
    }
}

/// Runs password hashing (Argon2id: 19 MiB and a core's worth of time per hash) on its own
/// `concurrency` threads. A request waits at most `wait` for its turn, then is told to come back
/// (503). Fixed threads matter as much as the bound: hashes spread over the runtime's blocking
/// pool leave a 19 MiB buffer in the allocator arena of every thread they ever ran on (1.8 GB
/// measured after 100 logins with glibc); on these threads the buffers are reused.
pub struct HashGate {
    slots: tokio::sync::Semaphore,
    wait: Duration,
    jobs: Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl HashGate {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("finwise-hash-{i}")).spawn(move || loop {
                let job = rx.locked().recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        HashGate { slots: tokio::sync::Semaphore::new(concurrency.max(1)), wait, jobs: Mutex::new(tx) }
    }

    /// Runs `f` on a hashing thread once one is free; `Err` after waiting `wait` for it.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, RetryAfter> {
        let busy = RetryAfter(Duration::from_secs(1));
        let _permit = match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.locked().send(job).map_err(|_| busy)?;
        rx.await.map_err(|_| busy)
    }
}

/// Counts something per key (open WebSocket connections per user) against a limit.
#[derive(Default)]
pub struct PerKeyCount(Mutex<HashMap<String, usize>>);

impl PerKeyCount {
    /// Takes one of `limit` places of `key`; the place is given back when the guard drops.
    pub fn take(self: &std::sync::Arc<Self>, key: &str, limit: usize) -> Option<CountGuard> {
        let mut map = self.0.locked();
        let n = map.entry(key.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(CountGuard { counts: std::sync::Arc::clone(self), key: key.to_owned() })
    }

    pub fn get(&self, key: &str) -> usize {
        self.0.locked().get(key).copied().unwrap_or(0)
    }
}

/// One place taken in a [`PerKeyCount`].
pub struct CountGuard {
    counts: std::sync::Arc<PerKeyCount>,
    key: String,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let mut map = self.counts.0.locked();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// CIDR ranges (`10.0.0.0/8`, `::1/128`, or a plain address) of reverse proxies whose
/// `X-Forwarded-For` / `Forwarded` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for s in list {
            let (addr, len) = match s.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (s.as_str(), None),
            };
            let ip: IpAddr =
                addr.trim().parse().map_err(|_| format!("trusted_proxies: '{s}' is not an address or CIDR range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("trusted_proxies: bad prefix length in '{s}'"))?,
                None => max,
            };
            out.push((ip, len));
        }
        Ok(TrustedProxies(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(net, len)| in_range(ip, canonical(*net), *len))
    }

    /// The address of the client: the peer, unless the peer is a trusted proxy; then the
    /// nearest address in the forwarding chain that is not a trusted proxy (the right-most
    /// untrusted entry: everything left of it could have been written by the client itself).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        for ip in chain.into_iter().rev() {
            if !self.contains(ip) {
                return canonical(ip);
            }
        }
        peer
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The forwarding chain, client first: `Forwarded: for=…` entries when present, else
/// `X-Forwarded-For`. Entries that are not addresses (`unknown`, obfuscated ids) end the chain
/// there: nothing left of them can be attributed.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let forwarded: Vec<&str> = headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()).collect();
    if !forwarded.is_empty() {
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let Some(for_) = element.split(';').map(str::trim).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim().trim_matches('"'))
            }) else {
                continue;
            };
            // `for="[2001:db8::1]:4711"` or `for=192.0.2.1:4711` or a bare address
            let host = if let Some(rest) = for_.strip_prefix('[') {
                rest.split(']').next().unwrap_or("")
            } else if for_.matches(':').count() == 1 {
                for_.split(':').next().unwrap_or("")
            } else {
                for_
            };
            match host.parse() {
                Ok(ip) => out.push(ip),
                Err(_) => out.clear(),
            }
        }
        return out;
    }
    for v in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
        for part in v.split(',') {
            match part.trim().parse() {
                Ok(ip) => out.push(ip),
                Err(_) => out.clear(),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_before_the_check() {
        let t = Attempts::new(2, Duration::from_secs(60));
        assert!(t.attempt("k").is_ok());
        assert!(t.attempt("k").is_ok());
        let wait = t.attempt("k").unwrap_err();
        assert!(wait.secs() > 0 && wait.secs() <= 60);
        t.clear("k");
        assert!(t.attempt("k").is_ok());
    }

    #[test]
    fn a_slowed_address_gets_one_attempt_per_delay() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let s = AddressSlowdown::new(2, Duration::from_secs(60), Duration::from_millis(200));
        assert!(s.admit(ip).is_ok());
        s.fail(ip);
        assert!(s.admit(ip).is_ok());
        s.fail(ip);
        assert!(s.admit(ip).is_err(), "over the limit: wait first");
        std::thread::sleep(Duration::from_millis(220));
        assert!(s.admit(ip).is_ok(), "after the delay one attempt");
        assert!(s.admit(ip).is_err(), "and only one");
        assert!(s.admit("192.0.2.8".parse().unwrap()).is_ok(), "other addresses are not affected");
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(proxies.client_ip(proxy, &h), "198.51.100.1".parse::<IpAddr>().unwrap(), "right-most untrusted");
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(proxies.client_ip(stranger, &h), stranger, "an untrusted peer's header is ignored");
        let mut f = HeaderMap::new();
        f.insert("forwarded", "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.9".parse().unwrap());
        assert_eq!(proxies.client_ip("::1".parse().unwrap(), &f), "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(proxies.client_ip(proxy, &HeaderMap::new()), proxy, "no header: the proxy itself");
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
        assert!(proxies.contains("::ffff:10.9.9.9".parse().unwrap()), "v4-mapped addresses match v4 ranges");
    }
}
