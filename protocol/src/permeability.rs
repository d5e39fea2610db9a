//! The membrane's permeability: what an agent lets out, and what it lets in.
//!
//! A pure decision engine with three inputs:
//!
//! * **Expose rules** (the writer's side): a key pattern → the highest tier allowed, and
//!   tags an entry must carry to get that tier. Default-deny: an entry exposed without a
//!   tier is private, and a rule caps the tier below what the agent asked, saying so
//!   ([`ExposePolicy::apply`]).
//! * **Trust edges**: directed scores 0..1 ([`TrustGraph`]); an owner's *trusted* entries
//!   reach readers the owner trusts at or above the threshold (default 0.5).
//! * **Accept rules** (the reader's side): patterns, tags, minimum trust in the owner and
//!   minimum evidence kind an entry needs to enter the reader's view.
//!
//! [`decide`] combines them for one reader and one entry: [`Decision::Visible`],
//! [`Decision::Hidden`] (private, or filtered by the reader's own accept rules; the reader
//! learns an entry was hidden, never its value) or [`Decision::Denied`] with the reason
//! (the owner's trust in the reader is below the threshold). Both trust checks are
//! monotone, so raising a trust score never hides what was visible.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Evidence, Score, Tier};
use crate::identity::PublicKey;
use crate::key::{Key, Pattern, Tag};

/// Directed trust edges with the trusted-tier threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustGraph {
    edges: BTreeMap<(PublicKey, PublicKey), Score>,
    threshold: Score,
}

impl Default for TrustGraph {
    fn default() -> Self {
        Self::new(Score::DEFAULT_THRESHOLD)
    }
}

impl TrustGraph {
    /// An empty graph: nobody trusts anybody.
    pub fn new(threshold: Score) -> Self {
        Self {
            edges: BTreeMap::new(),
            threshold,
        }
    }

    /// Sets how much `truster` trusts `trustee`.
    pub fn set(&mut self, truster: PublicKey, trustee: PublicKey, score: Score) {
        self.edges.insert((truster, trustee), score);
    }

    /// How much `truster` trusts `trustee`: zero without an edge.
    pub fn get(&self, truster: &PublicKey, trustee: &PublicKey) -> Score {
        self.edges
            .get(&(*truster, *trustee))
            .copied()
            .unwrap_or(Score::ZERO)
    }

    /// The trusted-tier threshold.
    pub fn threshold(&self) -> Score {
        self.threshold
    }

    /// Whether `owner` trusts `reader` enough for the trusted tier.
    pub fn admits(&self, owner: &PublicKey, reader: &PublicKey) -> bool {
        self.get(owner, reader) >= self.threshold
    }

    /// Every edge, as (truster, trustee, score), in key order.
    pub fn edges(&self) -> impl Iterator<Item = (&PublicKey, &PublicKey, Score)> + '_ {
        self.edges
            .iter()
            .map(|((from, to), score)| (from, to, *score))
    }

    /// Every edge from `truster`, in key order.
    pub fn edges_from<'a>(
        &'a self,
        truster: &'a PublicKey,
    ) -> impl Iterator<Item = (&'a PublicKey, Score)> + 'a {
        self.edges
            .iter()
            .filter(move |((from, _), _)| from == truster)
            .map(|((_, to), score)| (to, *score))
    }
}

/// One expose rule: keys matching `pattern` may go out at `max_tier` at most, and only
/// with every tag in `required_tags` (otherwise they stay private).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeRule {
    /// Keys the rule covers.
    pub pattern: Pattern,
    /// Highest tier allowed.
    pub max_tier: Tier,
    /// Tags an entry must carry for the rule to allow more than private.
    #[serde(default)]
    pub required_tags: Vec<Tag>,
}

/// The writer's side of the membrane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposePolicy {
    /// Highest tier for keys no rule matches. `Public` lets the agent choose; `Private`
    /// makes every key not named by a rule stay home.
    pub default_max: Tier,
    /// Rules; every matching rule caps the tier, so the strictest wins.
    #[serde(default)]
    pub rules: Vec<ExposeRule>,
}

