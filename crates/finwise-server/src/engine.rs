//! The sync engine: validation of an entry and LWW application, generic over the entity registry.
//!
//! [`prepare`] runs on the connection's task and needs no database: it checks the envelope,
//! resolves the entity type in the registry, derives the version timestamp, refuses clock skew
//! and normalises the payload. [`apply`] runs on the tenant's writer inside the group-commit
//! transaction: idempotency check, LWW decision ([`finwise_protocol::lww::decide`]), write,
//! and the messages to send once the transaction has committed.

use axum::extract::ws::Utf8Bytes;
use finwise_protocol::{
    entity::UPDATED_AT,
    lww::{self, Decision, StoredVersion},
    merge::{self, Stamps},
    messages::{NackReason, Operation, SyncAck, SyncNack, SyncQueueEntry},
    time, EntityType,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::storage::{AppliedEntry, EntityRecord, Result, StorageError, WriteTxn};

/// An entry that passed validation, ready for the writer.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub entry: SyncQueueEntry,
    pub entity_type: EntityType,
    pub updated_at_ms: i64,
    /// The normalised entity for create/update; `None` for delete.
    pub entity: Option<Map<String, Value>>,
    /// A whole create/update's entity as JSON, as it is stored unless a tie restamps it (written
    /// here, on the connection's task, not on the tenant's writer); empty otherwise.
    pub data: String,
    /// The entity without timestamps, for tie detection.
    pub content_key: String,
    /// Identifies what the entry asks for, for idempotent retries.
    pub content_hash: String,
}

/// One item of a writer job: either prepared, or already refused (kept to preserve order).
#[derive(Debug, Clone)]
pub enum Item {
    Ready(Box<Prepared>),
    Refused(SyncNack),
}

impl Item {
    /// The NACK for this item when it cannot be applied: a refused item keeps its own reason,
    /// a ready one is refused with `reason`.
    pub fn nack(&self, reason: NackReason, detail: &str) -> Outcome {
        match self {
            Item::Ready(p) => Outcome::nack(SyncNack::for_entry(&p.entry, reason, detail)),
            Item::Refused(n) => Outcome::nack(n.clone()),
        }
    }
}

/// The answer to one entry.
#[derive(Debug, Clone)]
pub enum Reply {
    Ack(SyncAck),
    Nack(SyncNack),
}

/// What the writer produced for one entry: the reply to its writer, the `data_update` for the
/// tenant's other connections, and a `data_update` for the writer itself when the stored version
/// differs from what it sent (it lost, or its tie was restamped).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    pub broadcast: Option<Utf8Bytes>,
    pub to_writer: Option<Utf8Bytes>,
}

impl Outcome {
    pub fn nack(n: SyncNack) -> Self {
        Outcome { reply: Reply::Nack(n), broadcast: None, to_writer: None }
    }
}

/// Limits the engine enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far `updated_at` may be ahead of the server clock.
    pub max_clock_skew_ms: i64,
}

