//! The materialized view of one space: every verified record the node holds, indexed for
//! queries, search and the validity predicate's sequence check.
//!
//! The view is a pure function of the set of records, whatever order they arrived in, so
//! two replicas holding the same documents answer every query identically. In particular
//! the newest version of a key is the one with the highest owner seq (ties impossible: a
//! reused seq is refused as equivocation), and conflicts are recomputed from the current
//! newest versions rather than remembered from arrival order.

use std::collections::{BTreeMap, BTreeSet};

use membrane_protocol::permeability::TrustGraph;
use membrane_protocol::{Entry, EnvelopeId, Key, Presence, PublicKey, Score, Tier};
use serde::{Deserialize, Serialize};

use crate::doc::Record;
use crate::search::SearchIndex;

/// Each owner's versions of one key: owner → seq → id.
type ByOwner = BTreeMap<PublicKey, BTreeMap<u64, EnvelopeId>>;

/// Two owners hold different values under one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Conflict {
    /// The contested key.
    pub key: Key,
    /// The newest entry of each owner involved, in id order.
    pub entries: Vec<EnvelopeId>,
    /// Their owners, in the same order.
    pub owners: Vec<PublicKey>,
}

/// What one owner has under one key: the newest record, held or only traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Newest {
    /// The node holds the entry.
    Held(EnvelopeId),
    /// The node only holds the entry's presence trace.
    Traced(EnvelopeId, Tier),
}

/// The view of one space.
#[derive(Debug)]
pub struct Index {
    entries: BTreeMap<EnvelopeId, Entry>,
    presences: BTreeMap<EnvelopeId, (PublicKey, Presence)>,
    retracted: BTreeMap<EnvelopeId, EnvelopeId>,
    retractions: BTreeMap<EnvelopeId, (PublicKey, EnvelopeId)>,
    /// Retractions by the record they target, so a late-arriving target finds them.
    retractions_by_target: BTreeMap<EnvelopeId, Vec<EnvelopeId>>,
    /// When each retraction was signed.
    retraction_times: BTreeMap<EnvelopeId, u64>,
    trust_edges: BTreeMap<(PublicKey, PublicKey), (u64, Score)>,
    seqs: BTreeMap<(PublicKey, u64), EnvelopeId>,
    /// key text → (key, owner → every version's seq → id, held or traced). Keyed by text so
    /// a pattern's literal prefix bounds an ordered range scan.
    versions: BTreeMap<String, (Key, ByOwner)>,
    search: SearchIndex<EnvelopeId>,
    /// Tokens each held entry costs when rendered for an agent, counted once on arrival.
    tokens: BTreeMap<EnvelopeId, u32>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            presences: BTreeMap::new(),
            retracted: BTreeMap::new(),
            retractions: BTreeMap::new(),
            retractions_by_target: BTreeMap::new(),
            retraction_times: BTreeMap::new(),
            trust_edges: BTreeMap::new(),
            seqs: BTreeMap::new(),
            versions: BTreeMap::new(),
            search: SearchIndex::new(),
            tokens: BTreeMap::new(),
        }
    }
}

impl Index {
    /// Adds a verified record, counting an entry's rendered tokens with `tokens`. Returns
    /// whether it was new.
    pub fn add_counted(
        &mut self,
        record: &Record,
        tokens: &dyn membrane_protocol::cost::TokenCounter,
    ) -> bool {
        let added = self.add(record);
        if let (true, Record::Entry(entry)) = (added, record) {
            let n = tokens.count(&crate::medium::render_hit(entry));
            self.tokens
                .insert(entry.id(), u32::try_from(n).unwrap_or(u32::MAX));
        }
        added
    }

    /// Tokens entry `id` costs when rendered, if counted.
    pub fn tokens(&self, id: &EnvelopeId) -> Option<u32> {
        self.tokens.get(id).copied()
    }

