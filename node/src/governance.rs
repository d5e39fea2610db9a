//! What the shared medium's records mean for governance, read as they arrive: task
//! outcomes feed the delegation circuit breakers, claims and joins without the capability
//! are offences, and contradicting facts or a dispute of a verified entry are escalated to
//! the agent.
//!
//! Everything here is a function of the medium's index, its coordination snapshot and the
//! events that just arrived; the event loop carries out what comes back (observations for
//! the immune layer, escalations to audit, log and tell the agent about). The sets of what
//! was already fed or escalated are bounded ([`MAX_REMEMBERED`]), oldest forgotten first.

use std::collections::{BTreeSet, VecDeque};

use membrane_crdt::coord::{self, Card, Snapshot, TaskState};
use membrane_crdt::index::Index;
use membrane_crdt::{Conflict, Event, EventKind};
use membrane_immune::audit::AuditEvent;
use membrane_immune::{CapabilityAct, Observation};
use membrane_protocol::permeability::TrustGraph;
use membrane_protocol::signals::{Capability, CapabilityAd};
use membrane_protocol::{EntryKind, EnvelopeId, Key, PublicKey, Space};

/// Outcomes fed and escalations made that are remembered, at most (each).
pub(crate) const MAX_REMEMBERED: usize = 65_536;

/// A value conflict the agent (and its operator) should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Escalation {
    pub(crate) space: Space,
    pub(crate) key: Key,
    pub(crate) entries: Vec<EnvelopeId>,
    pub(crate) owners: Vec<PublicKey>,
    pub(crate) reason: String,
}

impl Escalation {
    /// The conflict record for the audit log.
    pub(crate) fn audit(&self) -> AuditEvent {
        AuditEvent::Conflict {
            space: self.space.to_string(),
            key: self.key.to_string(),
            entries: self.entries.iter().map(ToString::to_string).collect(),
            owners: self.owners.clone(),
            reason: self.reason.clone(),
        }
    }

