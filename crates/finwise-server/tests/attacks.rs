//! Issue 3: a hostile-client suite. Each case runs over real sockets against the real server and
//! asserts both the refusal and that no stored data changed.

mod common;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use common::*;
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
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn token_attacks_are_refused_and_change_nothing() {
    let s = TestServer::start(|_| {}).await;
    let (uid, token, refresh) = s.user("victim").await;
    let tenant = s.tenant(&token, "Books").await;
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "secret", "updated_at": ts(-1000)}))).await;
    let before = fingerprint(&s, &token, &tenant).await;
    let http = s.http();

    let secret = s.config.jwt_secret.clone().unwrap();
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = chrono::Utc::now().timestamp();
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&json!({"sub": uid, "exp": now + 600, "iat": now, "typ": "access"})));
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
    a.entry(&entry(&tenant, "Account", "create", json!({"id": new_id(), "name": "Savings", "isActive": true,
        "isOfflineBudget": false, "accountGroupId": new_id(), "balance": 10000, "offset": 0, "updated_at": ts(-1000)}))).await;
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
        ("add self to foreign tenant", http.post(s.url(&format!("/tenants/{tenant}/members"))).json(&json!({"email": "mallory@example.org"}))),
        ("read foreign data status", http.get(s.url(&format!("/api/v1/sync/data-status/{tenant}")))),
        ("create tenant for another user", http.post(s.url("/tenants")).json(&json!({"uuid": new_id(), "name": "x", "user_id": new_id()}))),
        ("claim an existing tenant id", http.post(s.url("/tenants")).json(&json!({"uuid": tenant, "name": "mine now"}))),
    ] {
        case(name);
        let r = req.bearer_auth(&mallory).send().await.unwrap();
        assert!(r.status() == 403 || r.status() == 409, "{name}: {}", r.status());
    }

    case("foreign tenantId inside an entry");
    let mut m = Ws::connect(&s.ws_url(&own, Some(&mallory))).await;
    let evil = entry(&tenant, "Account", "create", json!({"id": new_id(), "name": "evil", "isActive": true,
        "isOfflineBudget": false, "accountGroupId": new_id(), "balance": 0, "offset": 0}));
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
    let r = http.post(s.url(&format!("/tenants/{tenant}/members"))).bearer_auth(&alice).json(&json!({"email": "mallory@example.org"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut inside = Ws::connect(&s.ws_url(&tenant, Some(&mallory))).await;
    let r = http.delete(s.url(&format!("/tenants/{tenant}/members/{mallory_id}"))).bearer_auth(&alice).send().await.unwrap();
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
    for bad in ["..%2F..%2Fetc%2Fpasswd", "..", "abc", "%2e%2e", &upper, "00000000-0000-0000-0000-00000000000g", "x%00y", "auth"] {
        case(&format!("tenant id {bad:?} over WS"));
        let status = ws_refusal(&format!("ws://{}/ws_finwise/ws/{bad}?token={token}", s.addr)).await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
        case(&format!("tenant id {bad:?} over WS in legacy mode"));
        let status = ws_refusal(&format!("ws://{}/ws_finwise/ws/{bad}", s.addr)).await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
        case(&format!("tenant id {bad:?} over REST"));
        let r = s.http().post(s.url("/tenants")).bearer_auth(&token).json(&json!({"uuid": bad, "name": bad})).send().await.unwrap();
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
    let _ = big.inner.send(tokio_tungstenite::tungstenite::Message::Text(format!("{{\"type\":\"process_sync_batch\",\"entries\":[],\"pad\":\"{payload}\"}}").into())).await;
    let closed = big.recv().await;
    assert!(closed.get("closed").is_some(), "{closed}");
    assert_eq!(fingerprint(&s, &token, &tenant).await, before);

    case("login brute force per account");
    let http = s.http();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http.post(s.url("/login")).json(&json!({"username_or_email": "flo@example.org", "password": "guess-guess"})).send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").is_some()));
    }
    assert_eq!(&statuses[..3], &[(401, false); 3]);
    assert_eq!(statuses[3], (429, true));
    case("locked account refuses even the right password until the window ends");
    let r = http.post(s.url("/login")).json(&json!({"username_or_email": "flo@example.org", "password": "correct horse battery"})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    case("login brute force per address across accounts");
    let mut last = 0;
    for i in 0..8 {
        let r = http.post(s.url("/login")).json(&json!({"username_or_email": format!("nobody{i}@example.org"), "password": "guess-guess"})).send().await.unwrap();
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
    let r = s.http().post(s.url("/register")).json(&json!({"name": "n", "email": "n@example.org", "password": "long enough pw"})).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let s = TestServer::start(|c| c.allow_legacy_clients = true).await;
    let (_, token, _) = s.user("leg").await;
    let tenant = s.tenant(&token, "T").await;
    case("a request with a bad token is checked even in legacy mode");
    assert_eq!(ws_refusal(&s.ws_url(&tenant, Some("forged"))).await, 401);
    let r = s.http().get(s.url("/tenants")).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), 401);
    case("legacy client without token works in legacy mode");
    Ws::connect(&s.ws_url(&tenant, None)).await;
}

#[tokio::test]
async fn imported_bcrypt_hashes_verify_and_are_rehashed() {
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
    let r = s.http().post(s.url("/login")).json(&json!({"username_or_email": "old@example.org", "password": "old python password"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let db = rusqlite::Connection::open(s.dir.join("auth.db")).unwrap();
    let now: String = db.query_row("SELECT password_hash FROM users WHERE email = 'old@example.org'", [], |r| r.get(0)).unwrap();
    assert!(now.starts_with("$argon2id$"), "{now}");
    let r = s.http().post(s.url("/login")).json(&json!({"username_or_email": "OLD@example.org", "password": "old python password"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    println!("attack cases tried so far in this process: {}", CASES.load(Ordering::SeqCst));
}

#[test]
fn secret_file_is_owner_only() {
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
    let ack = ws.entry(&entry(&tenant, "Tag", "create", json!({"id": new_id(), "name": "before", "updated_at": ts(-1000)}))).await;
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
