//! Coordination state, computed from the medium: agents' capability cards, swarms (with
//! quorum activation and dissolution), tasks (with one deterministic winner among
//! concurrent claims) and verification of entries. There is no coordinator: every record
//! is an ordinary signed entry under `coord.…`, in an author-keyed slot where several
//! agents write (`…members.<author hex>`), so it replicates, validates and retracts like
//! any other entry, and every node folds the same records into the same answer.
//!
//! | record | key | written by | value (JSON) |
//! |---|---|---|---|
//! | capability card | `coord.agents.<owner>` | the agent (`register`) | `{"name", "capabilities": [{"name", "description"}]}` |
//! | swarm | `coord.swarms.<slug>` | its creator; retracted to dissolve | `{"name", "capability", "threshold"}` (+ entry ttl) |
//! | membership | `coord.swarms.<slug>.members.<owner>` | the member; retracted to leave | `{}` |
//! | task | `coord.tasks.<id>` | its poster | `{"description", "capability", "reward"?, "priority"?}` |
//! | claim | `coord.tasks.<id>.claims.<owner>` | the claimant | `{"lamport"}` |
//! | outcome | `coord.tasks.<id>.outcome.<owner>` | the winner | `{"status": "completed"\|"failed", "result"}` |
//! | verdict | `coord.verdicts.<entry id>.<owner>` | any agent but the owner | `{"verdict": "verify"\|"dispute", "note"}` |
//!
//! `<owner>` is the writer's 64-hex public key; a record whose slot names someone else is
//! ignored. Rules that need a capability (joining, claiming) read the writer's newest
//! card; a record that breaks one is ignored by every node and listed with the reason.

use std::collections::{BTreeMap, BTreeSet};

use membrane_protocol::permeability::TrustGraph;
use membrane_protocol::{Entry, EnvelopeId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::index::Index;

/// The key prefix of every coordination record.
pub const PREFIX: &str = "coord.";
/// Distinct verifiers (besides the owner) that make an entry verified, by default.
pub const DEFAULT_VERIFIERS: usize = 2;
/// Longest swarm slug.
pub const MAX_SLUG: usize = 48;

/// An owner as it appears in keys: 64 lowercase hex digits.
pub fn owner_hex(owner: &PublicKey) -> String {
    owner
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The slug of a swarm name: lowercase, runs of anything but `[a-z0-9_-]` become `-`.
pub fn slug(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_owned();
    (!out.is_empty() && out.len() <= MAX_SLUG).then_some(out)
}

/// The capability of a swarm any agent with a card may join: swarms formed around an
/// intent topic, where wanting to work on it is the qualification.
pub const ANY_CAPABILITY: &str = "*";

/// The slug of the swarm formed around intent `topic`: `intent-` and the topic's slug
/// (cut to fit), or a hash of the topic when it has no slug-able characters.
pub fn intent_slug(topic: &str) -> String {
    const ROOM: usize = MAX_SLUG - "intent-".len();
    let base = slug(&topic.chars().take(4 * MAX_SLUG).collect::<String>())
        .or_else(|| {
            // slug() refuses long results: cut the slug-able text first.
            let cut: String = topic
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || c.is_whitespace())
                .collect();
            slug(&cut.chars().take(ROOM).collect::<String>())
        })
        .map(|s| s.chars().take(ROOM).collect::<String>())
        .map(|s| s.trim_matches('-').to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            // FNV-1a: stable across nodes and versions, which is all a name needs.
            let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{hash:016x}")
        });
    format!("intent-{base}")
}

