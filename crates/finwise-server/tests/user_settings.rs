//! The 0.4 frontend's per-user settings (O11–O13) over HTTP: defaults on first read, LWW on
//! `updated_at`, reset, and who may read and write them.

use finwise_testkit::TestServer;
use serde_json::{json, Value};

async fn call(s: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = s.http().request(method.parse().unwrap(), s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_start_with_defaults_take_newer_writes_and_reset() {
    let s = TestServer::start(|_| {}).await;
    let (me, token, _) = s.user("settings").await;
    let path = format!("/api/v1/user/settings/{me}");
    let (status, first) = call(&s, "GET", &path, Some(&token), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["log_level"].clone(), first["log_categories"].clone(), first["history_retention_days"].clone()),
        (json!("INFO"), json!(["store", "ui", "service"]), json!(60))
    );
    assert_eq!(first["user_id"], me.as_str());
    assert_eq!(call(&s, "GET", &path, Some(&token), None).await.1["id"], first["id"], "created once");

    let newer = json!({"log_level": "DEBUG", "log_categories": ["sync"], "history_retention_days": 30,
                       "updated_at": "2030-01-01T10:00:00.000Z"});
    let (status, put) = call(&s, "PUT", &path, Some(&token), Some(newer)).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!((put["log_level"].as_str(), put["history_retention_days"].as_i64()), (Some("DEBUG"), Some(30)));
    assert_eq!(put["updated_at"], "2030-01-01T10:00:00.000000");
    assert_eq!(put["id"], first["id"]);
    // an older (or equally old) write is ignored: the stored settings come back
    for at in ["2029-12-31T23:59:59.000Z", "2030-01-01T10:00:00.000Z"] {
        let stale = json!({"log_level": "ERROR", "updated_at": at});
        let (status, kept) = call(&s, "PUT", &path, Some(&token), Some(stale)).await;
        assert_eq!((status, kept["log_level"].as_str()), (200, Some("DEBUG")), "{at}");
    }
    for (body, field) in [
        (json!({"log_level": "LOUD"}), "log_level"),
        (json!({"history_retention_days": -1}), "history_retention_days"),
        (json!({"updated_at": "yesterday"}), "updated_at"),
        (json!({"log_categories": vec!["x"; 65]}), "log_categories"),
    ] {
        let (status, err) = call(&s, "PUT", &path, Some(&token), Some(body)).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["detail"][0]["loc"], json!(["body", field]));
    }
    let (status, reset) = call(&s, "POST", &format!("{path}/reset"), Some(&token), None).await;
    assert_eq!((status, reset["log_level"].as_str()), (200, Some("INFO")));
    assert_ne!(reset["id"], first["id"], "a new row");
    assert_eq!(call(&s, "GET", &path, Some(&token), None).await.1, reset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_their_users_own() {
    let s = TestServer::start(|_| {}).await;
    let (me, token, _) = s.user("mine").await;
    let (other, _, _) = s.user("theirs").await;
    let theirs = format!("/api/v1/user/settings/{other}");
    assert_eq!(call(&s, "GET", &theirs, Some(&token), None).await.0, 403);
    assert_eq!(call(&s, "PUT", &theirs, Some(&token), Some(json!({}))).await.0, 403);
    assert_eq!(call(&s, "POST", &format!("{theirs}/reset"), Some(&token), None).await.0, 403);
    assert_eq!(call(&s, "GET", &format!("/api/v1/user/settings/{me}"), None, None).await.0, 401);

    // a legacy (0.4, tokenless) client names the user; an unknown one is 404
    let legacy = TestServer::start(|c| c.allow_legacy_clients = true).await;
    let (user, _, _) = legacy.user("legacy").await;
    let (status, body) = call(&legacy, "GET", &format!("/api/v1/user/settings/{user}"), None, None).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some(user.as_str())));
    let ghost = uuid::Uuid::new_v4();
    assert_eq!(call(&legacy, "GET", &format!("/api/v1/user/settings/{ghost}"), None, None).await.0, 404);
}