/// Validates an entry for the socket's tenant. Never touches storage.
#[allow(clippy::result_large_err)] // the Err is the NACK sent back, moved as it is; refusals are rare
pub fn prepare(
    mut entry: SyncQueueEntry,
    socket_tenant: &str,
    now_ms: i64,
    limits: Limits,
) -> Result<Prepared, SyncNack> {
    if entry.tenant_id != socket_tenant {
        return Err(SyncNack::for_entry(
            &entry,
            NackReason::TenantMismatch,
            format!("tenantId {} is not this connection's tenant", entry.tenant_id),
        ));
    }
    let Some(entity_type) = EntityType::parse(&entry.entity_type) else {
        let detail = format!("entityType '{}' is not a synced entity type", entry.entity_type);
        return Err(SyncNack::for_entry(&entry, NackReason::UnknownEntityType, detail));
    };
    let invalid = |entry: &SyncQueueEntry, field: &str, msg: &str| {
        SyncNack::for_entry(entry, NackReason::ValidationError, format!("{field}: {msg}"))
    };
    let payload_obj = entry.payload.as_object();
    let stamp = |key: &str| -> Result<Option<i64>, ()> {
        match payload_obj.and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => time::parse_ms(s).map(Some).ok_or(()),
            Some(_) => Err(()),
        }
    };
    let updated_at_ms = match (stamp(UPDATED_AT), stamp("updatedAt")) {
        (Err(()), _) => return Err(invalid(&entry, "payload.updated_at", "expected an ISO-8601 timestamp")),
        (Ok(Some(ms)), _) | (Ok(None), Ok(Some(ms))) => ms,
        _ => entry.timestamp.unwrap_or(now_ms),
    };
    if updated_at_ms > now_ms + limits.max_clock_skew_ms {
        let detail = format!(
            "updated_at {} is more than {} s ahead of the server clock {}",
            time::format_ms(updated_at_ms),
            limits.max_clock_skew_ms / 1000,
            time::format_ms(now_ms)
        );
        return Err(SyncNack::for_entry(&entry, NackReason::ClockSkew, detail));
    }
    if updated_at_ms < 0 {
        return Err(invalid(&entry, "payload.updated_at", "before 1970"));
    }
    let def = entity_type.def();
    let (entity, content_key, data) = match entry.operation_type {
        Operation::Delete => (None, String::new(), String::new()),
        Operation::Create | Operation::Update => {
            // Moved, not cloned: nothing reads the raw payload after this (the normalised entity
            // is what is stored and sent).
            let mut payload = std::mem::take(&mut entry.payload);
            if let Some(obj) = payload.as_object_mut() {
                match obj.get("id") {
                    None | Some(Value::Null) => {
                        obj.insert("id".into(), Value::from(entry.entity_id.clone()));
                    }
                    Some(Value::String(id)) if *id == entry.entity_id => {}
                    Some(_) => return Err(invalid(&entry, "payload.id", "must equal entityId")),
                }
            }
            let payload_error = |entry: &SyncQueueEntry, e: finwise_protocol::ValidationError| {
                invalid(entry, &format!("payload.{}", e.field), &e.message)
            };
            match &entry.fields {
                // field-level: only the listed fields, decided one by one against the stored ones
                Some(names) => {
                    if let Some(bad) = def.unknown_field(names) {
                        let msg = format!("'{bad}' is not a field of {entity_type} that an update can change");
                        return Err(invalid(&entry, "fields", &msg));
                    }
                    let fields = def.normalize_fields(&payload, names).map_err(|e| payload_error(&entry, e))?;
                    let key = format!("fields:{}", serde_json::to_string(&fields).expect("a JSON map serialises"));
                    (Some(fields), key, String::new())
                }
                None => {
                    let normalized =
                        def.normalize_owned(payload, updated_at_ms).map_err(|e| payload_error(&entry, e))?;
                    let key = def.content_key(&normalized);
                    let data = serde_json::to_string(&normalized).expect("a JSON map serialises");
                    (Some(normalized), key, data)
                }
            }
        }
    };
    let content_hash = {
        let mut h = Sha256::new();
        for part in [entity_type.as_str(), &entry.entity_id, entry.operation_type.as_str(), &content_key] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(updated_at_ms.to_le_bytes());
        hex::encode(&h.finalize()[..16])
    };
    Ok(Prepared { entry, entity_type, updated_at_ms, entity, data, content_key, content_hash })
}

/// Applies one item inside the writer's transaction. A storage error aborts the whole group.
pub fn apply(txn: &mut dyn WriteTxn, tenant: &str, item: &Item, now_ms: i64) -> Result<Outcome> {
    let p = match item {
        Item::Ready(p) => p,
        Item::Refused(n) => return Ok(Outcome::nack(n.clone())),
    };
    let entry = &p.entry;
    if let Some(prev) = txn.applied_entry(&entry.id)? {
        if prev.content_hash != p.content_hash {
            let detail = format!("entry id {} was already used for a different change", entry.id);
            return Ok(Outcome::nack(SyncNack::for_entry(entry, NackReason::DuplicateIdConflict, detail)));
        }
        let mut ack = ack(p, prev.seq, prev.applied, prev.updated_at);
        ack.duplicate = true;
        return Ok(Outcome { reply: Reply::Ack(ack), broadcast: None, to_writer: None });
    }

    let outcome = match create_new(txn, tenant, p, now_ms)? {
        Some(created) => created,
        None => decide_and_write(txn, tenant, p, now_ms)?,
    };
    if let Reply::Ack(a) = &outcome.reply {
        txn.record_entry(&AppliedEntry {
            entry_id: entry.id.clone(),
            content_hash: p.content_hash.clone(),
            seq: a.seq,
            applied: a.applied,
            updated_at: a.updated_at.clone().unwrap_or_default(),
            processed_at_ms: now_ms,
        })?;
    }
    Ok(outcome)
}