impl Default for ExposePolicy {
    fn default() -> Self {
        Self {
            default_max: Tier::Public,
            rules: Vec::new(),
        }
    }
}

/// Why an entry goes out at a lower tier than asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum CapReason {
    /// The agent gave no tier: default-deny makes it private.
    NoTierGiven,
    /// No rule matched and the policy's default is lower.
    Default {
        /// The policy's default highest tier.
        max: Tier,
    },
    /// A rule caps keys like this one.
    Rule {
        /// The rule's pattern.
        pattern: Pattern,
        /// The rule's highest tier.
        max: Tier,
    },
    /// A rule requires a tag the entry lacks.
    MissingTag {
        /// The rule's pattern.
        pattern: Pattern,
        /// The missing tag.
        tag: Tag,
    },
}

impl fmt::Display for CapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapReason::NoTierGiven => write!(f, "no tier was given, so the entry stays private"),
            CapReason::Default { max } => write!(f, "keys no rule names go out at {max} at most"),
            CapReason::Rule { pattern, max } => {
                write!(f, "rule {pattern} allows {max} at most")
            }
            CapReason::MissingTag { pattern, tag } => {
                write!(
                    f,
                    "rule {pattern} requires tag {tag}, so the entry stays private"
                )
            }
        }
    }
}

/// The tier an entry actually goes out at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// The tier granted.
    pub tier: Tier,
    /// Set when the tier is lower than requested (or none was requested).
    pub capped: Option<Capped>,
}

/// A tier lowered by the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped {
    /// What the agent asked for, if anything.
    pub requested: Option<Tier>,
    /// What it got.
    pub granted: Tier,
    /// Why.
    pub reason: CapReason,
}

impl ExposePolicy {
    /// The tier an entry with `key` and `tags` goes out at when the agent asks for
    /// `requested`.
    pub fn apply(&self, key: &Key, tags: &[Tag], requested: Option<Tier>) -> Exposure {
        let Some(asked) = requested else {
            return Exposure {
                tier: Tier::Private,
                capped: Some(Capped {
                    requested: None,
                    granted: Tier::Private,
                    reason: CapReason::NoTierGiven,
                }),
            };
        };
        let mut tier = asked;
        let mut reason = None;
        let mut lower = |max: Tier, why: CapReason| {
            if max < tier {
                tier = max;
                reason = Some(why);
            }
        };
        let mut matched = false;
        for rule in self.rules.iter().filter(|r| r.pattern.matches(key)) {
            matched = true;
            match rule.required_tags.iter().find(|t| !tags.contains(t)) {
                Some(tag) => lower(
                    Tier::Private,
                    CapReason::MissingTag {
                        pattern: rule.pattern.clone(),
                        tag: tag.clone(),
                    },
                ),
                None => lower(
                    rule.max_tier,
                    CapReason::Rule {
                        pattern: rule.pattern.clone(),
                        max: rule.max_tier,
                    },
                ),
            }
        }
        if !matched {
            lower(
                self.default_max,
                CapReason::Default {
                    max: self.default_max,
                },
            );
        }
        Exposure {
            tier,
            capped: reason.map(|reason| Capped {
                requested: Some(asked),
                granted: tier,
                reason,
            }),
        }
    }
}

/// The reader's side of the membrane: what it lets into its agent's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptPolicy {
    /// Keys accepted; empty accepts every key.
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    /// Tags an entry must all carry; empty requires none.
    #[serde(default)]
    pub required_tags: Vec<Tag>,
    /// Minimum trust the reader places in the owner.
    #[serde(default)]
    pub min_trust: Score,
    /// Minimum evidence kind.
    #[serde(default = "weakest_evidence")]
    pub min_evidence: Evidence,
}

fn weakest_evidence() -> Evidence {
    Evidence::AgentOpinion
}

impl Default for AcceptPolicy {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            required_tags: Vec::new(),
            min_trust: Score::ZERO,
            min_evidence: weakest_evidence(),
        }
    }
}

