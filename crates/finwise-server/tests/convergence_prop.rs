//! Property test: random interleavings of creates, updates and deletes from several
//! writers, with random (often equal) timestamps, duplicated entries and reordered delivery.
//! Checks that every replica converges to the server's state and that the server's state is what
//! LWW over all accepted changes gives, folded independently of the engine.

use std::collections::HashMap;

use finwise_protocol::{
    lww,
    messages::{Operation, SyncQueueEntry},
    time,
};
use finwise_server::{
    engine::{self, Item, Reply},
    storage::TenantReader,
    TenantId,
};
use proptest::prelude::*;
use serde_json::{json, Value};

const TENANT: &str = "6f1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f";
const BASE_MS: i64 = 1_790_000_000_000;

#[derive(Debug, Clone)]
struct Op {
    writer: usize,
    entity: usize,
    kind: u8,
    ts_offset: i64,
    name: u8,
    /// Resend one of this writer's earlier entries instead (a retry).
    retry_of: Option<usize>,
}

fn op() -> impl Strategy<Value = Op> {
    (0..3usize, 0..3usize, 0..3u8, 0..4i64, 0..4u8, prop::option::weighted(0.2, 0..50usize)).prop_map(
        |(writer, entity, kind, ts_offset, name, retry_of)| Op { writer, entity, kind, ts_offset, name, retry_of },
    )
}

/// A replica's view: id → (updated_at_ms, deleted, name).
type Replica = HashMap<String, (i64, bool, String)>;

fn deliver(replica: &mut Replica, msg: &Value) {
    let e = &msg["data"]["single_entity"];
    let id = e["id"].as_str().unwrap().to_owned();
    let incoming = time::parse_ms(msg["updated_at"].as_str().unwrap()).unwrap();
    if lww::client_accepts(replica.get(&id).map(|v| v.0), false, incoming) {
        let deleted = msg["operation_type"] == "delete";
        replica.insert(id, (incoming, deleted, e["name"].as_str().unwrap_or_default().to_owned()));
    }
}