/// `coord.agents.<owner>`.
pub fn agent_key(owner: &PublicKey) -> String {
    format!("coord.agents.{}", owner_hex(owner))
}
/// `coord.swarms.<slug>`.
pub fn swarm_key(slug: &str) -> String {
    format!("coord.swarms.{slug}")
}
/// `coord.swarms.<slug>.members.<owner>`.
pub fn member_key(slug: &str, owner: &PublicKey) -> String {
    format!("coord.swarms.{slug}.members.{}", owner_hex(owner))
}
/// `coord.tasks.<id>`.
pub fn task_key(id: &str) -> String {
    format!("coord.tasks.{id}")
}
/// `coord.tasks.<id>.claims.<owner>`.
pub fn claim_key(id: &str, owner: &PublicKey) -> String {
    format!("coord.tasks.{id}.claims.{}", owner_hex(owner))
}
/// `coord.tasks.<id>.outcome.<owner>`.
pub fn outcome_key(id: &str, owner: &PublicKey) -> String {
    format!("coord.tasks.{id}.outcome.{}", owner_hex(owner))
}
/// `coord.verdicts.<entry id>.<owner>`.
pub fn verdict_key(target: &EnvelopeId, owner: &PublicKey) -> String {
    format!("coord.verdicts.{target}.{}", owner_hex(owner))
}

/// A capability as a card lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCapability {
    /// Its name.
    pub name: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// An agent's capability card, as written by `register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// The agent's name.
    pub name: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Vec<CardCapability>,
}

impl Card {
    /// Whether the card lists `capability`.
    /// [`ANY_CAPABILITY`] is on every card.
    pub fn has(&self, capability: &str) -> bool {
        capability == ANY_CAPABILITY || self.capabilities.iter().any(|c| c.name == capability)
    }
}

/// A swarm's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSpec {
    /// Its name as given.
    pub name: String,
    /// The capability members need.
    pub capability: String,
    /// Members needed to activate.
    pub threshold: u32,
}

/// A task's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// What is to be done.
    pub description: String,
    /// The capability a claimant needs.
    pub capability: String,
    /// What the poster offers, free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<String>,
    /// Higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// The swarm (slug) it was posted to, whose record as a team it counts toward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
}

/// A claim's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// One more than the highest claim the claimant had seen on the task.
    pub lamport: u64,
}

/// A task outcome's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `completed` or `failed`.
    pub status: String,
    /// The result, or why it failed.
    #[serde(default)]
    pub result: String,
}

/// A verdict's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `verify` or `dispute`.
    pub verdict: String,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// Where a swarm stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SwarmState {
    /// Fewer members than the threshold, never active.
    Forming,
    /// At least the threshold of members.
    Active,
    /// Over.
    Dissolved {
        /// Why: dissolved by its creator, expired, or members fell below the threshold.
        reason: String,
    },
}

/// A swarm as every node computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swarm {
    /// Its slug (the key segment).
    pub slug: String,
    /// Its definition.
    pub spec: SwarmSpec,
    /// Who created it.
    pub creator: PublicKey,
    /// The defining entry.
    pub id: EnvelopeId,
    /// Current members, in key order.
    pub members: Vec<PublicKey>,
    /// Its state.
    pub state: SwarmState,
    /// When it first reached the threshold.
    pub activated_at_ms: Option<u64>,
    /// Joins ignored, and why.
    pub refused: Vec<(PublicKey, String)>,
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// No valid claim.
    Open,
    /// Claimed by the winner.
    Claimed,
    /// The winner completed it.
    Completed {
        /// The outcome entry.
        result: String,
    },
    /// The winner failed it.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A task as every node computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its id (the key segment).
    pub id: String,
    /// Its definition.
    pub description: String,
    /// The capability claimants need.
    pub capability: String,
    /// What the poster offers.
    pub reward: Option<String>,
    /// Higher first.
    pub priority: Option<i64>,
    /// Who posted it.
    pub poster: PublicKey,
    /// The defining entry.
    pub entry: EnvelopeId,
    /// Valid claims, best first: (claimant, lamport).
    pub claims: Vec<(PublicKey, u64)>,
    /// The winning claimant.
    pub winner: Option<PublicKey>,
    /// Its state.
    pub state: TaskState,
    /// Claims ignored, and why.
    pub refused: Vec<(PublicKey, String)>,
    /// The swarm it was posted to.
    pub swarm: Option<String>,
}

