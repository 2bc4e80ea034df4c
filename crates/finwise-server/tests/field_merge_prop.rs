//! Property test of field-level merge: random interleavings of creates, whole updates,
//! field-level updates (random field sets) and deletes from several devices with skewed clocks,
//! retried entries, and every device's inbox delivered in a scrambled order. Checks that
//!
//! 1. every replica converges to the server's entity (values and `updated_at`);
//! 2. the server equals an oracle written here from the rule as documented (per-field value and
//!    stamp, version stamp, tombstones), not from the engine's code;
//! 3. for every field of every live entity, the value is that of the write with the latest stamp
//!    among the writes that named the field since the entity was last (re)created — when that
//!    latest stamp is not shared by another write (a tie goes to the later arrival).

use std::collections::HashMap;

use finwise_protocol::{
    lww,
    messages::{Operation, SyncQueueEntry},
    time,
};
use finwise_server::{
    engine::{self, Item, Reply},
    TenantId,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const TENANT: &str = "7a1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f";
const BASE_MS: i64 = 1_790_000_000_000;
/// The Tag fields the devices edit (all but `id`).
const FIELDS: [&str; 4] = ["name", "parentTagId", "color", "icon"];

#[derive(Debug, Clone)]
struct Op {
    device: usize,
    entity: usize,
    /// 0 create, 1 whole update, 2 and 3 field-level update, 4 delete
    kind: u8,
    /// bit i: field i is listed (field-level) and set to a new value
    field_bits: u8,
    /// the device's clock: a stamp on a coarse grid (ties happen) plus its skew
    tick: i64,
    value: u8,
    retry_of: Option<usize>,
}

fn op() -> impl Strategy<Value = Op> {
    (0..3usize, 0..2usize, 0..5u8, 1..16u8, 0..8i64, 0..3u8, prop::option::weighted(0.15, 0..40usize)).prop_map(
        |(device, entity, kind, field_bits, tick, value, retry_of)| Op {
            device,
            entity,
            kind,
            field_bits,
            tick,
            value,
            retry_of,
        },
    )
}

/// The oracle's entity: per field (value, stamp), the version stamp, and whether it is deleted.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    fields: HashMap<&'static str, (Value, i64)>,
    version: i64,
    deleted: bool,
}

fn value_of(field: &str, o: &Op) -> Value {
    match (field, o.value) {
        ("name", v) => json!(format!("name{v}-d{}", o.device)),
        (_, 0) => Value::Null,
        (f, v) => json!(format!("{f}{v}")),
    }
}