    /// The event for the agent.
    pub(crate) fn event(&self) -> EventKind {
        EventKind::Escalation {
            space: self.space.clone(),
            key: self.key.clone(),
            entries: self.entries.clone(),
            owners: self.owners.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// A set that forgets its oldest members beyond a capacity.
#[derive(Debug)]
struct Remembered<T: Ord + Clone> {
    set: BTreeSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: Ord + Clone> Remembered<T> {
    fn new(cap: usize) -> Self {
        Self {
            set: BTreeSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Adds `item`; whether it was new.
    fn insert(&mut self, item: T) -> bool {
        if self.set.contains(&item) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(item.clone());
        self.order.push_back(item);
        true
    }
}

/// What was fed and escalated already.
#[derive(Debug)]
pub(crate) struct Governance {
    /// (space, task, winner, outcome entry).
    outcomes: Remembered<(Space, String, PublicKey, EnvelopeId)>,
    /// Escalations, by what they are about.
    escalated: Remembered<String>,
}

impl Default for Governance {
    fn default() -> Self {
        Self {
            outcomes: Remembered::new(MAX_REMEMBERED),
            escalated: Remembered::new(MAX_REMEMBERED),
        }
    }
}

/// The keys of entries that just arrived from peers (`arrived_only`) or were also written
/// here, in `space`, with their owners.
fn new_keys<'a>(
    events: &'a [Event],
    space: &'a Space,
    me: &'a PublicKey,
    arrived_only: bool,
) -> impl Iterator<Item = (&'a Key, &'a PublicKey)> + 'a {
    events.iter().filter_map(move |e| match &e.kind {
        EventKind::Arrived {
            space: s,
            key,
            owner,
            ..
        } if s == space => Some((key, owner)),
        EventKind::Exposed { space: s, key, .. } if s == space && !arrived_only => Some((key, me)),
        _ => None,
    })
}

/// The segments of `key` if it is `coord.<section>.<name>.<kind>.<owner hex>` written by
/// `owner` in its own slot: `name`.
fn own_slot<'a>(key: &'a Key, section: &str, kind: &str, owner: &PublicKey) -> Option<&'a str> {
    let mut parts = key.as_str().split('.');
    let ok = parts.next() == Some("coord") && parts.next() == Some(section);
    let name = parts.next()?;
    let ok = ok && parts.next() == Some(kind) && parts.next() == Some(&coord::owner_hex(owner));
    (ok && parts.next().is_none()).then_some(name)
}

/// A card as the capability detector reads an ad: what the agent signed that it can do.
/// Cards do not expire (a newer one, or a retraction, replaces them).
fn card_ad(space: &Space, card: Option<&Card>) -> Option<CapabilityAd> {
    card.map(|card| CapabilityAd {
        space: space.clone(),
        name: card.name.clone(),
        capabilities: card
            .capabilities
            .iter()
            .map(|c| Capability {
                name: c.name.clone(),
                description: c.description.clone(),
            })
            .collect(),
        exposes: Vec::new(),
        version: 0,
        expires_at_ms: u64::MAX,
    })
}

impl Governance {
    /// The task outcomes in `snapshot` not fed before, oldest first (by the outcome's
    /// signing time), as observations for the breakers; only of the tasks in `touched`
    /// (whose records just arrived) if given. With `feed` false they are only remembered:
    /// at start, history is not news.
    pub(crate) fn outcomes(
        &mut self,
        space: &Space,
        snapshot: &Snapshot,
        index: &Index,
        touched: Option<&BTreeSet<String>>,
        feed: bool,
    ) -> Vec<Observation> {
        let mut found = Vec::new();
        let tasks = snapshot
            .tasks
            .values()
            .filter(|t| touched.is_none_or(|ids| ids.contains(&t.id)));
        for task in tasks {
            let (Some(winner), success) = (
                task.winner,
                matches!(task.state, TaskState::Completed { .. }),
            ) else {
                continue;
            };
            if !matches!(
                task.state,
                TaskState::Completed { .. } | TaskState::Failed { .. }
            ) {
                continue;
            }
            let key = coord::outcome_key(&task.id, &winner);
            let Some(outcome) = index
                .history(&key)
                .into_iter()
                .filter(|e| e.body().key.as_str() == key && e.owner() == &winner)
                .max_by_key(|e| e.body().seq)
            else {
                continue;
            };
            let seen = (space.clone(), task.id.clone(), winner, outcome.id());
            if self.outcomes.insert(seen) && feed {
                found.push((
                    outcome.created_at_ms(),
                    Observation::TaskOutcome {
                        agent: winner,
                        capability: task.capability.clone(),
                        success,
                    },
                ));
            }
        }
        found.sort_by_key(|(at, _)| *at);
        found.into_iter().map(|(_, o)| o).collect()
    }

    /// The tasks of `space` with a record (the task, a claim, an outcome) among `events`.
    pub(crate) fn touched_tasks(
        events: &[Event],
        space: &Space,
        me: &PublicKey,
    ) -> BTreeSet<String> {
        new_keys(events, space, me, false)
            .filter_map(|(key, _)| {
                let rest = key.as_str().strip_prefix("coord.tasks.")?;
                Some(rest.split('.').next()?.to_owned())
            })
            .collect()
    }

    /// Claims and joins among the records that just arrived in `space` that the snapshot
    /// refuses because their writer's card lacks the capability: offences of the writer,
    /// judged against the card it had signed when the record arrived.
    pub(crate) fn violations(
        space: &Space,
        snapshot: &Snapshot,
        events: &[Event],
        me: &PublicKey,
    ) -> Vec<Observation> {
        let mut out = Vec::new();
        for (key, owner) in new_keys(events, space, me, true) {
            let (capability, act, refused) =
                if let Some(id) = own_slot(key, "tasks", "claims", owner) {
                    let Some(task) = snapshot.tasks.get(id) else {
                        continue;
                    };
                    (&task.capability, CapabilityAct::Claim, &task.refused)
                } else if let Some(slug) = own_slot(key, "swarms", "members", owner) {
                    let Some(swarm) = snapshot.swarms.get(slug) else {
                        continue;
                    };
                    (&swarm.spec.capability, CapabilityAct::Join, &swarm.refused)
                } else {
                    continue;
                };
            let card = snapshot.cards.get(owner);
            let lacks = card.is_none_or(|c| !c.has(capability));
            if lacks && refused.iter().any(|(who, _)| who == owner) {
                out.push(Observation::CapabilityUse {
                    peer: *owner,
                    capability: capability.clone(),
                    act,
                    ad: card_ad(space, card),
                });
            }
        }
        out
    }

    /// Value conflicts among `events` where owners' facts disagree, not escalated before.
    /// Conflicts among other kinds (drafts, hypotheses, opinions) are ordinary and only
    /// logged by the medium.
    pub(crate) fn conflicts<'i>(
        &mut self,
        events: &[Event],
        index: impl Fn(&Space) -> Option<&'i Index>,
    ) -> Vec<Escalation> {
        let mut out = Vec::new();
        for event in events {
            let EventKind::Conflict { space, conflict } = &event.kind else {
                continue;
            };
            let Some(index) = index(space) else { continue };
            if let Some(e) = self.fact_conflict(space, conflict, index) {
                out.push(e);
            }
        }
        out
    }

    fn fact_conflict(
        &mut self,
        space: &Space,
        conflict: &Conflict,
        index: &Index,
    ) -> Option<Escalation> {
        let facts: Vec<(EnvelopeId, PublicKey, &str)> = conflict
            .entries
            .iter()
            .zip(&conflict.owners)
            .filter_map(|(id, owner)| {
                let entry = index.entry(id)?;
                (entry.body().kind == EntryKind::Fact)
                    .then(|| (*id, *owner, entry.body().value.as_str()))
            })
            .collect();
        let owners: BTreeSet<PublicKey> = facts.iter().map(|(_, o, _)| *o).collect();
        let values: BTreeSet<&str> = facts.iter().map(|(_, _, v)| *v).collect();
        if owners.len() < 2 || values.len() < 2 {
            return None;
        }
        let mut ids: Vec<String> = facts.iter().map(|(id, _, _)| id.to_string()).collect();
        ids.sort();
        let about = format!("conflict|{space}|{}|{}", conflict.key, ids.join(","));
        if !self.escalated.insert(about) {
            return None;
        }
        Some(Escalation {
            space: space.clone(),
            key: conflict.key.clone(),
            entries: facts.iter().map(|(id, _, _)| *id).collect(),
            owners: facts.iter().map(|(_, o, _)| *o).collect(),
            reason: format!(
                "{} owners state contradicting facts under {}",
                owners.len(),
                conflict.key
            ),
        })
    }

    /// Entries verified by at least `k` agents and disputed by some, among the targets of
    /// the verdicts that just arrived or were written here in `space`, not escalated
    /// before with the same disputers.
    pub(crate) fn disputes(
        &mut self,
        space: &Space,
        index: &Index,
        trust: &TrustGraph,
        events: &[Event],
        me: &PublicKey,
        k: usize,
    ) -> Vec<Escalation> {
        let targets: BTreeSet<EnvelopeId> = new_keys(events, space, me, false)
            .filter_map(|(key, owner)| {
                let target = own_slot_verdict(key, owner)?;
                target.parse().ok()
            })
            .collect();
        let mut out = Vec::new();
        for target in targets {
            let Some(entry) = index.entry(&target) else {
                continue;
            };
            let owner = *entry.owner();
            let v = coord::verification(index, &target, Some(&owner), me, trust, k);
            if v.disputers.is_empty() || v.verifiers.len() < k {
                continue;
            }
            let mut disputers = v.disputers.clone();
            disputers.sort();
            let about = format!(
                "dispute|{space}|{target}|{}",
                disputers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if !self.escalated.insert(about) {
                continue;
            }
            out.push(Escalation {
                space: space.clone(),
                key: entry.body().key.clone(),
                entries: vec![target],
                owners: std::iter::once(owner).chain(disputers).collect(),
                reason: format!(
                    "a {} verified by {} agents is disputed by {}",
                    entry.body().kind,
                    v.verifiers.len(),
                    v.disputers.len()
                ),
            });
        }
        out
    }
}

/// The target of `coord.verdicts.<target>.<owner hex>` written by `owner` in its own slot.
fn own_slot_verdict<'a>(key: &'a Key, owner: &PublicKey) -> Option<&'a str> {
    let rest = key.as_str().strip_prefix("coord.verdicts.")?;
    let (target, hex) = rest.split_once('.')?;
    (hex == coord::owner_hex(owner)).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_forgets_the_oldest_beyond_its_capacity() {
        let mut r = Remembered::new(2);
        assert!(r.insert(1) && r.insert(2));
        assert!(!r.insert(1), "known");
        assert!(r.insert(3), "1 is forgotten to make room");
        assert!(r.insert(1));
        assert!(!r.insert(3));
        assert_eq!(r.set.len(), 2);
    }

