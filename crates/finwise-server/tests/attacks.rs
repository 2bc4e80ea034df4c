//! A hostile-client suite. Each case runs over real sockets against the real server and
//! asserts both the refusal and that no stored data changed.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use finwise_testkit::*;
use serde_json::{json, Value};

static CASES: AtomicUsize = AtomicUsize::new(0);

fn case(name: &str) {
    let n = CASES.fetch_add(1, Ordering::SeqCst) + 1;
    println!("attack case {n}: {name}");
}

/// The digest and sequence of a tenant, read as its legitimate owner.
async fn fingerprint(s: &TestServer, token: &str, tenant: &str) -> (Value, Value) {
    let mut ws = Ws::connect(&s.ws_url(tenant, Some(token))).await;
    let st = ws.status(tenant).await;
    (st["tenant_digest"].clone(), st["seq"].clone())
}

fn forge(secret: &[u8], sub: &str, exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "iat": now, "exp": now + exp_offset, "typ": "access"});
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .unwrap()
}

#[tokio::test]
async fn token_attacks_are_refused_and_change_nothing() {
    let s = TestServer::start(|_| {}).await;
    let (uid, token, refresh) = s.user("victim").await;
    let tenant = s.tenant(&token, "Books").await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "secret", "updated_at": ts(-1000)})))
        .await;
    let before = fingerprint(&s, &token, &tenant).await;
    let http = s.http();

    let secret = s.config.jwt_secret.clone().unwrap();
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = chrono::Utc::now().timestamp();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": uid, "exp": now + 600, "iat": now, "typ": "access"}))
    );
    let bad_tokens = [
        ("expired token", forge(secret.as_bytes(), &uid, -3600)),
        ("token signed with another key", forge(b"another-key-another-key-another-key!", &uid, 600)),
        ("alg none", alg_none),
        ("garbage token", "not.a.jwt".to_owned()),
        ("refresh token used as access token", refresh.clone()),
    ];
    case("no token over REST");
    assert_eq!(http.get(s.url("/tenants")).send().await.unwrap().status(), 401);
    case("no token over WS");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, None)).await, 401);
    for (name, bad) in &bad_tokens {
        case(&format!("{name} over REST"));
        let r = http.get(s.url("/tenants")).bearer_auth(bad).send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        case(&format!("{name} over WS"));
        assert_eq!(ws_refusal(&s.ws_url(&tenant, Some(bad))).await, 401, "{name}");
        case(&format!("{name} deleting the tenant"));
        let r = http.delete(s.url(&format!("/tenants/{tenant}/complete"))).bearer_auth(bad).send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
    }

    case("refresh token reused after rotation");
    let form = |rt: &str| vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", rt.to_owned())];
    let post_form = |body: Vec<(&'static str, String)>| {
        let encoded: String = body.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
        http.post(s.url("/token")).header("content-type", "application/x-www-form-urlencoded").body(encoded).send()
    };
    let rotated: Value = post_form(form(&refresh)).await.unwrap().json().await.unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert!(rotated["access_token"].is_string());
    let reuse = post_form(form(&refresh)).await.unwrap();
    assert_eq!(reuse.status(), 401);
    case("rotated refresh token revoked after reuse was detected");
    assert_eq!(post_form(form(&new_refresh)).await.unwrap().status(), 401);

    assert_eq!(fingerprint(&s, &token, &tenant).await, before);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn tenant_isolation_over_rest_and_ws() {
    let s = TestServer::start(|_| {}).await;
    let (_, alice, _) = s.user("alice").await;
    let (mallory_id, mallory, _) = s.user("mallory").await;
    let tenant = s.tenant(&alice, "Alice's books").await;
    let own = s.tenant(&mallory, "Mallory's books").await;
    let mut a = Ws::connect(&s.ws_url(&tenant, Some(&alice))).await;
    a.entry(&entry(
        &tenant,
        "Account",
        "create",
        json!({"id": new_id(), "name": "Savings", "isActive": true,
        "isOfflineBudget": false, "accountGroupId": new_id(), "balance": 10000, "offset": 0, "updated_at": ts(-1000)}),
    ))
    .await;
    let before = fingerprint(&s, &alice, &tenant).await;
    let http = s.http();

    case("foreign tenant over WS");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some(&mallory))).await, 403);
    case("foreign tenant listed");
    let list: Value = http.get(s.url("/tenants")).bearer_auth(&mallory).send().await.unwrap().json().await.unwrap();
    assert!(list.as_array().unwrap().iter().all(|t| t["uuid"] != tenant.as_str()));
    case("another user's id in the query");
    let r = http.get(s.url(&format!("/tenants?user_id={}", new_id()))).bearer_auth(&mallory).send().await.unwrap();
    assert_eq!(r.status(), 403);
    for (name, req) in [
        ("rename foreign tenant", http.put(s.url(&format!("/tenants/{tenant}"))).json(&json!({"name": "pwned"}))),
        ("delete foreign tenant", http.delete(s.url(&format!("/tenants/{tenant}/complete")))),
        ("list foreign members", http.get(s.url(&format!("/tenants/{tenant}/members")))),
        (
            "add self to foreign tenant",
            http.post(s.url(&format!("/tenants/{tenant}/members"))).json(&json!({"email": "mallory@example.org"})),
        ),
        ("read foreign data status", http.get(s.url(&format!("/api/v1/sync/data-status/{tenant}")))),
        (
            "create tenant for another user",
            http.post(s.url("/tenants")).json(&json!({"uuid": new_id(), "name": "x", "user_id": new_id()})),
        ),
        (
            "claim an existing tenant id",
            http.post(s.url("/tenants")).json(&json!({"uuid": tenant, "name": "mine now"})),
        ),
    ] {
        case(name);
        let r = req.bearer_auth(&mallory).send().await.unwrap();
        assert!(r.status() == 403 || r.status() == 409, "{name}: {}", r.status());
    }

    case("foreign tenantId inside an entry");
    let mut m = Ws::connect(&s.ws_url(&own, Some(&mallory))).await;
    let evil = entry(
        &tenant,
        "Account",
        "create",
        json!({"id": new_id(), "name": "evil", "isActive": true,
        "isOfflineBudget": false, "accountGroupId": new_id(), "balance": 0, "offset": 0}),
    );
    let nack = m.entry(&evil).await;
    assert_eq!(nack["reason"], "tenant_mismatch");
    case("foreign tenantId inside a batch");
    m.send(&json!({"type": "process_sync_batch", "entries": [evil.clone()]})).await;
    let res = m.recv_until(|v| v["type"] == "sync_batch_result").await;
    assert_eq!(res["results"][0]["reason"], "tenant_mismatch");
    case("foreign tenant in request_initial_data");
    m.send(&json!({"type": "request_initial_data", "tenant_id": tenant})).await;
    let e = m.recv().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("tenant_mismatch")));
    assert_eq!(m.status(&own).await["entity_count"], 0);

    // Membership: the owner adds mallory, who may then connect; removing her closes the door.
    case("member added by owner can connect; removed member cannot");
    let r = http
        .post(s.url(&format!("/tenants/{tenant}/members")))
        .bearer_auth(&alice)
        .json(&json!({"email": "mallory@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut inside = Ws::connect(&s.ws_url(&tenant, Some(&mallory))).await;
    let r = http
        .delete(s.url(&format!("/tenants/{tenant}/members/{mallory_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    case("removed member's open socket is closed");
    assert_eq!(inside.recv().await, json!({"closed": 1008}));
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some(&mallory))).await, 403);

    assert_eq!(fingerprint(&s, &alice, &tenant).await, before);
}

#[tokio::test]
async fn hostile_tenant_ids_never_touch_the_file_system() {
    // The data dir sits inside a directory of its own, so "beside it" is observable.
    let outer = tempfile::tempdir().unwrap();
    let data_dir = outer.path().join("data");
    let s = TestServer::start(|c| {
        c.allow_legacy_clients = true;
        c.data_dir = data_dir.clone();
    })
    .await;
    let (_, token, _) = s.user("tess").await;
    let listing = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = walk(dir);
        v.sort();
        v
    };
    let before = listing(&s.dir);
    let parent_before = listing(outer.path());
    let upper = new_id().to_uppercase();
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "..",
        "abc",
        "%2e%2e",
        &upper,
        "00000000-0000-0000-0000-00000000000g",
        "x%00y",
        "auth",
    ] {
        case(&format!("tenant id {bad:?} over WS"));
        let status = ws_refusal(&format!("ws://{}/ws_finwise/ws/{bad}?token={token}", s.addr)).await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
        case(&format!("tenant id {bad:?} over WS in legacy mode"));
        let status = ws_refusal(&format!("ws://{}/ws_finwise/ws/{bad}", s.addr)).await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
        case(&format!("tenant id {bad:?} over REST"));
        let r = s
            .http()
            .post(s.url("/tenants"))
            .bearer_auth(&token)
            .json(&json!({"uuid": bad, "name": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(listing(&s.dir), before, "no file was created in the data dir");
    assert_eq!(listing(outer.path()), parent_before, "nor beside it");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && p.starts_with(dir) && p.components().count() < 12 {
                out.extend(walk(&p));
            }
            let name = p.to_string_lossy().to_string();
            if !name.ends_with("-wal") && !name.ends_with("-shm") {
                out.push(name);
            }
        }
    }
    out
}

#[tokio::test]
async fn floods_oversized_frames_and_brute_force_are_bounded() {
    let s = TestServer::start(|c| {
        c.messages_per_second = 20;
        c.message_burst = 50;
        c.login_attempts_per_account = 3;
        c.login_attempts_per_address = 6;
        c.max_message_bytes = 32 * 1024;
    })
    .await;
    let (token, tenant, mut ws) = s.connected("flo").await;

    case("message flood");
    let n = 300;
    let mut ids = Vec::new();
    for _ in 0..n {
        let e = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "flood", "updated_at": ts(-1000)}));
        ids.push(e["id"].as_str().unwrap().to_owned());
        ws.send(&json!({"type": "process_sync_entry", "payload": e})).await;
    }
    let (mut acked, mut refused) = (0, 0);
    for _ in 0..n {
        let r = ws.recv_until(|v| v["type"] == "sync_ack" || v["type"] == "sync_nack").await;
        if r["type"] == "sync_ack" {
            acked += 1;
        } else {
            assert_eq!(r["reason"], "overloaded");
            assert_eq!(r["retryable"], true);
            refused += 1;
        }
    }
    assert!(refused > 0 && acked >= 50, "acked {acked}, refused {refused}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = ws.status(&tenant).await;
    assert_eq!(st["entity_count"], acked, "exactly the acked entries are stored");

    case("oversized frame");
    let before = fingerprint(&s, &token, &tenant).await;
    let mut big = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    big.send(&json!({"type": "ping", "timestamp": "x".repeat(40 * 1024)})).await;
    assert_eq!(big.recv().await, json!({"closed": 1009}));
    case("oversized batch beyond the batch limit");
    let mut big = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let payload = "y".repeat(9 * 1024 * 1024);
    let _ = big
        .inner
        .send(tokio_tungstenite::tungstenite::Message::Text(
            format!("{{\"type\":\"process_sync_batch\",\"entries\":[],\"pad\":\"{payload}\"}}").into(),
        ))
        .await;
    let closed = big.recv().await;
    assert_eq!(closed, json!({"closed": 1009}), "tungstenite's limit is told by its error type");
    assert_eq!(fingerprint(&s, &token, &tenant).await, before);

    case("login brute force per account");
    let http = s.http();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http
            .post(s.url("/login"))
            .json(&json!({"username_or_email": "flo@example.org", "password": "guess-guess"}))
            .send()
            .await
            .unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").is_some()));
    }
    assert_eq!(&statuses[..3], &[(401, false); 3]);
    assert_eq!(statuses[3], (429, true));
    case("locked account refuses even the right password until the window ends");
    let r = http
        .post(s.url("/login"))
        .json(&json!({"username_or_email": "flo@example.org", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    case("login brute force per address across accounts");
    let mut last = 0;
    for i in 0..8 {
        let r = http
            .post(s.url("/login"))
            .json(&json!({"username_or_email": format!("nobody{i}@example.org"), "password": "guess-guess"}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
    }
    assert_eq!(last, 429);
}

use futures_util::SinkExt;

#[tokio::test]
async fn sql_metacharacters_in_every_string_field_are_just_data() {
    let s = TestServer::start(|_| {}).await;
    let (_, tenant, mut ws) = s.connected("sql").await;
    let nasty = ["'; DROP TABLE entities; --", "\" OR 1=1 --", "Robert'); DELETE FROM applied_entries;--", "%_\\'\0x"];
    let mut sent = Vec::new();
    for (i, (t, mut payload)) in full_entities(&ts(-1000)).into_iter().enumerate() {
        let bad = nasty[i % nasty.len()];
        let def = finwise_protocol::EntityType::parse(t).unwrap().def();
        for f in def.fields {
            if matches!(f.kind, finwise_protocol::entity::Kind::Str) && f.name != "id" {
                payload[f.name] = json!(format!("{bad}{}", f.name));
            }
        }
        case(&format!("SQL metacharacters in every string field of {t}"));
        assert_eq!(ws.entry(&entry(&tenant, t, "create", payload.clone())).await["type"], "sync_ack");
        sent.push((t, payload));
    }
    let load = ws.load(&tenant).await;
    for (t, p) in &sent {
        let got = find(&load, t, p["id"].as_str().unwrap()).unwrap();
        for (k, v) in p.as_object().unwrap() {
            if v.is_string() && k != "updated_at" && k != "updatedAt" && k != "createdAt" {
                assert_eq!(&got[k], v, "{t}.{k}");
            }
        }
    }
    assert_eq!(ws.status(&tenant).await["entity_count"], 9);
}

#[tokio::test]
async fn operator_switches_and_legacy_mode_boundaries() {
    let s = TestServer::start(|c| c.registration_enabled = false).await;
    case("registration switched off");
    let r = s
        .http()
        .post(s.url("/register"))
        .json(&json!({"name": "n", "email": "n@example.org", "password": "long enough pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let s = TestServer::start(|c| c.allow_legacy_clients = true).await;
    let (_, token, _) = s.user("leg").await;
    let tenant = s.tenant(&token, "T").await;
    case("a request with a bad token is checked even in legacy mode");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some("forged"))).await, 401);
    let r = s.http().get(s.url("/tenants")).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), 401);
    case("legacy client without token works in legacy mode, on tenants of legacy clients only");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, None)).await, 401);
    Ws::connect(&s.ws_url(&new_id(), None)).await;
}

