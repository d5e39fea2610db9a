//! The JSON shapes of the agent API: requests (strict: unknown fields are refused) and
//! answers. Identities, ids and keys travel as text: peer ids (`12D3KooW…`), 64-hex entry
//! ids, dotted keys. Each type derives a JSON Schema, which the OpenAPI document, the MCP
//! tool list and the CLI's flags are all built from.

use membrane_crdt::{Event, EventKind};
use membrane_protocol::cost::BudgetState;
use membrane_protocol::signals::DocRef;
use membrane_protocol::{Entry, EnvelopeId, PublicKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tiers, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierName {
    /// Only this agent.
    Private,
    /// Agents this agent trusts at or above the threshold.
    Trusted,
    /// Every member of the space.
    Public,
}

/// A capability, as an agent registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityView {
    /// Short name of `[a-z0-9_-]`, e.g. `fact_check`.
    pub name: String,
    /// What it means, for matching help requests.
    #[serde(default)]
    pub description: String,
}

/// `register`: who the agent is and what it can do.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The agent's name as peers see it (1 to 64 bytes).
    pub name: String,
    /// What it can do (at most 32, unique names).
    #[serde(default)]
    pub capabilities: Vec<CapabilityView>,
}

/// The agent as registered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegisterResponse {
    /// This node's peer id.
    pub peer: String,
    /// The agent's name.
    pub name: String,
    /// Its capabilities.
    pub capabilities: Vec<CapabilityView>,
}

/// `expose`: write an entry into the shared medium.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    /// Space to write in [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Dotted key, e.g. `findings.sea_level.rate`.
    pub key: String,
    /// The digest: the agent's interpretation, at most 16 KiB.
    pub value: String,
    /// Who may read it [default: private; the node's expose policy may lower it].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierName>,
    /// Free tags (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// What kind of knowledge: fact, hypothesis, finding, draft, feedback, task, result,
    /// conflict, thread, solution, meta, question [default: fact].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// How the agent knows: tool_result, external_source, llm_interpretation,
    /// agent_opinion [default: agent_opinion].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Ids of entries this one builds on (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Milliseconds after which the entry expires from queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Milliseconds over which the entry's ranking weight halves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life_ms: Option<u64>,
}

/// Two or more owners disagree on a key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConflictView {
    /// The contested key.
    pub key: String,
    /// The newest entry of each owner involved.
    pub entries: Vec<String>,
    /// Their owners, in the same order.
    pub owners: Vec<String>,
}

impl From<&membrane_crdt::Conflict> for ConflictView {
    fn from(c: &membrane_crdt::Conflict) -> Self {
        Self {
            key: c.key.to_string(),
            entries: c.entries.iter().map(ToString::to_string).collect(),
            owners: c.owners.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The entry as written.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExposeResponse {
    /// The entry's id (64 hex digits), for citation, parents and retraction.
    pub id: String,
    /// This agent's sequence number for it.
    pub seq: u64,
    /// The tier it went out at.
    pub tier: TierName,
    /// Why the tier is lower than asked, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped: Option<String>,
    /// The agent's previous entry under the key, now superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<String>,
    /// Other owners' entries that now disagree with this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictView>,
}

/// `query`: entries whose keys match a pattern.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Space to read [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Key pattern: `*` is one segment, `**` one or more, e.g. `findings.**`.
    pub pattern: String,
    /// Include expired entries.
    #[serde(default)]
    pub include_expired: bool,
    /// Only these kinds (fact, hypothesis, conflict, thread, solution, meta, …) [default:
    /// all].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Only entries verified by enough agents other than their owner, with no dispute
    /// you trust.
    #[serde(default)]
    pub verified: bool,
}

/// An entry as an agent reads it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EntryView {
    /// Its id (64 hex digits).
    pub id: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// Its owner's peer id.
    pub owner: String,
    /// Who may read it.
    pub tier: TierName,
    /// What kind of knowledge it is.
    pub kind: String,
    /// How its owner knows.
    pub evidence: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Entries it builds on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Its owner's sequence number.
    pub seq: u64,
    /// When it was written, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Expiry after creation, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

pub(crate) fn tier_name(tier: membrane_protocol::Tier) -> TierName {
    match tier {
        membrane_protocol::Tier::Private => TierName::Private,
        membrane_protocol::Tier::Trusted => TierName::Trusted,
        membrane_protocol::Tier::Public => TierName::Public,
    }
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        let body = entry.body();
        Self {
            id: entry.id().to_string(),
            key: body.key.to_string(),
            value: body.value.clone(),
            owner: entry.owner().to_string(),
            tier: tier_name(body.tier),
            kind: body.kind.to_string(),
            evidence: body.evidence.to_string(),
            tags: body.tags.iter().map(ToString::to_string).collect(),
            parents: body.parents.iter().map(ToString::to_string).collect(),
            seq: body.seq,
            created_at_ms: entry.created_at_ms(),
            ttl_ms: body.ttl_ms,
        }
    }
}

/// An entry the reader may not see, and why.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DenialView {
    /// The entry's key.
    pub key: String,
    /// Why, e.g. "alice's trust in bob is 0.20 < 0.50".
    pub reason: String,
}

