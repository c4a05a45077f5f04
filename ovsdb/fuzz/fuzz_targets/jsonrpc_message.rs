//! Any JSON value either is refused as a JSON-RPC message or round-trips through the wire form.
#![no_main]

use ferrovn_ovsdb::jsonrpc::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(msg) = Message::from_value(value) {
        let back: serde_json::Value =
            serde_json::from_slice(&msg.to_bytes()).expect("wire form is JSON");
        let again = Message::from_value(back).expect("wire form is a message");
        assert_eq!(std::mem::discriminant(&again), std::mem::discriminant(&msg));
    }
});
