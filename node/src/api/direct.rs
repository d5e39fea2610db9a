//! Direct messages between agents: `send` (to an agent by id, or to whoever advertises a
//! capability), `messages` (the agent's conversations, threaded by `reply_to`), `fan-out`
//! (one task to the agents that offered on a help request, to a swarm's members, or to a
//! list) and `gather` (their replies, with a deadline, and who missed it). Each message
//! travels over a direct stream between the two nodes and is acknowledged by the receiver,
//! which may refuse it with a typed reason; see `crate::network::direct`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use membrane_crdt::coord::{Card, Standing};
use membrane_crdt::{Event, EventKind, FanOutTarget};
use membrane_protocol::signals::MAX_DIRECT_BYTES;
use membrane_protocol::{EnvelopeId, PublicKey, Space};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::state::{Ctx, now_ms};
use super::verbs::{Verb, parse_peer, short, short_id, short_peer};
use crate::Refusal;
use crate::node::{Delivery, NodeEvent, Outgoing};

/// Agents `send --capability` tries at most, best-ranked first, before giving up.
pub const MAX_CAPABILITY_TRIES: usize = 3;
/// Agents one fan-out addresses at most.
pub const MAX_FANOUT: usize = 32;
/// How long a fan-out waits for results by default.
pub const DEFAULT_GATHER_MS: u64 = 60 * 1000;
/// Longest a fan-out may wait for results.
pub const MAX_GATHER_MS: u64 = 10 * 60 * 1000;
/// Direct messages `messages` and `gather` look through at most, newest first.
pub const MAX_SCAN: usize = 10_000;
/// Messages one `messages` answer holds at most.
pub const MAX_MESSAGES_PAGE: u32 = 200;
/// How long `send --capability` waits for the DHT's provider records before ranking what
/// it has (cards and ads need no lookup).
pub const PROVIDER_LOOKUP: Duration = Duration::from_secs(3);
/// Bytes of a fan-out's task kept in its record (the whole text is in each message).
const TASK_PREVIEW_BYTES: usize = 200;

fn parse_message_id(field: &str, raw: &str) -> Result<EnvelopeId, ApiError> {
    raw.trim().parse().map_err(|e| {
        ApiError::bad(
            "bad_id",
            format!("{field} {raw:?}: {e} (expected a message or entry id: 64 hex digits)"),
        )
    })
}

fn check_message(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad(
            "invalid_request",
            "message is empty (expected some text)",
        ));
    }
    if text.len() > MAX_DIRECT_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "message is {} bytes (expected at most {MAX_DIRECT_BYTES}; put long material in \
                 an entry and send its id with entry)",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// A refusal as the API's error: 403 `refused`, the message starting with the reason code.
fn refused(who: &str, refusal: &Refusal) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "refused",
        format!("{} refused by {who}: {refusal}", refusal.reason),
    )
}

fn who(names: &BTreeMap<PublicKey, String>, agent: &PublicKey) -> String {
    match names.get(agent) {
        Some(name) => format!("{name} ({agent})"),
        None => agent.to_string(),
    }
}

// ---- send ----

/// `send`: a direct message to one agent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The message (at most 16 KiB).
    pub message: String,
    /// The agent's peer id (12D3KooW…). Give this or capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Send to whoever advertises this capability instead: the best-ranked agent (track
    /// record, then reputation) that accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The id of the message this one answers (from a `direct` event), to thread a
    /// conversation or return a fan-out's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The id of an entry the message refers to (a result you exposed, a draft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Space whose rules the receiver judges it by [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// An agent passed over by `send --capability`, and why.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PassedOver {
    /// Its peer id.
    pub agent: String,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why it did not take the message: a refusal reason (`rate_limited: …`) or a failure
    /// (`unreachable: …`).
    pub why: String,
}

/// The receiver's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SendResponse {
    /// The message's id: replies name it.
    pub id: String,
    /// Who accepted it.
    pub to: String,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The space it was judged in.
    pub space: String,
    /// Its tokens as the receiver counted them (charged to the receiver's budget).
    pub tokens: u64,
    /// The receiver had it already (a retry): not delivered twice.
    #[serde(default)]
    pub duplicate: bool,
    /// With `capability`: the capability the receiver was chosen for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// With `capability`: better-ranked agents that did not take it, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<PassedOver>,
}

/// One agent that advertises a capability, as `send --capability` ranks them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Provider {
    pub(crate) agent: PublicKey,
    pub(crate) score: f64,
    pub(crate) connected: bool,
}

