//! Criterion benchmarks of the engine's hot paths: parsing a frame, preparing an entry
//! (validation + normalisation), applying a group to a tenant database, serialising a
//! `data_update`, and the tenant digest. Run: `cargo bench -p finwise-bench --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use finwise_protocol::{digest, messages::parse_client_message, EntityType};
use finwise_server::{
    engine::{self, Item, Limits},
    storage::sqlite::SqliteTenant,
};
use serde_json::json;

const TENANT: &str = "6f1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f";
const NOW: i64 = 1_790_000_000_000;
const LIMITS: Limits = Limits { max_clock_skew_ms: 300_000 };

/// An Account entry with random entry and entity ids, as clients send them (sequential ids would
/// make every index insert an append and flatter `apply`).
fn account_frame(_i: usize) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    json!({"type": "process_sync_entry", "payload": {
        "id": uuid::Uuid::new_v4().to_string(), "tenantId": TENANT, "entityType": "Account", "entityId": id, "operationType": "create",
        "timestamp": NOW - 1000, "status": "processing", "attempts": 1,
        "payload": {"id": id, "name": "Girokonto", "description": "", "note": "", "accountType": "giro", "isActive": true,
            "isOfflineBudget": false, "accountGroupId": "g", "sortOrder": 0, "iban": "DE00", "balance": 1234.5,
            "creditLimit": 0, "offset": 0, "logo_path": null, "updated_at": "2026-09-21T12:26:39.000Z"}}})
    .to_string()
}

fn prepared(i: usize) -> Item {
    match parse_client_message(&account_frame(i)).unwrap() {
        finwise_protocol::messages::ClientMessage::ProcessSyncEntry(Ok(e)) => {
            Item::Ready(Box::new(engine::prepare(*e, TENANT, NOW, LIMITS).unwrap()))
        }
        other => panic!("{other:?}"),
    }
}

fn hot_paths(c: &mut Criterion) {
    let frame = account_frame(1);
    c.bench_function("parse process_sync_entry", |b| b.iter(|| parse_client_message(&frame).unwrap()));

    c.bench_function("prepare (validate + normalise) Account", |b| {
        b.iter_batched(
            || match parse_client_message(&frame).unwrap() {
                finwise_protocol::messages::ClientMessage::ProcessSyncEntry(Ok(e)) => *e,
                _ => unreachable!(),
            },
            |e| engine::prepare(e, TENANT, NOW, LIMITS).unwrap(),
            BatchSize::SmallInput,
        )
    });

    let mut group = c.benchmark_group("apply group of 1000 (one transaction, real file)");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteTenant::open(&dir.path().join("t.db")).unwrap();
    let mut next = 0usize;
    group.bench_function("apply", |b| {
        b.iter_batched(
            || {
                let items: Vec<Item> = (next..next + 1000).map(prepared).collect();
                next += 1000;
                items
            },
            |items| {
                db.write(|txn| {
                    for it in &items {
                        engine::apply(txn, TENANT, it, NOW)?;
                    }
                    Ok(())
                })
                .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let record = finwise_server::storage::EntityRecord {
        entity_type: EntityType::Account,
        id: "a".into(),
        seq: 1,
        updated_at_ms: NOW,
        deleted: false,
        data: serde_json::to_string(&json!({"id": "a", "name": "Girokonto", "balance": 1.0})).unwrap(),
        changed_at_ms: NOW,
        stamps: None,
        created_seq: 1,
    };
    c.bench_function("serialise data_update", |b| {
        b.iter(|| engine::data_update(TENANT, &record, finwise_protocol::messages::Operation::Update))
    });

    let ids: Vec<String> = (0..100_000).map(|i| format!("{i:036}")).collect();
    let mut group = c.benchmark_group("tenant digest");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.sample_size(10);
    group.bench_function("100k entities", |b| {
        b.iter(|| {
            digest::tenant_digest(ids.iter().map(|id| (EntityType::Tag, id.as_str(), "2026-09-21T12:26:39.000Z")))
        })
    });
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
