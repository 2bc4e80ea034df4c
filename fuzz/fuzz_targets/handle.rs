//! The server's message handling in-process: decode, validate and apply every entry to a real
//! tenant database (in memory), as the connection task and the writer do.
#![no_main]
use std::sync::Mutex;

use finwise_protocol::messages::{parse_client_message, ClientMessage};
use finwise_server::{
    engine::{self, Item, Limits},
    storage::sqlite::SqliteTenant,
};
use libfuzzer_sys::fuzz_target;

const TENANT: &str = "6f1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f";
static DB: Mutex<Option<SqliteTenant>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let entries = match parse_client_message(text) {
        Ok(ClientMessage::ProcessSyncEntry(Ok(e))) => vec![*e],
        Ok(ClientMessage::ProcessSyncBatch(list)) => list.into_iter().filter_map(Result::ok).collect(),
        _ => return,
    };
    let now = 1_790_000_000_000;
    let items: Vec<Item> = entries
        .into_iter()
        .map(|e| match engine::prepare(e, TENANT, now, Limits { max_clock_skew_ms: 300_000 }) {
            Ok(p) => Item::Ready(Box::new(p)),
            Err(n) => Item::Refused(n),
        })
        .collect();
    let mut guard = DB.lock().unwrap();
    let db = guard.get_or_insert_with(|| SqliteTenant::open(std::path::Path::new(":memory:")).expect("in-memory tenant"));
    db.write(|txn| {
        for item in &items {
            engine::apply(txn, TENANT, item, now)?;
        }
        Ok(())
    })
    .expect("storage errors cannot come from input");
});