/// What is known of the agents that advertise a capability.
#[derive(Debug, Default)]
pub(crate) struct ProviderFacts {
    /// Capability cards in the space.
    pub(crate) cards: BTreeMap<PublicKey, Card>,
    /// Track records in the space.
    pub(crate) standings: BTreeMap<PublicKey, Standing>,
    /// Kademlia provider records for the capability.
    pub(crate) dht: Vec<PublicKey>,
    /// Connected peers whose gossip capability ad lists it.
    pub(crate) ads: Vec<PublicKey>,
    /// Connected peers.
    pub(crate) connected: BTreeSet<PublicKey>,
    /// Immune reputation in [-100, 100] of peers that have one.
    pub(crate) reputation: BTreeMap<PublicKey, f64>,
    /// Peers the immune layer quarantined or banned.
    pub(crate) shut_out: BTreeSet<PublicKey>,
}

/// The agents that advertise `capability` (a card in the space, a DHT provider record or a
/// connected peer's ad), best first: track record for the capability (the standing factor
/// `discover` uses, 1 for a newcomer) × (1 + reputation / 200), then connected before not,
/// then by id. Quarantined and banned agents and `me` are left out.
pub(crate) fn rank_providers(
    capability: &str,
    me: &PublicKey,
    facts: &ProviderFacts,
) -> Vec<Provider> {
    let mut agents: BTreeSet<PublicKey> = facts
        .cards
        .iter()
        .filter(|(_, card)| card.has(capability))
        .map(|(agent, _)| *agent)
        .collect();
    agents.extend(facts.dht.iter().copied());
    agents.extend(facts.ads.iter().copied());
    let mut ranked: Vec<Provider> = agents
        .into_iter()
        .filter(|a| a != me && !facts.shut_out.contains(a))
        .map(|agent| {
            let record = facts.standings.get(&agent).map_or_else(
                || Standing::default().weight(Some(capability)),
                |s| s.weight(Some(capability)),
            );
            let reputation = facts.reputation.get(&agent).copied().unwrap_or(0.0);
            Provider {
                agent,
                score: record * (1.0 + reputation.clamp(-100.0, 100.0) / 200.0),
                connected: facts.connected.contains(&agent),
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.connected.cmp(&a.connected))
            .then(a.agent.cmp(&b.agent))
    });
    ranked
}

async fn provider_facts(
    ctx: &Ctx,
    space: &Space,
    capability: &str,
) -> Result<ProviderFacts, ApiError> {
    let snap = ctx.node.coordination(space).await?;
    let infos = ctx.node.peer_infos().await?;
    let immune = ctx.node.immune_report(0).await?;
    Ok(ProviderFacts {
        cards: snap.cards,
        standings: snap.standings,
        // The DHT may know none (a light node, a lone node) or be slow to say so: cards and
        // ads still count.
        dht: tokio::time::timeout(PROVIDER_LOOKUP, ctx.node.find_providers(capability))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        ads: infos
            .iter()
            .filter(|p| p.capabilities.iter().any(|c| c.name == capability))
            .map(|p| p.peer)
            .collect(),
        connected: infos.iter().map(|p| p.peer).collect(),
        reputation: immune
            .peers
            .iter()
            .map(|p| (p.peer, p.reputation))
            .collect(),
        shut_out: immune
            .peers
            .iter()
            .filter(|p| p.quarantine.is_some() || p.banned_until_ms.is_some())
            .map(|p| p.peer)
            .collect(),
    })
}

fn delivered(
    delivery: Delivery,
    space: &Space,
    names: &BTreeMap<PublicKey, String>,
) -> SendResponse {
    SendResponse {
        id: delivery.id.to_string(),
        to: delivery.to.to_string(),
        name: names.get(&delivery.to).cloned(),
        space: space.to_string(),
        tokens: delivery.tokens,
        duplicate: delivery.duplicate,
        capability: None,
        passed_over: Vec::new(),
    }
}

pub(crate) struct SendVerb;