    /// Adds a verified record. Returns whether it was new.
    pub fn add(&mut self, record: &Record) -> bool {
        let id = record.envelope().id();
        let owner = *record.envelope().author();
        match record {
            Record::Entry(entry) => {
                if self.entries.contains_key(&id) {
                    return false;
                }
                let body = entry.body();
                self.seqs.insert((owner, body.seq), id);
                self.version_slot(&body.key, owner).insert(body.seq, id);
                self.entries.insert(id, entry.clone());
                self.reindex_key(&body.key.clone(), owner);
                true
            }
            Record::Presence(_, presence) => {
                if self.presences.contains_key(&presence.entry) {
                    return false;
                }
                self.version_slot(&presence.key, owner)
                    .insert(presence.seq, presence.entry);
                self.presences
                    .insert(presence.entry, (owner, presence.clone()));
                self.reindex_key(&presence.key.clone(), owner);
                true
            }
            Record::Retraction(envelope, retraction) => {
                if self.retractions.contains_key(&id) {
                    return false;
                }
                self.retraction_times.insert(id, envelope.created_at_ms());
                self.seqs.insert((owner, retraction.seq), id);
                self.retractions.insert(id, (owner, retraction.target));
                self.retractions_by_target
                    .entry(retraction.target)
                    .or_default()
                    .push(id);
                self.apply_retraction(id);
                // A retraction of the newest version changes what the key shows.
                let key = self
                    .entries
                    .get(&retraction.target)
                    .map(|e| e.body().key.clone());
                if let Some(key) = key {
                    self.reindex_key(&key, owner);
                }
                true
            }
            Record::Trust(_, edge) => {
                let slot = self
                    .trust_edges
                    .entry((owner, edge.trustee))
                    .or_insert((0, Score::ZERO));
                if edge.seq > slot.0 {
                    *slot = (edge.seq, edge.score);
                    true
                } else {
                    false
                }
            }
        }
    }

    fn version_slot(&mut self, key: &Key, owner: PublicKey) -> &mut BTreeMap<u64, EnvelopeId> {
        self.versions
            .entry(key.as_str().to_owned())
            .or_insert_with(|| (key.clone(), BTreeMap::new()))
            .1
            .entry(owner)
            .or_default()
    }

    fn versions_of(&self, key: &Key, owner: &PublicKey) -> Option<&BTreeMap<u64, EnvelopeId>> {
        self.versions
            .get(key.as_str())
            .and_then(|(_, by_owner)| by_owner.get(owner))
    }

    /// A retraction counts only against its own author's records; it may arrive before
    /// the record it retracts, so both orders end in the same state.
    fn apply_retraction(&mut self, retraction: EnvelopeId) {
        let Some((author, target)) = self.retractions.get(&retraction).copied() else {
            return;
        };
        let target_owner = self
            .entries
            .get(&target)
            .map(|e| *e.owner())
            .or_else(|| self.presences.get(&target).map(|(o, _)| *o));
        match target_owner {
            Some(owner) if owner == author => {
                self.retracted.entry(target).or_insert(retraction);
                self.search.remove(&target);
            }
            _ => {}
        }
    }

    /// Keeps the search index holding exactly the newest, unretracted held version of
    /// `key` by `owner`; applies retractions that were waiting for their target.
    fn reindex_key(&mut self, key: &Key, owner: PublicKey) {
        let targets: Vec<EnvelopeId> = self
            .versions_of(key, &owner)
            .map(|v| v.values().copied().collect())
            .unwrap_or_default();
        let pending: Vec<EnvelopeId> = targets
            .iter()
            .filter(|t| !self.retracted.contains_key(t))
            .filter_map(|t| self.retractions_by_target.get(t))
            .flatten()
            .copied()
            .collect();
        for id in pending {
            self.apply_retraction(id);
        }
        // `targets` holds every version in seq order; the last is the newest.
        let newest = targets.last().copied();
        for id in &targets {
            let live = Some(*id) == newest && !self.retracted.contains_key(id);
            match self.entries.get(id) {
                Some(entry) if live => {
                    let text = format!("{} {}", entry.body().key, entry.body().value);
                    self.search.insert(*id, &text);
                }
                _ => {
                    self.search.remove(id);
                }
            }
        }
    }

