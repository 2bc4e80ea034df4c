//! What the client tests add to the workspace's test kit (`finwise-testkit`): accounts through
//! the client library, devices, store dumps, and a proxy that cuts or freezes connections.
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use finwise_client::{Auth, Client, ClientOptions};
use tokio::task::JoinHandle;

pub use finwise_testkit::TestServer;

/// Accounts through the client library (the way a device logs in).
#[allow(async_fn_in_trait)]
pub trait Accounts {
    /// Registers `name` (`name@example.org`, the kit's password).
    async fn register(&self, name: &str);
    /// Logs `name` in: a new device session.
    async fn login(&self, name: &str) -> Arc<Auth>;
}

impl Accounts for TestServer {
    async fn register(&self, name: &str) {
        Auth::register(&self.base(), name, &format!("{name}@example.org"), "correct horse battery").await.unwrap();
    }

    async fn login(&self, name: &str) -> Arc<Auth> {
        Arc::new(
            Auth::login(&self.base(), &format!("{name}@example.org"), "correct horse battery", None).await.unwrap(),
        )
    }
}

pub fn fast_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        reconnect_base: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        // A silent link is declared dead after three intervals: short enough for the tests,
        // long enough for a loaded CI machine.
        ping_interval: Duration::from_secs(2),
        verify_interval: Duration::from_secs(2),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        chunk_size: 7,
        batch_size: 5,
        ..ClientOptions::default()
    }
}

/// One user's household on a fresh server: a tenant, and `n` sessions of the user (devices),
/// each with its own store directory. Clients are opened on demand ([`Household::device`]).
pub struct Household {
    pub server: TestServer,
    pub tenant: String,
    auths: Vec<Arc<Auth>>,
    dirs: Vec<tempfile::TempDir>,
}

impl Household {
    /// Registers `user`, logs `n` devices in and creates the tenant `name` with the first.
    pub async fn start(user: &str, name: &str, n: usize) -> Household {
        let server = TestServer::start(|_| {}).await;
        server.register(user).await;
        let mut auths = Vec::new();
        for _ in 0..n {
            auths.push(server.login(user).await);
        }
        let tenant = auths[0].create_tenant(name).await.unwrap().uuid;
        let dirs = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        Household { server, tenant, auths, dirs }
    }

    /// Device `i`'s client (opening it again after a "crash" reads the same store).
    pub fn device(&self, i: usize) -> Client {
        device(&self.auths[i], &self.tenant, self.dirs[i].path())
    }

    pub fn auth(&self, i: usize) -> &Arc<Auth> {
        &self.auths[i]
    }

    pub fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }
}

/// A device: a client of `tenant` with its own store directory.
pub fn device(auth: &Arc<Auth>, tenant: &str, dir: &Path) -> Client {
    Client::open(Arc::clone(auth), tenant, dir, fast_options()).unwrap()
}

/// Every live entity of every type, for comparing two stores.
pub fn dump(c: &Client) -> Vec<(finwise_client::EntityType, Vec<serde_json::Map<String, serde_json::Value>>)> {
    finwise_client::EntityType::ALL
        .iter()
        .map(|t| {
            let mut l = c.list(*t).unwrap();
            l.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            (*t, l)
        })
        .collect()
}

/// A TCP proxy in front of the server that can cut its connections (the client sees them close)
/// or freeze them (bytes stop flowing, sockets stay open: a dead link only health checks find).
pub struct Proxy {
    pub addr: SocketAddr,
    next_gen: Arc<std::sync::atomic::AtomicU64>,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
    cut_tx: tokio::sync::watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let next_gen = Arc::new(AtomicU64::new(0));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let (cut_tx, cut_rx) = tokio::sync::watch::channel(0u64);
        let (ng, fb) = (Arc::clone(&next_gen), Arc::clone(&frozen_below));
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else { return };
                let gen = ng.fetch_add(1, Ordering::SeqCst);
                let Ok(up) = tokio::net::TcpStream::connect(target).await else { continue };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                for (r, w) in [
                    (
                        Box::new(dr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(ur), Box::new(dw)),
                ] {
                    let (fb, mut cut) = (Arc::clone(&fb), cut_rx.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let (mut r, mut w) = (r, w);
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = tokio::select! {
                                n = r.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
                                _ = cut.wait_for(|g| *g > gen) => return,
                            };
                            if gen < fb.load(Ordering::SeqCst) {
                                // Frozen: hold the sockets open, forward nothing, until cut.
                                let _ = cut.wait_for(|g| *g > gen).await;
                                return;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Proxy { addr, next_gen, frozen_below, cut_tx, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Existing connections stop forwarding (new ones work).
    pub fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below.store(self.next_gen.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Existing connections are closed (new ones work).
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.cut_tx.send_replace(self.next_gen.load(Ordering::SeqCst));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_tx.send_replace(u64::MAX);
    }
}