impl Verb for SendVerb {
    const NAME: &'static str = "send";
    const SUMMARY: &'static str =
        "Send a direct message to one agent (by id, or by capability) and get its receipt.";
    const DESCRIPTION: &'static str = "Goes over a direct stream to the agent's node, which \
        puts it on that agent's event stream (type direct) and acknowledges it, or refuses it \
        with a reason: untrusted, quarantined, banned, rate_limited (retry later), too_large, \
        budget_exhausted (the receiver's token budget is spent), unknown_space, paused. Use it \
        to ask one agent something, to answer a message (reply_to its id) or to return a \
        fan-out's result (reply_to the fan-out message's id). With capability instead of to, \
        the best-ranked agent that advertises it gets it, and the answer says which. Costs \
        you no context tokens; the receiver is charged the message's tokens. At most 16 KiB: \
        for more, expose an entry and send its id in entry.";
    const EXAMPLE: &'static str = "membrane send --to 12D3KooWExample… 'Can you check figure 3?'";
    const POSITIONAL: &'static [&'static str] = &["message"];
    type Request = SendRequest;
    type Response = SendResponse;

    async fn call(ctx: &Ctx, req: SendRequest) -> Result<SendResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        check_message(&req.message)?;
        let reply_to = req
            .reply_to
            .as_deref()
            .map(|r| parse_message_id("reply_to", r))
            .transpose()?;
        let entry = req
            .entry
            .as_deref()
            .map(|r| parse_message_id("entry", r))
            .transpose()?;
        let outgoing = |to: PublicKey| Outgoing {
            to,
            space: space.clone(),
            message: req.message.clone(),
            reply_to,
            entry,
        };
        match (&req.to, &req.capability) {
            (Some(to), None) => {
                let to = parse_peer(to)?;
                let delivery = ctx.node.send(outgoing(to)).await?;
                let names = ctx.names().await;
                if let Some(refusal) = &delivery.refused {
                    return Err(refused(&who(&names, &to), refusal));
                }
                Ok(delivered(delivery, &space, &names))
            }
            (None, Some(capability)) => {
                let facts = provider_facts(ctx, &space, capability).await?;
                let ranked = rank_providers(capability, ctx.node.id(), &facts);
                if ranked.is_empty() {
                    return Err(ApiError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "no_provider",
                        format!(
                            "no other agent advertises capability {capability:?} in {space} \
                             (no card, DHT provider record or ad); find one with discover"
                        ),
                    ));
                }
                let names = ctx.names().await;
                let mut passed_over = Vec::new();
                let mut last_error = None;
                for provider in ranked.iter().take(MAX_CAPABILITY_TRIES) {
                    let (why, error) = match ctx.node.send(outgoing(provider.agent)).await {
                        Ok(delivery) => match delivery.refused.clone() {
                            None => {
                                let mut resp = delivered(delivery, &space, &names);
                                resp.capability = Some(capability.clone());
                                resp.passed_over = passed_over;
                                return Ok(resp);
                            }
                            Some(refusal) => (
                                refusal.to_string(),
                                refused(&who(&names, &provider.agent), &refusal),
                            ),
                        },
                        Err(e) => {
                            let e = ApiError::from(e);
                            (format!("{}: {}", e.code, e.message), e)
                        }
                    };
                    passed_over.push(PassedOver {
                        agent: provider.agent.to_string(),
                        name: names.get(&provider.agent).cloned(),
                        why,
                    });
                    last_error = Some(error);
                }
                let mut error = last_error.unwrap_or_else(|| {
                    ApiError::new(axum::http::StatusCode::NOT_FOUND, "no_provider", "")
                });
                error.message = format!(
                    "none of the {} best-ranked agents advertising {capability:?} took the \
                     message: {}",
                    passed_over.len(),
                    passed_over
                        .iter()
                        .map(|p| format!(
                            "{} ({})",
                            p.name.as_deref().unwrap_or(short_peer(&p.agent)),
                            p.why
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                Err(error)
            }
            _ => Err(ApiError::bad(
                "invalid_request",
                "give exactly one of to (a peer id) and capability (a capability name)",
            )),
        }
    }

    fn render(resp: &SendResponse) -> String {
        let mut out = format!(
            "delivered [{}] to {} ({}), {} tokens{}",
            short(&resp.id),
            resp.name.as_deref().unwrap_or("?"),
            short_peer(&resp.to),
            resp.tokens,
            if resp.duplicate {
                " (it had it already)"
            } else {
                ""
            }
        );
        if let Some(capability) = &resp.capability {
            let _ = write!(out, "\nchosen for {capability}");
            for p in &resp.passed_over {
                let _ = write!(
                    out,
                    "\npassed over {} ({}): {}",
                    p.name.as_deref().unwrap_or("?"),
                    short_peer(&p.agent),
                    p.why
                );
            }
        }
        let _ = write!(out, "\nid: {}", resp.id);
        out
    }
}

// ---- messages ----

/// `messages`: the agent's direct messages, or one conversation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    /// Only the conversation with this agent (peer id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// Only the thread this message belongs to: its root and every reply, at any depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// At most this many, the newest [default: 20, at most 200].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One direct message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MessageView {
    /// Its id.
    pub id: String,
    /// Position in this node's event log.
    pub seq: u64,
    /// `in` (to this agent) or `out` (from it).
    pub direction: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// The message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The entry it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The text.
    pub text: String,
    /// Its tokens, as the receiver counted them.
    pub tokens: u64,
    /// When this node accepted (in) or had it acknowledged (out), ms since the Unix epoch.
    pub at_ms: u64,
}

/// Messages, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MessagesResponse {
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

fn message_view(event: &Event, me: &PublicKey) -> Option<MessageView> {
    let EventKind::Direct {
        id,
        from,
        to,
        reply_to,
        entry,
        message,
        tokens,
        at_ms,
        ..
    } = &event.kind
    else {
        return None;
    };
    Some(MessageView {
        id: id.to_string(),
        seq: event.seq,
        direction: if to == me { "in" } else { "out" }.to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        reply_to: reply_to.as_ref().map(ToString::to_string),
        entry: entry.as_ref().map(ToString::to_string),
        text: message.clone(),
        tokens: *tokens,
        at_ms: *at_ms,
    })
}