/// What a query found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryResponse {
    /// Entries the agent may see.
    pub hits: Vec<EntryView>,
    /// Entries that exist but the agent may not see (counted, never shown).
    pub hidden: usize,
    /// Why entries were hidden, where the reason can be told.
    pub denied: Vec<DenialView>,
    /// Tokens these hits cost the agent's context (charged to its budget).
    pub tokens: u64,
}

/// `search`: free text over the space, packed to a token budget.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Space to search [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// What to look for, in words.
    pub text: String,
    /// Most tokens the answer may take [default: 2000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Only these kinds (fact, hypothesis, conflict, thread, solution, meta, …) [default:
    /// all].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Only entries verified by enough agents other than their owner, with no dispute
    /// you trust.
    #[serde(default)]
    pub verified: bool,
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchHitView {
    /// The entry.
    pub entry: EntryView,
    /// Relevance × trust × decay × evidence.
    pub score: f64,
    /// Tokens the hit costs as rendered.
    pub tokens: u32,
}

/// What a search found.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchResponse {
    /// The best hits that fit `max_tokens`, best first.
    pub hits: Vec<SearchHitView>,
    /// Tokens of all hits together (charged to the agent's budget).
    pub total_tokens: u64,
    /// Relevant hits left out to stay within `max_tokens`.
    pub left_out: usize,
}

/// `retract`: withdraw this agent's entry under a key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetractRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The key.
    pub key: String,
}

/// A signed record was written.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordResponse {
    /// The record's id.
    pub id: String,
}

/// `trust`: how much this agent trusts a peer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The peer's id (`12D3KooW…`).
    pub peer: String,
    /// From 0 (none) to 1 (full); at or above the threshold (0.5 by default) the peer
    /// reads this agent's trusted entries.
    pub score: f64,
}

/// `trusts`: the trust edges of a space.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpaceRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// One trust edge.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrustEdgeJson {
    /// Who trusts.
    pub truster: String,
    /// Whom.
    pub trustee: String,
    /// How much, 0 to 1.
    pub score: f64,
}

/// The trust edges of a space.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrustsResponse {
    /// The space.
    pub space: String,
    /// Every published edge.
    pub edges: Vec<TrustEdgeJson>,
}

/// `subscribe`: name the keys whose events the agent wants.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Key patterns (at most 32); of the events without a key, broadcasts and threat
    /// signals always pass.
    pub patterns: Vec<String>,
}

/// A subscription to follow with `GET /v1/events?subscription=<id>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubscribeResponse {
    /// Its id.
    pub subscription: String,
    /// Its patterns.
    pub patterns: Vec<String>,
    /// Where to follow it.
    pub events_url: String,
}

/// `broadcast`: a message to every agent of a space.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The message (at most 4 KiB).
    pub message: String,
}

/// A request without parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A connected peer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PeerView {
    /// Its peer id.
    pub peer: String,
    /// Its agent's name, once its capability ad arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityView>,
}

/// Connected peers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PeersResponse {
    /// The peers.
    pub peers: Vec<PeerView>,
}

