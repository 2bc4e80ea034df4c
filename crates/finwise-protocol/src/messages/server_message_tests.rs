//! [`ServerMessage::parse`] on the messages as the server builds them (the same constructors and
//! field values as `finwise-server`'s `ws.rs`, `engine.rs` and `loads.rs`) and on literal frames
//! where the shape is fixed; every one serialises back to the same bytes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, value::RawValue, Value};

use super::*;
use crate::{time, EntityType, PROTOCOL_VERSION};

/// Parses `text`, checks the kind and that serialising gives `text` back byte for byte.
fn parse_same(text: &str, kind: &str) -> ServerMessage {
    let m = ServerMessage::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(m.kind(), kind, "{text}");
    assert_eq!(serde_json::to_string(&m).unwrap(), text, "round trip");
    m
}

/// What the server sends: serialised as `ws.rs` does (`serde_json::to_string`).
fn sent<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap()
}

const MS: i64 = 1_795_618_222_061;

fn raw(v: Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

#[test]
fn status_online_and_shutdown() {
    let hello = StatusMessage {
        r#type: "status".into(),
        status: "online".into(),
        protocol: Some(PROTOCOL_VERSION),
        server_time: Some(time::format_ms(MS)),
        message: None,
    };
    let text = sent(&hello);
    assert_eq!(text, r#"{"type":"status","status":"online","protocol":2,"server_time":"2026-11-25T14:50:22.061Z"}"#);
    let ServerMessage::Status(s) = parse_same(&text, "status") else { panic!() };
    assert_eq!((s.status.as_str(), s.protocol), ("online", Some(2)));
    assert_eq!(s.server_time.as_deref().and_then(time::parse_ms), Some(MS));

    let bye = StatusMessage {
        r#type: "status".into(),
        status: "shutdown".into(),
        protocol: None,
        server_time: None,
        message: Some("server is shutting down".into()),
    };
    let text = sent(&bye);
    assert_eq!(text, r#"{"type":"status","status":"shutdown","message":"server is shutting down"}"#);
    let ServerMessage::Status(s) = parse_same(&text, "status") else { panic!() };
    assert_eq!(s.status, "shutdown");
}

fn entry(op: Operation) -> SyncQueueEntry {
    SyncQueueEntry {
        id: "e1".into(),
        tenant_id: "t1".into(),
        entity_type: "Account".into(),
        entity_id: "a1".into(),
        operation_type: op,
        payload: json!({"id": "a1"}),
        timestamp: Some(MS),
        fields: None,
    }
}

/// `engine::ack`.
fn ack(seq: i64, applied: bool, duplicate: bool) -> SyncAck {
    SyncAck {
        r#type: "sync_ack".into(),
        id: "e1".into(),
        status: "processed".into(),
        entity_id: "a1".into(),
        entity_type: "Account".into(),
        operation_type: Operation::Update,
        seq,
        applied,
        duplicate,
        updated_at: Some(time::format_ms(MS)),
    }
}

#[test]
fn sync_ack_and_nack() {
    let text = sent(&ack(7, true, false));
    assert_eq!(
        text,
        r#"{"type":"sync_ack","id":"e1","status":"processed","entityId":"a1","entityType":"Account","operationType":"update","seq":7,"applied":true,"updated_at":"2026-11-25T14:50:22.061Z"}"#
    );
    let ServerMessage::SyncAck(a) = parse_same(&text, "sync_ack") else { panic!() };
    assert_eq!(a, ack(7, true, false));
    let ServerMessage::SyncAck(a) = parse_same(&sent(&ack(3, false, true)), "sync_ack") else { panic!() };
    assert!(a.duplicate && !a.applied);

    let text = sent(&SyncNack::for_entry(&entry(Operation::Create), NackReason::ClockSkew, "too far ahead"));
    assert_eq!(
        text,
        r#"{"type":"sync_nack","id":"e1","status":"failed","entityId":"a1","entityType":"Account","operationType":"create","reason":"clock_skew","detail":"too far ahead","retryable":false}"#
    );
    let ServerMessage::SyncNack(n) = parse_same(&text, "sync_nack") else { panic!() };
    assert_eq!(n, SyncNack::for_entry(&entry(Operation::Create), NackReason::ClockSkew, "too far ahead"));
    let text = sent(&SyncNack::new("e2", NackReason::Overloaded, "retry with backoff"));
    let ServerMessage::SyncNack(n) = parse_same(&text, "sync_nack") else { panic!() };
    assert_eq!((n.reason, n.retryable, n.entity_id), (NackReason::Overloaded, true, None));
}

#[test]
fn sync_batch_result() {
    // ws.rs: acks and nacks of one batch, in entry order
    let results: Vec<BatchItemResult> = vec![
        ack(7, true, false).into(),
        ack(5, false, true).into(),
        SyncNack::new("", NackReason::ValidationError, "id: field required").into(),
        SyncNack::new("e4", NackReason::StorageError, "").into(),
    ];
    let text = sent(&SyncBatchResult { r#type: "sync_batch_result".into(), results: results.clone() });
    let ServerMessage::SyncBatchResult(b) = parse_same(&text, "sync_batch_result") else { panic!() };
    assert_eq!(b.results, results);
    assert_eq!(b.results[2].reason, Some(NackReason::ValidationError));

    let literal = r#"{"type":"sync_batch_result","results":[{"id":"e1","status":"processed","seq":1,"applied":true,"updated_at":"2026-11-25T14:50:22.061Z"},{"id":"e2","status":"failed","reason":"overloaded","detail":"slow down"}]}"#;
    let ServerMessage::SyncBatchResult(b) = parse_same(literal, "sync_batch_result") else { panic!() };
    assert_eq!((b.results[1].status.as_str(), b.results[1].reason), ("failed", Some(NackReason::Overloaded)));
    let empty = r#"{"type":"sync_batch_result","results":[]}"#;
    parse_same(empty, "sync_batch_result");
}

#[test]
fn error_messages() {
    let from_parser = ErrorMessage::from(parse_client_message(r#"{"type":"nope"}"#).unwrap_err());
    let text = sent(&from_parser);
    assert_eq!(
        text,
        r#"{"type":"error","code":"unknown_type","message":"unknown message type 'nope'","original_type":"nope"}"#
    );
    let ServerMessage::Error(e) = parse_same(&text, "error") else { panic!() };
    assert_eq!((e.code, e.original_type.as_deref()), (ErrorCode::UnknownType, Some("nope")));

    for e in [
        ErrorMessage::tenant_mismatch("Failed to load initial data"),
        ErrorMessage::new(ErrorCode::RateLimited, "message rate limit exceeded; slow down"),
        ErrorMessage::new(ErrorCode::TokenExpired, "the access token has expired: reconnect with a refreshed token"),
        ErrorMessage::new(ErrorCode::BinaryNotSupported, "send JSON in text frames"),
    ] {
        let ServerMessage::Error(back) = parse_same(&sent(&e), "error") else { panic!() };
        assert_eq!((back.code, back.message), (e.code, e.message));
    }
    // a failed load (ws.rs `send_load`)
    let literal = r#"{"type":"error","code":"storage_error","message":"Failed to load initial data: disk I/O error"}"#;
    let ServerMessage::Error(e) = parse_same(literal, "error") else { panic!() };
    assert_eq!(e.code, ErrorCode::StorageError);
}

#[test]
fn ping_and_pong() {
    // The heartbeat: seconds since the server started, a float.
    let text = sent(&Heartbeat::ping(json!(12.345_f64)));
    assert_eq!(text, r#"{"type":"ping","timestamp":12.345}"#);
    let ServerMessage::Ping(p) = parse_same(&text, "ping") else { panic!() };
    assert_eq!(p.timestamp, json!(12.345));
    // A pong echoes whatever the client sent, null when it sent nothing.
    for ts in [json!(MS), json!("abc"), Value::Null, json!({"a": [1]})] {
        let text = sent(&Heartbeat::pong(ts.clone()));
        let ServerMessage::Pong(p) = parse_same(&text, "pong") else { panic!() };
        assert_eq!(p.timestamp, ts);
    }
    let ServerMessage::Pong(p) = parse_same(r#"{"type":"pong","timestamp":1795618222061}"#, "pong") else { panic!() };
    assert_eq!(p.timestamp, json!(MS));
    let m = ServerMessage::parse(r#"{"type":"pong"}"#).unwrap();
    assert!(matches!(m, ServerMessage::Pong(Heartbeat { timestamp: Value::Null, .. })), "{m:?}");
}

#[test]
fn data_status_response() {
    // loads::data_status
    let mut checksums = BTreeMap::new();
    checksums.insert(
        "Account".to_owned(),
        vec![EntityChecksum { entity_id: "a1".into(), checksum: "0123abcd".into(), last_modified: MS / 1000 }],
    );
    checksums.insert("AccountGroup".to_owned(), vec![]);
    let status = DataStatusResponse {
        r#type: "data_status_response".into(),
        tenant_id: "t1".into(),
        entity_checksums: checksums,
        last_sync_time: MS / 1000,
        server_time: MS / 1000,
        tenant_digest: crate::digest::tenant_digest([(EntityType::Account, "a1", "2026-11-25T14:50:22.061Z")]),
        seq: 42,
        entity_count: 1,
    };
    let text = sent(&status);
    let ServerMessage::DataStatusResponse(s) = parse_same(&text, "data_status_response") else { panic!() };
    assert_eq!((s.seq, s.entity_count, s.tenant_digest.as_str()), (42, 1, status.tenant_digest.as_str()));
    assert_eq!(s.entity_checksums["Account"][0].entity_id, "a1");
}

#[test]
fn data_update() {
    // engine::data_update: the stored entity as it is, no `type` key
    let tag = EntityType::Tag.def().normalize(&json!({"id": "t1", "name": "Urlaub"}), MS).unwrap();
    let msg = DataUpdate {
        event_type: "data_update".into(),
        tenant_id: "t1".into(),
        entity_type: EntityType::Tag,
        operation_type: Operation::Update,
        seq: 9,
        updated_at: time::format_ms(MS),
        data: DataUpdateData { single_entity: raw(Value::Object(tag.clone())) },
    };
    let text = sent(&msg);
    assert!(text.starts_with(r#"{"event_type":"data_update","tenant_id":"t1","entity_type":"Tag""#), "{text}");
    let ServerMessage::DataUpdate(u) = parse_same(&text, "data_update") else { panic!() };
    assert_eq!((u.entity_type, u.operation_type, u.seq), (EntityType::Tag, Operation::Update, 9));
    let entity: serde_json::Map<String, Value> = serde_json::from_str(u.data.single_entity.get()).unwrap();
    assert_eq!(entity, tag);

    let delete = r#"{"event_type":"data_update","tenant_id":"t1","entity_type":"Account","operation_type":"delete","seq":10,"updated_at":"2026-11-25T14:50:22.061Z","data":{"single_entity":{"id":"a1"}}}"#;
    let ServerMessage::DataUpdate(u) = parse_same(delete, "data_update") else { panic!() };
    assert_eq!((u.operation_type, u.data.single_entity.get()), (Operation::Delete, r#"{"id":"a1"}"#));
}

/// `loads::stream_load`'s `make`.
fn load(payload: Value, part: Option<u32>, more: bool, deleted: Option<BTreeMap<EntityType, Vec<String>>>) -> String {
    let delta = deleted.is_some();
    sent(&InitialDataLoad {
        event_type: "initial_data_load".into(),
        tenant_id: "t1".into(),
        payload: raw(payload),
        seq: 42,
        deleted,
        reset: false,
        delta,
        part,
        more,
    })
}

/// The payload as `loads::Collections` writes it: every collection, in registry order.
fn collections(tags: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for t in EntityType::ALL {
        let items: Vec<Value> = if *t == EntityType::Tag {
            tags.iter()
                .map(|id| Value::Object(EntityType::Tag.def().normalize(&json!({"id": id, "name": id}), MS).unwrap()))
                .collect()
        } else {
            vec![]
        };
        m.insert(t.collection().into(), Value::Array(items));
    }
    Value::Object(m)
}

#[test]
fn initial_data_load_whole_and_in_chunks() {
    // One message (no chunk_size): no part, no more.
    let text = load(collections(&["x", "y"]), None, false, None);
    assert!(text.starts_with(r#"{"event_type":"initial_data_load","tenant_id":"t1","payload":{"accounts":[]"#));
    let ServerMessage::InitialDataLoad(l) = parse_same(&text, "initial_data_load") else { panic!() };
    assert_eq!((l.part, l.more, l.delta, l.reset, l.seq), (None, false, false, false, 42));
    let payload: serde_json::Map<String, Value> = serde_json::from_str(l.payload.get()).unwrap();
    assert_eq!(payload["tags"].as_array().map(Vec::len), Some(2));

    // chunk_size 2, three entities, a delta: parts 0 and 1 with more, the last one with the
    // deletions; every part carries the same seq.
    let deleted = BTreeMap::from([(EntityType::Account, vec!["a9".to_owned()])]);
    let parts = [
        load(collections(&["a", "b"]), Some(0), true, None),
        load(collections(&["c"]), Some(1), false, Some(deleted.clone())),
    ];
    let parsed: Vec<InitialDataLoad> = parts
        .iter()
        .map(|t| match parse_same(t, "initial_data_load") {
            ServerMessage::InitialDataLoad(l) => l,
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(parsed.iter().map(|l| (l.part, l.more)).collect::<Vec<_>>(), [(Some(0), true), (Some(1), false)]);
    assert_eq!(parsed[0].deleted, None);
    assert_eq!(parsed[1].deleted.as_ref(), Some(&deleted));
    assert!(parsed.iter().all(|l| l.seq == 42));

    let reset = r#"{"event_type":"initial_data_load","tenant_id":"t1","payload":{"accounts":[],"tags":[]},"seq":3,"reset":true}"#;
    let ServerMessage::InitialDataLoad(l) = parse_same(reset, "initial_data_load") else { panic!() };
    assert!(l.reset && !l.delta && !l.more);
}

#[test]
fn what_is_not_a_server_message_is_told_apart() {
    use ServerMessageError as E;
    let err = |t: &str| ServerMessage::parse(t).unwrap_err();
    assert!(matches!(err("{"), E::InvalidJson(_)));
    assert!(matches!(err(r#"{"type":"ping"} x"#), E::InvalidJson(_)));
    for not_object in ["[]", r#"["status","online"]"#, "5", "null", r#""status""#] {
        assert!(matches!(err(not_object), E::NotAnObject), "{not_object}");
    }
    assert!(matches!(err("{}"), E::MissingType));
    assert!(matches!(err(r#"{"type":5,"event_type":null}"#), E::MissingType));
    // the answers to 0.4 requests are not server messages of protocol v2
    let e = err(r#"{"type":"tenant_disconnect_ack","tenant_id":"t","status":"success","message":"m"}"#);
    assert!(matches!(&e, E::UnknownType(t) if t == "tenant_disconnect_ack"), "{e}");
    assert_eq!(e.to_string(), "unknown server message type 'tenant_disconnect_ack'");
    assert!(matches!(err(r#"{"event_type":"queue_changed"}"#), E::UnknownType(t) if t == "queue_changed"));
    // a known kind without its fields
    let e = err(r#"{"type":"sync_batch_result"}"#);
    assert!(matches!(e, E::Invalid { kind: "sync_batch_result", .. }), "{e}");
    assert!(e.to_string().starts_with("invalid sync_batch_result message: missing field `results`"), "{e}");
    let e = err(r#"{"type":"error","code":"no_such_code","message":"m"}"#);
    assert!(matches!(e, E::Invalid { kind: "error", .. }), "{e}");
    let e = err(
        r#"{"event_type":"data_update","tenant_id":"t","entity_type":"Nope","operation_type":"create","seq":1,"updated_at":"x","data":{"single_entity":{}}}"#,
    );
    assert!(matches!(e, E::Invalid { kind: "data_update", .. }), "{e}");
}

#[test]
fn the_kind_is_read_in_the_0_4_order() {
    // `type: status` first, then `event_type`, then `type`; extra keys are ignored.
    let m = ServerMessage::parse(r#"{"type":"status","event_type":"data_update","status":"online"}"#).unwrap();
    assert_eq!(m.kind(), "status");
    let m = ServerMessage::parse(
        r#"{"type":"whatever","event_type":"initial_data_load","tenant_id":"t","payload":{},"seq":1}"#,
    )
    .unwrap();
    assert_eq!(m.kind(), "initial_data_load");
    let m = ServerMessage::parse(r#"{"type":"pong","event_type":"something_new","timestamp":1}"#).unwrap();
    assert_eq!(m.kind(), "pong");
    let m = ServerMessage::parse(r#"{"type":"ping","timestamp":1,"extra":{"nested":[1,2]}}"#).unwrap();
    assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"type":"ping","timestamp":1}"#);
}

// ------------------------------------------------------------------------------ round trip

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9_ .:-]{0,16}", 1 => any::<String>()]
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((text(), json_scalar()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<serde_json::Map<_, _>>()))
}

fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop::option::of(s).boxed()
}

fn entity_type() -> impl Strategy<Value = EntityType> {
    prop::sample::select(EntityType::ALL)
}

fn operation() -> impl Strategy<Value = Operation> {
    prop::sample::select(&[Operation::Create, Operation::Update, Operation::Delete][..])
}

fn nack_reason() -> impl Strategy<Value = NackReason> {
    prop::sample::select(NackReason::ALL)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(
        &[
            ErrorCode::InvalidJson,
            ErrorCode::InvalidMessage,
            ErrorCode::MissingType,
            ErrorCode::UnknownType,
            ErrorCode::ValidationError,
            ErrorCode::TenantMismatch,
            ErrorCode::RateLimited,
            ErrorCode::BinaryNotSupported,
            ErrorCode::TokenExpired,
            ErrorCode::StorageError,
            ErrorCode::BatchTooLarge,
        ][..],
    )
}

fn status() -> impl Strategy<Value = ServerMessage> {
    (text(), opt(any::<u32>()), opt(text()), opt(text())).prop_map(|(status, protocol, server_time, message)| {
        ServerMessage::Status(StatusMessage { r#type: "status".into(), status, protocol, server_time, message })
    })
}

fn sync_ack() -> impl Strategy<Value = SyncAck> {
    (text(), text(), text(), operation(), any::<i64>(), any::<bool>(), any::<bool>(), opt(text())).prop_map(
        |(id, entity_id, entity_type, operation_type, seq, applied, duplicate, updated_at)| SyncAck {
            r#type: "sync_ack".into(),
            id,
            status: "processed".into(),
            entity_id,
            entity_type,
            operation_type,
            seq,
            applied,
            duplicate,
            updated_at,
        },
    )
}

fn sync_nack() -> impl Strategy<Value = SyncNack> {
    (text(), opt(text()), opt(text()), opt(operation()), nack_reason(), text()).prop_map(
        |(id, entity_id, entity_type, operation_type, reason, detail)| SyncNack {
            entity_id,
            entity_type,
            operation_type,
            ..SyncNack::new(&id, reason, detail)
        },
    )
}

fn batch_item() -> impl Strategy<Value = BatchItemResult> {
    prop_oneof![sync_ack().prop_map(BatchItemResult::from), sync_nack().prop_map(BatchItemResult::from)]
}

fn heartbeat() -> impl Strategy<Value = ServerMessage> {
    (any::<bool>(), prop_oneof![json_scalar(), json_object()]).prop_map(|(ping, timestamp)| {
        if ping {
            ServerMessage::Ping(Heartbeat::ping(timestamp))
        } else {
            ServerMessage::Pong(Heartbeat::pong(timestamp))
        }
    })
}

fn data_status() -> impl Strategy<Value = ServerMessage> {
    let checksum = (text(), "[0-9a-f]{32}", any::<i64>())
        .prop_map(|(entity_id, checksum, last_modified)| EntityChecksum { entity_id, checksum, last_modified });
    (
        text(),
        prop::collection::btree_map(text(), prop::collection::vec(checksum, 0..3), 0..3),
        any::<i64>(),
        any::<i64>(),
        "[0-9a-f]{64}",
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(
            |(tenant_id, entity_checksums, last_sync_time, server_time, tenant_digest, seq, entity_count)| {
                ServerMessage::DataStatusResponse(DataStatusResponse {
                    r#type: "data_status_response".into(),
                    tenant_id,
                    entity_checksums,
                    last_sync_time,
                    server_time,
                    tenant_digest,
                    seq,
                    entity_count,
                })
            },
        )
}

fn data_update_msg() -> impl Strategy<Value = ServerMessage> {
    (text(), entity_type(), operation(), any::<i64>(), text(), json_object()).prop_map(
        |(tenant_id, entity_type, operation_type, seq, updated_at, entity)| {
            ServerMessage::DataUpdate(DataUpdate {
                event_type: "data_update".into(),
                tenant_id,
                entity_type,
                operation_type,
                seq,
                updated_at,
                data: DataUpdateData { single_entity: raw(entity) },
            })
        },
    )
}

fn initial_load_msg() -> impl Strategy<Value = ServerMessage> {
    let payload =
        prop::collection::vec((entity_type(), prop::collection::vec(json_object(), 0..3)), 0..4).prop_map(|cols| {
            Value::Object(cols.into_iter().map(|(t, items)| (t.collection().into(), Value::Array(items))).collect())
        });
    let deleted = prop::collection::btree_map(entity_type(), prop::collection::vec(text(), 0..3), 0..3);
    (text(), payload, any::<i64>(), opt(deleted), any::<bool>(), any::<bool>(), opt(any::<u32>()), any::<bool>())
        .prop_map(|(tenant_id, payload, seq, deleted, reset, delta, part, more)| {
            ServerMessage::InitialDataLoad(InitialDataLoad {
                event_type: "initial_data_load".into(),
                tenant_id,
                payload: raw(payload),
                seq,
                deleted,
                reset,
                delta,
                part,
                more,
            })
        })
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        status(),
        sync_ack().prop_map(ServerMessage::SyncAck),
        sync_nack().prop_map(ServerMessage::SyncNack),
        prop::collection::vec(batch_item(), 0..4).prop_map(|results| ServerMessage::SyncBatchResult(SyncBatchResult {
            r#type: "sync_batch_result".into(),
            results
        })),
        (error_code(), text(), opt(text())).prop_map(|(code, message, original_type)| {
            ServerMessage::Error(ErrorMessage { original_type, ..ErrorMessage::new(code, message) })
        }),
        heartbeat(),
        data_status(),
        data_update_msg(),
        initial_load_msg(),
    ]
}

proptest! {
    /// Whatever the server can send parses as the same kind and serialises to the same bytes.
    #[test]
    fn every_server_message_round_trips_byte_for_byte(m in server_message()) {
        let text = serde_json::to_string(&m).unwrap();
        let back = ServerMessage::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back.kind(), m.kind());
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}