/// A swarm's record as a team: the tasks posted to it that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    /// The swarm.
    pub swarm: String,
    /// Its members (the last ones, if it dissolved).
    pub members: Vec<PublicKey>,
    /// Tasks posted to it and completed.
    pub completed: u32,
    /// Tasks posted to it and failed.
    pub failed: u32,
}

/// Verdicts on one entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Agents other than the owner who verified it.
    pub verifiers: Vec<PublicKey>,
    /// Agents who dispute it.
    pub disputers: Vec<PublicKey>,
    /// At least `k` verifiers and no dispute the reader trusts.
    pub verified: bool,
    /// A dispute the reader trusts stands (a conflict).
    pub contested: bool,
}

/// Everything coordination in one space, computed at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Capability cards by agent.
    pub cards: BTreeMap<PublicKey, Card>,
    /// Swarms by slug.
    pub swarms: BTreeMap<String, Swarm>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, Task>,
    /// What each agent has done (with [`DEFAULT_VERIFIERS`] as k).
    pub standings: BTreeMap<PublicKey, Standing>,
    /// Swarms that ended at least one task posted to them, by slug.
    pub teams: BTreeMap<String, Team>,
}

fn live_newest<'a>(index: &'a Index, prefix: &str) -> Vec<&'a Entry> {
    let mut newest: BTreeMap<(String, PublicKey), &Entry> = BTreeMap::new();
    for entry in index.history(prefix) {
        let slot = (entry.body().key.to_string(), *entry.owner());
        match newest.get(&slot) {
            Some(e) if e.body().seq >= entry.body().seq => {}
            _ => {
                newest.insert(slot, entry);
            }
        }
    }
    newest
        .into_values()
        .filter(|e| !index.is_retracted(&e.id()))
        .collect()
}

fn json<T: serde::de::DeserializeOwned>(entry: &Entry) -> Option<T> {
    serde_json::from_str(&entry.body().value).ok()
}

/// Whether the last segment of an entry's key names its owner. Called for every record on
/// every fold, so it compares in place rather than formatting the owner's hex.
fn slot_is_owner(entry: &Entry) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Some(last) = entry.body().key.as_str().rsplit('.').next() else {
        return false;
    };
    let last = last.as_bytes();
    last.len() == 2 * entry.owner().as_bytes().len()
        && entry
            .owner()
            .as_bytes()
            .iter()
            .zip(last.chunks(2))
            .all(|(b, pair)| {
                pair[0] == HEX[usize::from(b >> 4)] && pair[1] == HEX[usize::from(b & 0xf)]
            })
}

/// Capability cards: each agent's newest, unretracted card in its own slot.
pub fn cards(index: &Index) -> BTreeMap<PublicKey, Card> {
    live_newest(index, "coord.agents.")
        .into_iter()
        .filter(|e| slot_is_owner(e))
        .filter_map(|e| Some((*e.owner(), json::<Card>(e)?)))
        .collect()
}

fn capability_refusal(
    cards: &BTreeMap<PublicKey, Card>,
    who: &PublicKey,
    capability: &str,
) -> Option<String> {
    match cards.get(who) {
        None => Some(format!(
            "{} has no capability card (register first)",
            who.short()
        )),
        Some(card) if !card.has(capability) => Some(format!(
            "{}'s capability card lacks {capability}",
            card.name
        )),
        Some(_) => None,
    }
}