/// The node's state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusResponse {
    /// Its peer id.
    pub peer: String,
    /// The agent's name.
    pub name: String,
    /// The agent's capabilities.
    pub capabilities: Vec<CapabilityView>,
    /// Spaces joined.
    pub spaces: Vec<String>,
    /// The space verbs use when none is given.
    pub home_space: String,
    /// Peer-to-peer listening addresses.
    pub listening: Vec<String>,
    /// Connected peers.
    pub peers: usize,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Sequence number of the newest event.
    pub last_event: u64,
    /// The node's version.
    pub version: String,
}

/// The agent's token budgets: its own (the top-level fields) and each space's.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BudgetResponse {
    /// Tokens per window; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Tokens charged in the current window.
    pub used: u64,
    /// Tokens left in the window; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Window length in ms (0: never resets).
    pub window_ms: u64,
    /// When the window resets, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at_ms: Option<u64>,
    /// `halt` or `warn`; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Tokens charged since the node started, all windows.
    pub total: u64,
    /// In a 429 answer: the space whose budget refused (absent: the agent's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Budgets of single spaces, on top of the agent's, in space order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spaces: Vec<SpaceBudgetView>,
}

fn action_name(action: membrane_protocol::cost::BudgetAction) -> &'static str {
    match action {
        membrane_protocol::cost::BudgetAction::Halt => "halt",
        membrane_protocol::cost::BudgetAction::Warn => "warn",
    }
}

impl BudgetResponse {
    pub(crate) fn from_state(state: &BudgetState, total: u64) -> Self {
        Self {
            limit: Some(state.limit),
            used: state.used,
            remaining: Some(state.remaining),
            window_ms: state.window_ms,
            resets_at_ms: state.resets_at_ms,
            action: Some(action_name(state.action).to_owned()),
            total,
            space: None,
            spaces: Vec::new(),
        }
    }
}

/// One space's token budget: answers from the space draw on it as well as on the agent's.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SpaceBudgetView {
    /// The space.
    pub space: String,
    /// Tokens per window.
    pub limit: u64,
    /// Tokens charged in the current window.
    pub used: u64,
    /// Tokens left in the window.
    pub remaining: u64,
    /// Window length in ms (0: never resets).
    pub window_ms: u64,
    /// When the window resets, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at_ms: Option<u64>,
    /// `halt` or `warn`.
    pub action: String,
    /// Tokens charged to it since the node started, all windows.
    pub total: u64,
}

impl SpaceBudgetView {
    pub(crate) fn new(space: &membrane_protocol::Space, state: &BudgetState, total: u64) -> Self {
        Self {
            space: space.to_string(),
            limit: state.limit,
            used: state.used,
            remaining: state.remaining,
            window_ms: state.window_ms,
            resets_at_ms: state.resets_at_ms,
            action: action_name(state.action).to_owned(),
            total,
        }
    }
}

/// `events`: read the event log from a sequence number.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// Events after this sequence number [default: 0, from the start].
    #[serde(default)]
    pub since: u64,
    /// At most this many [default: 100, at most 1000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only events whose key matches one of these patterns (and broadcasts and threats).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Only events matching a subscription's patterns (its id, from subscribe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// Events of the log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventsResponse {
    /// The events, oldest first.
    pub events: Vec<EventView>,
    /// Pass this as `since` to read on.
    pub next: u64,
}

/// One event of the node's log, as `GET /v1/events` streams it (`id:` is `seq`, `event:` is
/// `type`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventView {
    /// Position in the log.
    pub seq: u64,
    /// What happened: exposed, retracted, trust_set, arrived, withdrawn, merged, conflict,
    /// rejected, broadcast, threat, swarm, task, escalation (a value conflict that needs
    /// you: contradicting facts, or a verified entry disputed), budget (a warn budget was
    /// spent), direct (a direct message to or from this agent), fan_out.
    #[serde(rename = "type")]
    pub kind: String,
    /// The space.
    pub space: String,
    /// The key concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The entry or record concerned, if any (for a direct message, its id: reply to it
    /// with `send --reply-to <id>`; for a fan-out, the id `gather` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The agent it came from (owner, sender, reporter), if not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The tier, for entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierName>,
    /// A human line: the broadcast message, the rejection reason, the offence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The other agent concerned: the trustee, the offender, the conflicting owners, a
    /// direct message's recipient, a fan-out's agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub about: Vec<String>,
    /// For a direct message: the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// For a direct message: the entry it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

