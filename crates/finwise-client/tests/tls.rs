//! https and wss: the client behind a TLS-terminating proxy (as production runs the server),
//! trusting a test certificate through SSL_CERT_FILE.

mod common;

use std::{path::PathBuf, sync::Arc};

use common::{device, TestServer};
use finwise_client::{Auth, EntityType};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::json;

fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
}

/// Terminates TLS with the test certificate and forwards to `target` in plain TCP.
async fn tls_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir().join("cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_dir().join("key.pem")).unwrap();
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(target).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_client_speaks_https_and_wss() {
    // Read by the native root store when the HTTP and WebSocket clients load their roots.
    std::env::set_var("SSL_CERT_FILE", tls_dir().join("cert.pem"));
    let server = TestServer::start(|_| {}).await;
    let proxy = tls_proxy(server.addr).await;
    let url = format!("https://127.0.0.1:{}", proxy.port());
    Auth::register(&url, "olga", "olga@example.org", "correct horse battery").await.unwrap();
    let auth = Arc::new(Auth::login(&url, "olga@example.org", "correct horse battery", None).await.unwrap());
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let a = device(&auth, &tenant, dir.path());
    a.create(EntityType::Tag, json!({"name": "over TLS"})).unwrap();
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.converged), (1, Some(true)), "{r:?}");

    // Plain HTTP on the TLS port fails cleanly (no panic, a connection error).
    let err =
        Auth::login(&format!("http://127.0.0.1:{}", proxy.port()), "olga@example.org", "correct horse battery", None)
            .await
            .err()
            .expect("plain http to a TLS port fails");
    assert!(err.is_transient() || matches!(err, finwise_client::Error::Http { .. }), "{err}");
}