    /// Every owner's newest version of every key matching `matches`, unretracted, among
    /// keys starting with `prefix` (an ordered range scan: pass the pattern's literal
    /// prefix, or "" to scan everything).
    pub(crate) fn newest(
        &self,
        prefix: &str,
        matches: impl Fn(&Key) -> bool,
    ) -> Vec<(Key, PublicKey, Newest)> {
        let mut out = Vec::new();
        let range = self.versions.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ));
        for (text, (key, by_owner)) in range {
            if !text.starts_with(prefix) {
                break;
            }
            if !matches(key) {
                continue;
            }
            for (owner, versions) in by_owner {
                if let Some(newest) = self.newest_of(versions) {
                    out.push((key.clone(), *owner, newest));
                }
            }
        }
        out
    }

    fn newest_of(&self, versions: &BTreeMap<u64, EnvelopeId>) -> Option<Newest> {
        let id = versions.values().next_back()?;
        if self.retracted.contains_key(id) {
            return None;
        }
        if self.entries.contains_key(id) {
            Some(Newest::Held(*id))
        } else {
            self.presences
                .get(id)
                .map(|(_, p)| Newest::Traced(*id, p.tier))
        }
    }

    /// The entry with `id`, if held.
    pub fn entry(&self, id: &EnvelopeId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// When `id` was retracted by its owner (the retraction's signing time), if it was.
    pub fn retracted_at(&self, id: &EnvelopeId) -> Option<u64> {
        self.retracted
            .get(id)
            .and_then(|r| self.retraction_times.get(r))
            .copied()
    }

    /// Every held entry whose key starts with `prefix`, every version, retracted or not,
    /// in key then owner then seq order.
    pub fn history(&self, prefix: &str) -> Vec<&Entry> {
        let range = self.versions.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ));
        let mut out = Vec::new();
        for (text, (_, by_owner)) in range {
            if !text.starts_with(prefix) {
                break;
            }
            for versions in by_owner.values() {
                out.extend(versions.values().filter_map(|id| self.entries.get(id)));
            }
        }
        out
    }

    /// Whether `id` is retracted.
    pub fn is_retracted(&self, id: &EnvelopeId) -> bool {
        self.retracted.contains_key(id)
    }

    /// Whether `id` is the newest version of its key by its owner.
    pub(crate) fn is_newest(&self, entry: &Entry) -> bool {
        self.versions_of(&entry.body().key, entry.owner())
            .and_then(|v| v.values().next_back())
            == Some(&entry.id())
    }

    /// The record holding `owner`'s sequence number `seq`, if any.
    pub fn seq_owner(&self, owner: &PublicKey, seq: u64) -> Option<EnvelopeId> {
        self.seqs.get(&(*owner, seq)).copied()
    }

    /// Everyone's published trust edges, with `threshold`.
    pub fn trust_graph(&self, threshold: Score) -> TrustGraph {
        let mut graph = TrustGraph::new(threshold);
        for ((from, to), (_, score)) in &self.trust_edges {
            graph.set(*from, *to, *score);
        }
        graph
    }

    /// The search index over live held entries.
    pub fn search_index(&self) -> &SearchIndex<EnvelopeId> {
        &self.search
    }

    /// Number of entries held (all versions, retracted included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Current conflicts: keys where two or more owners' newest held, unretracted
    /// versions disagree in value.
    pub fn conflicts(&self, prefix: &str, matches: impl Fn(&Key) -> bool) -> Vec<Conflict> {
        let mut by_key: BTreeMap<Key, BTreeSet<(EnvelopeId, PublicKey)>> = BTreeMap::new();
        for (key, owner, newest) in self.newest(prefix, &matches) {
            if let Newest::Held(id) = newest {
                by_key.entry(key).or_default().insert((id, owner));
            }
        }
        let mut out = Vec::new();
        for (key, held) in by_key {
            let values: BTreeSet<&str> = held
                .iter()
                .filter_map(|(id, _)| self.entries.get(id))
                .map(|e| e.body().value.as_str())
                .collect();
            if held.len() > 1 && values.len() > 1 {
                out.push(Conflict {
                    key,
                    entries: held.iter().map(|(id, _)| *id).collect(),
                    owners: held.iter().map(|(_, o)| *o).collect(),
                });
            }
        }
        out
    }

    /// Every held entry, for audits and replays.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}
