//! Any bytes a peer sends as an envelope: decoding and verifying must never panic, and
//! anything accepted must survive a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane_protocol::envelope::MAX_FRAME_BYTES;
use membrane_protocol::signals::{
    Broadcast, BuildOn, CapabilityAd, DirectMessage, Heads, Help, Intent, Offer, Proposal,
    ThreatSignal,
};
use membrane_protocol::{Entry, Envelope, Presence, Retraction, TrustEdge};

const NOW: u64 = 1_763_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data, MAX_FRAME_BYTES, NOW) else {
        return;
    };
    let again = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, NOW)
        .expect("an accepted envelope re-encodes to one that verifies");
    assert_eq!(again, env);
    assert_eq!(again.id(), env.id());
    // Opening as every payload type must be an error or a value, never a panic.
    let _ = Entry::from_envelope(env.clone());
    let _ = env.open::<Retraction>();
    let _ = env.open::<TrustEdge>();
    let _ = env.open::<Presence>();
    let _ = env.open::<ThreatSignal>();
    let _ = env.open::<CapabilityAd>();
    let _ = env.open::<Intent>();
    let _ = env.open::<Heads>();
    let _ = env.open::<Help>();
    let _ = env.open::<Offer>();
    let _ = env.open::<Proposal>();
    let _ = env.open::<BuildOn>();
    let _ = env.open::<Broadcast>();
    let _ = env.open::<DirectMessage>();
});