fn doc_name(doc: &DocRef) -> String {
    match doc {
        DocRef::Public => "public".to_owned(),
        DocRef::Trusted(owner) => format!("trusted:{}", owner.short()),
    }
}

fn id_text(id: &EnvelopeId) -> Option<String> {
    Some(id.to_string())
}

fn peer_text(peer: &PublicKey) -> Option<String> {
    Some(peer.to_string())
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        let mut view = EventView {
            seq: event.seq,
            kind: String::new(),
            space: String::new(),
            key: None,
            id: None,
            from: None,
            tier: None,
            text: None,
            about: Vec::new(),
            reply_to: None,
            entry: None,
        };
        let (kind, space) = match &event.kind {
            EventKind::Exposed {
                space,
                id,
                key,
                tier,
            } => {
                view.id = id_text(id);
                view.key = Some(key.to_string());
                view.tier = Some(tier_name(*tier));
                ("exposed", space)
            }
            EventKind::Retracted { space, id, key } => {
                view.id = id_text(id);
                view.key = Some(key.to_string());
                ("retracted", space)
            }
            EventKind::TrustSet {
                space,
                trustee,
                score,
            } => {
                view.about = vec![trustee.to_string()];
                view.text = Some(format!("trust {score}"));
                ("trust_set", space)
            }
            EventKind::Arrived {
                space,
                id,
                key,
                owner,
                tier,
            } => {
                view.id = id_text(id);
                view.key = Some(key.to_string());
                view.from = peer_text(owner);
                view.tier = Some(tier_name(*tier));
                ("arrived", space)
            }
            EventKind::Withdrawn {
                space,
                id,
                key,
                owner,
            } => {
                view.id = id_text(id);
                view.key = Some(key.to_string());
                view.from = peer_text(owner);
                ("withdrawn", space)
            }
            EventKind::Merged {
                space,
                doc,
                from,
                changes,
                records,
            } => {
                view.from = peer_text(from);
                view.text = Some(format!(
                    "{changes} changes, {records} new records in the {} document",
                    doc_name(doc)
                ));
                ("merged", space)
            }
            EventKind::Conflict { space, conflict } => {
                view.key = Some(conflict.key.to_string());
                view.about = conflict.owners.iter().map(ToString::to_string).collect();
                view.text = Some(format!("{} owners disagree", conflict.owners.len()));
                ("conflict", space)
            }
            EventKind::Rejected {
                space,
                doc,
                from,
                reason,
            } => {
                view.from = peer_text(from);
                view.text = Some(format!("{reason} (in the {} document)", doc_name(doc)));
                ("rejected", space)
            }
            EventKind::Broadcast {
                space,
                from,
                message,
            } => {
                view.from = peer_text(from);
                view.text = Some(message.clone());
                ("broadcast", space)
            }
            EventKind::Threat {
                space,
                reporter,
                offender,
                offence,
                severity,
            } => {
                view.from = peer_text(reporter);
                view.about = vec![offender.to_string()];
                view.text = Some(format!("{offence:?} ({severity:?})").to_lowercase());
                ("threat", space)
            }
            EventKind::Swarm {
                space,
                slug,
                state,
                members,
                reason,
            } => {
                view.key = Some(membrane_crdt::coord::swarm_key(slug));
                view.text = Some(match reason {
                    Some(reason) => format!("{state}: {reason}"),
                    None => format!("{state}, {members} members"),
                });
                ("swarm", space)
            }
            EventKind::Task {
                space,
                id,
                state,
                winner,
            } => {
                view.key = Some(membrane_crdt::coord::task_key(id));
                view.text = Some(state.clone());
                view.about = winner.iter().map(ToString::to_string).collect();
                ("task", space)
            }
            EventKind::Intent {
                space,
                topic,
                state,
                agents,
                concentration,
            } => {
                view.key = Some(topic.clone());
                view.about = agents.iter().map(ToString::to_string).collect();
                view.text = Some(format!(
                    "{state}: {} agents, concentration {concentration:.2}",
                    agents.len()
                ));
                ("intent", space)
            }
            EventKind::Role {
                space,
                role,
                subject,
                reason,
            } => {
                view.key = Some(subject.clone());
                view.text = Some(format!("{role}: {reason}"));
                ("role", space)
            }
            EventKind::Escalation {
                space,
                key,
                entries,
                owners,
                reason,
            } => {
                view.key = Some(key.to_string());
                view.id = entries.first().and_then(id_text);
                view.about = owners.iter().map(ToString::to_string).collect();
                view.text = Some(reason.clone());
                ("escalation", space)
            }
            EventKind::Budget {
                space,
                scope,
                used,
                limit,
            } => {
                view.text = Some(match scope.as_str() {
                    "space" => format!(
                        "space {space}'s token budget is spent: {used} of {limit} tokens \
                         (warn: answers still cross)"
                    ),
                    _ => format!(
                        "your token budget is spent: {used} of {limit} tokens (warn: answers \
                         still cross)"
                    ),
                });
                ("budget", space)
            }
            EventKind::Direct {
                space,
                id,
                from,
                to,
                reply_to,
                entry,
                message,
                ..
            } => {
                view.id = id_text(id);
                view.from = peer_text(from);
                view.about = vec![to.to_string()];
                view.text = Some(message.clone());
                view.reply_to = reply_to.as_ref().map(ToString::to_string);
                view.entry = entry.as_ref().map(ToString::to_string);
                ("direct", space)
            }
            EventKind::FanOut {
                space,
                id,
                task,
                targets,
                ..
            } => {
                let delivered = targets.iter().filter(|t| t.message.is_some()).count();
                view.id = Some(id.clone());
                view.about = targets.iter().map(|t| t.agent.to_string()).collect();
                view.text = Some(format!(
                    "{task} (to {delivered} of {} agents)",
                    targets.len()
                ));
                ("fan_out", space)
            }
            _ => ("other", &membrane_protocol::Space::default_space()),
        };
        view.kind = kind.to_owned();
        view.space = space.to_string();
        view
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// A stable code: unauthorized, invalid_json, invalid_request, bad_key, bad_pattern,
    /// bad_space, bad_peer, bad_id, out_of_range, unknown_space, not_found, unknown_verb,
    /// unknown_subscription, method_not_allowed, refused, body_too_large,
    /// budget_exhausted, breaker_open, paused, unknown_agent, no_provider, unreachable,
    /// timeout, unavailable, internal.
    pub error: String,
    /// What was wrong and what was expected.
    pub message: String,
    /// The budget, when it refused the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetResponse>,
    /// The circuit breaker, when one refused a claim or an offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerView>,
}

