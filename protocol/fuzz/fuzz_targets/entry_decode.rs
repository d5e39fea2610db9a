//! Any bytes as an entry payload (what a peer signs with its own, valid key): decoding and
//! validating must never panic, and a valid entry must seal, verify and open unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane_protocol::codec;
use membrane_protocol::envelope::MAX_FRAME_BYTES;
use membrane_protocol::{Entry, EntryBody, Envelope, Keypair, Kind, Key, Pattern};

fuzz_target!(|data: &[u8]| {
    // Keys and patterns from the same bytes, as an agent might send them.
    if let Ok(text) = std::str::from_utf8(data) {
        if let (Ok(key), Ok(pattern)) = (text.parse::<Key>(), text.parse::<Pattern>()) {
            assert!(pattern.matches(&key), "a key matches itself as a pattern");
        }
    }
    let Ok(body) = codec::from_slice::<EntryBody>(data, Kind::Entry.max_payload_bytes()) else {
        return;
    };
    let keypair = Keypair::from_seed(&[1; 32]);
    // Signed as is, around the peer's own bytes: opening checks the limits.
    let env = Envelope::seal_bytes(&keypair, Kind::Entry, 0, data.to_vec())
        .expect("payload within the kind's limit");
    let received = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, 0).expect("verifies");
    match Entry::from_envelope(received) {
        Ok(entry) => {
            assert!(body.check().is_ok());
            assert_eq!(entry.body(), &body);
        }
        Err(_) => assert!(body.check().is_err()),
    }
});
