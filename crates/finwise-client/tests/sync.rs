//! The client against the real server (in-process, 127.0.0.1).

mod common;

use std::{sync::Arc, time::Duration};

use common::{device, dump, fast_options, Accounts, Household, TestServer};
use finwise_client::{Auth, Client, ConnectionState, EntityType, EntryStatus, Error, Operation, Origin};
use serde_json::json;

fn account(name: &str, group: &str) -> serde_json::Value {
    json!({"name": name, "isActive": true, "isOfflineBudget": false, "accountGroupId": group, "balance": 0, "offset": 0})
}

/// The next change that came from the server, within 10 s.
async fn next_remote(
    changes: &mut tokio::sync::broadcast::Receiver<finwise_client::Change>,
) -> Option<finwise_client::Change> {
    let fut = async {
        loop {
            let c = changes.recv().await.unwrap();
            if c.origin == Origin::Remote {
                return c;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.ok()
}

async fn pause() {
    // Local timestamps have millisecond resolution: make "later" unambiguous.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test]
async fn two_clients_edit_offline_and_converge_to_the_server() {
    let mut hh = Household::start("alice", "Household", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));

    // Online: A creates, B receives.
    let group = a.create(EntityType::AccountGroup, json!({"name": "Banks", "sortOrder": 0})).unwrap();
    let gid = group["id"].as_str().unwrap().to_owned();
    let acc = a.create(EntityType::Account, account("Giro", &gid)).unwrap();
    let aid = acc["id"].as_str().unwrap().to_owned();
    let mut tags = Vec::new();
    for i in 0..12 {
        tags.push(
            a.create(EntityType::Tag, json!({"name": format!("tag {i}")})).unwrap()["id"].as_str().unwrap().to_owned(),
        );
    }
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.failed), (14, 0), "{r:?}");
    assert_eq!(r.converged, Some(true));
    let r = b.sync_once().await.unwrap();
    assert_eq!(r.converged, Some(true));
    assert_eq!(b.get(EntityType::Account, &aid).unwrap().unwrap()["name"], "Giro");
    assert_eq!(b.list(EntityType::Tag).unwrap().len(), 12);

    // Outage: both edit offline; a sync attempt fails with a transient error.
    hh.server.stop().await;
    a.update(EntityType::Account, &aid, json!({"name": "Giro (A)"})).unwrap();
    let a_tag = a.create(EntityType::Tag, json!({"name": "from A"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.delete(EntityType::Tag, &tags[0]).unwrap();
    pause().await;
    b.update(EntityType::Account, &aid, json!({"balance": 42.5, "name": "Giro (B)"})).unwrap();
    let b_cat = b
        .create(
            EntityType::Category,
            json!({"name": "Food", "budgeted": 0, "activity": 0, "available": 0,
            "isIncomeCategory": false, "isHidden": false, "isActive": true, "sortOrder": 1}),
        )
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.update(EntityType::Tag, &tags[1], json!({"name": "renamed by B"})).unwrap();
    let err = a.sync_once().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(a.status().unwrap().queue.pending, 3);
    assert_eq!(a.status().unwrap().connection, ConnectionState::Offline);

    // Back online: sync both, then A once more to pick up B's changes.
    hh.server.start_again().await;
    let ra = a.sync_once().await.unwrap();
    assert_eq!(ra.acked, 3, "{ra:?}");
    let rb = b.sync_once().await.unwrap();
    assert_eq!(rb.acked, 3, "{rb:?}");
    let ra = a.sync_once().await.unwrap();
    assert_eq!(ra.converged, Some(true), "{ra:?}");
    assert_eq!(rb.converged, Some(true), "{rb:?}");

    // Identical stores, equal to the server (the digest check passed on both).
    assert_eq!(a.local_digest().unwrap(), b.local_digest().unwrap());
    assert_eq!(dump(&a), dump(&b));
    let acc_a = a.get(EntityType::Account, &aid).unwrap().unwrap();
    assert_eq!(acc_a["name"], "Giro (B)", "B edited last and wins the whole version");
    assert_eq!(acc_a["balance"], json!(42.5));
    assert!(b.get(EntityType::Tag, &a_tag).unwrap().is_some());
    assert!(b.get(EntityType::Tag, &tags[0]).unwrap().is_none());
    assert!(a.get(EntityType::Category, &b_cat).unwrap().is_some());
    assert_eq!(a.get(EntityType::Tag, &tags[1]).unwrap().unwrap()["name"], "renamed by B");
    for c in [&a, &b] {
        let st = c.status().unwrap();
        assert_eq!((st.queue.pending, st.queue.processing, st.queue.failed), (0, 0, 0));
        assert_eq!(st.server_digest.as_deref(), Some(st.local_digest.as_str()));
        assert!(st.last_sync.is_some());
        assert!(st.clock_offset_ms.unwrap().abs() < 5000, "same machine, same clock");
    }
}

#[tokio::test]
async fn a_client_killed_before_the_ack_resends_and_nothing_is_applied_twice() {
    let server = TestServer::start(|_| {}).await;
    server.register("bob").await;
    let auth = server.login("bob").await;
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let path = Client::store_path(dir.path(), &auth.user_id(), &tenant);

    let a = device(&auth, &tenant, dir.path());
    let t1 = a.create(EntityType::Tag, json!({"name": "one"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.create(EntityType::Tag, json!({"name": "two"})).unwrap();
    a.update(EntityType::Tag, &t1, json!({"name": "one!"})).unwrap();
    // The edit of the unsent create folds into it: two entries. The server applies both and
    // answers; the process dies before recording the answers.
    assert_eq!(a.debug_push_and_crash_before_ack().await.unwrap(), 2);
    assert_eq!(a.status().unwrap().queue.processing, 2);
    drop(a);

    // Restart: the entries are pending again and are resent with the same ids.
    let a = Client::open_at(Arc::clone(&auth), &tenant, &path, fast_options()).unwrap();
    let st = a.status().unwrap();
    assert_eq!((st.queue.pending, st.queue.processing), (2, 0));
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.duplicates, r.failed), (2, 2, 0), "{r:?}");
    // Two entries, two sequence numbers: nothing was applied twice.
    assert_eq!(r.cursor, Some(2));
    assert_eq!(r.converged, Some(true));

    let other = tempfile::tempdir().unwrap();
    let b = device(&server.login("bob").await, &tenant, other.path());
    b.sync_once().await.unwrap();
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(b.get(EntityType::Tag, &t1).unwrap().unwrap()["name"], "one!");
}

#[tokio::test]
async fn a_pending_delete_is_not_undone_by_an_incoming_load() {
    let hh = Household::start("carol", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));

    let t = a.create(EntityType::Tag, json!({"name": "keep?"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    b.update(EntityType::Tag, &t, json!({"name": "edited by B"})).unwrap();
    b.sync_once().await.unwrap();
    pause().await;

    a.delete(EntityType::Tag, &t).unwrap();
    // Loads while the delete is queued: neither the delta nor a full load brings the tag back.
    let r = a.pull_only(false).await.unwrap();
    assert_eq!(r.received, 0, "{r:?}");
    assert!(a.get(EntityType::Tag, &t).unwrap().is_none());
    a.pull_only(true).await.unwrap();
    assert!(a.get(EntityType::Tag, &t).unwrap().is_none());
    assert_eq!(a.status().unwrap().queue.pending, 1);

    // The delete is newer than B's edit: it wins everywhere.
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.lost, r.converged), (1, 0, Some(true)), "{r:?}");
    b.sync_once().await.unwrap();
    assert!(b.get(EntityType::Tag, &t).unwrap().is_none());
    assert_eq!(a.local_digest().unwrap(), b.local_digest().unwrap());
}

#[tokio::test]
async fn a_stale_local_edit_loses_and_the_winner_is_applied() {
    let hh = Household::start("dave", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));
    let t = a.create(EntityType::Tag, json!({"name": "x"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.update(EntityType::Tag, &t, json!({"name": "older (A)"})).unwrap();
    pause().await;
    b.update(EntityType::Tag, &t, json!({"name": "newer (B)"})).unwrap();
    b.sync_once().await.unwrap();
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.lost, r.converged), (1, 1, Some(true)), "{r:?}");
    assert_eq!(a.get(EntityType::Tag, &t).unwrap().unwrap()["name"], "newer (B)");
}

#[tokio::test]
async fn invalid_and_refused_entries_are_kept_as_failed() {
    let server = TestServer::start(|_| {}).await;
    server.register("erin").await;
    let auth = server.login("erin").await;
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let a = device(&auth, &tenant, dir.path());
    // Validation happens locally first.
    let err = a.create(EntityType::Account, json!({"name": "no group"})).unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    // A change the server refuses for good (clock skew: stamped an hour ahead).
    let path = Client::store_path(dir.path(), &auth.user_id(), &tenant);
    {
        let mut store = finwise_client::store::Store::open(&path).unwrap();
        let ms = finwise_protocol::time::now_ms() + 3_600_000;
        let e = EntityType::Tag.def().normalize(&json!({"id": "future", "name": "f"}), ms).unwrap();
        store.local_change(EntityType::Tag, "future", Operation::Create, Some(&e), ms, None).unwrap();
    }
    let ok = a.create(EntityType::Tag, json!({"name": "fine"})).unwrap()["id"].as_str().unwrap().to_owned();
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.failed), (1, 1), "{r:?}");
    let failed = a.queue_entries(EntryStatus::Failed).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason.as_deref(), Some("clock_skew"));
    assert!(failed[0].last_error.as_deref().unwrap_or("").contains("ahead"));
    // Not pending any more: the server's truth (no such tag) replaced the refused local version.
    assert_eq!(r.converged, Some(true), "{r:?}");
    assert!(a.get(EntityType::Tag, "future").unwrap().is_none());
    assert!(a.get(EntityType::Tag, &ok).unwrap().is_some());
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed() {
    let server = TestServer::start(|_| {}).await;
    server.register("fred").await;
    let auth = server.login("fred").await;
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let mut session = auth.session();
    session.access_token = "expired.or.garbage".into();
    let stale = Arc::new(Auth::from_session(session, None));
    assert_eq!(stale.tenants().await.unwrap().len(), 1, "REST refreshes on 401");
    let mut session = stale.session();
    session.access_token = "expired.or.garbage".into();
    let stale = Arc::new(Auth::from_session(session, None));
    let dir = tempfile::tempdir().unwrap();
    let a = device(&stale, &tenant, dir.path());
    a.create(EntityType::Tag, json!({"name": "t"})).unwrap();
    let r = a.sync_once().await.unwrap();
    assert_eq!(r.acked, 1, "WebSocket upgrade refreshes on 401");
    assert_ne!(stale.access_token(), "expired.or.garbage");
}

#[tokio::test]
async fn watch_streams_changes_and_survives_a_server_restart() {
    let mut hh = Household::start("gina", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));

    let mut changes = b.changes();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let b = b.clone();
        tokio::spawn(async move {
            b.watch(async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let mut conn = b.connection();
    tokio::time::timeout(Duration::from_secs(10), conn.wait_for(|s| *s == ConnectionState::Online))
        .await
        .unwrap()
        .unwrap();

    let t = a.create(EntityType::Tag, json!({"name": "live"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    let c = next_remote(&mut changes).await.expect("B sees A's change while watching");
    assert_eq!((c.entity_type, c.id.as_str(), c.operation), (EntityType::Tag, t.as_str(), Operation::Create));

    // The server goes away and comes back: B reconnects by itself and catches up by delta.
    hh.server.stop().await;
    a.update(EntityType::Tag, &t, json!({"name": "edited offline"})).unwrap();
    hh.server.start_again().await;
    a.sync_once().await.unwrap();
    let c = next_remote(&mut changes).await.expect("B catches up after the restart");
    assert_eq!(c.entity.unwrap()["name"], "edited offline");

    // A local change in B is pushed by the watcher without an explicit sync.
    let bt = b.create(EntityType::Tag, json!({"name": "from watcher"})).unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        a.sync_once().await.unwrap();
        if a.get(EntityType::Tag, &bt).unwrap().is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "watcher did not push");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), watcher).await.unwrap().unwrap().unwrap();
    assert_eq!(b.status().unwrap().connection, ConnectionState::Offline);
    assert_eq!(a.local_digest().unwrap(), b.local_digest().unwrap());
}

#[tokio::test]
async fn overloaded_entries_are_retried_with_backoff_until_they_land() {
    let server = TestServer::start(|c| {
        c.messages_per_second = 3;
        c.message_burst = 3;
    })
    .await;
    server.register("hank").await;
    let auth = server.login("hank").await;
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let a = device(&auth, &tenant, dir.path());
    for i in 0..30 {
        a.create(EntityType::Tag, json!({"name": format!("t{i}")})).unwrap();
    }
    // Six batches of five against a budget of three messages per second.
    let r = a.sync_once().await.unwrap();
    assert!(r.retried > 0, "the rate limit refused some batches: {r:?}");
    assert_eq!((r.acked, r.failed, r.duplicates), (30, 0, 0), "{r:?}");
    assert_eq!(r.converged, Some(true), "{r:?}");
    assert_eq!(r.cursor, Some(30));
}

#[tokio::test]
async fn a_tie_is_restamped_by_the_server_and_both_clients_converge() {
    let hh = Household::start("ivy", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));
    let t = a.create(EntityType::Tag, json!({"name": "x"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    // Both devices edit with the very same updated_at (as two clocks may produce).
    let ms = finwise_protocol::time::now_ms() + 10;
    for (i, name) in [(0, "tie A"), (1, "tie B")] {
        let path = Client::store_path(hh.dir(i), &hh.auth(i).user_id(), &hh.tenant);
        let mut store = finwise_client::store::Store::open(&path).unwrap();
        let e = EntityType::Tag.def().normalize(&json!({"id": t, "name": name}), ms).unwrap();
        store.local_change(EntityType::Tag, &t, Operation::Update, Some(&e), ms, None).unwrap();
    }
    a.sync_once().await.unwrap();
    // B's tie arrives later: the server keeps B's edit, restamped to ms + 1, and tells B.
    let r = b.sync_once().await.unwrap();
    assert_eq!((r.acked, r.lost, r.converged), (1, 0, Some(true)), "{r:?}");
    let tb = b.get(EntityType::Tag, &t).unwrap().unwrap();
    assert_eq!(tb["name"], "tie B");
    assert_eq!(tb["updated_at"], finwise_protocol::time::format_ms(ms + 1));
    a.sync_once().await.unwrap();
    assert_eq!(dump(&a), dump(&b));
}

#[tokio::test]
async fn a_store_that_differs_from_the_server_is_repaired_by_a_full_resync() {
    let server = TestServer::start(|_| {}).await;
    server.register("jack").await;
    let auth = server.login("jack").await;
    let tenant = auth.create_tenant("Home").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let a = device(&auth, &tenant, dir.path());
    let keep = a.create(EntityType::Tag, json!({"name": "real"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    // Corrupt the local store behind the client's back: a ghost row and a lost row.
    let path = Client::store_path(dir.path(), &auth.user_id(), &tenant);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "INSERT INTO entities (type, id, data, updated_at_ms, deleted) VALUES ('Tag', 'ghost', '{\"id\":\"ghost\",\"name\":\"boo\"}', 1, 0)",
        [],
    )
    .unwrap();
    db.execute("DELETE FROM entities WHERE id = ?1", [&keep]).unwrap();
    drop(db);
    let r = a.sync_once().await.unwrap();
    assert!(r.full_load, "{r:?}");
    assert_eq!(r.converged, Some(true), "{r:?}");
    assert!(a.get(EntityType::Tag, "ghost").unwrap().is_none());
    assert!(a.get(EntityType::Tag, &keep).unwrap().is_some());
}

#[tokio::test]
async fn many_changes_of_one_entity_arrive_in_order_across_batches() {
    let hh = Household::start("kim", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));
    let t = a.create(EntityType::Tag, json!({"name": "v0", "color": "c0"})).unwrap()["id"].as_str().unwrap().to_owned();
    // sent once (and refused as overloaded would be the same): later edits queue behind it
    a.sync_once().await.unwrap();
    for i in 1..=12 {
        // unsent field-level edits of one entity fold into one entry with the union of fields
        let patch = if i % 2 == 0 { json!({"name": format!("v{i}")}) } else { json!({"color": format!("c{i}")}) };
        a.update(EntityType::Tag, &t, patch).unwrap();
    }
    let queued = a.queue_entries(finwise_client::store::EntryStatus::Pending).unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].fields.as_deref(), Some(&["color".to_owned(), "name".to_owned()][..]));
    a.delete(EntityType::Tag, &t).unwrap();
    let again = a.create(EntityType::Tag, json!({"id": t, "name": "reborn"})).unwrap();
    assert_eq!(again["id"], t.as_str());
    let r = a.sync_once().await.unwrap();
    // the folded update, the delete and the new create, applied in order (none lost)
    assert_eq!((r.acked, r.lost, r.cursor, r.converged), (3, 0, Some(4), Some(true)), "{r:?}");
    b.sync_once().await.unwrap();
    assert_eq!(b.get(EntityType::Tag, &t).unwrap().unwrap()["name"], "reborn");
}

#[tokio::test]
async fn watch_finds_a_dead_link_by_health_checks_and_resumes_by_delta() {
    let server = TestServer::start(|_| {}).await;
    let proxy = common::Proxy::start(server.addr).await;
    server.register("lena").await;
    let auth_a = server.login("lena").await;
    // B talks to the server through the proxy.
    let auth_b = Arc::new(Auth::login(&proxy.url(), "lena@example.org", "correct horse battery", None).await.unwrap());
    let tenant = auth_a.create_tenant("Home").await.unwrap().uuid;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = device(&auth_a, &tenant, dir_a.path());
    let b = Client::open(
        Arc::clone(&auth_b),
        &tenant,
        dir_b.path(),
        finwise_client::ClientOptions { ping_interval: Duration::from_millis(500), ..fast_options() },
    )
    .unwrap();
    let mut changes = b.changes();
    let mut conn = b.connection();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let b = b.clone();
        tokio::spawn(async move {
            b.watch(async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let online = |conn: &mut tokio::sync::watch::Receiver<ConnectionState>| {
        let mut conn = conn.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), conn.wait_for(|s| *s == ConnectionState::Online))
                .await
                .is_ok()
        }
    };
    assert!(online(&mut conn).await);

    // A frozen link: nothing flows, nothing closes. The pings go unanswered; B reconnects.
    proxy.freeze();
    tokio::time::timeout(Duration::from_secs(10), conn.wait_for(|s| *s != ConnectionState::Online))
        .await
        .unwrap()
        .unwrap();
    let t1 = a.create(EntityType::Tag, json!({"name": "while frozen"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    let c = next_remote(&mut changes).await.expect("B resumes and catches up");
    assert_eq!(c.id, t1);

    // A cut link: B sees the close at once, reconnects, and catches up by delta.
    assert!(online(&mut conn).await);
    proxy.cut();
    let t2 = a.create(EntityType::Tag, json!({"name": "while cut"})).unwrap()["id"].as_str().unwrap().to_owned();
    a.sync_once().await.unwrap();
    let c = next_remote(&mut changes).await.expect("B catches up after the cut");
    assert_eq!(c.id, t2);
    assert!(online(&mut conn).await);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), watcher).await.unwrap().unwrap().unwrap();
    let r = b.sync_once().await.unwrap();
    assert_eq!(r.converged, Some(true));
    assert_eq!(dump(&a), dump(&b));
}

#[tokio::test]
async fn watch_gives_up_on_what_retrying_cannot_fix() {
    let server = TestServer::start(|_| {}).await;
    server.register("mia").await;
    server.register("ned").await;
    let (mia, ned) = (server.login("mia").await, server.login("ned").await);
    let foreign = ned.create_tenant("Ned's").await.unwrap().uuid;
    let dir = tempfile::tempdir().unwrap();
    let c = device(&mia, &foreign, dir.path());
    let err = c.sync_once().await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
    let err = tokio::time::timeout(Duration::from_secs(10), c.watch(std::future::pending()))
        .await
        .expect("no endless retry")
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err}");
    assert!(c.status().unwrap().last_error.unwrap().contains("denied"));
    // A revoked session: the refresh token is refused.
    let mut s = mia.session();
    s.access_token = "bad".into();
    s.refresh_token = "bad".into();
    let revoked = Arc::new(Auth::from_session(s, None));
    let tenant = mia.create_tenant("Mia's").await.unwrap().uuid;
    let c = device(&revoked, &tenant, dir.path());
    let err = tokio::time::timeout(Duration::from_secs(10), c.watch(std::future::pending()))
        .await
        .expect("no endless retry")
        .unwrap_err();
    assert!(matches!(err, Error::SessionExpired(_)), "{err}");
}

#[tokio::test]
async fn thousands_of_offline_changes_sync_in_batches_and_load_in_chunks() {
    let server = TestServer::start(|_| {}).await;
    server.register("pat").await;
    let (auth_a, auth_b) = (server.login("pat").await, server.login("pat").await);
    let tenant = auth_a.create_tenant("Home").await.unwrap().uuid;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = finwise_client::ClientOptions { batch_size: 500, chunk_size: 1000, ..fast_options() };
    let a = Client::open(Arc::clone(&auth_a), &tenant, dir_a.path(), opts.clone()).unwrap();
    let progress = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = Client::open(
        Arc::clone(&auth_b),
        &tenant,
        dir_b.path(),
        finwise_client::ClientOptions {
            progress: Some({
                let p = Arc::clone(&progress);
                Arc::new(move |e: &finwise_client::Progress| p.lock().unwrap().push(e.clone()))
            }),
            ..opts
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    for i in 0..3000 {
        a.create(EntityType::Tag, json!({"name": format!("tag {i}")})).unwrap();
    }
    let queued = started.elapsed();
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.converged), (3000, Some(true)), "{r:?}");
    let pushed = started.elapsed();
    let r = b.sync_once().await.unwrap();
    assert_eq!((r.received, r.converged), (3000, Some(true)), "{r:?}");
    eprintln!("queue 3000: {queued:?}, push: {:?}, full load: {:?}", pushed - queued, started.elapsed() - pushed);
    assert!(started.elapsed() < Duration::from_secs(60));
    // The load came in chunks, with a known total for the progress bar.
    let p = progress.lock().unwrap();
    let loading: Vec<_> = p.iter().filter(|e| matches!(e, finwise_client::Progress::Loading { .. })).collect();
    assert_eq!(loading.len(), 4, "{loading:?}");
    assert_eq!(*loading[0], finwise_client::Progress::Loading { received: 1000, total: Some(3000) });
}

#[tokio::test]
async fn concurrent_refreshes_share_one_rotation() {
    let server = TestServer::start(|_| {}).await;
    server.register("quin").await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("session.json");
    let auth =
        Auth::login(&server.base(), "quin@example.org", "correct horse battery", Some(file.clone())).await.unwrap();
    auth.create_tenant("Home").await.unwrap();
    // Expire the access token in the file; two "processes" load the session from it.
    auth.update_session(|s| s.access_token = "expired".into()).unwrap();
    let (p1, p2) = (Arc::new(Auth::load(&file).unwrap()), Arc::new(Auth::load(&file).unwrap()));
    // Within each process several requests hit the 401 at once; across processes too.
    let calls = [&p1, &p1, &p2, &p2, &p1, &p2];
    let results = futures_join_all(calls.iter().map(|a| a.tenants())).await;
    for r in results {
        assert_eq!(r.unwrap().len(), 1, "a reused refresh token would have revoked the session");
    }
    // Exactly one rotation happened: both hold the pair that is on disk, and it still works.
    let disk = Auth::load(&file).unwrap().session();
    assert_eq!(p1.session().refresh_token, disk.refresh_token);
    assert_eq!(p2.session().refresh_token, disk.refresh_token);
    assert!(!file.with_extension("json.lock").exists());
    p1.update_session(|s| s.access_token = "expired".into()).unwrap();
    assert_eq!(p1.tenants().await.unwrap().len(), 1);
}

async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futs.collect();
    for f in futures_util::future::join_all(handles).await {
        out.push(f);
    }
    out
}

#[tokio::test]
async fn two_devices_edit_different_fields_offline_and_both_keep_both() {
    let hh = Household::start("lou", "Home", 2).await;
    let (a, b) = (hh.device(0), hh.device(1));
    let id = a.create(EntityType::Tag, json!({"name": "Urlaub", "color": "blue"})).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    // offline on both: A renames, B recolours (B's edit is the later one)
    a.update(EntityType::Tag, &id, json!({"name": "Sommerurlaub"})).unwrap();
    b.update(EntityType::Tag, &id, json!({"color": "yellow"})).unwrap();
    let queued = a.queue_entries(finwise_client::store::EntryStatus::Pending).unwrap();
    assert_eq!(queued[0].fields.as_deref(), Some(&["name".to_owned()][..]), "only what changed is sent");
    b.sync_once().await.unwrap();
    let r = a.sync_once().await.unwrap();
    assert_eq!((r.acked, r.lost), (1, 0), "{r:?}");
    b.sync_once().await.unwrap();
    for c in [&a, &b] {
        let tag = c.get(EntityType::Tag, &id).unwrap().unwrap();
        assert_eq!((tag["name"].as_str(), tag["color"].as_str()), (Some("Sommerurlaub"), Some("yellow")), "{tag:?}");
        let st = c.status().unwrap();
        assert_eq!(st.server_digest.as_deref(), Some(st.local_digest.as_str()));
    }
}