/// The direct messages of the log, oldest first (the newest [`MAX_SCAN`]).
async fn direct_events(ctx: &Ctx) -> Result<Vec<Event>, ApiError> {
    let mut events = ctx
        .node
        .find_events(|e| matches!(e.kind, EventKind::Direct { .. }), MAX_SCAN)
        .await?;
    events.reverse();
    Ok(events)
}

/// The thread `id` belongs to: up its `reply_to` chain to the root, then every message
/// that answers one already in, at any depth. Oldest first.
pub(crate) fn thread(events: &[Event], id: &EnvelopeId) -> Vec<Event> {
    let parent: BTreeMap<EnvelopeId, Option<EnvelopeId>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Direct { id, reply_to, .. } => Some((*id, *reply_to)),
            _ => None,
        })
        .collect();
    let mut root = *id;
    let mut climbed = BTreeSet::from([root]);
    while let Some(Some(up)) = parent.get(&root) {
        if !climbed.insert(*up) {
            break;
        }
        root = *up;
    }
    let mut members = BTreeSet::from([root]);
    // Replies come after what they answer in the log, so one pass in log order finds them.
    let mut out = Vec::new();
    for event in events {
        if let EventKind::Direct { id, reply_to, .. } = &event.kind
            && (members.contains(id) || reply_to.is_some_and(|r| members.contains(&r)))
        {
            members.insert(*id);
            out.push(event.clone());
        }
    }
    out
}

pub(crate) struct Messages;

impl Verb for Messages {
    const NAME: &'static str = "messages";
    const SUMMARY: &'static str = "Read your direct messages: all, with one agent, or one thread.";
    const DESCRIPTION: &'static str = "Direct messages sent and received, oldest first, each \
        with its id (reply with send --reply-to <id>) and the message it answers. thread=<id> \
        gives a whole conversation: its first message and every reply at any depth. Messages \
        you received were charged to your budget on arrival, so reading them again is free; \
        each costs about its length / 4 tokens of context.";
    const EXAMPLE: &'static str = "membrane messages --with 12D3KooWExample… --limit 10";
    const READ_ONLY: bool = true;
    type Request = MessagesRequest;
    type Response = MessagesResponse;

    async fn call(ctx: &Ctx, req: MessagesRequest) -> Result<MessagesResponse, ApiError> {
        let limit = req.limit.unwrap_or(20).clamp(1, MAX_MESSAGES_PAGE) as usize;
        let with = req.with.as_deref().map(parse_peer).transpose()?;
        let thread_of = req
            .thread
            .as_deref()
            .map(|t| parse_message_id("thread", t))
            .transpose()?;
        let mut events = direct_events(ctx).await?;
        if let Some(id) = &thread_of {
            events = thread(&events, id);
            if events.is_empty() {
                return Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no direct message {id} in this agent's log"),
                ));
            }
        }
        let me = ctx.node.id();
        let mut messages: Vec<MessageView> = events
            .iter()
            .filter_map(|e| message_view(e, me))
            .filter(|m| {
                with.is_none_or(|w| {
                    let w = w.to_string();
                    m.from == w || m.to == w
                })
            })
            .collect();
        let skip = messages.len().saturating_sub(limit);
        messages.drain(..skip);
        Ok(MessagesResponse { messages })
    }

    fn render(resp: &MessagesResponse) -> String {
        let mut out = String::new();
        for m in &resp.messages {
            let (arrow, other) = if m.direction == "in" {
                ("from", &m.from)
            } else {
                ("to", &m.to)
            };
            let _ = write!(out, "[{}] {arrow} {}", m.id, short_peer(other));
            if let Some(re) = &m.reply_to {
                let _ = write!(out, " re [{}]", short(re));
            }
            if let Some(entry) = &m.entry {
                let _ = write!(out, " entry [{}]", short(entry));
            }
            let _ = writeln!(out, ": {}", m.text);
        }
        let _ = write!(out, "{} messages", resp.messages.len());
        out
    }
}

// ---- fan-out and gather ----

/// `fan-out`: one task to several agents over direct messages.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOutRequest {
    /// The task, as the message each agent receives (at most 16 KiB).
    pub task: String,
    /// Send to the agents that offered on this help request (its id, from help; declines
    /// left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<String>,
    /// Send to the members of this swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    /// Send to these agents (peer ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// How long results count, in ms [default: 60000, at most 600000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// An agent a fan-out reached.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FanOutSent {
    /// Its peer id.
    pub agent: String,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The id of the message it accepted: its result is a reply to this id.
    pub message: String,
}

/// An agent a fan-out did not reach, or that sent no result in time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Missed {
    /// Its peer id.
    pub agent: String,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why: the refusal or failure, or that no result came by the deadline.
    pub why: String,
}

/// The fan-out, sent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FanOutResponse {
    /// Its id, for `gather`.
    pub fanout: String,
    /// Results count until then, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// Agents that accepted the task.
    pub sent: Vec<FanOutSent>,
    /// Agents that did not, and why.
    pub failed: Vec<Missed>,
}

