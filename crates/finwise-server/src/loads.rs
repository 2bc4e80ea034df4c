//! Reads: initial and delta loads, data status and digest. Each runs inside one read
//! transaction of the store ([`Store::read`]), so what it returns is one consistent snapshot and
//! the writer is never blocked (SQLite's WAL; PostgreSQL's MVCC).

use std::collections::BTreeMap;

use finwise_protocol::{
    digest,
    messages::{DataStatusResponse, EntityChecksum, InitialDataLoad},
    time, EntityType,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::{
    storage::{Result, StorageError, Store, TenantReader},
    TenantId,
};

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest {
    pub since: Option<i64>,
    /// Entities per message; `None` sends one message (what a 0.4 client expects).
    pub chunk_size: Option<usize>,
}

/// Builds the collections of one message, entity by entity, without re-parsing stored JSON.
struct Collections {
    buckets: Vec<String>,
    count: usize,
}

impl Collections {
    fn new() -> Self {
        Collections { buckets: vec![String::new(); EntityType::ALL.len()], count: 0 }
    }
    fn push(&mut self, t: EntityType, json: &str) {
        let idx = EntityType::ALL.iter().position(|x| *x == t).expect("registered type");
        let b = &mut self.buckets[idx];
        if !b.is_empty() {
            b.push(',');
        }
        b.push_str(json);
        self.count += 1;
    }
    fn take_payload(&mut self) -> Box<RawValue> {
        let mut s = String::from("{");
        for (i, t) in EntityType::ALL.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('"');
            s.push_str(t.collection());
            s.push_str("\":[");
            s.push_str(&self.buckets[i]);
            s.push(']');
            self.buckets[i].clear();
        }
        s.push('}');
        self.count = 0;
        RawValue::from_string(s).expect("concatenated stored JSON is JSON")
    }
}

/// Streams the load for `req` into `out` as serialised messages. With `chunk_size` at most that
/// many entities are held at once, and the bounded channel keeps a slow client from making the
/// server buffer the tenant: memory stays proportional to the chunk, not the tenant.
pub fn stream_load(store: &dyn Store, tenant: &TenantId, req: LoadRequest, out: mpsc::Sender<String>) -> Result<()> {
    store.read(tenant, |r| stream_load_from(r, tenant, req, out))
}

/// [`stream_load`] from a reader already inside its read transaction (one snapshot).
pub fn stream_load_from(
    r: &mut dyn TenantReader,
    tenant: &TenantId,
    req: LoadRequest,
    out: mpsc::Sender<String>,
) -> Result<()> {
    let snap = r.snapshot()?;
    let (since, reset) = match req.since {
        Some(n) if n < snap.tombstone_floor || n > snap.seq => (0, true),
        Some(n) => (n, false),
        None => (0, false),
    };
    let delta = req.since.is_some() && !reset;
    let deleted = if delta {
        let mut map: BTreeMap<EntityType, Vec<String>> = BTreeMap::new();
        for (t, id) in r.deleted_since(since)? {
            map.entry(t).or_default().push(id);
        }
        Some(map)
    } else {
        None
    };
    let make =
        |payload: Box<RawValue>, part: Option<u32>, more: bool, deleted: Option<BTreeMap<EntityType, Vec<String>>>| {
            let msg = InitialDataLoad {
                event_type: "initial_data_load".into(),
                tenant_id: tenant.as_str().into(),
                payload,
                seq: snap.seq,
                deleted,
                reset,
                delta,
                part,
                more,
            };
            serde_json::to_string(&msg).expect("load serialises")
        };
    let mut cols = Collections::new();
    let mut part = 0u32;
    let mut failed = false;
    let chunk = req.chunk_size;
    r.live_since(since, &mut |t, json| {
        cols.push(t, json);
        if chunk.is_some_and(|c| cols.count >= c) {
            let msg = make(cols.take_payload(), Some(part), true, None);
            part += 1;
            if out.blocking_send(msg).is_err() {
                failed = true;
                return false;
            }
        }
        true
    })?;
    if failed {
        return Err(StorageError::Other("client went away during the load".into()));
    }
    let last = make(cols.take_payload(), chunk.map(|_| part), false, deleted);
    let _ = out.blocking_send(last);
    Ok(())
}

/// Computes `data_status_response`: 0.4 per-row checksums for the requested types, plus the
/// v2 tenant digest over all live entities.
pub fn data_status(
    store: &dyn Store,
    tenant: &TenantId,
    entity_types: Option<&[String]>,
) -> Result<DataStatusResponse> {
    let requested: Vec<String> = match entity_types {
        Some(list) => list.to_vec(),
        None => ["Account", "AccountGroup", "Category", "CategoryGroup"].iter().map(|s| s.to_string()).collect(),
    };
    store.read(tenant, |r| status_of(r, tenant, &requested))
}

/// [`data_status`] on a read transaction the caller opened (`finwise doctor` reads a file).
pub fn status_of(r: &mut dyn TenantReader, tenant: &TenantId, requested: &[String]) -> Result<DataStatusResponse> {
    {
        let snap = r.snapshot()?;
        let mut lines: Vec<(EntityType, String, String)> = Vec::new();
        r.live_versions(&mut |t, id, ms| lines.push((t, id.to_owned(), time::format_ms(ms))))?;
        let tenant_digest = digest::tenant_digest(lines.iter().map(|(t, id, u)| (*t, id.as_str(), u.as_str())));
        let mut checksums: BTreeMap<String, Vec<EntityChecksum>> =
            requested.iter().map(|k| (k.clone(), Vec::new())).collect();
        let wanted: Vec<EntityType> = requested
            .iter()
            .filter_map(|k| EntityType::parse(k).filter(|t| digest::checksum_keys(*t).is_some()))
            .collect();
        if !wanted.is_empty() {
            r.live_since(0, &mut |t, json| {
                if wanted.contains(&t) {
                    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(json) {
                        if let Some(sum) = digest::legacy_checksum(t, &m) {
                            let last_modified = m
                                .get("updated_at")
                                .and_then(|v| v.as_str())
                                .and_then(time::parse_ms)
                                .map(|ms| ms.div_euclid(1000))
                                .unwrap_or(0);
                            let key =
                                requested.iter().find(|k| EntityType::parse(k) == Some(t)).cloned().unwrap_or_default();
                            checksums.entry(key).or_default().push(EntityChecksum {
                                entity_id: m.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
                                checksum: sum,
                                last_modified,
                            });
                        }
                    }
                }
                true
            })?;
        }
        let now = chrono::Utc::now().timestamp();
        Ok(DataStatusResponse {
            r#type: "data_status_response".into(),
            tenant_id: tenant.as_str().into(),
            entity_checksums: checksums,
            last_sync_time: now,
            server_time: now,
            tenant_digest,
            seq: snap.seq,
            entity_count: lines.len() as u64,
        })
    }
}