    #[test]
    fn touched_tasks_are_those_with_a_record_among_the_events() {
        let me = membrane_protocol::Keypair::from_seed(&[1; 32]).public();
        let other = membrane_protocol::Keypair::from_seed(&[2; 32]).public();
        let space: Space = "s".parse().unwrap();
        let elsewhere: Space = "t".parse().unwrap();
        let arrived = |space: &Space, key: &str| Event {
            seq: 1,
            kind: EventKind::Arrived {
                space: space.clone(),
                id: EnvelopeId([0; 32]),
                key: key.parse().unwrap(),
                owner: other,
                tier: membrane_protocol::Tier::Public,
            },
        };
        let events = [
            arrived(&space, "coord.tasks.t1"),
            arrived(&space, &coord::outcome_key("t2", &other)),
            arrived(&space, "coord.swarms.ward"),
            arrived(&space, "notes.t3"),
            arrived(&elsewhere, "coord.tasks.t4"),
            Event {
                seq: 2,
                kind: EventKind::Exposed {
                    space: space.clone(),
                    id: EnvelopeId([0; 32]),
                    key: coord::claim_key("t5", &me).parse().unwrap(),
                    tier: membrane_protocol::Tier::Public,
                },
            },
        ];
        let touched = Governance::touched_tasks(&events, &space, &me);
        assert_eq!(touched.into_iter().collect::<Vec<_>>(), ["t1", "t2", "t5"]);
    }

    #[test]
    fn slots_name_their_writer() {
        let me = membrane_protocol::Keypair::from_seed(&[1; 32]).public();
        let other = membrane_protocol::Keypair::from_seed(&[2; 32]).public();
        let hex = coord::owner_hex(&me);
        let claim: Key = format!("coord.tasks.t1.claims.{hex}").parse().unwrap();
        assert_eq!(own_slot(&claim, "tasks", "claims", &me), Some("t1"));
        assert_eq!(own_slot(&claim, "tasks", "claims", &other), None);
        assert_eq!(own_slot(&claim, "swarms", "members", &me), None);
        let deeper: Key = format!("coord.tasks.t1.claims.{hex}.x").parse().unwrap();
        assert_eq!(own_slot(&deeper, "tasks", "claims", &me), None);
        let verdict: Key = format!("coord.verdicts.{}.{hex}", "ab".repeat(32))
            .parse()
            .unwrap();
        assert_eq!(
            own_slot_verdict(&verdict, &me),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(own_slot_verdict(&verdict, &other), None);
    }
}