async fn fanout_targets(
    ctx: &Ctx,
    space: &Space,
    req: &FanOutRequest,
) -> Result<Vec<PublicKey>, ApiError> {
    let mut targets: Vec<PublicKey> = match (&req.offers, &req.swarm, req.to.is_empty()) {
        (Some(help), None, true) => {
            let offers = <super::mesh::Offers as Verb>::call(
                ctx,
                super::mesh::OffersRequest {
                    space: Some(space.to_string()),
                    help: help.clone(),
                    wait: false,
                },
            )
            .await?;
            offers
                .offers
                .iter()
                .map(|o| parse_peer(&o.agent))
                .collect::<Result<_, _>>()?
        }
        (None, Some(swarm), true) => {
            let snap = ctx.node.coordination(space).await?;
            let Some(found) = snap.swarms.get(swarm.as_str()) else {
                return Err(ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no swarm {swarm:?} in {space} (list them with swarms)"),
                ));
            };
            if matches!(
                found.state,
                membrane_crdt::coord::SwarmState::Dissolved { .. }
            ) {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "refused",
                    format!("swarm {swarm:?} is dissolved (expected a forming or active one)"),
                ));
            }
            found.members.clone()
        }
        (None, None, false) => req
            .to
            .iter()
            .map(|p| parse_peer(p))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad(
                "invalid_request",
                "give exactly one of offers (a help request's id), swarm (a swarm's id) and to \
                 (peer ids)",
            ));
        }
    };
    let me = ctx.node.id();
    let mut seen = BTreeSet::new();
    targets.retain(|t| t != me && seen.insert(*t));
    if targets.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "nobody to fan out to (no offers that were not declines, no other members, or no \
             ids but your own)",
        ));
    }
    if targets.len() > MAX_FANOUT {
        return Err(ApiError::bad(
            "out_of_range",
            format!(
                "{} agents (expected at most {MAX_FANOUT} per fan-out)",
                targets.len()
            ),
        ));
    }
    Ok(targets)
}

fn preview(text: &str) -> String {
    let text = text.trim();
    if text.len() <= TASK_PREVIEW_BYTES {
        return text.to_owned();
    }
    let mut cut = TASK_PREVIEW_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

pub(crate) struct FanOut;

impl Verb for FanOut {
    const NAME: &'static str = "fan-out";
    const SUMMARY: &'static str =
        "Send one task to several agents (offerers, a swarm, a list) as direct messages.";
    const DESCRIPTION: &'static str = "Each agent gets the task as a direct message and \
        returns its result by replying to that message (send --reply-to <its id> \
        '<result>', optionally with entry=<result entry id>). Then call gather with the \
        fan-out's id: it waits until every agent answered or the deadline passed and lists \
        the results and who missed. Address offers=<help id> (the agents that offered on \
        your help request), swarm=<id> (its members) or to=[ids], at most 32 agents. Costs \
        you no context tokens; each receiver is charged the task's tokens.";
    const EXAMPLE: &'static str = "membrane fan-out 'Check one section each and report errors' --offers h1a2b3c4d5 --within-ms 60000";
    const POSITIONAL: &'static [&'static str] = &["task"];
    type Request = FanOutRequest;
    type Response = FanOutResponse;

    async fn call(ctx: &Ctx, req: FanOutRequest) -> Result<FanOutResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        check_message(&req.task)?;
        let within = req.within_ms.unwrap_or(DEFAULT_GATHER_MS);
        if within == 0 || within > MAX_GATHER_MS {
            return Err(ApiError::bad(
                "out_of_range",
                format!("within_ms {within} is out of range (expected 1 to {MAX_GATHER_MS})"),
            ));
        }
        let targets = fanout_targets(ctx, &space, &req).await?;
        let now = now_ms();
        let deadline_ms = now + within;
        let sends = targets.iter().map(|to| {
            ctx.node.send(Outgoing {
                to: *to,
                space: space.clone(),
                message: req.task.clone(),
                reply_to: None,
                entry: None,
            })
        });
        let outcomes = futures::future::join_all(sends).await;
        let names = ctx.names().await;
        let mut record = Vec::new();
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for (agent, outcome) in targets.iter().zip(outcomes) {
            let why = match outcome {
                Ok(Delivery {
                    id, refused: None, ..
                }) => {
                    sent.push(FanOutSent {
                        agent: agent.to_string(),
                        name: names.get(agent).cloned(),
                        message: id.to_string(),
                    });
                    record.push(FanOutTarget {
                        agent: *agent,
                        message: Some(id),
                        failed: None,
                    });
                    continue;
                }
                Ok(Delivery {
                    refused: Some(refusal),
                    ..
                }) => format!("refused: {refusal}"),
                Err(e) => e.to_string(),
            };
            failed.push(Missed {
                agent: agent.to_string(),
                name: names.get(agent).cloned(),
                why: why.clone(),
            });
            record.push(FanOutTarget {
                agent: *agent,
                message: None,
                failed: Some(why),
            });
        }
        let fanout = format!(
            "f{}",
            short_id(&format!("{}|{now}|{}", ctx.node.id(), req.task))
        );
        ctx.node
            .note(EventKind::FanOut {
                space,
                id: fanout.clone(),
                task: preview(&req.task),
                deadline_ms,
                targets: record,
            })
            .await?;
        Ok(FanOutResponse {
            fanout,
            deadline_ms,
            sent,
            failed,
        })
    }

    fn render(resp: &FanOutResponse) -> String {
        let mut out = format!(
            "fan-out {} to {} agents, results until {}",
            resp.fanout,
            resp.sent.len(),
            resp.deadline_ms
        );
        for s in &resp.sent {
            let _ = write!(
                out,
                "\nsent to {} ({}) [{}]",
                s.name.as_deref().unwrap_or("?"),
                short_peer(&s.agent),
                short(&s.message)
            );
        }
        for f in &resp.failed {
            let _ = write!(
                out,
                "\nnot sent to {} ({}): {}",
                f.name.as_deref().unwrap_or("?"),
                short_peer(&f.agent),
                f.why
            );
        }
        let _ = write!(out, "\ngather with: membrane gather {}", resp.fanout);
        out
    }
}

