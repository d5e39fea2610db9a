//! Memory cells: offenders and content signatures remembered with an expiry, so a
//! returning offender or a replayed payload is refused at once, also after a restart.
//! A peer quarantined by its score is persisted alongside ([`MemoryKey::Quarantined`],
//! made and read back by the engine from its reputations), until the instant its score
//! would have recovered.
//!
//! Sans-IO: the cells live in memory; [`MemoryCells::to_records`] gives the node a list
//! of `(key, value, expiry)` records to persist (JSON or CBOR, both derive), and
//! [`MemoryCells::from_records`] takes them back. Both sets are bounded; when one is
//! full, the cell that would expire soonest makes room.

use std::collections::{BTreeMap, BTreeSet};

use membrane_protocol::PublicKey;
use membrane_protocol::signals::{Severity, ThreatKind};
use serde::{Deserialize, Serialize};

use crate::detectors::ContentHash;

/// Most offenders remembered.
pub const MAX_OFFENDERS: usize = 16_384;
/// Most content signatures remembered.
pub const MAX_CONTENTS: usize = 65_536;

/// What a cell remembers about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// The offence (`None`: an operator's ban).
    #[serde(default)]
    pub kind: Option<ThreatKind>,
    /// How bad it was.
    pub severity: Severity,
    /// When it was remembered.
    pub since_ms: u64,
}

/// What a cell is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MemoryKey {
    /// A banned peer.
    Offender {
        /// Its key.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
    },
    /// A rejected payload.
    Content {
        /// SHA-256 of the payload.
        #[serde(with = "crate::text::hex")]
        hash: ContentHash,
    },
    /// A peer quarantined by its score; the record expires when the score, decaying,
    /// would rise back above the quarantine threshold, which also tells the score at any
    /// instant before. Held by the engine's reputations, not by [`MemoryCells`].
    Quarantined {
        /// Its key.
        #[serde(with = "crate::text::peer")]
        peer: PublicKey,
    },
}

/// One persisted cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRecord {
    /// What it is about.
    pub key: MemoryKey,
    /// What is remembered.
    pub value: Memory,
    /// After this instant the cell is forgotten.
    pub expires_at_ms: u64,
}

/// Keys with an expiry, indexed by expiry so pruning and eviction are `O(log n)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expiring<K: Ord + Copy> {
    cells: BTreeMap<K, (Memory, u64)>,
    by_expiry: BTreeSet<(u64, K)>,
    cap: usize,
}

impl<K: Ord + Copy> Expiring<K> {
    fn new(cap: usize) -> Self {
        Self {
            cells: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            cap: cap.max(1),
        }
    }

    fn get(&self, key: &K, now_ms: u64) -> Option<&Memory> {
        self.cells
            .get(key)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(m, _)| m)
    }

    /// Remembers `key` until `expires_at_ms`, keeping the later expiry (and the worse
    /// memory) of an existing cell. Returns whether anything changed.
    fn insert(&mut self, key: K, memory: Memory, expires_at_ms: u64) -> bool {
        if let Some((old, old_expiry)) = self.cells.get(&key).copied() {
            if old_expiry >= expires_at_ms && old.severity >= memory.severity {
                return false;
            }
            self.by_expiry.remove(&(old_expiry, key));
            let keep = if old.severity >= memory.severity {
                old
            } else {
                memory
            };
            let expiry = old_expiry.max(expires_at_ms);
            self.cells.insert(key, (keep, expiry));
            self.by_expiry.insert((expiry, key));
            return true;
        }
        if self.cells.len() >= self.cap
            && let Some(&(soonest, victim)) = self.by_expiry.first()
        {
            if soonest >= expires_at_ms {
                // Everything held outlives the newcomer.
                return false;
            }
            self.by_expiry.remove(&(soonest, victim));
            self.cells.remove(&victim);
        }
        self.cells.insert(key, (memory, expires_at_ms));
        self.by_expiry.insert((expires_at_ms, key));
        true
    }

    fn remove(&mut self, key: &K) -> bool {
        match self.cells.remove(key) {
            Some((_, expiry)) => {
                self.by_expiry.remove(&(expiry, *key));
                true
            }
            None => false,
        }
    }

    /// Forgets every cell expired at `now_ms`, returning their keys in expiry order.
    fn prune(&mut self, now_ms: u64) -> Vec<K> {
        let mut gone = Vec::new();
        while let Some(&(expiry, key)) = self.by_expiry.first() {
            if expiry > now_ms {
                break;
            }
            self.by_expiry.remove(&(expiry, key));
            self.cells.remove(&key);
            gone.push(key);
        }
        gone
    }

    fn live(&self, now_ms: u64) -> impl Iterator<Item = (&K, &Memory, u64)> {
        self.cells
            .iter()
            .filter(move |(_, (_, e))| *e > now_ms)
            .map(|(k, (m, e))| (k, m, *e))
    }
}

