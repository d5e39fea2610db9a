//! Any bytes a peer sends as a sync frame, to a replica that holds some state: receiving
//! must never panic, and must never apply anything (the fuzzer cannot sign as the peer).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use membrane_crdt::{Config, Draft, Medium, MemoryStorage};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, Tier};

const NOW: u64 = 1_763_700_000_000;

fn replica() -> &'static Mutex<Medium<MemoryStorage>> {
    static REPLICA: OnceLock<Mutex<Medium<MemoryStorage>>> = OnceLock::new();
    REPLICA.get_or_init(|| {
        let mut medium = Medium::open(
            Keypair::from_seed(&[1; 32]),
            MemoryStorage::new(),
            Config::default(),
            Arc::new(ApproxCounter),
        )
        .expect("opens");
        let space = "default".parse().expect("space");
        medium
            .expose(
                &space,
                Draft::new("seed.entry".parse().expect("key"), "seed", Some(Tier::Public)),
                NOW,
            )
            .expect("exposes");
        Mutex::new(medium)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut medium = replica().lock().unwrap_or_else(|e| e.into_inner());
    let peer = Keypair::from_seed(&[2; 32]).public();
    if let Ok(report) = medium.sync_receive(&peer, data) {
        assert_eq!(report.applied, 0, "unsigned fuzz input was applied");
    }
});
