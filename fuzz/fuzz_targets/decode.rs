//! The client message decoder: any bytes, no panic, bounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = finwise_protocol::messages::parse_client_message(text);
    }
});