/// A reader: an agent and its accept rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The reading agent.
    pub id: PublicKey,
    /// What it lets in.
    pub accept: AcceptPolicy,
}

impl Reader {
    /// A reader that accepts everything it may see.
    pub fn open(id: PublicKey) -> Self {
        Self {
            id,
            accept: AcceptPolicy::default(),
        }
    }
}

/// What [`decide`] needs to know about an entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryMeta<'a> {
    /// Who owns it.
    pub owner: &'a PublicKey,
    /// Its key.
    pub key: &'a Key,
    /// Its tier.
    pub tier: Tier,
    /// Its tags.
    pub tags: &'a [Tag],
    /// Its evidence kind.
    pub evidence: Evidence,
}

impl<'a> From<&'a Entry> for EntryMeta<'a> {
    fn from(entry: &'a Entry) -> Self {
        let body = entry.body();
        Self {
            owner: entry.owner(),
            key: &body.key,
            tier: body.tier,
            tags: &body.tags,
            evidence: body.evidence,
        }
    }
}

/// Why an entry is hidden from a reader (the reader learns the count, not the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum HiddenReason {
    /// The entry is private to its owner.
    Private,
    /// The reader's accept patterns do not cover the key.
    NotAccepted,
    /// The entry lacks a tag the reader requires.
    MissingTag {
        /// The tag.
        tag: Tag,
    },
    /// The reader trusts the owner less than it requires.
    OwnerBelowMinTrust {
        /// Reader's trust in the owner.
        trust: Score,
        /// Required.
        min: Score,
    },
    /// The entry's evidence is weaker than the reader requires.
    WeakEvidence {
        /// The entry's evidence.
        evidence: Evidence,
        /// Required.
        min: Evidence,
    },
}

/// Why an entry is denied to a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum DenyReason {
    /// The entry is trusted-tier and its owner's trust in the reader is below threshold.
    NotTrusted {
        /// The entry's owner.
        owner: PublicKey,
        /// The reader.
        reader: PublicKey,
        /// The owner's trust in the reader.
        trust: Score,
        /// The trusted-tier threshold.
        threshold: Score,
    },
}

impl DenyReason {
    /// The reason with agent names in place of keys: "writer's trust in reviewer is
    /// 0.00 < 0.50".
    pub fn describe(&self, name: impl Fn(&PublicKey) -> String) -> String {
        match self {
            DenyReason::NotTrusted {
                owner,
                reader,
                trust,
                threshold,
            } => format!(
                "{}'s trust in {} is {trust} < {threshold}",
                name(owner),
                name(reader)
            ),
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(|k| k.short()))
    }
}

/// The outcome for one reader and one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// The reader sees the entry.
    Visible,
    /// The entry is withheld; the reader may learn that one was.
    Hidden {
        /// Why.
        reason: HiddenReason,
    },
    /// The reader asked for something its owner does not let it read.
    Denied {
        /// Why.
        reason: DenyReason,
    },
}

impl Decision {
    /// Whether the reader sees the entry.
    pub fn is_visible(&self) -> bool {
        matches!(self, Decision::Visible)
    }
}

/// The owner's side only: may `reader` receive an entry of `owner` at `tier`? This is what
/// decides which replicated documents a peer gets, before any entry is at hand.
pub fn tier_gate(
    reader: &PublicKey,
    owner: &PublicKey,
    tier: Tier,
    trust: &TrustGraph,
) -> Decision {
    if reader == owner {
        return Decision::Visible;
    }
    match tier {
        Tier::Public => Decision::Visible,
        Tier::Private => Decision::Hidden {
            reason: HiddenReason::Private,
        },
        Tier::Trusted if trust.admits(owner, reader) => Decision::Visible,
        Tier::Trusted => Decision::Denied {
            reason: DenyReason::NotTrusted {
                owner: *owner,
                reader: *reader,
                trust: trust.get(owner, reader),
                threshold: trust.threshold(),
            },
        },
    }
}