#[tokio::test]
async fn imported_bcrypt_hashes_verify_and_are_rehashed() {
    if finwise_testkit::backend::sqlite_only("bcrypt hashes arrive with `finwise import-legacy`, which writes a data dir (the rehash is the same SQL on both engines)") {
        return;
    }
    let s = TestServer::start(|_| {}).await;
    case("bcrypt hash from the Python backend");
    let hash = bcrypt::hash("old python password", 4).unwrap();
    {
        let db = rusqlite::Connection::open(s.dir.join("auth.db")).unwrap();
        db.execute(
            "INSERT INTO users (id, name, email, password_hash, created_at, updated_at) VALUES (?1, 'old', 'old@example.org', ?2, 'x', 'x')",
            rusqlite::params![new_id(), hash],
        )
        .unwrap();
    }
    let r = s
        .http()
        .post(s.url("/login"))
        .json(&json!({"username_or_email": "old@example.org", "password": "old python password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let db = rusqlite::Connection::open(s.dir.join("auth.db")).unwrap();
    let now: String =
        db.query_row("SELECT password_hash FROM users WHERE email = 'old@example.org'", [], |r| r.get(0)).unwrap();
    assert!(now.starts_with("$argon2id$"), "{now}");
    let r = s
        .http()
        .post(s.url("/login"))
        .json(&json!({"username_or_email": "OLD@example.org", "password": "old python password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    println!("attack cases tried so far in this process: {}", CASES.load(Ordering::SeqCst));
}

#[test]
fn secret_file_is_owner_only() {
    if finwise_testkit::backend::sqlite_only(
        "the secret file of a data dir; on PostgreSQL the secret is in the settings table",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("jwt.secret");
    let a = finwise_server::auth::load_or_create_secret(&p).unwrap();
    let b = finwise_server::auth::load_or_create_secret(&p).unwrap();
    assert_eq!(a, b);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn an_open_socket_ends_when_its_access_token_expires() {
    case("socket kept open past the access token's expiry");
    let s = TestServer::start(|c| c.access_token_ttl = Duration::from_secs(1)).await;
    let (token, tenant, mut ws) = s.connected("lapsed").await;
    let opened = std::time::Instant::now();
    // Still valid: an entry is acked.
    let ack = ws
        .entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "before", "updated_at": ts(-1000)})))
        .await;
    assert_eq!(ack["type"], "sync_ack");
    // `exp` is 1 s after issue; after the 5 s leeway: an error, then close 1008.
    let err = ws.recv_until(|m| m["type"] == "error" || m.get("closed").is_some()).await;
    assert_eq!(err["code"], "token_expired", "{err}");
    assert_eq!(ws.recv().await, json!({"closed": 1008}));
    let lived = opened.elapsed();
    assert!(lived >= Duration::from_secs(5) && lived < Duration::from_secs(12), "closed after {lived:?}");
    // Nor can the same token open a new socket.
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some(&token))).await, 401);
}

// ---- hardening after the hostile trial: one test per finding ----

/// Peak resident memory of this test process in KiB (nextest runs every test in its own).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `/health` answers within a second (asserted by callers while an attack runs).
async fn health_within_1s(s: &TestServer) -> bool {
    let started = std::time::Instant::now();
    let ok = tokio::time::timeout(Duration::from_secs(1), reqwest::get(s.url("/health")))
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
    ok && started.elapsed() < Duration::from_secs(1)
}

async fn login_status(
    s: &TestServer,
    http: &reqwest::Client,
    login: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>) {
    let mut req = http.post(s.url("/login")).json(&json!({"username_or_email": login, "password": password}));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    let r = req.send().await.unwrap();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_evaluate_at_most_the_limit_and_one_account_is_one_key() {
    let s = TestServer::start(|c| {
        c.login_attempts_per_account = 5;
        c.login_attempts_per_address = 10_000;
    })
    .await;
    s.user("target").await;
    case("60 simultaneous wrong guesses for one account");
    let http = s.http();
    let guesses = (0..60).map(|i| {
        let (s, http) = (&s, http.clone());
        async move { login_status(s, &http, "target@example.org", &format!("guess number {i}"), None).await.0 }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((evaluated, refused), (5, 55), "{statuses:?}");
    case("the right password after the limit is refused too");
    assert_eq!(login_status(&s, &http, "target@example.org", "correct horse battery", None).await.0, 429);

    case("e-mail and name are one account");
    s.user("both").await;
    for _ in 0..3 {
        assert_eq!(login_status(&s, &http, "both@example.org", "wrong wrong", None).await.0, 401);
    }
    for _ in 0..2 {
        assert_eq!(login_status(&s, &http, "BOTH", "wrong wrong", None).await.0, 401);
    }
    assert_eq!(
        login_status(&s, &http, "both", "correct horse battery", None).await.0,
        429,
        "the name shares the e-mail's count"
    );
}

#[tokio::test]
async fn a_busy_address_is_slowed_never_locked_and_forwarded_for_is_believed_only_from_trusted_proxies() {
    let s = TestServer::start(|c| {
        c.login_attempts_per_address = 6;
        c.login_address_delay = Duration::from_secs(1);
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    s.user("innocent").await;
    let http = s.http();
    case("failed logins for random accounts from one address behind the proxy");
    for i in 0..6 {
        let (st, _) =
            login_status(&s, &http, &format!("nobody{i}@example.org"), "guess-guess", Some("203.0.113.5")).await;
        assert_eq!(st, 401);
    }
    let (st, retry) = login_status(&s, &http, "nobody7@example.org", "guess-guess", Some("203.0.113.5")).await;
    assert_eq!((st, retry), (429, Some(1)), "the busy address waits a second between attempts");
    case("another client behind the same proxy is not affected");
    assert_eq!(
        login_status(&s, &http, "innocent@example.org", "correct horse battery", Some("198.51.100.7")).await.0,
        200
    );
    case("the right password from the busy address gets through after the delay (no 15-minute lockout)");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        login_status(&s, &http, "innocent@example.org", "correct horse battery", Some("203.0.113.5")).await.0,
        200
    );

    case("X-Forwarded-For from an untrusted peer is ignored");
    let direct = TestServer::start(|c| {
        c.login_attempts_per_address = 3;
        c.login_address_delay = Duration::from_secs(30);
    })
    .await;
    for i in 0..3 {
        login_status(&direct, &http, &format!("x{i}@example.org"), "guess-guess", Some(&format!("192.0.2.{i}"))).await;
    }
    let (st, _) = login_status(&direct, &http, "x9@example.org", "guess-guess", Some("192.0.2.99")).await;
    assert_eq!(st, 429, "a spoofed header does not give a fresh address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_hashing_is_bounded_and_registration_is_throttled() {
    let s = TestServer::start(|c| {
        c.password_hash_concurrency = 2;
        c.password_hash_wait = Duration::from_secs(30);
        c.login_attempts_per_account = 1000;
        c.login_attempts_per_address = 100_000;
        c.registrations_per_address = 3;
    })
    .await;
    let before = peak_rss_kib();
    case("100 simultaneous logins (each an Argon2 hash)");
    let http = s.http();
    let logins = (0..100).map(|i| {
        let (s, http) = (&s, http.clone());
        async move { login_status(s, &http, &format!("someone{i}@example.org"), "guess-guess", None).await.0 }
    });
    let health = async {
        let mut ok = true;
        for _ in 0..5 {
            ok &= health_within_1s(&s).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ok
    };
    let (statuses, healthy) = tokio::join!(futures_util::future::join_all(logins), health);
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(healthy, "/health answered within 1 s throughout");
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    println!("peak memory grew by {grown_mib} MiB during 100 simultaneous logins");
    // 100 hashes at once took 1.9 GB before; two hashing threads with one 19 MiB buffer each
    assert!(grown_mib < 100, "peak memory grew by {grown_mib} MiB");

    case("registrations per address");
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = http
            .post(s.url("/register"))
            .json(&json!({"name": format!("new{i}"), "email": format!("new{i}@example.org"), "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);

    case("a full hashing queue answers 503 with Retry-After instead of waiting forever");
    let busy = TestServer::start(|c| {
        c.password_hash_concurrency = 1;
        c.password_hash_wait = Duration::from_millis(1);
        c.login_attempts_per_account = 1000;
        c.login_attempts_per_address = 100_000;
    })
    .await;
    let logins = (0..20).map(|i| {
        let (s, http) = (&busy, http.clone());
        async move { login_status(s, &http, &format!("p{i}@example.org"), "guess-guess", None).await }
    });
    let results = futures_util::future::join_all(logins).await;
    assert!(results.contains(&(503, Some(1))), "{results:?}");
    assert!(results.iter().all(|r| r.0 == 401 || r.0 == 503), "{results:?}");
}

/// Opens a WebSocket by hand and sends the start of one text frame that announces `len` bytes
/// but carries only `sent` of them (mask key 0, so the payload goes as it is).
async fn unfinished_frame(
    s: &TestServer,
    tenant: &str,
    token: &str,
    start: &str,
    len: u64,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = raw_upgrade(&s.addr.to_string(), tenant, token).await;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(start.as_bytes());
    frame.extend(std::iter::repeat_n(b' ', sent - start.len()));
    let _ = tcp.write_all(&frame).await;
    tcp
}

const BATCH_START: &str = r#"{"type":"process_sync_batch","entries":["#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_memory_is_bounded_per_user_and_in_all() {
    let s = TestServer::start(|c| {
        c.max_connections_per_user = 3;
        c.ws_buffer_budget = 4 * 1024 * 1024;
    })
    .await;
    let (token, tenant, mut ws) = s.connected("hog").await;
    ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "kept", "updated_at": ts(-1000)}))).await;
    let before = fingerprint(&s, &token, &tenant).await;
    case("more sockets than max_connections_per_user");
    let b = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let c = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some(&token))).await, 429);
    drop((b, c));
    tokio::time::sleep(Duration::from_millis(200)).await;

    case("unfinished large messages beyond the server's buffer budget");
    let (_, other_token, _) = s.user("hog2").await;
    let (_, third_token, _) = s.user("hog3").await;
    for t in [&other_token, &third_token] {
        let r = s
            .http()
            .post(s.url(&format!("/tenants/{tenant}/members")))
            .bearer_auth(&token)
            .json(&json!({"email": if *t == other_token { "hog2@example.org" } else { "hog3@example.org" }}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut held = Vec::new();
    for t in [&token, &other_token, &third_token] {
        for _ in 0..2 {
            held.push(unfinished_frame(&s, &tenant, t, BATCH_START, 7 * 1024 * 1024, 1536 * 1024).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = s.http().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let buffered = metric(&metrics, "finwise_ws_buffered_bytes")
        .unwrap_or_else(|| panic!("no finwise_ws_buffered_bytes in {metrics}")) as usize;
    assert!(buffered <= 4 * 1024 * 1024 + 2 * 1024 * 1024, "buffered {buffered} bytes, budget 4 MiB");
    assert!(health_within_1s(&s).await);
    // the refused sockets were closed: reading from them ends (close frame, then EOF)
    assert!(buffered >= 2 * 1024 * 1024, "the sockets within the budget hold their data ({buffered})");
    // the refused sockets were closed with 1013 (a close frame 0x88, length 2+, code 0x03f5)
    let mut closed = 0;
    for mut tcp in held {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.windows(4).any(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xf5) {
            closed += 1;
        }
    }
    assert!(closed >= 3, "sockets over the budget were closed with 1013 ({closed} of 6)");

    case("a message that is not a batch may not grow beyond max_message_bytes");
    let mut ping =
        unfinished_frame(&s, &tenant, &token, r#"{"type":"ping","timestamp":""#, 7 * 1024 * 1024, 1200 * 1024).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    use tokio::io::AsyncReadExt;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), ping.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    // close 1009 (0x03f1), after 1.2 MiB of the announced 7 MiB
    assert!(got.windows(4).any(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xf1), "closed with 1009");
    assert_eq!(fingerprint(&s, &token, &tenant).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_trickling_connections_are_closed_and_a_flood_leaves_health_responsive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| {
        c.http_header_timeout = Duration::from_secs(1);
        c.http_body_timeout = Duration::from_secs(1);
        c.http_idle_timeout = Duration::from_secs(2);
        c.max_connections = 40;
    })
    .await;
    let closed_within = |mut tcp: tokio::net::TcpStream, limit: Duration| async move {
        let mut buf = vec![0u8; 4096];
        let end = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    case("a socket that sends nothing");
    let silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert!(closed_within(silent, Duration::from_secs(3)).await);
    case("headers trickled one line at a time");
    let mut trickle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    trickle.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let t = tokio::spawn(async move {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if trickle.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return true;
            }
        }
        closed_within(trickle, Duration::from_secs(1)).await
    });
    assert!(t.await.unwrap(), "a trickled header is cut off");
    case("a body trickled one byte at a time");
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = tokio::spawn(async move {
        let mut answer = vec![0u8; 4096];
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = slow.write_all(b" ").await;
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut answer)).await {
                return n == 0 || String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408");
            }
        }
        false
    });
    assert!(t.await.unwrap(), "a trickled body gets 408 or is closed");
    case("an idle keep-alive connection");
    let mut keep = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    keep.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = keep.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(keep, Duration::from_secs(4)).await);

    case("more idle connections than max_connections");
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    for _ in 0..5 {
        assert!(health_within_1s(&s).await, "/health answers during the flood");
    }
    let (token, tenant, mut ws) = s.connected("steady").await;
    let ack = ws
        .entry(&entry(
            &tenant,
            "Tag",
            "create",
            json!({"id": new_id(), "name": "during flood", "updated_at": ts(-1000)}),
        ))
        .await;
    assert_eq!(ack["type"], "sync_ack");
    assert!(fingerprint(&s, &token, &tenant).await.1 == json!(1));
    drop(flood);
}

#[tokio::test]
async fn legacy_mode_never_exposes_token_users_tenants() {
    let s = TestServer::start(|c| c.allow_legacy_clients = true).await;
    let (_, token, _) = s.user("tokenuser").await;
    let tenant = s.tenant(&token, "Private books").await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "private", "updated_at": ts(-1000)})))
        .await;
    let before = fingerprint(&s, &token, &tenant).await;
    let http = s.http();
    let evil = "https://evil.example";
    case("legacy listing from a foreign page");
    let r = http.get(s.url("/tenants/")).header("Origin", evil).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "a foreign origin is not allowed");
    let list: Value = r.json().await.unwrap();
    assert!(!list.to_string().contains(&tenant), "a token user's tenant is not listed to legacy clients: {list}");
    case("legacy rename and delete of a token user's tenant");
    let r = http.put(s.url(&format!("/tenants/{tenant}"))).json(&json!({"name": "pwned"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.delete(s.url(&format!("/tenants/{tenant}/complete"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    case("legacy socket on a token user's tenant");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, None)).await, 401);
    case("legacy socket from a foreign origin");
    let legacy_tenant = new_id();
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(s.ws_url(&legacy_tenant, None))
            .unwrap();
    req.headers_mut().insert("origin", evil.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("foreign origin accepted: {:?}", other.map(|_| ())),
    }
    case("CORS preflight from a foreign origin and from null");
    for origin in [evil, "null"] {
        let pre = http
            .request(reqwest::Method::OPTIONS, s.url("/tenants/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "DELETE")
            .send()
            .await
            .unwrap();
        assert!(pre.headers().get("access-control-allow-origin").is_none(), "{origin}");
    }
    case("a tenant created by a legacy client stays open to legacy clients");
    let (uid, _, _) = s.user("legacyuser").await;
    let r = http
        .post(s.url("/tenants/"))
        .json(&json!({"uuid": legacy_tenant, "name": "Old books", "user_id": uid}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Ws::connect(&s.ws_url(&legacy_tenant, None)).await;
    assert_eq!(fingerprint(&s, &token, &tenant).await, before);
    let name: Value = http.get(s.url("/tenants/")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(name[0]["name"], "Private books");
}

#[tokio::test]
async fn a_tenant_keeps_an_owner_and_names_are_validated_everywhere() {
    let s = TestServer::start(|c| c.registrations_per_address = 100).await;
    let (uid, token, _) = s.user("owner").await;
    let tenant = s.tenant(&token, "Home").await;
    s.tenant(&token, "Other").await;
    let http = s.http();
    let members = |http: reqwest::Client| {
        let (url, token) = (s.url(&format!("/tenants/{tenant}/members")), token.clone());
        async move { http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = members(http.clone()).await;
    case("the sole owner removes themself");
    let r = http.delete(s.url(&format!("/tenants/{tenant}/members/{uid}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("at least one owner"));
    case("the sole owner demotes themself");
    let r = http
        .post(s.url(&format!("/tenants/{tenant}/members")))
        .bearer_auth(&token)
        .json(&json!({"email": "owner@example.org", "role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(members(http.clone()).await, before);
    case("with a second owner the first may leave");
    let (uid2, token2, _) = s.user("coowner").await;
    let r = http
        .post(s.url(&format!("/tenants/{tenant}/members")))
        .bearer_auth(&token)
        .json(&json!({"email": "coowner@example.org", "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.delete(s.url(&format!("/tenants/{tenant}/members/{uid}"))).bearer_auth(&token2).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = http.delete(s.url(&format!("/tenants/{tenant}/members/{uid2}"))).bearer_auth(&token2).send().await.unwrap();
    assert_eq!(r.status(), 409, "and then the co-owner is the last one");

    case("rename with what create refuses");
    let long = "x".repeat(100 * 1024);
    for (name, status) in
        [("", 422), ("   ", 422), (long.as_str(), 422), ("bell\u{7}", 422), ("zero\u{200b}width", 422)]
    {
        let r = http
            .put(s.url(&format!("/tenants/{tenant}")))
            .bearer_auth(&token2)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{name:?}");
    }
    let other = s.tenant(&token2, "Taken").await;
    let r = http
        .put(s.url(&format!("/tenants/{other}")))
        .bearer_auth(&token2)
        .json(&json!({"name": "Home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a duplicate name of the same user");
    let list: Value = http.get(s.url("/tenants/")).bearer_auth(&token2).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Home", "Taken"]);

    case("lookalike and broken accounts");
    let bad = [
        ("nul", "a\0b@example.org"),
        ("zw", "an\u{200b}na@example.org"),
        ("script", "<script>@x.y"),
        ("dash", "a@-.-"),
        ("dots", "a@b..c"),
    ];
    for (name, email) in bad {
        let r = http
            .post(s.url("/register"))
            .json(&json!({"name": name, "email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{email:?}");
    }
    for name in ["an\u{200b}na", "evil\u{202e}gnp", "bell\u{7}"] {
        let r = http
            .post(s.url("/register"))
            .json(&json!({"name": name, "email": "fine@example.org", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{name:?}");
    }
    let r = http
        .post(s.url("/register"))
        .json(&json!({"name": "ä".repeat(200), "email": "long@example.org", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "200 characters are allowed, whatever their bytes");
}

#[tokio::test]
async fn numbers_out_of_range_binary_floods_and_absurd_timestamps() {
    let s = TestServer::start(|c| {
        c.messages_per_second = 20;
        c.message_burst = 40;
    })
    .await;
    let (token, tenant, mut ws) = s.connected("numbers").await;
    let before = fingerprint(&s, &token, &tenant).await;
    case("an amount of 1e307");
    let mut t = full_entities(&ts(-1000)).into_iter().find(|(t, _)| *t == "Transaction").unwrap().1;
    t["amount"] = json!(1e307);
    let r = ws.entry(&entry(&tenant, "Transaction", "create", t)).await;
    assert_eq!(r["type"], "sync_nack", "{r}");
    assert_eq!(r["reason"], "validation_error");
    assert!(r["detail"].as_str().unwrap().contains("amount"), "{r}");
    case("an entry timestamp of 1e30");
    let mut e = entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "t"}));
    e["timestamp"] = json!(1e30);
    let r = ws.entry(&e).await;
    assert_eq!(r["reason"], "validation_error", "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("timestamp") && !r["detail"].as_str().unwrap().contains("1970"),
        "{r}"
    );
    assert_eq!(fingerprint(&s, &token, &tenant).await, before);

    case("20,000 binary frames");
    let mut flood = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    for _ in 0..2000 {
        flood.inner.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    }
    let mut replies = 0;
    while let Some(v) = flood.try_recv(Duration::from_millis(500)).await {
        if v["code"] == "binary_not_supported" {
            replies += 1;
        }
    }
    assert!(replies <= 60, "binary frames are rate-limited: {replies} replies to 2000 frames");
}

#[tokio::test]
async fn browsers_get_security_headers_and_files_are_private() {
    let s = TestServer::start(|_| {}).await;
    let (token, tenant, _ws) = s.connected("headers").await;
    let http = s.http();
    case("security headers and same-origin CORS in token mode");
    for path in ["/health", "/docs", "/tenants/"] {
        let r =
            http.get(s.url(path)).bearer_auth(&token).header("Origin", "https://evil.example").send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert!(h.get("access-control-allow-origin").is_none(), "{path}: no CORS for a foreign origin");
    }
    case("data files are readable by their owner only");
    #[cfg(unix)]
    if !finwise_testkit::backend::sqlite_only("file modes of a data dir's databases") {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.dir.join("tenants")), 0o700);
        assert_eq!(mode(s.dir.join("auth.db")), 0o600);
        assert_eq!(mode(s.dir.join("auth.db-wal")), 0o600);
        assert_eq!(mode(s.dir.join("tenants").join(format!("{tenant}.db"))), 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listeners_that_never_read_are_closed_when_outgoing_buffers_exceed_the_budget() {
    let s = TestServer::start(|c| {
        c.ws_buffer_budget = 2 * 1024 * 1024;
        c.messages_per_second = 100_000;
        c.message_burst = 200_000;
    })
    .await;
    let (token, tenant, mut writer) = s.connected("broadcaster").await;
    case("listeners that never read while large changes are broadcast");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(raw_upgrade(&s.addr.to_string(), &tenant, &token).await);
    }
    let name = "n".repeat(16 * 1024);
    let mut acked = 0;
    for round in 0..40 {
        let entries: Vec<Value> = (0..25)
            .map(|i| {
                entry(
                    &tenant,
                    "Tag",
                    "create",
                    json!({"id": new_id(), "name": format!("{round}-{i}-{name}"), "updated_at": ts(-1000)}),
                )
            })
            .collect();
        writer.send(&json!({"type": "process_sync_batch", "entries": entries})).await;
        let r = writer.recv_until(|v| v["type"] == "sync_batch_result").await;
        acked += r["results"].as_array().unwrap().iter().filter(|x| x["status"] == "processed").count();
    }
    assert_eq!(acked, 1000, "the writer is served throughout");
    // the stalled listeners were dropped by the server (1013; its close frame cannot reach a
    // peer that does not read): draining what the kernel buffered ends in EOF
    let mut ended = 0;
    for mut tcp in stalled {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
            if n == 0 {
                ended += 1;
                break;
            }
        }
    }
    let metrics = s.http().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> usize {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let closed_1013 = value("finwise_connection_closes_total{code=\"1013\"} ");
    assert!(ended >= 6 && closed_1013 >= 6, "stalled listeners ended: {ended} of 8, closed with 1013: {closed_1013}");
    let outbound = value("finwise_ws_outbound_bytes ");
    assert!(outbound < 2 * 1024 * 1024, "the buffers were given back ({outbound} bytes outbound)");
    assert!(health_within_1s(&s).await);
}
