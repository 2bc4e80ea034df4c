//! Several servers on one PostgreSQL database (PostgreSQL only: a data dir has one server).
//! What must hold across them without any cross-node messaging: one account's password guesses
//! are counted together, the JWT secret is the one the first server stored, an account made on
//! one server logs in on the other, and a refresh token replayed on another server revokes its
//! family there too.

use finwise_testkit::{backend, TestServer};
use serde_json::{json, Value};

async fn login(s: &TestServer, login: &str, password: &str) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/login"))
        .json(&json!({"username_or_email": login, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn refresh(s: &TestServer, token: &str) -> u16 {
    refresh_body(s, token).await.0
}

async fn refresh_body(s: &TestServer, token: &str) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_accounts_secret_guesses_and_token_families() {
    if !backend::postgres() {
        eprintln!("skipped on SQLite: one server per data dir (run with FINWISE_TEST_BACKEND=postgres)");
        return;
    }
    // no configured secret: both servers must use the one the first stored in the database
    let a = TestServer::start(|c| {
        c.jwt_secret = None;
        c.login_attempts_per_account = 5;
    })
    .await;
    let mut config = a.config.clone();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let b = TestServer::start_with(config).await;

    let (_, token, refresh_token) = a.user("shared").await;
    // a token issued by A is accepted by B
    let r = b.http().get(b.url("/tenants/")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "same signing secret on both servers");
    let (status, _) = login(&b, "shared@example.org", "correct horse battery").await;
    assert_eq!(status, 200, "the account made on A logs in on B");

    // five guesses in all, wherever they land
    for (i, s) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (status, _) = login(s, "shared@example.org", "wrong").await;
        assert_eq!(status, 401, "guess {i}");
    }
    for s in [&a, &b] {
        let (status, _) = login(s, "shared@example.org", "correct horse battery").await;
        assert_eq!(status, 429, "the sixth attempt is refused on every server");
    }

    // refresh on A, replay the used token on B: the family is revoked for both
    let (status, rotated) = refresh_body(&a, &refresh_token).await;
    assert_eq!(status, 200, "{rotated}");
    let next = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&b, &refresh_token).await, 401, "replay detected on the other server");
    assert_eq!(refresh(&a, &next).await, 401, "the whole family is revoked");
}
