//! The bodies of the fuzz targets, one function per target. `fuzz_targets/<name>.rs` calls them
//! under libFuzzer (`cargo fuzz run <name>`); the server's test `fuzz_corpus` replays every file
//! of `fuzz/corpus/<name>/` through the same functions, so CI checks the kept corpus in seconds.
//!
//! Each body must not panic on any input; where an oracle exists it asserts it.
#![allow(dead_code)] // each fuzz target uses one of them

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Mutex, PoisonError},
};

use finwise_protocol::{
    messages::{parse_client_message, parse_general, ClientMessage, SyncQueueEntry},
    EntityType,
};
use finwise_server::{
    engine::{self, Item, Limits},
    legacy,
    loads::{stream_load_from, LoadRequest},
    storage::{
        sqlite::{SqliteReader, SqliteTenant},
        TenantReader,
    },
    TenantId,
};
use serde_json::Value;

pub const TENANT: &str = "6f1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f";
const NOW: i64 = 1_790_000_000_000;
const LIMITS: Limits = Limits { max_clock_skew_ms: 300_000 };

/// A temp dir for the bodies' database files: in memory (`/dev/shm`) where the machine has it, so
/// that the commits' fsyncs do not set the pace of a fuzz run; the system temp dir otherwise.
/// `FINWISE_FUZZ_TMP` overrides both.
fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("FINWISE_FUZZ_TMP")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::PathBuf::from("/dev/shm")).filter(|p| p.is_dir()));
    match base {
        Some(b) => tempfile::tempdir_in(b).or_else(|_| tempfile::tempdir()),
        None => tempfile::tempdir(),
    }
    .expect("temp dir")
}

/// State a body keeps across inputs (a store, a tenant file) in a scratch dir, rebuilt from scratch
/// every `every` inputs. Opening fresh databases for every input set the pace of a run (a few
/// hundred inputs a second); rebuilding now and then keeps the state small, so each input stays
/// cheap and still meets both an empty tenant and one with history.
struct Kept<T> {
    state: T, // dropped before its dir
    dir: tempfile::TempDir,
    uses: u32,
}

fn with_kept<T, R>(
    slot: &Mutex<Option<Kept<T>>>,
    every: u32,
    open: impl FnOnce(&Path) -> T,
    f: impl FnOnce(&mut T, &Path) -> R,
) -> R {
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.as_ref().is_some_and(|k| k.uses >= every) {
        *guard = None;
    }
    let kept = guard.get_or_insert_with(|| {
        let dir = scratch_dir();
        Kept { state: open(dir.path()), dir, uses: 0 }
    });
    kept.uses += 1;
    f(&mut kept.state, kept.dir.path())
}

/// The entries of a `process_sync_entry` or `process_sync_batch` message; none for anything else.
fn entries(text: &str) -> Vec<SyncQueueEntry> {
    match parse_client_message(text) {
        Ok(ClientMessage::ProcessSyncEntry(Ok(e))) => vec![*e],
        Ok(ClientMessage::ProcessSyncBatch(list)) => list.into_iter().filter_map(Result::ok).collect(),
        _ => Vec::new(),
    }
}

fn items(entries: Vec<SyncQueueEntry>) -> Vec<Item> {
    entries
        .into_iter()
        .map(|e| match engine::prepare(e, TENANT, NOW, LIMITS) {
            Ok(p) => Item::Ready(Box::new(p)),
            Err(n) => Item::Refused(n),
        })
        .collect()
}

/// `decode`: any text through the client message parser, whose fast way for valid sync entries
/// must give what the general parse gives.
pub fn decode(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(parse_client_message(text), parse_general(text), "{text}");
    }
}