/// A delegation circuit breaker: consecutive task failures toward an agent or a
/// capability open it, blocking claims and offers routed there for a cooldown; then one
/// trial may go, and its success closes it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BreakerView {
    /// `agent` or `capability`.
    pub guards: String,
    /// The agent's peer id, or the capability's name.
    pub id: String,
    /// `closed` (counting failures), `open` or `half_open`.
    pub state: String,
    /// Consecutive failures so far (closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Open: when its cooldown ends; half-open: when the trial out now runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl BreakerView {
    pub(crate) fn new(
        key: &membrane_immune::BreakerKey,
        state: &membrane_immune::BreakerState,
    ) -> Self {
        use membrane_immune::{BreakerKey, BreakerState};
        let (guards, id) = match key {
            BreakerKey::Agent(peer) => ("agent", peer.to_string()),
            BreakerKey::Capability(c) => ("capability", c.clone()),
        };
        let (name, failures, until_ms) = match *state {
            BreakerState::Closed { failures } => ("closed", Some(failures), None),
            BreakerState::Open { until_ms } => ("open", None, Some(until_ms)),
            BreakerState::HalfOpen { trial_until_ms } => ("half_open", None, trial_until_ms),
        };
        Self {
            guards: guards.to_owned(),
            id,
            state: name.to_owned(),
            failures,
            until_ms,
        }
    }
}