/// The remembered offenders and content signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCells {
    offenders: Expiring<PublicKey>,
    contents: Expiring<ContentHash>,
}

impl Default for MemoryCells {
    fn default() -> Self {
        Self::with_caps(MAX_OFFENDERS, MAX_CONTENTS)
    }
}

impl MemoryCells {
    /// Empty cells holding at most `offenders` and `contents` entries.
    pub fn with_caps(offenders: usize, contents: usize) -> Self {
        Self {
            offenders: Expiring::new(offenders),
            contents: Expiring::new(contents),
        }
    }

    /// Remembers `peer` as an offender until `expires_at_ms`. Returns whether the cells
    /// changed (an existing cell only ever lengthens).
    pub fn remember_offender(
        &mut self,
        peer: PublicKey,
        memory: Memory,
        expires_at_ms: u64,
    ) -> bool {
        self.offenders.insert(peer, memory, expires_at_ms)
    }

    /// Remembers a rejected payload's hash until `expires_at_ms`.
    pub fn remember_content(
        &mut self,
        hash: ContentHash,
        memory: Memory,
        expires_at_ms: u64,
    ) -> bool {
        self.contents.insert(hash, memory, expires_at_ms)
    }

    /// Whether `peer` is a remembered offender at `now_ms`.
    pub fn is_known_offender(&self, peer: &PublicKey, now_ms: u64) -> bool {
        self.offenders.get(peer, now_ms).is_some()
    }

    /// What is remembered about `peer`, and until when.
    pub fn offender(&self, peer: &PublicKey, now_ms: u64) -> Option<(Memory, u64)> {
        self.offenders
            .cells
            .get(peer)
            .filter(|(_, e)| *e > now_ms)
            .copied()
    }

    /// Whether `hash` is a remembered rejected payload at `now_ms`.
    pub fn is_replayed(&self, hash: &ContentHash, now_ms: u64) -> bool {
        self.contents.get(hash, now_ms).is_some()
    }

    /// What is remembered about a rejected payload.
    pub fn content(&self, hash: &ContentHash, now_ms: u64) -> Option<Memory> {
        self.contents.get(hash, now_ms).copied()
    }

    /// Forgets an offender (the operator unbanned it). Returns whether it was known.
    pub fn forget_offender(&mut self, peer: &PublicKey) -> bool {
        self.offenders.remove(peer)
    }

    /// Forgets a content signature. Returns whether it was known.
    pub fn forget_content(&mut self, hash: &ContentHash) -> bool {
        self.contents.remove(hash)
    }

    /// Forgets every expired cell; returns the offenders whose ban ran out.
    pub fn prune(&mut self, now_ms: u64) -> Vec<PublicKey> {
        self.contents.prune(now_ms);
        self.offenders.prune(now_ms)
    }