/// `gather`: a fan-out's results.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatherRequest {
    /// The fan-out's id.
    pub fanout: String,
    /// Answer at once with what arrived so far, instead of waiting until every agent
    /// answered or the deadline passed.
    #[serde(default)]
    pub peek: bool,
}

/// One result: a reply to a fan-out's message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GatherResult {
    /// Who.
    pub agent: String,
    /// Its name, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The reply's id.
    pub message: String,
    /// The result text.
    pub text: String,
    /// An entry it refers to (a result entry), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// When it arrived, ms since the Unix epoch.
    pub at_ms: u64,
}

/// What a fan-out brought back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GatherResponse {
    /// The fan-out.
    pub fanout: String,
    /// Its task's first words.
    pub task: String,
    /// Its deadline.
    pub deadline_ms: u64,
    /// Every agent answered or the deadline passed: nothing more will count.
    pub done: bool,
    /// Replies that arrived by the deadline, in arrival order.
    pub results: Vec<GatherResult>,
    /// Replies that arrived after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<GatherResult>,
    /// Agents with no result by the deadline, or never reached, and why.
    pub missed: Vec<Missed>,
    /// Agents reached that have not answered yet, while the deadline has not passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// A fan-out's record: (space, task, deadline, targets).
type FanOutRecord = (Space, String, u64, Vec<FanOutTarget>);

async fn find_fanout(ctx: &Ctx, fanout: &str) -> Result<FanOutRecord, ApiError> {
    let wanted = fanout.to_owned();
    let found = ctx
        .node
        .find_events(
            move |e| matches!(&e.kind, EventKind::FanOut { id, .. } if *id == wanted),
            1,
        )
        .await?;
    match found.into_iter().next().map(|e| e.kind) {
        Some(EventKind::FanOut {
            space,
            task,
            deadline_ms,
            targets,
            ..
        }) => Ok((space, task, deadline_ms, targets)),
        _ => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no fan-out {fanout:?} in this agent's log (expected an id fan-out returned)"),
        )),
    }
}

/// Folds the replies in `events` (oldest first) into a gather answer at `now_ms`: a
/// result is a message to `me` from a targeted agent whose `reply_to` is the message that
/// agent accepted.
pub(crate) fn gather_state(
    me: &PublicKey,
    (deadline_ms, targets): (u64, &[FanOutTarget]),
    events: &[Event],
    names: &BTreeMap<PublicKey, String>,
    now_ms: u64,
) -> (
    Vec<GatherResult>,
    Vec<GatherResult>,
    Vec<PublicKey>,
    Vec<Missed>,
    bool,
) {
    let asked: BTreeMap<EnvelopeId, PublicKey> = targets
        .iter()
        .filter_map(|t| t.message.map(|m| (m, t.agent)))
        .collect();
    let mut results = Vec::new();
    let mut late = Vec::new();
    let mut answered = BTreeSet::new();
    for event in events {
        let EventKind::Direct {
            id,
            from,
            to,
            reply_to: Some(reply_to),
            entry,
            message,
            at_ms,
            ..
        } = &event.kind
        else {
            continue;
        };
        if to != me || asked.get(reply_to) != Some(from) {
            continue;
        }
        let result = GatherResult {
            agent: from.to_string(),
            name: names.get(from).cloned(),
            message: id.to_string(),
            text: message.clone(),
            entry: entry.as_ref().map(ToString::to_string),
            at_ms: *at_ms,
        };
        if *at_ms <= deadline_ms {
            answered.insert(*from);
            results.push(result);
        } else {
            late.push(result);
        }
    }
    let past = now_ms > deadline_ms;
    let mut pending = Vec::new();
    let mut missed = Vec::new();
    for target in targets {
        let name = names.get(&target.agent).cloned();
        match (&target.message, &target.failed) {
            (None, failed) => missed.push(Missed {
                agent: target.agent.to_string(),
                name,
                why: format!(
                    "not reached: {}",
                    failed.as_deref().unwrap_or("no acknowledgement")
                ),
            }),
            (Some(_), _) if answered.contains(&target.agent) => {}
            (Some(_), _) if past => missed.push(Missed {
                agent: target.agent.to_string(),
                name,
                why: format!("no result by the deadline ({deadline_ms})"),
            }),
            (Some(_), _) => pending.push(target.agent),
        }
    }
    let done = pending.is_empty();
    (results, late, pending, missed, done)
}

