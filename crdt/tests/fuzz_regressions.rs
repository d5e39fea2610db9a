//! Inputs kept from the `sync_receive` fuzz target (`crdt/fuzz/regressions/sync_receive/`:
//! crash inputs if it ever finds one, and corpus entries that reach deep into the receive
//! path), replayed with the target's own check: never a panic, never anything applied.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{NOW, replica};
use membrane_crdt::Draft;
use membrane_protocol::{Keypair, Space, Tier};

#[test]
fn sync_receive_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/sync_receive");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut medium = replica(1);
    medium
        .expose(
            &Space::default_space(),
            Draft::new("seed.entry".parse().unwrap(), "seed", Some(Tier::Public)),
            NOW,
        )
        .unwrap();
    let peer = Keypair::from_seed(&[2; 32]).public();
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if let Ok(report) = medium.sync_receive(&peer, &data) {
            assert_eq!(report.applied, 0, "{}", path.display());
        }
    }
}
