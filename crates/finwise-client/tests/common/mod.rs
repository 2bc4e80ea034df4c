//! Test harness: the real server in-process on 127.0.0.1, port 0 at first and the same port on
//! restart (so clients keep their server URL across an outage).
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use finwise_client::{Auth, Client, ClientOptions};
use finwise_server::Config;
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestServer {
    pub addr: SocketAddr,
    pub config: Config,
    _tmp: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: tmp.path().to_path_buf(),
            jwt_secret: Some("test-secret-test-secret-test-secret!".into()),
            heartbeat_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let mut config = config;
        tweak(&mut config);
        let mut s = TestServer { addr: config.addr, config, _tmp: tmp, stop: None, task: None };
        s.run().await;
        s
    }

    async fn run(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.config.addr).await.expect("bind");
        self.addr = listener.local_addr().unwrap();
        self.config.addr = self.addr;
        let (stop, rx) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(finwise_server::serve(listener, self.config.clone(), async {
            let _ = rx.await;
        })));
    }

    /// Stops the server gracefully (the outage begins).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t).await.expect("server stops").unwrap().unwrap();
        }
    }

    /// Starts the stopped server again on the same address and data dir.
    pub async fn start_again(&mut self) {
        for _ in 0..50 {
            if std::net::TcpListener::bind(self.addr).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.run().await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `name` (idempotent per test) and logs in a new device session.
    pub async fn register(&self, name: &str) {
        Auth::register(&self.url(), name, &format!("{name}@example.org"), "correct horse battery").await.unwrap();
    }

    pub async fn login(&self, name: &str) -> Arc<Auth> {
        Arc::new(Auth::login(&self.url(), &format!("{name}@example.org"), "correct horse battery", None).await.unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn fast_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        reconnect_base: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ping_interval: Duration::from_millis(500),
        verify_interval: Duration::from_secs(2),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        chunk_size: 7,
        batch_size: 5,
        ..ClientOptions::default()
    }
}

/// A device: a client of `tenant` with its own store directory.
pub fn device(auth: &Arc<Auth>, tenant: &str, dir: &Path) -> Client {
    Client::open(Arc::clone(auth), tenant, dir, fast_options()).unwrap()
}

/// Every live entity of every type, for comparing two stores.
pub fn dump(c: &Client) -> Vec<(finwise_client::EntityType, Vec<serde_json::Map<String, serde_json::Value>>)> {
    finwise_client::EntityType::ALL.iter().map(|t| {
        let mut l = c.list(*t).unwrap();
        l.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        (*t, l)
    }).collect()
}