/// The documented rule, folded by arrival. Returns whether the write was applied.
fn oracle(
    model: &mut Option<Model>,
    op: Operation,
    listed: Option<&[&'static str]>,
    values: &Map<String, Value>,
    at: i64,
) -> bool {
    let whole = |at: i64| Model {
        fields: FIELDS.iter().map(|f| (*f, (values.get(*f).cloned().unwrap_or(Value::Null), at))).collect(),
        version: at,
        deleted: false,
    };
    let uniform = |m: &Model| m.fields.values().all(|(_, s)| *s == m.version);
    let content_equal = |m: &Model| FIELDS.iter().all(|f| m.fields[f].0 == *values.get(*f).unwrap_or(&Value::Null));
    let live = model.as_ref().filter(|m| !m.deleted).cloned();
    // field by field: a field-level update, or a whole write not newer than a merged entity
    let by_field = match (op, listed, &live) {
        (Operation::Update, Some(_), _) => true,
        (Operation::Delete, _, _) => false,
        (_, None, Some(m)) => !uniform(m) && at <= m.version,
        _ => false,
    };
    if by_field {
        let Some(mut m) = live else { return false };
        let names: Vec<&'static str> = listed.map_or(FIELDS.to_vec(), <[_]>::to_vec);
        let mut taken = false;
        for f in names {
            let new = values.get(f).cloned().unwrap_or(Value::Null);
            let (old, stamp) = m.fields[f].clone();
            let s = if at > stamp {
                at
            } else if at == stamp && old != new {
                stamp + 1
            } else {
                continue;
            };
            m.fields.insert(f, (new, s));
            taken = true;
        }
        if taken {
            let latest = m.fields.values().map(|(_, s)| *s).max().unwrap();
            m.version = latest.max(m.version + 1);
            *model = Some(m);
        }
        return taken;
    }
    // the whole-entity rule
    let deleting = op == Operation::Delete;
    match model.clone() {
        None => {
            *model =
                Some(if deleting { Model { fields: HashMap::new(), version: at, deleted: true } } else { whole(at) });
            true
        }
        Some(m) if at > m.version => {
            *model =
                Some(if deleting { Model { fields: HashMap::new(), version: at, deleted: true } } else { whole(at) });
            true
        }
        Some(m) if at < m.version => false,
        Some(m) => {
            let same = m.deleted == deleting && (deleting || content_equal(&m));
            if !same {
                let at = m.version + 1;
                *model = Some(if deleting {
                    Model { fields: HashMap::new(), version: at, deleted: true }
                } else {
                    whole(at)
                });
            }
            true
        }
    }
}

/// A write that reached a live entity: (arrival, stamp, fields it named, its values).
type Written = (usize, i64, Vec<&'static str>, Map<String, Value>);

/// A replica: id → (updated_at, deleted, entity).
type Replica = HashMap<String, (i64, bool, Value)>;

fn deliver(replica: &mut Replica, msg: &Value) {
    let e = msg["data"]["single_entity"].clone();
    let id = e["id"].as_str().unwrap().to_owned();
    let incoming = time::parse_ms(msg["updated_at"].as_str().unwrap()).unwrap();
    if lww::client_accepts(replica.get(&id).map(|v| v.0), false, incoming) {
        replica.insert(id, (incoming, msg["operation_type"] == "delete", e));
    }
}

fn live(r: &Replica) -> Vec<(String, i64, Value)> {
    let mut v: Vec<_> = r.iter().filter(|(_, x)| !x.1).map(|(id, x)| (id.clone(), x.0, x.2.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn field_level_edits_converge_and_the_latest_stamp_of_each_field_wins(
        ops in prop::collection::vec(op(), 1..60),
        skew in prop::array::uniform3(-3i64..3),
        shuffle in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = finwise_server::storage::open(&finwise_testkit::base_config(dir.path())).unwrap();
        let tenant_id = TenantId::parse(TENANT).unwrap();
        let mut db = store.open_tenant(&tenant_id).unwrap();
        let ids: Vec<String> = (0..2).map(|i| format!("00000000-0000-4000-8000-00000000010{i}")).collect();
        let mut sent: Vec<Vec<SyncQueueEntry>> = vec![Vec::new(); 3];
        let mut replicas: Vec<Replica> = vec![HashMap::new(); 3];
        let mut inbox: Vec<Vec<Value>> = vec![Vec::new(); 3];
        let mut models: HashMap<String, Option<Model>> = HashMap::new();
        // per entity, since its last (re)creation: (arrival, stamp, listed fields, values)
        let mut history: HashMap<String, Vec<Written>> = HashMap::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        let now = BASE_MS + 1_000_000;
        let limits = engine::Limits { max_clock_skew_ms: 300_000 };

        for (n, o) in ops.iter().enumerate() {
            let retry = o.retry_of.and_then(|i| sent[o.device].get(i % sent[o.device].len().max(1)).cloned());
            let entry = retry.unwrap_or_else(|| {
                let id = &ids[o.entity];
                // a coarse clock (ties between devices are common) with a per-device skew
                let at = time::format_ms(BASE_MS + o.tick * 10 + skew[o.device]);
                let listed: Vec<&str> =
                    FIELDS.iter().enumerate().filter(|(i, _)| o.field_bits & (1 << i) != 0).map(|(_, f)| *f).collect();
                let mut payload = json!({"id": id, "updated_at": at});
                let (op, fields) = match o.kind {
                    0 | 1 => {
                        for f in FIELDS { payload[f] = value_of(f, o); }
                        (if o.kind == 0 { Operation::Create } else { Operation::Update }, None)
                    }
                    2 | 3 => {
                        for f in &listed { payload[*f] = value_of(f, o); }
                        (Operation::Update, Some(listed.iter().map(|f| f.to_string()).collect()))
                    }
                    _ => (Operation::Delete, None),
                };
                SyncQueueEntry {
                    id: format!("d{}-e{n}", o.device), tenant_id: TENANT.into(), entity_type: "Tag".into(),
                    entity_id: id.clone(), operation_type: op, payload, timestamp: Some(BASE_MS), fields,
                }
            });
            sent[o.device].push(entry.clone());
            let prepared = engine::prepare(entry.clone(), TENANT, now, limits).unwrap();
            let item = Item::Ready(Box::new(prepared.clone()));
            let outcome = db.write(|txn| engine::apply(txn, TENANT, &item, now)).unwrap();
            let Reply::Ack(ack) = &outcome.reply else { panic!("unexpected nack {:?}", outcome.reply) };

            if seen.insert(entry.id.clone(), ()).is_none() {
                let listed: Option<Vec<&'static str>> = entry
                    .fields
                    .as_ref()
                    .map(|f| FIELDS.iter().copied().filter(|n| f.iter().any(|x| x == n)).collect());
                let values = prepared.entity.clone().unwrap_or_default();
                let model = models.entry(entry.entity_id.clone()).or_insert(None);
                let was_live = model.as_ref().is_some_and(|m| !m.deleted);
                let applied = oracle(model, entry.operation_type, listed.as_deref(), &values, prepared.updated_at_ms);
                prop_assert_eq!(ack.applied, applied, "applied flag of {:?}", entry);
                let is_live = model.as_ref().is_some_and(|m| !m.deleted);
                let h = history.entry(entry.entity_id.clone()).or_default();
                if !was_live && is_live {
                    h.clear();
                }
                if is_live && entry.operation_type != Operation::Delete {
                    h.push((n, prepared.updated_at_ms, listed.unwrap_or_else(|| FIELDS.to_vec()), values));
                }
            } else {
                prop_assert!(ack.duplicate, "a retried entry is acked as duplicate");
                prop_assert!(outcome.broadcast.is_none(), "and not re-broadcast");
            }
            if let Some(b) = &outcome.broadcast {
                for (d, q) in inbox.iter_mut().enumerate() {
                    if d != o.device { q.push(serde_json::from_str(b).unwrap()); }
                }
            }
            if let Some(t) = &outcome.to_writer {
                inbox[o.device].push(serde_json::from_str(t).unwrap());
            }
            // the writer's own applied create/whole version (no echo when nothing was restamped)
            if ack.applied && !ack.duplicate && outcome.to_writer.is_none() {
                if let Some(b) = &outcome.broadcast {
                    deliver(&mut replicas[o.device], &serde_json::from_str(b).unwrap());
                }
            }
        }

        let mut state = shuffle;
        for (d, q) in inbox.iter_mut().enumerate() {
            finwise_testkit::scramble(q, &mut state);
            for m in q.iter() { deliver(&mut replicas[d], m); }
        }

        let mut server: Replica = HashMap::new();
        store.read(&tenant_id, |r| {
            r.live_since(0, &mut |_, json| {
                let v: Value = serde_json::from_str(json).unwrap();
                let ts = time::parse_ms(v["updated_at"].as_str().unwrap()).unwrap();
                server.insert(v["id"].as_str().unwrap().into(), (ts, false, v));
                true
            })
        }).unwrap();
        for (id, model) in &models {
            match (model.as_ref().filter(|m| !m.deleted), server.get(id)) {
                (None, None) => {}
                (Some(m), Some((ts, _, e))) => {
                    prop_assert_eq!(*ts, m.version, "version of {}", id);
                    for f in FIELDS {
                        prop_assert_eq!(&e[f], &m.fields[f].0, "{} of {}", f, id);
                        // the latest stamp wins, when no other write shares it
                        let named: Vec<_> = history[id].iter().filter(|h| h.2.contains(&f)).collect();
                        let latest = named.iter().map(|h| h.1).max().unwrap();
                        let at_latest: Vec<_> = named.iter().filter(|h| h.1 == latest).collect();
                        if at_latest.len() == 1 {
                            let want = at_latest[0].3.get(f).cloned().unwrap_or(Value::Null);
                            prop_assert_eq!(&e[f], &want, "{} of {}: the write stamped {} is the latest", f, id, latest);
                        }
                    }
                }
                (m, s) => prop_assert!(false, "{}: oracle {:?}, server {:?}", id, m, s),
            }
        }
        let server_live = live(&server);
        for (d, r) in replicas.iter().enumerate() {
            prop_assert_eq!(&live(r), &server_live, "device {} converged", d);
        }
    }
}