pub(crate) struct Gather;

impl Verb for Gather {
    const NAME: &'static str = "gather";
    const SUMMARY: &'static str =
        "Collect a fan-out's results, waiting until all answered or the deadline.";
    const DESCRIPTION: &'static str = "Waits (unless peek) until every agent the fan-out \
        reached has replied to its message or the deadline has passed, then lists the results \
        (who, text, entry id) and who missed it (no reply in time, or never reached, with \
        why). Replies after the deadline are listed apart as late. The results were charged \
        to your budget when they arrived; reading them costs about their length / 4 tokens \
        of context.";
    const EXAMPLE: &'static str = "membrane gather f1a2b3c4d5";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["fanout"];
    type Request = GatherRequest;
    type Response = GatherResponse;

    async fn call(ctx: &Ctx, req: GatherRequest) -> Result<GatherResponse, ApiError> {
        // Follow events before reading the log, so no reply falls between the two.
        let mut events = ctx.node.subscribe();
        let (_, task, deadline_ms, targets) = find_fanout(ctx, &req.fanout).await?;
        let me = *ctx.node.id();
        loop {
            let log = direct_events(ctx).await?;
            let names = ctx.names().await;
            let now = now_ms();
            let (results, late, pending, missed, done) =
                gather_state(&me, (deadline_ms, &targets), &log, &names, now);
            if done || req.peek {
                return Ok(GatherResponse {
                    fanout: req.fanout,
                    task,
                    deadline_ms,
                    done,
                    results,
                    late,
                    missed,
                    pending: pending.iter().map(ToString::to_string).collect(),
                });
            }
            // Wait for the next direct message, or until just past the deadline.
            let left = Duration::from_millis(deadline_ms.saturating_sub(now) + 1);
            let until = tokio::time::Instant::now() + left;
            loop {
                match tokio::time::timeout_at(until, events.recv()).await {
                    Ok(Ok(NodeEvent::Medium(Event {
                        kind: EventKind::Direct { .. },
                        ..
                    })))
                    | Ok(Err(RecvError::Lagged(_)))
                    | Err(_) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Closed)) => {
                        return Err(crate::node::NodeError::Stopped.into());
                    }
                }
            }
        }
    }

    fn render(resp: &GatherResponse) -> String {
        let mut out = format!(
            "fan-out {}: {} results{}, {} missed ({})",
            resp.fanout,
            resp.results.len(),
            if resp.late.is_empty() {
                String::new()
            } else {
                format!(" (+{} late)", resp.late.len())
            },
            resp.missed.len(),
            if resp.done { "done" } else { "still open" }
        );
        for r in &resp.results {
            let _ = write!(
                out,
                "\n{} ({}): {}",
                r.name.as_deref().unwrap_or("?"),
                short_peer(&r.agent),
                r.text
            );
            if let Some(entry) = &r.entry {
                let _ = write!(out, " [entry {}]", short(entry));
            }
        }
        for r in &resp.late {
            let _ = write!(
                out,
                "\nlate, {} ({}): {}",
                r.name.as_deref().unwrap_or("?"),
                short_peer(&r.agent),
                r.text
            );
        }
        for m in &resp.missed {
            let _ = write!(
                out,
                "\nmissed {} ({}): {}",
                m.name.as_deref().unwrap_or("?"),
                short_peer(&m.agent),
                m.why
            );
        }
        for p in &resp.pending {
            let _ = write!(out, "\nwaiting for {}", short_peer(p));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use membrane_crdt::coord::CardCapability;
    use membrane_protocol::Keypair;

    use super::*;

    fn key(n: u8) -> PublicKey {
        Keypair::from_seed(&[n; 32]).public()
    }

    fn card(capability: &str) -> Card {
        Card {
            name: "a".into(),
            capabilities: vec![CardCapability {
                name: capability.into(),
                description: String::new(),
            }],
        }
    }

    #[test]
    fn providers_rank_by_track_record_then_reputation_then_connection() {
        let me = key(1);
        let mut facts = ProviderFacts::default();
        for n in [1, 2, 3, 4, 5] {
            facts.cards.insert(key(n), card("reviewing"));
        }
        facts.cards.insert(key(6), card("writing"));
        // 3 completed two reviewing tasks; 4 failed one; 5 is quarantined; 7 is known only
        // from the DHT, 8 only from its ad.
        let mut good = Standing::default();
        good.completed.insert("reviewing".into(), 2);
        good.recent_completed.insert("reviewing".into(), 2.0);
        facts.standings.insert(key(3), good);
        let mut bad = Standing::default();
        bad.failed.insert("reviewing".into(), 1);
        bad.recent_failed.insert("reviewing".into(), 1.0);
        facts.standings.insert(key(4), bad);
        facts.shut_out.insert(key(5));
        facts.dht = vec![key(7), me];
        facts.ads = vec![key(8)];
        facts.connected.insert(key(8));
        facts.reputation.insert(key(7), -100.0);
        let ranked = rank_providers("reviewing", &me, &facts);
        let order: Vec<PublicKey> = ranked.iter().map(|p| p.agent).collect();
        // Newcomers 2 and 8 tie at 1.0: the connected one first.
        assert_eq!(
            order,
            [key(3), key(8), key(2), key(4), key(7)],
            "{ranked:?}"
        );
        assert!((ranked[0].score - 2.0 * 0.75).abs() < 1e-9, "{ranked:?}");
        assert!((ranked[4].score - 0.5).abs() < 1e-9, "{ranked:?}");
        // Provider records and ads are looked up per capability; cards are filtered.
        facts.dht.clear();
        facts.ads.clear();
        assert!(rank_providers("astrology", &me, &facts).is_empty());
    }

    fn direct(seq: u64, id: u8, from: PublicKey, to: PublicKey, re: Option<u8>, at: u64) -> Event {
        Event {
            seq,
            kind: EventKind::Direct {
                space: Space::default_space(),
                id: EnvelopeId([id; 32]),
                from,
                to,
                reply_to: re.map(|r| EnvelopeId([r; 32])),
                entry: None,
                message: format!("m{id}"),
                tokens: 1,
                at_ms: at,
            },
        }
    }

    #[test]
    fn a_thread_is_its_root_and_every_reply_at_any_depth() {
        let (a, b) = (key(1), key(2));
        let log = vec![
            direct(1, 10, a, b, None, 0),
            direct(2, 20, a, b, None, 0),
            direct(3, 11, b, a, Some(10), 0),
            direct(4, 12, a, b, Some(11), 0),
            direct(5, 21, b, a, Some(20), 0),
            direct(6, 13, b, a, Some(10), 0),
        ];
        let ids = |events: Vec<Event>| -> Vec<u64> { events.iter().map(|e| e.seq).collect() };
        // From the root or from any reply, the same thread.
        assert_eq!(ids(thread(&log, &EnvelopeId([10; 32]))), [1, 3, 4, 6]);
        assert_eq!(ids(thread(&log, &EnvelopeId([12; 32]))), [1, 3, 4, 6]);
        assert_eq!(ids(thread(&log, &EnvelopeId([21; 32]))), [2, 5]);
        assert!(thread(&log, &EnvelopeId([99; 32])).is_empty());
    }

    #[test]
    fn gather_counts_only_the_targets_replies_to_their_own_message_by_the_deadline() {
        let (me, x, y, z, w) = (key(1), key(2), key(3), key(4), key(5));
        let targets = [
            FanOutTarget {
                agent: x,
                message: Some(EnvelopeId([20; 32])),
                failed: None,
            },
            FanOutTarget {
                agent: y,
                message: Some(EnvelopeId([30; 32])),
                failed: None,
            },
            FanOutTarget {
                agent: z,
                message: Some(EnvelopeId([40; 32])),
                failed: None,
            },
            FanOutTarget {
                agent: w,
                message: None,
                failed: Some("refused: untrusted".into()),
            },
        ];
        let log = vec![
            // x answers its message in time.
            direct(1, 21, x, me, Some(20), 900),
            // y answers x's message: not a result.
            direct(2, 31, y, me, Some(20), 900),
            // z answers late.
            direct(3, 41, z, me, Some(40), 1_100),
        ];
        let names = BTreeMap::new();
        // Before the deadline, before z's late reply arrived.
        let (results, late, pending, missed, done) =
            gather_state(&me, (1_000, &targets), &log[..2], &names, 950);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].agent, x.to_string());
        assert!(late.is_empty());
        assert_eq!(pending, [y, z]);
        assert_eq!(missed.len(), 1);
        assert!(missed[0].why.contains("untrusted"));
        assert!(!done);
        let (results, late, pending, missed, done) =
            gather_state(&me, (1_000, &targets), &log, &names, 1_200);
        assert_eq!(results.len(), 1);
        assert_eq!(late.len(), 1);
        assert!(pending.is_empty());
        let missing: Vec<&str> = missed.iter().map(|m| m.agent.as_str()).collect();
        assert_eq!(missing, [y.to_string(), z.to_string(), w.to_string()]);
        assert!(done);
    }
}