/// The swarm `slug`, or `None` if no one ever created it.
pub fn swarm(
    index: &Index,
    cards: &BTreeMap<PublicKey, Card>,
    slug: &str,
    now_ms: u64,
) -> Option<Swarm> {
    let key = swarm_key(slug);
    // The defining record: among every version ever written under the key, the earliest
    // (time, creator) wins, so two agents creating one name agree on whose it is.
    let defining = index
        .history(&key)
        .into_iter()
        .filter(|e| e.body().key.as_str() == key)
        .filter(|e| json::<SwarmSpec>(e).is_some_and(|s| s.threshold > 0))
        .min_by_key(|e| (e.created_at_ms(), *e.owner(), e.body().seq))?;
    let creator = *defining.owner();
    // The creator's newest version is the current definition.
    let current = index
        .history(&key)
        .into_iter()
        .filter(|e| e.body().key.as_str() == key && e.owner() == &creator)
        .max_by_key(|e| e.body().seq)?;
    let spec = json::<SwarmSpec>(current)?;
    let member_prefix = format!("{key}.members.");
    // Membership intervals, from every version of every member slot.
    let mut refused = Vec::new();
    let mut changes: Vec<(u64, i8, PublicKey)> = Vec::new();
    let mut seen_refused = BTreeSet::new();
    for entry in index.history(&member_prefix) {
        if !slot_is_owner(entry) {
            continue;
        }
        let who = *entry.owner();
        if let Some(reason) = capability_refusal(cards, &who, &spec.capability) {
            if seen_refused.insert(who) {
                refused.push((who, reason));
            }
            continue;
        }
        changes.push((entry.created_at_ms(), 1, who));
        if let Some(at) = index.retracted_at(&entry.id()) {
            changes.push((at, -1, who));
        }
    }
    changes.sort();
    let mut live: BTreeMap<PublicKey, i64> = BTreeMap::new();
    let mut activated_at_ms = None;
    for (at, delta, who) in &changes {
        let n = live.entry(*who).or_insert(0);
        *n += i64::from(*delta);
        let members = live.values().filter(|n| **n > 0).count();
        if activated_at_ms.is_none() && members >= spec.threshold as usize {
            activated_at_ms = Some(*at);
        }
    }
    let members: Vec<PublicKey> = live_newest(index, &member_prefix)
        .into_iter()
        .filter(|e| slot_is_owner(e) && !refused.iter().any(|(r, _)| r == e.owner()))
        .map(|e| *e.owner())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let state = if index.is_retracted(&current.id()) {
        SwarmState::Dissolved {
            reason: "dissolved by its creator".into(),
        }
    } else if current.expired(now_ms) {
        SwarmState::Dissolved {
            reason: "its ttl ran out".into(),
        }
    } else if members.len() >= spec.threshold as usize {
        SwarmState::Active
    } else if activated_at_ms.is_some() {
        SwarmState::Dissolved {
            reason: format!(
                "members fell to {} below the threshold of {} after activation",
                members.len(),
                spec.threshold
            ),
        }
    } else {
        SwarmState::Forming
    };
    Some(Swarm {
        slug: slug.to_owned(),
        spec,
        creator,
        id: current.id(),
        members,
        state,
        activated_at_ms,
        refused,
    })
}

/// The task `id`, or `None` if it was never posted (or its post was retracted).
pub fn task(index: &Index, cards: &BTreeMap<PublicKey, Card>, id: &str) -> Option<Task> {
    let key = task_key(id);
    let post = live_newest(index, &key)
        .into_iter()
        .filter(|e| e.body().key.as_str() == key)
        .min_by_key(|e| (e.created_at_ms(), *e.owner()))?;
    let spec = json::<TaskSpec>(post)?;
    let mut claims = Vec::new();
    let mut refused = Vec::new();
    for entry in live_newest(index, &format!("{key}.claims.")) {
        if !slot_is_owner(entry) {
            continue;
        }
        let who = *entry.owner();
        let Some(claim) = json::<Claim>(entry) else {
            refused.push((who, "the claim is not {\"lamport\": n}".to_owned()));
            continue;
        };
        match capability_refusal(cards, &who, &spec.capability) {
            Some(reason) => refused.push((who, reason)),
            None => claims.push((who, claim.lamport)),
        }
    }
    // Lowest (lamport, agent id) wins, everywhere, whatever order the claims arrived in.
    claims.sort_by_key(|(who, lamport)| (*lamport, *who));
    let winner = claims.first().map(|(who, _)| *who);
    let state = match winner {
        None => TaskState::Open,
        Some(winner) => {
            let outcome = live_newest(index, &outcome_key(id, &winner))
                .into_iter()
                .find(|e| e.owner() == &winner)
                .and_then(|e| Some((e.id(), json::<Outcome>(e)?)));
            match outcome {
                Some((entry, o)) if o.status == "completed" => TaskState::Completed {
                    result: entry.to_string(),
                },
                Some((_, o)) if o.status == "failed" => TaskState::Failed { reason: o.result },
                _ => TaskState::Claimed,
            }
        }
    };
    Some(Task {
        id: id.to_owned(),
        description: spec.description,
        capability: spec.capability,
        reward: spec.reward,
        priority: spec.priority,
        poster: *post.owner(),
        entry: post.id(),
        claims,
        winner,
        state,
        refused,
        swarm: spec.swarm,
    })
}