/// A whole create of an entity the tenant does not hold (nearly every create): stored without
/// reading first, as [`whole`] would store it against no stored version. `None` when the tenant
/// holds the key (live or a tombstone), or the entry is not such a create: nothing was written.
fn create_new(txn: &mut dyn WriteTxn, tenant: &str, p: &Prepared, now_ms: i64) -> Result<Option<Outcome>> {
    let (Operation::Create, None, Some(_)) = (p.entry.operation_type, &p.entry.fields, &p.entity) else {
        return Ok(None);
    };
    let mut record = EntityRecord {
        entity_type: p.entity_type,
        id: p.entry.entity_id.clone(),
        seq: 0,
        updated_at_ms: p.updated_at_ms,
        deleted: false,
        data: p.data.clone(),
        changed_at_ms: now_ms,
        stamps: None,
        created_seq: 0,
    };
    if !txn.insert_new(&mut record)? {
        return Ok(None);
    }
    Ok(Some(Outcome {
        reply: Reply::Ack(ack(p, record.seq, true, time::format_ms(record.updated_at_ms))),
        broadcast: Some(data_update(tenant, &record, Operation::Create)),
        to_writer: None,
    }))
}

/// Reads the stored version and decides: field by field, or the whole-entity rule.
fn decide_and_write(txn: &mut dyn WriteTxn, tenant: &str, p: &Prepared, now_ms: i64) -> Result<Outcome> {
    let entry = &p.entry;
    let stored = txn.entity(p.entity_type, &entry.entity_id)?;
    // Field by field: a field-level update, and a whole write that is not newer than an entity
    // whose fields were last written by different versions (it must not undo the newer ones).
    let live = stored.as_ref().filter(|s| !s.deleted);
    let stamps = live.map(|s| Stamps::parse(s.stamps.as_deref())).unwrap_or_default();
    if entry.fields.is_some()
        || (entry.operation_type != Operation::Delete
            && !stamps.is_uniform()
            && live.is_some_and(|s| p.updated_at_ms <= s.updated_at_ms))
    {
        merge(txn, tenant, p, stored.as_ref(), &stamps, now_ms)
    } else {
        whole(txn, tenant, p, stored.as_ref(), now_ms)
    }
}

/// A field-level update (or a whole write decided field by field): [`merge::merge_fields`]
/// against the live stored entity. The merged version goes to every connection, the writer's
/// included; when nothing was taken the writer gets the stored version.
fn merge(
    txn: &mut dyn WriteTxn,
    tenant: &str,
    p: &Prepared,
    stored: Option<&EntityRecord>,
    stamps: &Stamps,
    now_ms: i64,
) -> Result<Outcome> {
    let entry = &p.entry;
    let Some(s) = stored.filter(|s| !s.deleted) else {
        // not held live: a field-level update never creates or revives an entity
        let (seq, at, to_writer) = match stored {
            Some(s) => (s.seq, s.updated_at_ms, Some(data_update(tenant, s, Operation::Delete))),
            None => (0, p.updated_at_ms, None),
        };
        return Ok(Outcome { reply: Reply::Ack(ack(p, seq, false, time::format_ms(at))), broadcast: None, to_writer });
    };
    let def = p.entity_type.def();
    let incoming = p.entity.as_ref().expect("an update carries its fields");
    let current: Map<String, Value> = serde_json::from_str(&s.data)
        .map_err(|e| StorageError::Other(format!("stored {} {} is not a JSON object: {e}", p.entity_type, s.id)))?;
    let names = def.stamped_fields().map(|f| f.name).filter(|n| incoming.contains_key(*n));
    let Some(mut m) = merge::merge_fields(def, current, s.updated_at_ms, stamps, incoming, names, p.updated_at_ms)
    else {
        return Ok(Outcome {
            reply: Reply::Ack(ack(p, s.seq, false, time::format_ms(s.updated_at_ms))),
            broadcast: None,
            to_writer: Some(data_update(tenant, s, Operation::Update)),
        });
    };
    // the merged entity must be valid as a whole, like any version stored
    if let Err(e) = def.check_and_stamp(&mut m.entity, m.updated_at_ms) {
        let detail = format!("the merged entity is invalid: {}: {}", e.field, e.message);
        return Ok(Outcome::nack(SyncNack::for_entry(entry, NackReason::ValidationError, detail)));
    }
    let entity = m.entity;
    let record = EntityRecord {
        entity_type: p.entity_type,
        id: entry.entity_id.clone(),
        seq: txn.next_seq(),
        updated_at_ms: m.updated_at_ms,
        deleted: false,
        data: serde_json::to_string(&entity).expect("a JSON map serialises"),
        changed_at_ms: now_ms,
        stamps: m.stamps.to_json(),
        created_seq: s.created_seq,
    };
    txn.put_entity(&record)?;
    let update = data_update(tenant, &record, Operation::Update);
    Ok(Outcome {
        reply: Reply::Ack(ack(p, record.seq, true, time::format_ms(record.updated_at_ms))),
        broadcast: Some(update.clone()),
        to_writer: Some(update),
    })
}