/// `validate`: any JSON value as an entity of every type, and as a queue entry.
pub fn validate(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    for t in EntityType::ALL {
        if let Ok(entity) = t.def().normalize(&value, NOW) {
            // A normalised entity always has at least the definition's fields.
            assert!(entity.len() >= t.def().fields.len());
            let _ = t.def().content_key(&entity);
        }
    }
    if let Ok(entry) = finwise_protocol::messages::parse_entry(value) {
        let _ = engine::prepare(entry, TENANT, NOW, LIMITS);
    }
}

/// `handle`: decode, validate and apply every entry to a real tenant database (one file, kept
/// across inputs), as the connection task and the writer do. Storage errors cannot come from input.
pub fn handle(data: &[u8]) {
    // one tenant file for every input, in a temp dir that lives as long as the process
    static DB: Mutex<Option<(tempfile::TempDir, SqliteTenant)>> = Mutex::new(None);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let items = items(entries(text));
    if items.is_empty() {
        return;
    }
    let mut guard = DB.lock().unwrap();
    let (_, db) = guard.get_or_insert_with(|| {
        let dir = scratch_dir();
        let db = SqliteTenant::open(&dir.path().join("tenant.db")).expect("tenant");
        (dir, db)
    });
    db.write(|txn| {
        for item in &items {
            engine::apply(txn, TENANT, item, NOW)?;
        }
        Ok(())
    })
    .expect("storage errors cannot come from input");
}