/// Whether `reader` sees `entry`, given everyone's trust edges.
pub fn decide(reader: &Reader, entry: EntryMeta<'_>, trust: &TrustGraph) -> Decision {
    if &reader.id == entry.owner {
        return Decision::Visible;
    }
    let gate = tier_gate(&reader.id, entry.owner, entry.tier, trust);
    if !gate.is_visible() {
        return gate;
    }
    let accept = &reader.accept;
    let hidden = |reason| Decision::Hidden { reason };
    if !accept.patterns.is_empty() && !accept.patterns.iter().any(|p| p.matches(entry.key)) {
        return hidden(HiddenReason::NotAccepted);
    }
    if let Some(tag) = accept
        .required_tags
        .iter()
        .find(|t| !entry.tags.contains(t))
    {
        return hidden(HiddenReason::MissingTag { tag: tag.clone() });
    }
    let reader_trust = trust.get(&reader.id, entry.owner);
    if reader_trust < accept.min_trust {
        return hidden(HiddenReason::OwnerBelowMinTrust {
            trust: reader_trust,
            min: accept.min_trust,
        });
    }
    if entry.evidence < accept.min_evidence {
        return hidden(HiddenReason::WeakEvidence {
            evidence: entry.evidence,
            min: accept.min_evidence,
        });
    }
    Decision::Visible
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use proptest::prelude::*;

    fn agent(n: u8) -> PublicKey {
        Keypair::from_seed(&[n; 32]).public()
    }

    fn key(s: &str) -> Key {
        s.parse().unwrap()
    }

    fn meta<'a>(owner: &'a PublicKey, k: &'a Key, tier: Tier) -> EntryMeta<'a> {
        EntryMeta {
            owner,
            key: k,
            tier,
            tags: &[],
            evidence: Evidence::ExternalSource,
        }
    }

    /// The trust cases of `shared/scenarios/five-agents.md`, decided as written there.
    #[test]
    fn five_agent_scenario_decides_as_written() {
        let [orchestrator, researcher, writer, editor, reviewer] = [1, 2, 3, 4, 5].map(agent);
        let mut trust = TrustGraph::default();
        let s = |x: f64| Score::from_f64(x).unwrap();
        trust.set(orchestrator, writer, s(0.7));
        trust.set(orchestrator, editor, s(0.7));
        trust.set(orchestrator, researcher, s(0.7));
        trust.set(writer, editor, s(0.9));
        trust.set(editor, writer, s(0.9));
        trust.set(editor, reviewer, s(0.8));
        let names = |k: &PublicKey| {
            match [orchestrator, researcher, writer, editor, reviewer]
                .iter()
                .position(|a| a == k)
            {
                Some(0) => "orchestrator",
                Some(1) => "researcher",
                Some(2) => "writer",
                Some(3) => "editor",
                _ => "reviewer",
            }
            .to_owned()
        };
        let reader = Reader::open;

        // 4. researcher queries tasks.* and sees the public brief.
        let brief = key("tasks.brief");
        assert!(
            decide(
                &reader(researcher),
                meta(&orchestrator, &brief, Tier::Public),
                &trust
            )
            .is_visible()
        );

        // 6. writer sees the three public findings; the private note is hidden.
        for k in [
            "findings.heat_islands",
            "findings.coastal_risk",
            "findings.green_infra",
        ] {
            let k = key(k);
            assert!(
                decide(&reader(writer), meta(&researcher, &k, Tier::Public), &trust).is_visible()
            );
        }
        let note = key("findings.notes_internal");
        assert_eq!(
            decide(
                &reader(writer),
                meta(&researcher, &note, Tier::Private),
                &trust
            ),
            Decision::Hidden {
                reason: HiddenReason::Private
            }
        );

        // 8. reviewer is denied the trusted drafts, with the reason.
        let intro = key("drafts.intro");
        match decide(
            &reader(reviewer),
            meta(&writer, &intro, Tier::Trusted),
            &trust,
        ) {
            Decision::Denied { reason } => {
                assert_eq!(
                    reason.describe(names),
                    "writer's trust in reviewer is 0.00 < 0.50"
                );
            }
            other => panic!("expected a denial, got {other:?}"),
        }

        // 9. editor sees the drafts (writer trusts editor 0.9).
        for k in ["drafts.intro", "drafts.body", "drafts.outro"] {
            let k = key(k);
            assert!(decide(&reader(editor), meta(&writer, &k, Tier::Trusted), &trust).is_visible());
        }

        // 10. writer sees the editor's trusted feedback (editor trusts writer 0.9).
        for k in ["feedback.intro", "feedback.body"] {
            let k = key(k);
            assert!(decide(&reader(writer), meta(&editor, &k, Tier::Trusted), &trust).is_visible());
        }
        // ... and the orchestrator, trusted by nobody, does not.
        let fb = key("feedback.intro");
        assert!(matches!(
            decide(
                &reader(orchestrator),
                meta(&editor, &fb, Tier::Trusted),
                &trust
            ),
            Decision::Denied { .. }
        ));
    }

    #[test]
    fn exposing_without_a_tier_is_private() {
        let policy = ExposePolicy::default();
        let exposure = policy.apply(&key("a.b"), &[], None);
        assert_eq!(exposure.tier, Tier::Private);
        assert_eq!(
            exposure.capped.map(|c| c.reason),
            Some(CapReason::NoTierGiven)
        );
        let asked = policy.apply(&key("a.b"), &[], Some(Tier::Public));
        assert_eq!(
            asked,
            Exposure {
                tier: Tier::Public,
                capped: None
            }
        );
    }

    #[test]
    fn rules_cap_the_tier_and_say_so() {
        let policy = ExposePolicy {
            default_max: Tier::Private,
            rules: vec![
                ExposeRule {
                    pattern: "drafts.**".parse().unwrap(),
                    max_tier: Tier::Trusted,
                    required_tags: vec![],
                },
                ExposeRule {
                    pattern: "findings.*".parse().unwrap(),
                    max_tier: Tier::Public,
                    required_tags: vec!["reviewed".parse().unwrap()],
                },
            ],
        };
        let drafts = policy.apply(&key("drafts.intro"), &[], Some(Tier::Public));
        assert_eq!(drafts.tier, Tier::Trusted);
        assert_eq!(
            drafts.capped.unwrap().reason.to_string(),
            "rule drafts.** allows trusted at most"
        );
        let untagged = policy.apply(&key("findings.x"), &[], Some(Tier::Public));
        assert_eq!(untagged.tier, Tier::Private);
        assert!(matches!(
            untagged.capped.unwrap().reason,
            CapReason::MissingTag { .. }
        ));
        let tagged = policy.apply(
            &key("findings.x"),
            &["reviewed".parse().unwrap()],
            Some(Tier::Public),
        );
        assert_eq!(tagged.tier, Tier::Public);
        assert!(tagged.capped.is_none());
        let unmatched = policy.apply(&key("other"), &[], Some(Tier::Public));
        assert_eq!(unmatched.tier, Tier::Private);
    }

    #[test]
    fn accept_rules_hide_with_reasons() {
        let owner = agent(1);
        let mut reader = Reader::open(agent(2));
        let trust = TrustGraph::default();
        let k = key("findings.a");
        reader.accept.patterns = vec!["drafts.*".parse().unwrap()];
        assert_eq!(
            decide(&reader, meta(&owner, &k, Tier::Public), &trust),
            Decision::Hidden {
                reason: HiddenReason::NotAccepted
            }
        );
        reader.accept.patterns.clear();
        reader.accept.min_evidence = Evidence::ToolResult;
        assert!(matches!(
            decide(&reader, meta(&owner, &k, Tier::Public), &trust),
            Decision::Hidden {
                reason: HiddenReason::WeakEvidence { .. }
            }
        ));
        reader.accept.min_evidence = Evidence::AgentOpinion;
        reader.accept.min_trust = Score::from_milli(100).unwrap();
        assert!(matches!(
            decide(&reader, meta(&owner, &k, Tier::Public), &trust),
            Decision::Hidden {
                reason: HiddenReason::OwnerBelowMinTrust { .. }
            }
        ));
        // Owners always see their own entries.
        let own = Reader {
            id: owner,
            accept: reader.accept.clone(),
        };
        assert!(decide(&own, meta(&owner, &k, Tier::Private), &trust).is_visible());
    }

    fn tier() -> impl Strategy<Value = Tier> {
        prop::sample::select(Tier::ALL.to_vec())
    }

    fn evidence() -> impl Strategy<Value = Evidence> {
        prop::sample::select(Evidence::ALL.to_vec())
    }

    /// Edges (truster, trustee, milli), threshold, reader's min trust, its min evidence,
    /// and the entry's evidence.
    type World = (Vec<(u8, u8, u16)>, u16, u16, Evidence, Evidence);

    /// A random world: 4 agents, random edges, a random accept policy.
    fn world() -> impl Strategy<Value = World> {
        (
            prop::collection::vec((0u8..4, 0u8..4, 0u16..=1000), 0..16),
            0u16..=1000,
            0u16..=1000,
            evidence(),
            evidence(),
        )
    }

    fn build(edges: &[(u8, u8, u16)], threshold: u16) -> TrustGraph {
        let mut g = TrustGraph::new(Score::from_milli(u32::from(threshold)).unwrap());
        for (a, b, s) in edges {
            g.set(
                agent(*a),
                agent(*b),
                Score::from_milli(u32::from(*s)).unwrap(),
            );
        }
        g
    }

    proptest! {
        #[test]
        fn a_private_entry_is_never_visible_to_another_agent(
            (edges, threshold, min_trust, min_ev, ev) in world(), owner in 0u8..4, other in 0u8..4,
        ) {
            prop_assume!(owner != other);
            let trust = build(&edges, threshold);
            let (o, r) = (agent(owner), agent(other));
            let mut reader = Reader::open(r);
            reader.accept.min_trust = Score::from_milli(u32::from(min_trust)).unwrap();
            reader.accept.min_evidence = min_ev;
            let k = key("x.y");
            let m = EntryMeta { owner: &o, key: &k, tier: Tier::Private, tags: &[], evidence: ev };
            prop_assert!(!decide(&reader, m, &trust).is_visible());
        }

        #[test]
        fn raising_trust_never_hides_what_was_visible(
            (edges, threshold, min_trust, min_ev, ev) in world(),
            t in tier(), owner in 0u8..4, other in 0u8..4,
            a in 0u8..4, b in 0u8..4, raise in 0u16..=1000,
        ) {
            let before = build(&edges, threshold);
            let mut after = before.clone();
            let old = before.get(&agent(a), &agent(b));
            let new = Score::from_milli(u32::from(old.milli().max(raise))).unwrap();
            after.set(agent(a), agent(b), new);
            let (o, r) = (agent(owner), agent(other));
            let mut reader = Reader::open(r);
            reader.accept.min_trust = Score::from_milli(u32::from(min_trust)).unwrap();
            reader.accept.min_evidence = min_ev;
            let k = key("x.y");
            let m = EntryMeta { owner: &o, key: &k, tier: t, tags: &[], evidence: ev };
            if decide(&reader, m, &before).is_visible() {
                prop_assert!(decide(&reader, m, &after).is_visible());
            }
        }

        #[test]
        fn exposure_never_exceeds_what_was_asked_or_any_matching_rule(
            asked in prop::option::of(tier()), default_max in tier(),
            rule_tiers in prop::collection::vec((0usize..3, tier()), 0..4),
        ) {
            let patterns = ["a.*", "a.b", "**"];
            let policy = ExposePolicy {
                default_max,
                rules: rule_tiers.iter().map(|(p, t)| ExposeRule {
                    pattern: patterns[*p].parse().unwrap(),
                    max_tier: *t,
                    required_tags: vec![],
                }).collect(),
            };
            let got = policy.apply(&key("a.b"), &[], asked).tier;
            prop_assert!(got <= asked.unwrap_or(Tier::Private));
            for rule in &policy.rules {
                prop_assert!(got <= rule.max_tier);
            }
        }
    }
}
