//! PostgreSQL only: sequence numbers of one tenant become visible in order, even with two writers
//! (two servers) on the same tenant. A reader that sees seq N has seen every seq below N, so a
//! delta reader that continues after the highest seq it saw never skips a change.
//!
//! The same scenario with a plain `nextval` sequence shows the bug this prevents: seq 2 commits
//! while seq 1 is still open, a reader sees 2 without 1, and after 1 commits a delta "after 2"
//! never returns it.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use finwise_protocol::EntityType;
use finwise_server::{
    storage::{postgres::PgStore, EntityRecord, Store},
    TenantId,
};
use finwise_testkit::backend;

fn database() -> Option<String> {
    backend::fresh_schema_url("t_seq")
}

fn record(id: &str, seq: i64) -> EntityRecord {
    EntityRecord {
        entity_type: EntityType::Tag,
        id: id.into(),
        seq,
        updated_at_ms: 1,
        deleted: false,
        data: format!(r#"{{"id":"{id}"}}"#),
        changed_at_ms: 1,
        stamps: None,
        created_seq: seq,
    }
}

/// The seqs a reader sees for the tenant right now.
fn visible(store: &dyn Store, tenant: &TenantId) -> Vec<i64> {
    let mut seqs: Vec<i64> = store
        .read(tenant, |r| {
            let mut out = Vec::new();
            r.live_since(0, &mut |_, json| {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                out.push(v["id"].as_str().unwrap().trim_start_matches("e").parse().unwrap());
                true
            })?;
            Ok(out)
        })
        .unwrap();
    seqs.sort();
    seqs
}

#[test]
fn head_lock_orders_commits() {
    let Some(url) = database() else { return };
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(PgStore::open(&url, 8, Duration::from_secs(5)).expect("open PostgreSQL store"));
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let (a_has_seq, a_holds) = (mpsc::channel::<i64>(), mpsc::channel::<()>());
    let (a_seq_tx, a_seq_rx) = a_has_seq;
    let (release_tx, release_rx) = a_holds;

    // Writer A (one server) takes seq 1 and holds its transaction open.
    let s = std::sync::Arc::clone(&store);
    let t = tenant.clone();
    let a = std::thread::spawn(move || {
        let mut db = s.open_tenant(&t).unwrap();
        db.write(|txn| {
            let seq = txn.next_seq();
            txn.put_entity(&record(&format!("e{seq}"), seq))?;
            a_seq_tx.send(seq).unwrap();
            release_rx.recv().unwrap();
            Ok(())
        })
        .unwrap();
        Instant::now()
    });
    assert_eq!(a_seq_rx.recv().unwrap(), 1);

    // Writer B (another server) on the same tenant: it must wait for A's commit.
    let s = std::sync::Arc::clone(&store);
    let t = tenant.clone();
    let b = std::thread::spawn(move || {
        let mut db = s.open_tenant(&t).unwrap();
        let seq = db
            .write(|txn| {
                let seq = txn.next_seq();
                txn.put_entity(&record(&format!("e{seq}"), seq))?;
                Ok(seq)
            })
            .unwrap();
        (seq, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!b.is_finished(), "B committed while A still held seq 1 uncommitted");
    assert_eq!(visible(&*store, &tenant), Vec::<i64>::new(), "nothing is visible before A commits");
    release_tx.send(()).unwrap();
    let a_done = a.join().unwrap();
    let (b_seq, b_done) = b.join().unwrap();
    assert_eq!(b_seq, 2);
    assert!(b_done >= a_done);
    assert_eq!(visible(&*store, &tenant), vec![1, 2]);
}

/// The counter-example: with `nextval`, seq 2 is visible while seq 1 is not, and a delta reader
/// that moved on to 2 never sees 1.
#[test]
fn nextval_sequences_commit_out_of_order() {
    let Some(url) = database() else { return };
    let connect = || postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut setup = connect();
    setup
        .batch_execute(
            "CREATE SEQUENCE naive_seq; CREATE TABLE naive (seq bigint PRIMARY KEY DEFAULT nextval('naive_seq'))",
        )
        .unwrap();
    let (mut a, mut b, mut reader) = (connect(), connect(), connect());
    a.batch_execute("BEGIN").unwrap();
    let s1: i64 = a.query_one("INSERT INTO naive DEFAULT VALUES RETURNING seq", &[]).unwrap().get(0);
    b.batch_execute("BEGIN").unwrap();
    let s2: i64 = b.query_one("INSERT INTO naive DEFAULT VALUES RETURNING seq", &[]).unwrap().get(0);
    b.batch_execute("COMMIT").unwrap();
    let seen: Vec<i64> = reader
        .query("SELECT seq FROM naive WHERE seq > 0 ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!((s1, s2), (1, 2));
    assert_eq!(seen, vec![2], "the reader sees 2 without 1");
    a.batch_execute("COMMIT").unwrap();
    let cursor = *seen.last().unwrap();
    let after: Vec<i64> =
        reader.query("SELECT seq FROM naive WHERE seq > $1", &[&cursor]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(after.is_empty(), "the delta after 2 misses 1 for good: {after:?}");
}