fn live(r: &Replica) -> Vec<(String, i64, String)> {
    let mut v: Vec<_> = r.iter().filter(|(_, x)| !x.1).map(|(id, x)| (id.clone(), x.0, x.2.clone())).collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn replicas_converge_to_lww_over_accepted_changes(ops in prop::collection::vec(op(), 1..60), shuffle in any::<u64>()) {
        // the engine over the storage of the suite's backend (SQLite file or PostgreSQL schema)
        let dir = tempfile::tempdir().unwrap();
        let store = finwise_server::storage::open(&finwise_testkit::base_config(dir.path())).unwrap();
        let tenant_id = TenantId::parse(TENANT).unwrap();
        let mut db = store.open_tenant(&tenant_id).unwrap();
        let ids: Vec<String> = (0..3).map(|i| format!("00000000-0000-4000-8000-00000000000{i}")).collect();
        let mut sent: Vec<Vec<SyncQueueEntry>> = vec![Vec::new(); 3];
        let mut replicas: Vec<Replica> = vec![HashMap::new(); 3];
        let mut inbox: Vec<Vec<Value>> = vec![Vec::new(); 3];
        // The independent oracle: (ts, deleted, name, content) per entity, folded with the rule.
        let mut oracle: HashMap<String, (i64, bool, String)> = HashMap::new();
        let mut seen_entries: HashMap<String, ()> = HashMap::new();
        let now = BASE_MS + 1_000_000;
        let limits = engine::Limits { max_clock_skew_ms: 300_000 };

        for (n, o) in ops.iter().enumerate() {
            let entry = match o.retry_of.and_then(|i| sent[o.writer].get(i % sent[o.writer].len().max(1)).cloned()) {
                Some(e) => e,
                None => {
                    let id = &ids[o.entity];
                    let ts = time::format_ms(BASE_MS + o.ts_offset);
                    let (op, payload) = match o.kind {
                        0 => (Operation::Create, json!({"id": id, "name": format!("n{}", o.name), "updated_at": ts})),
                        1 => (Operation::Update, json!({"id": id, "name": format!("n{}", o.name), "updated_at": ts})),
                        _ => (Operation::Delete, json!({"id": id, "updated_at": ts})),
                    };
                    SyncQueueEntry {
                        id: format!("w{}-e{n}", o.writer), tenant_id: TENANT.into(), entity_type: "Tag".into(),
                        entity_id: id.clone(), operation_type: op, payload, timestamp: Some(BASE_MS), fields: None,
                    }
                }
            };
            sent[o.writer].push(entry.clone());
            let prepared = engine::prepare(entry.clone(), TENANT, now, limits).unwrap();
            let item = Item::Ready(Box::new(prepared.clone()));
            let outcome = db.write(|txn| engine::apply(txn, TENANT, &item, now)).unwrap();
            let Reply::Ack(ack) = &outcome.reply else { panic!("unexpected nack {:?}", outcome.reply) };

            // Oracle: a new entry id is an accepted change, folded by the documented rule.
            if seen_entries.insert(entry.id.clone(), ()).is_none() {
                let deleted = entry.operation_type == Operation::Delete;
                let name = prepared.entity.as_ref().map(|e| e["name"].as_str().unwrap().to_owned()).unwrap_or_default();
                let stored = oracle.get(&entry.entity_id).cloned();
                let stored_v = stored.as_ref().map(|(ts, d, content)| lww::StoredVersion { updated_at_ms: *ts, deleted: *d, content });
                let incoming = lww::StoredVersion { updated_at_ms: prepared.updated_at_ms, deleted, content: &name };
                if let lww::Decision::Apply { updated_at_ms, .. } = lww::decide(stored_v.as_ref(), &incoming) {
                    oracle.insert(entry.entity_id.clone(), (updated_at_ms, deleted, name.clone()));
                }
            } else {
                prop_assert!(ack.duplicate, "a retried entry is acked as duplicate");
                prop_assert!(outcome.broadcast.is_none(), "and not re-broadcast");
            }

            // The writer's replica takes its own version when the server applied it.
            if ack.applied && !ack.duplicate {
                let ts = time::parse_ms(ack.updated_at.as_deref().unwrap()).unwrap();
                let deleted = entry.operation_type == Operation::Delete;
                let name = entry.payload.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                if lww::client_accepts(replicas[o.writer].get(&entry.entity_id).map(|v| v.0), false, ts) {
                    replicas[o.writer].insert(entry.entity_id.clone(), (ts, deleted, name));
                }
            }
            if let Some(b) = &outcome.broadcast {
                for (w, q) in inbox.iter_mut().enumerate() {
                    if w != o.writer { q.push(serde_json::from_str(b).unwrap()); }
                }
            }
            if let Some(t) = &outcome.to_writer {
                inbox[o.writer].push(serde_json::from_str(t).unwrap());
            }
        }

        // Deliver every inbox in a scrambled order.
        let mut state = shuffle;
        for (w, q) in inbox.iter_mut().enumerate() {
            finwise_testkit::scramble(q, &mut state);
            for m in q.iter() { deliver(&mut replicas[w], m); }
        }

        let mut server: Replica = HashMap::new();
        store.read(&tenant_id, |r: &mut dyn TenantReader| {
            r.live_since(0, &mut |_, json| {
                let v: Value = serde_json::from_str(json).unwrap();
                let ts = time::parse_ms(v["updated_at"].as_str().unwrap()).unwrap();
                server.insert(v["id"].as_str().unwrap().into(), (ts, false, v["name"].as_str().unwrap().into()));
                true
            })
        }).unwrap();
        let server_live = live(&server);
        prop_assert_eq!(&server_live, &live(&oracle), "server state is LWW over the accepted changes");
        for (w, r) in replicas.iter().enumerate() {
            prop_assert_eq!(&live(r), &server_live, "replica {} converged", w);
        }
    }
}