/// A create, delete or whole update: the whole-entity rule ([`lww::decide`]).
fn whole(
    txn: &mut dyn WriteTxn,
    tenant: &str,
    p: &Prepared,
    stored: Option<&EntityRecord>,
    now_ms: i64,
) -> Result<Outcome> {
    let entry = &p.entry;
    let stored_content = match &stored {
        Some(s) if !s.deleted && s.updated_at_ms == p.updated_at_ms => {
            let m: Map<String, Value> = serde_json::from_str(&s.data).unwrap_or_default();
            p.entity_type.def().content_key(&m)
        }
        _ => String::new(),
    };
    let stored_version =
        stored.map(|s| StoredVersion { updated_at_ms: s.updated_at_ms, deleted: s.deleted, content: &stored_content });
    let deleting = entry.operation_type == Operation::Delete;
    let incoming = StoredVersion { updated_at_ms: p.updated_at_ms, deleted: deleting, content: &p.content_key };

    let outcome = match lww::decide(stored_version.as_ref(), &incoming) {
        Decision::Apply { updated_at_ms, restamped } => {
            let seq = txn.next_seq();
            let data = match &p.entity {
                Some(entity) if restamped => {
                    let mut e = entity.clone();
                    let stamp = Value::from(time::format_ms(updated_at_ms));
                    e.insert(UPDATED_AT.into(), stamp.clone());
                    for m in p.entity_type.def().mirrors_updated_at {
                        e.insert((*m).into(), stamp.clone());
                    }
                    Value::Object(e).to_string()
                }
                Some(_) => p.data.clone(),
                None => serde_json::json!({ "id": entry.entity_id }).to_string(),
            };
            let existed = stored.is_some_and(|s| !s.deleted);
            let op = match entry.operation_type {
                Operation::Delete => Operation::Delete,
                _ if existed => Operation::Update,
                other => other,
            };
            let record = EntityRecord {
                entity_type: p.entity_type,
                id: entry.entity_id.clone(),
                seq,
                updated_at_ms,
                deleted: deleting,
                data,
                changed_at_ms: now_ms,
                stamps: None,
                created_seq: match stored {
                    Some(s) if existed || deleting => s.created_seq,
                    _ => seq,
                },
            };
            txn.put_entity(&record)?;
            let update = data_update(tenant, &record, op);
            let stamp = time::format_ms(updated_at_ms);
            Outcome {
                reply: Reply::Ack(ack(p, seq, true, stamp)),
                to_writer: restamped.then(|| update.clone()),
                broadcast: Some(update),
            }
        }
        Decision::Unchanged => {
            let s = stored.expect("Unchanged implies a stored version");
            Outcome {
                reply: Reply::Ack(ack(p, s.seq, true, time::format_ms(s.updated_at_ms))),
                broadcast: None,
                to_writer: None,
            }
        }
        Decision::Lose => {
            let s = stored.expect("Lose implies a stored version");
            let op = if s.deleted { Operation::Delete } else { Operation::Update };
            Outcome {
                reply: Reply::Ack(ack(p, s.seq, false, time::format_ms(s.updated_at_ms))),
                broadcast: None,
                to_writer: Some(data_update(tenant, s, op)),
            }
        }
    };
    Ok(outcome)
}

