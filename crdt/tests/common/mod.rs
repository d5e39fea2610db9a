//! Shared test helpers: replicas over in-memory storage, and a sync driver.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, unreachable_pub)]

use std::sync::Arc;

use membrane_crdt::{Config, Medium, MemoryStorage, SyncError, SyncReport};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::{Keypair, PublicKey, Space};

pub const NOW: u64 = 1_763_700_000_000;

pub type Replica = Medium<MemoryStorage>;

pub fn replica(seed: u8) -> Replica {
    Medium::open(
        Keypair::from_seed(&[seed; 32]),
        MemoryStorage::new(),
        Config::default(),
        Arc::new(ApproxCounter),
    )
    .unwrap()
}

pub fn space() -> Space {
    "climate-brief".parse().unwrap()
}

/// Runs sync rounds between `a` and `b` in `space` until neither has anything to send.
/// Returns every report, so callers can check rejections. Panics if it does not settle.
pub fn sync_pair(a: &mut Replica, b: &mut Replica, space: &Space) -> Vec<SyncReport> {
    let mut reports = Vec::new();
    for _round in 0..50 {
        let sent_ab = one_way(a, b, space, &mut reports);
        let sent_ba = one_way(b, a, space, &mut reports);
        if !sent_ab && !sent_ba {
            return reports;
        }
    }
    panic!("sync did not settle in 50 rounds");
}

/// Sends every frame `from` has for `to`, delivering each. Returns whether any was sent.
pub fn one_way(
    from: &mut Replica,
    to: &mut Replica,
    space: &Space,
    reports: &mut Vec<SyncReport>,
) -> bool {
    let from_key: PublicKey = *from.me();
    let to_key: PublicKey = *to.me();
    let mut sent = false;
    for doc in from.docs_for_peer(space, &to_key) {
        for frame in from.sync_generate(&to_key, &doc) {
            match to.sync_receive(&from_key, &frame) {
                Ok(report) => {
                    sent = true;
                    reports.push(report);
                }
                // The trust edge that admits `to` has not reached it yet: retry later.
                Err(SyncError::NotInAudience { .. }) => {
                    from.reset_session(&to_key, &doc);
                    break;
                }
                Err(e) => panic!("sync frame refused: {e}"),
            }
        }
    }
    sent
}

/// Syncs every pair until all settle.
pub fn sync_all(replicas: &mut [Replica], space: &Space) -> Vec<SyncReport> {
    let mut reports = Vec::new();
    for _ in 0..3 {
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                if i < j {
                    let (left, right) = replicas.split_at_mut(j);
                    reports.extend(sync_pair(&mut left[i], &mut right[0], space));
                }
            }
        }
    }
    reports
}