/// `loads`: the input's first byte picks the cursor, the second the chunk size, the rest is a
/// sync message applied to a tenant (a file in a scratch dir, kept open with one reader and rebuilt
/// every 64 inputs). The load is then streamed as a client would get it and checked against the stored records: every
/// live entity newer than the cursor exactly once, a delta's `deleted` exactly the tombstones newer
/// than the cursor, every part but the last marked `more`, and each part at most the chunk size.
pub fn loads(data: &[u8]) {
    // the tenant's writer and one read connection, both kept: a WAL reader sees every commit
    // made before its read transaction begins, as a fresh connection would
    static TENANT_DB: Mutex<Option<Kept<(SqliteTenant, SqliteReader)>>> = Mutex::new(None);
    let [since_byte, chunk_byte, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let items = items(entries(text));
    let open = |dir: &Path| {
        let path = dir.join("tenant.db");
        let db = SqliteTenant::open(&path).expect("tenant");
        (db, SqliteReader::open(&path).expect("reader"))
    };
    with_kept(&TENANT_DB, 64, open, |(db, reader), _| {
        db.write(|txn| {
            for item in &items {
                engine::apply(txn, TENANT, item, NOW)?;
            }
            Ok(())
        })
        .expect("storage errors cannot come from input");
        reader.read(|r| check_load(r, *since_byte, *chunk_byte)).expect("load");
    });
}

/// The `loads` oracle: a load from the cursor picked by `since_byte` (255: a full load; otherwise
/// from 0 up to one above the head) in chunks picked by `chunk_byte`, against the stored records
/// of the same snapshot.
fn check_load(r: &mut dyn TenantReader, since_byte: u8, chunk_byte: u8) -> finwise_server::storage::Result<()> {
    let tenant = TenantId::parse(TENANT).expect("tenant id");
    let mut records = Vec::new();
    r.records(&mut |rec| {
        records.push(rec);
        Ok(())
    })?;
    let head = records.iter().map(|r| r.seq).max().unwrap_or(0);
    let since = match since_byte {
        255 => None,
        b => Some(i64::from(b) * (head + 1) / 254),
    };
    let chunk = match chunk_byte % 9 {
        0 => None,
        c => Some(usize::from(c)),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
    stream_load_from(r, &tenant, LoadRequest { since, chunk_size: chunk }, tx)?;
    let mut messages = Vec::new();
    while let Ok(m) = rx.try_recv() {
        messages.push(serde_json::from_str::<Value>(&m).expect("a load message is JSON"));
    }
    assert!(!messages.is_empty(), "a load always ends with one message");
    // A cursor above the head (a client of another timeline) gets a full load marked `reset`;
    // nothing is compacted here, so that is the only reset.
    let reset = since.is_some_and(|s| s > head);
    let cursor = if reset { 0 } else { since.unwrap_or(0) };
    let type_key =
        |t: EntityType| serde_json::to_value(t).expect("type serialises").as_str().unwrap_or_default().to_owned();
    let mut got = BTreeMap::<(String, String), usize>::new();
    let mut deleted = BTreeSet::<(String, String)>::new();
    for (i, m) in messages.iter().enumerate() {
        let last = i + 1 == messages.len();
        assert_eq!(m["more"] == true, !last, "part {i} of {}: more = {}", messages.len(), m["more"]);
        assert_eq!(m["seq"], head, "the load's seq is the tenant's head");
        assert_eq!(m["reset"] == true, reset, "part {i}: reset = {} for since {since:?}, head {head}", m["reset"]);
        assert_eq!(m["delta"] == true, since.is_some() && !reset, "part {i}: delta = {}", m["delta"]);
        let mut count = 0;
        for t in EntityType::ALL {
            for e in m["payload"][t.collection()].as_array().expect("a collection per type") {
                *got.entry((type_key(*t), e["id"].as_str().expect("id").to_owned())).or_default() += 1;
                count += 1;
            }
        }
        if let Some(c) = chunk {
            assert!(count <= c, "part {i} holds {count} entities, chunk {c}");
        }
        if let Some(d) = m["deleted"].as_object() {
            for (k, ids) in d {
                for id in ids.as_array().expect("deleted ids") {
                    deleted.insert((k.clone(), id.as_str().expect("id").to_owned()));
                }
            }
        }
    }
    let want: BTreeMap<(String, String), usize> = records
        .iter()
        .filter(|r| !r.deleted && r.seq > cursor)
        .map(|r| ((type_key(r.entity_type), r.id.clone()), 1))
        .collect();
    assert_eq!(got, want, "live entities newer than {cursor}");
    if since.is_some() && !reset {
        let want: BTreeSet<_> = records
            .iter()
            .filter(|r| r.deleted && r.seq > cursor)
            .map(|r| (type_key(r.entity_type), r.id.clone()))
            .collect();
        assert_eq!(deleted, want, "tombstones newer than {cursor}");
    }
    Ok(())
}

/// `legacy_import`: the 0.4 import reader. Input starting with SQLite's magic is a tenant file
/// (read as `finwise import-legacy` and the HTTP import do: read-only, immutable); other input is a
/// JSON object `{table: row}` of 0.4 rows. What reads is written to a tenant (a file in a scratch
/// dir, rebuilt every 256 inputs), as the import does: newer rows win, older ones are unchanged.
pub fn legacy_import(data: &[u8]) {
    static TENANT_DB: Mutex<Option<Kept<SqliteTenant>>> = Mutex::new(None);
    let open = |dir: &Path| SqliteTenant::open(&dir.join("tenant.db")).expect("tenant");
    with_kept(&TENANT_DB, 256, open, |db, dir| {
        let mut entities = Vec::new();
        if data.starts_with(b"SQLite format 3\0") {
            let path = dir.join("import.db");
            std::fs::write(&path, data).expect("scratch file");
            let Ok(conn) = legacy::open_ro(&path) else { return };
            let Ok(file) = legacy::read_tenant(&conn) else { return };
            entities = file.entities;
        } else {
            let Ok(Value::Object(tables)) = serde_json::from_slice::<Value>(data) else { return };
            let mut warnings = Vec::new();
            for (table, row) in tables {
                let (Some(t), Value::Object(row)) =
                    (legacy::ENTITY_TYPES.iter().find(|t| t.collection() == table), row)
                else {
                    continue;
                };
                if let Ok(e) = legacy::normalize(*t, &row, &mut warnings) {
                    entities.push(e);
                }
            }
        }
        legacy::write_entities(db, &entities).expect("what the reader accepts can be stored");
    });
}
