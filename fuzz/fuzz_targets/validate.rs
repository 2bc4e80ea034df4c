//! The entry validator: any JSON value as the payload of every entity type.
#![no_main]
use finwise_protocol::EntityType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for t in EntityType::ALL {
        if let Ok(entity) = t.def().normalize(&value, 1_790_000_000_000) {
            // A normalised entity always has exactly the definition's fields plus updated_at.
            assert!(entity.len() >= t.def().fields.len());
            let _ = t.def().content_key(&entity);
        }
    }
    if let Ok(entry) = finwise_protocol::messages::parse_entry(value) {
        let _ = finwise_server::engine::prepare(entry, "6f1c3a52-8f0e-4d7e-9a51-3b2f0c1d2e3f", 1_790_000_000_000, finwise_server::engine::Limits { max_clock_skew_ms: 300_000 });
    }
});