fn ack(p: &Prepared, seq: i64, applied: bool, updated_at: String) -> SyncAck {
    SyncAck {
        r#type: "sync_ack".into(),
        id: p.entry.id.clone(),
        status: "processed".into(),
        entity_id: p.entry.entity_id.clone(),
        entity_type: p.entity_type.as_str().into(),
        operation_type: p.entry.operation_type,
        seq,
        applied,
        duplicate: false,
        updated_at: Some(updated_at),
    }
}

/// Serialises the `data_update` for a stored version once; every listener gets the same bytes.
///
/// Written by hand, on the tenant's writer for every change: the stored data is already the
/// entity's JSON (written by us), so it is put in as it is, without the copy and the parse that
/// `RawValue` would take, and the fixed keys cost a `push_str`. The bytes are those of
/// `serde_json::to_string(&DataUpdate { .. })` (a unit test compares them).
pub fn data_update(tenant: &str, record: &EntityRecord, op: Operation) -> Utf8Bytes {
    fn string(out: &mut Vec<u8>, s: &str) {
        // the tenant (a UUID) needs no escapes: copied as it is
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            serde_json::to_writer(&mut *out, s).expect("a string serialises");
        }
    }
    let mut out = Vec::with_capacity(record.data.len() + tenant.len() + 160);
    out.extend_from_slice(br#"{"event_type":"data_update","tenant_id":"#);
    string(&mut out, tenant);
    out.extend_from_slice(br#","entity_type":""#);
    out.extend_from_slice(record.entity_type.as_str().as_bytes());
    out.extend_from_slice(br#"","operation_type":""#);
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(br#"","seq":"#);
    serde_json::to_writer(&mut out, &record.seq).expect("an integer serialises");
    out.extend_from_slice(br#","updated_at":"#);
    match time::rfc3339_ms(record.updated_at_ms) {
        Some(t) => {
            out.push(b'"');
            out.extend_from_slice(&t);
            out.push(b'"');
        }
        None => string(&mut out, &time::format_ms(record.updated_at_ms)),
    }
    out.extend_from_slice(br#","data":{"single_entity":"#);
    out.extend_from_slice(record.data.as_bytes());
    out.extend_from_slice(b"}}");
    Utf8Bytes::from(String::from_utf8(out).expect("JSON text is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use finwise_protocol::messages::{DataUpdate, DataUpdateData};
    use serde_json::value::RawValue;

    #[test]
    fn the_hand_written_data_update_is_what_serde_writes() {
        // escaped and plain tenant ids; a time inside and one outside the fast formatter's years
        let cases =
            [("t-\"quoted\"-ü\n", 1_790_000_000_123), ("0b8f3e4a-7c2d-4e1f-9a6b-5d4c3b2a1f0e", -62_167_219_200_001)];
        for &t in EntityType::ALL {
            for op in [Operation::Create, Operation::Update, Operation::Delete] {
                for (tenant, updated_at_ms) in cases {
                    let record = EntityRecord {
                        entity_type: t,
                        id: "a\"b".into(),
                        seq: 9_007_199_254_740_993,
                        updated_at_ms,
                        deleted: op == Operation::Delete,
                        data: r#"{"id":"a\"b","name":"Caf\u00e9 ü","n":[1,2.5,null]}"#.into(),
                        changed_at_ms: 0,
                        stamps: None,
                        created_seq: 1,
                    };
                    let by_serde = serde_json::to_string(&DataUpdate {
                        event_type: "data_update".into(),
                        tenant_id: tenant.into(),
                        entity_type: t,
                        operation_type: op,
                        seq: record.seq,
                        updated_at: time::format_ms(record.updated_at_ms),
                        data: DataUpdateData { single_entity: RawValue::from_string(record.data.clone()).unwrap() },
                    })
                    .unwrap();
                    assert_eq!(data_update(tenant, &record, op).as_str(), by_serde);
                }
            }
        }
    }
}