    /// The offenders remembered at `now_ms`, for the node's ban gate after a restart.
    pub fn offenders(&self, now_ms: u64) -> impl Iterator<Item = (PublicKey, u64)> + '_ {
        self.offenders.live(now_ms).map(|(k, _, e)| (*k, e))
    }

    /// Live cells as `(offenders, contents)` counts.
    pub fn len(&self) -> (usize, usize) {
        (self.offenders.cells.len(), self.contents.cells.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.offenders.cells.is_empty() && self.contents.cells.is_empty()
    }

    /// Every cell live at `now_ms`, offenders first, each set in key order.
    pub fn to_records(&self, now_ms: u64) -> Vec<MemoryRecord> {
        let offenders = self.offenders.live(now_ms).map(|(k, m, e)| MemoryRecord {
            key: MemoryKey::Offender { peer: *k },
            value: *m,
            expires_at_ms: e,
        });
        let contents = self.contents.live(now_ms).map(|(k, m, e)| MemoryRecord {
            key: MemoryKey::Content { hash: *k },
            value: *m,
            expires_at_ms: e,
        });
        offenders.chain(contents).collect()
    }

    /// Cells from persisted records, dropping those expired at `now_ms`, within the
    /// default caps.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a MemoryRecord>,
        now_ms: u64,
    ) -> Self {
        let mut cells = Self::default();
        cells.load(records, now_ms);
        cells
    }

    /// Adds persisted records to these cells, dropping those expired at `now_ms`
    /// (quarantines are the engine's: [`Immune::with_memory`](crate::Immune::with_memory)).
    pub fn load<'a>(&mut self, records: impl IntoIterator<Item = &'a MemoryRecord>, now_ms: u64) {
        for r in records {
            if r.expires_at_ms <= now_ms {
                continue;
            }
            match r.key {
                MemoryKey::Offender { peer } => {
                    self.offenders.insert(peer, r.value, r.expires_at_ms);
                }
                MemoryKey::Content { hash } => {
                    self.contents.insert(hash, r.value, r.expires_at_ms);
                }
                MemoryKey::Quarantined { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::peer;

    fn mem(severity: Severity) -> Memory {
        Memory {
            kind: Some(ThreatKind::Forgery),
            severity,
            since_ms: 0,
        }
    }

    #[test]
    fn remembers_until_expiry() {
        let mut cells = MemoryCells::default();
        assert!(cells.remember_offender(peer(1), mem(Severity::Fatal), 100));
        assert!(cells.remember_content([7; 32], mem(Severity::Mid), 50));
        assert!(cells.is_known_offender(&peer(1), 99));
        assert!(!cells.is_known_offender(&peer(1), 100));
        assert!(!cells.is_known_offender(&peer(2), 0));
        assert!(cells.is_replayed(&[7; 32], 49));
        assert!(!cells.is_replayed(&[7; 32], 50));
        assert_eq!(cells.prune(60), Vec::<PublicKey>::new());
        assert_eq!(cells.len(), (1, 0));
        assert_eq!(cells.prune(100), vec![peer(1)]);
        assert!(cells.is_empty());
    }

    #[test]
    fn a_cell_only_lengthens_and_keeps_the_worse_memory() {
        let mut cells = MemoryCells::default();
        cells.remember_offender(peer(1), mem(Severity::Fatal), 100);
        assert!(!cells.remember_offender(peer(1), mem(Severity::Low), 50));
        assert!(cells.remember_offender(peer(1), mem(Severity::Low), 200));
        assert_eq!(
            cells.offender(&peer(1), 0),
            Some((mem(Severity::Fatal), 200))
        );
        assert!(cells.forget_offender(&peer(1)));
        assert!(!cells.forget_offender(&peer(1)));
        assert!(!cells.is_known_offender(&peer(1), 0));
    }

    #[test]
    fn round_trips_through_records_and_json() {
        let mut cells = MemoryCells::default();
        cells.remember_offender(peer(2), mem(Severity::High), 1_000);
        cells.remember_offender(peer(1), mem(Severity::Fatal), 5_000);
        cells.remember_content([9; 32], mem(Severity::Mid), 3_000);
        cells.remember_content([1; 32], mem(Severity::Mid), 10);
        let records = cells.to_records(100);
        assert_eq!(records.len(), 3, "the expired content is not persisted");
        let json = serde_json::to_string(&records).unwrap();
        assert!(
            json.contains(r#""type":"offender","peer":"12D3KooW"#),
            "{json}"
        );
        assert!(json.contains(&format!(r#""hash":"{}""#, "09".repeat(32))));
        let back: Vec<MemoryRecord> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, records);

        // A restart at 2,000: the first offender's ban has run out.
        let restored = MemoryCells::from_records(&back, 2_000);
        assert!(!restored.is_known_offender(&peer(2), 2_000));
        assert!(restored.is_known_offender(&peer(1), 2_000));
        assert!(restored.is_replayed(&[9; 32], 2_999));
        assert!(!restored.is_replayed(&[9; 32], 3_000));
        assert_eq!(
            restored.offenders(2_000).collect::<Vec<_>>(),
            vec![(peer(1), 5_000)]
        );
        assert_eq!(restored.to_records(2_000), cells.to_records(2_000));
    }

    #[test]
    fn bounded_evicting_the_soonest_expiry() {
        let mut cells = MemoryCells::with_caps(2, 3);
        for (i, expiry) in [(1u8, 30u64), (2, 10), (3, 20)] {
            cells.remember_content([i; 32], mem(Severity::Mid), expiry);
        }
        // Full: a newcomer expiring later evicts the soonest (2); one expiring sooner
        // than everything held is not taken.
        assert!(cells.remember_content([4; 32], mem(Severity::Mid), 40));
        assert!(!cells.is_replayed(&[2; 32], 0));
        assert!(!cells.remember_content([5; 32], mem(Severity::Mid), 5));
        assert_eq!(cells.len().1, 3);
        for i in 0..100u8 {
            cells.remember_offender(peer(i), mem(Severity::High), u64::from(i));
        }
        assert_eq!(cells.len().0, 2);
        assert!(cells.is_known_offender(&peer(99), 0) && cells.is_known_offender(&peer(98), 0));
    }

    #[test]
    fn quarantine_records_are_read_but_not_held_by_the_cells() {
        let json = r#"{"key":{"type":"quarantined","peer":"PEER"},"value":{"kind":"flooding","severity":"low","since_ms":5},"expires_at_ms":100}"#
            .replace("PEER", &peer(3).to_string());
        let record: MemoryRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.key, MemoryKey::Quarantined { peer: peer(3) });
        assert_eq!(serde_json::to_string(&record).unwrap(), json);
        let cells = MemoryCells::from_records([&record], 0);
        assert!(cells.is_empty());
    }

    #[test]
    fn malformed_records_are_refused() {
        let good = r#"{"key":{"type":"content","hash":"HASH"},"value":{"kind":"forgery","severity":"fatal","since_ms":0},"expires_at_ms":1}"#
            .replace("HASH", &"ab".repeat(32));
        assert!(serde_json::from_str::<MemoryRecord>(&good).is_ok());
        let short = good.replace(&"ab".repeat(32), "ab");
        assert!(serde_json::from_str::<MemoryRecord>(&short).is_err());
        let extra = good.replace(r#""expires_at_ms":1"#, r#""expires_at_ms":1,"x":2"#);
        assert!(serde_json::from_str::<MemoryRecord>(&extra).is_err());
    }

    proptest::proptest! {
        #[test]
        fn records_round_trip_and_expire(
            cells in proptest::collection::vec((any_key(), 1u64..10_000), 0..60),
            now in 0u64..10_000,
        ) {
            let mut m = MemoryCells::with_caps(16, 16);
            for (key, expiry) in &cells {
                match key {
                    MemoryKey::Offender { peer } => m.remember_offender(*peer, mem(Severity::High), *expiry),
                    MemoryKey::Content { hash } => m.remember_content(*hash, mem(Severity::Mid), *expiry),
                    MemoryKey::Quarantined { .. } => false,
                };
            }
            let records = m.to_records(now);
            proptest::prop_assert!(records.iter().all(|r| r.expires_at_ms > now));
            let json = serde_json::to_string(&records).unwrap();
            let back: Vec<MemoryRecord> = serde_json::from_str(&json).unwrap();
            let restored = MemoryCells::from_records(&back, now);
            proptest::prop_assert_eq!(restored.to_records(now), records.clone());
            for r in &records {
                let known = match r.key {
                    MemoryKey::Offender { peer } => restored.is_known_offender(&peer, now),
                    MemoryKey::Content { hash } => restored.is_replayed(&hash, now),
                    MemoryKey::Quarantined { .. } => false,
                };
                proptest::prop_assert!(known);
                let later = match r.key {
                    MemoryKey::Offender { peer } => restored.is_known_offender(&peer, r.expires_at_ms),
                    MemoryKey::Content { hash } => restored.is_replayed(&hash, r.expires_at_ms),
                    MemoryKey::Quarantined { .. } => true,
                };
                proptest::prop_assert!(!later);
            }
        }
    }

    fn any_key() -> impl proptest::strategy::Strategy<Value = MemoryKey> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..20).prop_map(|n| MemoryKey::Offender { peer: peer(n) }),
            (0u8..20).prop_map(|n| MemoryKey::Content { hash: [n; 32] }),
        ]
    }
}