/// The distinct second segments of keys under `prefix` (`coord.swarms.` → slugs).
fn names_under(index: &Index, prefix: &str) -> BTreeSet<String> {
    index
        .history(prefix)
        .into_iter()
        .filter_map(|e| {
            e.body().key.as_str()[prefix.len()..]
                .split('.')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// Every card, swarm and task in the space.
pub fn snapshot(index: &Index, now_ms: u64) -> Snapshot {
    let cards = cards(index);
    let swarms = names_under(index, "coord.swarms.")
        .into_iter()
        .filter_map(|slug| Some((slug.clone(), swarm(index, &cards, &slug, now_ms)?)))
        .collect();
    let tasks = names_under(index, "coord.tasks.")
        .into_iter()
        .filter_map(|id| Some((id.clone(), task(index, &cards, &id)?)))
        .collect();
    let mut snapshot = Snapshot {
        cards,
        swarms,
        tasks,
        standings: BTreeMap::new(),
        teams: BTreeMap::new(),
    };
    snapshot.standings = standings(index, &snapshot, DEFAULT_VERIFIERS, now_ms);
    snapshot.teams = teams(&snapshot);
    snapshot
}

/// Each swarm's record as a team, from the tasks posted to it.
fn teams(snapshot: &Snapshot) -> BTreeMap<String, Team> {
    let mut out: BTreeMap<String, Team> = BTreeMap::new();
    for task in snapshot.tasks.values() {
        let Some(swarm) = task.swarm.as_ref().and_then(|s| snapshot.swarms.get(s)) else {
            continue;
        };
        let (completed, failed) = match task.state {
            TaskState::Completed { .. } => (1, 0),
            TaskState::Failed { .. } => (0, 1),
            _ => continue,
        };
        let team = out.entry(swarm.slug.clone()).or_insert_with(|| Team {
            swarm: swarm.slug.clone(),
            members: swarm.members.clone(),
            completed: 0,
            failed: 0,
        });
        team.completed += completed;
        team.failed += failed;
    }
    out
}

/// How well `agent` has worked in teams with any of `with` (itself excluded): twice the
/// Laplace-smoothed share of completed tasks over the swarms that held both, in (0, 2];
/// 1 when they never shared a team that ended a task.
pub fn teamwork(snapshot: &Snapshot, agent: &PublicKey, with: &[PublicKey]) -> f64 {
    let (mut done, mut failed) = (0_u32, 0_u32);
    for team in snapshot.teams.values() {
        if team.members.contains(agent)
            && with.iter().any(|w| w != agent && team.members.contains(w))
        {
            done += team.completed;
            failed += team.failed;
        }
    }
    if done + failed == 0 {
        return 1.0;
    }
    2.0 * (1.0 + f64::from(done)) / (2.0 + f64::from(done) + f64::from(failed))
}

/// The verdicts on `target` as `reader` sees them: verified with at least `k` verifiers
/// other than the owner and no dispute by an agent the reader trusts (or the reader).
pub fn verification(
    index: &Index,
    target: &EnvelopeId,
    owner: Option<&PublicKey>,
    reader: &PublicKey,
    trust: &TrustGraph,
    k: usize,
) -> Verification {
    let mut out = Verification::default();
    for entry in live_newest(index, &format!("coord.verdicts.{target}.")) {
        let who = *entry.owner();
        if !slot_is_owner(entry) || Some(&who) == owner {
            continue;
        }
        match json::<Verdict>(entry).map(|v| v.verdict) {
            Some(v) if v == "verify" => out.verifiers.push(who),
            Some(v) if v == "dispute" => out.disputers.push(who),
            _ => {}
        }
    }
    out.contested = out
        .disputers
        .iter()
        .any(|d| d == reader || trust.admits(reader, d));
    out.verified = out.verifiers.len() >= k && !out.contested;
    out
}

/// Half-life of a task outcome's weight in an agent's standing: old successes and
/// failures fade, so standing follows what an agent does now.
pub const STANDING_HALF_LIFE_MS: u64 = 14 * 24 * 3600 * 1000;

/// What an agent has done, as the medium records it: the basis of its reputation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Standing {
    /// Tasks it won and completed, by capability.
    pub completed: BTreeMap<String, u32>,
    /// Tasks it won and failed, by capability.
    pub failed: BTreeMap<String, u32>,
    /// Completed tasks by capability, each weighted by its age (half-life
    /// [`STANDING_HALF_LIFE_MS`]): what [`Standing::weight`] counts.
    pub recent_completed: BTreeMap<String, f64>,
    /// Failed tasks by capability, weighted by age likewise.
    pub recent_failed: BTreeMap<String, f64>,
    /// Its entries that at least `k` other agents verified.
    pub verified: u32,
    /// Its entries that someone disputed.
    pub disputed: u32,
}

impl Standing {
    /// A factor in (0, 2]: the Laplace-smoothed success rate on `capability` (all
    /// capabilities when `None`), nudged up by verified entries and down by disputed ones.
    pub fn weight(&self, capability: Option<&str>) -> f64 {
        let count = |m: &BTreeMap<String, f64>| -> f64 {
            match capability {
                Some(c) => m.get(c).copied().unwrap_or(0.0),
                None => m.values().sum(),
            }
        };
        let (done, failed) = (count(&self.recent_completed), count(&self.recent_failed));
        let success = (1.0 + done) / (2.0 + done + failed);
        let evidence =
            1.0 + 0.05 * f64::from(self.verified.min(10)) - 0.05 * f64::from(self.disputed.min(10));
        (2.0 * success * evidence).clamp(0.05, 2.0)
    }
}

/// Every agent's standing in the space: task outcomes (the winner's, per the task's
/// capability) and verdicts on its entries.
pub fn standings(
    index: &Index,
    snapshot: &Snapshot,
    k: usize,
    now_ms: u64,
) -> BTreeMap<PublicKey, Standing> {
    let mut out: BTreeMap<PublicKey, Standing> = BTreeMap::new();
    for task in snapshot.tasks.values() {
        let Some(winner) = task.winner else { continue };
        let completed = match task.state {
            TaskState::Completed { .. } => true,
            TaskState::Failed { .. } => false,
            _ => continue,
        };
        // The outcome's age, by the winner's signed outcome record.
        let at = live_newest(index, &outcome_key(&task.id, &winner))
            .into_iter()
            .find(|e| e.owner() == &winner)
            .map_or(now_ms, Entry::created_at_ms);
        let age = now_ms.saturating_sub(at) as f64;
        let weight = 0.5_f64.powf(age / STANDING_HALF_LIFE_MS as f64);
        let standing = out.entry(winner).or_default();
        let capability = task.capability.clone();
        if completed {
            *standing.completed.entry(capability.clone()).or_default() += 1;
            *standing.recent_completed.entry(capability).or_default() += weight;
        } else {
            *standing.failed.entry(capability.clone()).or_default() += 1;
            *standing.recent_failed.entry(capability).or_default() += weight;
        }
    }
    let mut verdicts: BTreeMap<String, (BTreeSet<PublicKey>, bool)> = BTreeMap::new();
    for entry in live_newest(index, "coord.verdicts.") {
        if !slot_is_owner(entry) {
            continue;
        }
        let Some(target) = entry.body().key.as_str().split('.').nth(2) else {
            continue;
        };
        let slot = verdicts.entry(target.to_owned()).or_default();
        match json::<Verdict>(entry).map(|v| v.verdict).as_deref() {
            Some("verify") => {
                slot.0.insert(*entry.owner());
            }
            Some("dispute") => slot.1 = true,
            _ => {}
        }
    }
    for (target, (verifiers, disputed)) in verdicts {
        let Ok(id) = target.parse::<EnvelopeId>() else {
            continue;
        };
        let Some(owner) = index.entry(&id).map(|e| *e.owner()) else {
            continue;
        };
        let standing = out.entry(owner).or_default();
        if verifiers.iter().filter(|v| **v != owner).count() >= k {
            standing.verified += 1;
        }
        if disputed {
            standing.disputed += 1;
        }
    }
    out
}

/// One agent found by `discover`.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Who.
    pub agent: PublicKey,
    /// Its card's name.
    pub name: String,
    /// The capability that matched best.
    pub capability: String,
    /// Text match × standing.
    pub score: f64,
    /// How well the card's words match the need, 0 to 1.
    pub text_match: f64,
    /// The standing factor for that capability.
    pub standing: f64,
    /// How well it worked in teams with the agents it would join ([`teamwork`]).
    pub teamwork: f64,
}

/// Agents ranked for a need: the best-matching capability on each card (by the share of
/// the need's words it covers, stemmed) times the agent's standing for that capability.
/// Agents with no matching word are left out.
pub fn discover(snapshot: &Snapshot, need: &str) -> Vec<Candidate> {
    discover_with(snapshot, need, &[])
}

/// [`discover`] for a team of `with`: each candidate's score is also weighted by its
/// [`teamwork`] with them, so combinations that completed tasks together come first.
pub fn discover_with(snapshot: &Snapshot, need: &str, with: &[PublicKey]) -> Vec<Candidate> {
    let need: BTreeSet<String> = crate::search::tokenize(need).into_iter().collect();
    if need.is_empty() {
        return Vec::new();
    }
    let standings = &snapshot.standings;
    let mut out = Vec::new();
    for (agent, card) in &snapshot.cards {
        let best = card
            .capabilities
            .iter()
            .map(|c| {
                let words: BTreeSet<String> = crate::search::tokenize(&format!(
                    "{} {}",
                    c.name.replace(['_', '-'], " "),
                    c.description
                ))
                .into_iter()
                .collect();
                let hit = need.intersection(&words).count() as f64 / need.len() as f64;
                (hit, c.name.clone())
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        let Some((text_match, capability)) = best else {
            continue;
        };
        if text_match <= 0.0 {
            continue;
        }
        let standing = standings
            .get(agent)
            .map_or(Standing::default().weight(Some(&capability)), |s| {
                s.weight(Some(&capability))
            });
        let teamwork = teamwork(snapshot, agent, with);
        out.push(Candidate {
            agent: *agent,
            name: card.name.clone(),
            capability,
            score: text_match * standing * teamwork,
            text_match,
            standing,
            teamwork,
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.agent.cmp(&b.agent)));
    out
}

/// A role the medium suggests for an agent, with the reason. Hints are derived, never
/// assigned: every node computes its own agent's from what it sees.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleHint {
    /// `coordinate`, `fill_gap` or `mediate`.
    pub role: &'static str,
    /// What it is about: a swarm slug, a task id or a key.
    pub subject: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// Entries (not coordination records) each agent holds that are relevant to `text`, by
/// the search index: the owners of the best matches among the newest live entries.
fn context_by_owner(index: &Index, text: &str) -> BTreeMap<PublicKey, usize> {
    let mut out = BTreeMap::new();
    for hit in index.search_index().search(text, 256) {
        let Some(entry) = index.entry(&hit.id) else {
            continue;
        };
        if entry.body().key.as_str().starts_with(PREFIX)
            || index.is_retracted(&hit.id)
            || !index.is_newest(entry)
        {
            continue;
        }
        *out.entry(*entry.owner()).or_default() += 1;
    }
    out
}

/// *Coordinate*: in each active swarm `me` belongs to, `me` holds the most entries relevant
/// to the swarm's name and capability among its members (ties to the lowest id).
pub fn coordinate_hints(index: &Index, snapshot: &Snapshot, me: &PublicKey) -> Vec<RoleHint> {
    let mut out = Vec::new();
    for swarm in snapshot.swarms.values() {
        if swarm.state != SwarmState::Active || !swarm.members.contains(me) {
            continue;
        }
        let text = format!("{} {}", swarm.spec.name, swarm.spec.capability);
        let context = context_by_owner(index, &text);
        let held = |who: &PublicKey| context.get(who).copied().unwrap_or(0);
        // Members are in id order, so max_by_key's last-wins would pick the highest id.
        let best = swarm
            .members
            .iter()
            .rev()
            .max_by_key(|who| held(who))
            .copied();
        let mine = held(me);
        if best == Some(*me) && mine > 0 {
            let total: usize = swarm.members.iter().map(held).sum();
            out.push(RoleHint {
                role: "coordinate",
                subject: swarm.slug.clone(),
                reason: format!(
                    "you hold {mine} of the {total} entries relevant to swarm {} among its \
                     {} members, the most",
                    swarm.slug,
                    swarm.members.len()
                ),
            });
        }
    }
    out
}

/// Tasks with no taker that `me` could take: open, unclaimed, not posted by `me`, needing
/// a capability on `me`'s card; with the time each was posted.
pub fn gaps(index: &Index, snapshot: &Snapshot, me: &PublicKey) -> Vec<(String, u64, String)> {
    let Some(card) = snapshot.cards.get(me) else {
        return Vec::new();
    };
    snapshot
        .tasks
        .values()
        .filter(|t| {
            t.state == TaskState::Open
                && t.claims.is_empty()
                && t.poster != *me
                && card.has(&t.capability)
        })
        .filter_map(|t| {
            let posted = index.entry(&t.entry)?.created_at_ms();
            Some((t.id.clone(), posted, t.capability.clone()))
        })
        .collect()
}

/// *Mediate*: a conflict between other owners on an entry `me` can see.
pub fn mediate_hint(conflict: &crate::Conflict, me: &PublicKey) -> Option<RoleHint> {
    if conflict.owners.contains(me) || conflict.owners.len() < 2 {
        return None;
    }
    Some(RoleHint {
        role: "mediate",
        subject: conflict.key.to_string(),
        reason: format!(
            "{} owners disagree on {} and you are not one of them",
            conflict.owners.len(),
            conflict.key
        ),
    })
}

#[cfg(test)]
mod intent_slug_tests {
    use super::*;

    #[test]
    fn intent_slugs_fit_and_differ() {
        assert_eq!(intent_slug("Rust parsers"), "intent-rust-parsers");
        let long = intent_slug(&"very long topic ".repeat(40));
        assert!(
            long.len() <= MAX_SLUG && long.starts_with("intent-very-long"),
            "{long}"
        );
        let (a, b) = (intent_slug("北京 旅行"), intent_slug("東京 旅行"));
        assert!(
            a.starts_with("intent-") && a.len() == "intent-".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
        assert!(slug(&a) == Some(a.clone()));
        let card = Card {
            name: "x".into(),
            capabilities: Vec::new(),
        };
        assert!(card.has(ANY_CAPABILITY) && !card.has("maps"));
    }
}
