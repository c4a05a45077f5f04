//! Feeds arbitrary bytes, split at fuzzer-chosen points, to the framing decoder: it must
//! never panic, and every value it yields must serialise back to valid JSON.
#![no_main]

use bytes::BytesMut;
use ferrovn_ovsdb::framing::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the frame bound, the second the read size.
    let (limit, chunk, rest) = match data {
        [a, b, rest @ ..] => (64 + usize::from(*a) * 64, usize::from(*b).max(1), rest),
        _ => return,
    };
    let mut decoder = FrameDecoder::new(limit);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(value)) => {
                    let text = serde_json::to_vec(&value).expect("a decoded value serialises");
                    // Exact float round-trips are serde_json's business, not ours.
                    assert!(serde_json::from_slice::<serde_json::Value>(&text).is_ok());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish(&buf);
});
