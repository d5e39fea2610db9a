//! The agent-mesh verbs: `discover` (who can help, ranked by card words × track record),
//! `help` and `offers` (a need goes to the space; capable agents' nodes answer with offers
//! on their own, and agents may answer or decline themselves), and `propose`, `build-on`
//! and `thread` (linked entries read as a tree). Like the coordination verbs, each record
//! is a signed entry in the writer's slot, so every node sees the same offers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use membrane_crdt::coord;
use membrane_crdt::{Draft, EventKind};
use membrane_protocol::{Entry, EntryKind, EnvelopeId, Pattern, Score, Space, Tier};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::coordination::write;
use super::error::ApiError;
use super::state::{Ctx, now_ms};
use super::types::EntryView;
use super::verbs::{Verb, parse_key, parse_peer, short, short_id, short_peer};
use crate::node::NodeEvent;

/// Longest a `help` may stay open.
pub const MAX_HELP_MS: u64 = 10 * 60 * 1000;
/// How long a `help` stays open by default.
pub const DEFAULT_HELP_MS: u64 = 30 * 1000;

fn help_key(id: &str) -> String {
    format!("coord.help.{id}")
}

fn offer_key(id: &str, owner: &membrane_protocol::PublicKey) -> String {
    format!("coord.help.{id}.offers.{}", coord::owner_hex(owner))
}

async fn visible(ctx: &Ctx, space: &Space, pattern: &str) -> Result<Vec<Entry>, ApiError> {
    let pattern: Pattern = pattern
        .parse()
        .map_err(|e| ApiError::bad("bad_pattern", format!("{pattern}: {e}")))?;
    Ok(ctx.node.query(space, &pattern, false).await?.hits)
}

// ---- discover ----

/// `discover`: who can help with a need.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The need, in words, e.g. "review a draft for accuracy".
    pub need: String,
    /// At most this many agents [default: 5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The team so far (peer ids): agents who completed tasks in swarms with them rank
    /// higher [default: you].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
}

/// Most team members `discover` weighs teamwork against.
const MAX_TEAM: usize = 64;

/// An agent that may help.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CandidateView {
    /// Its peer id.
    pub agent: String,
    /// Its name.
    pub name: String,
    /// The capability that matched.
    pub capability: String,
    /// Text match × track record.
    pub score: f64,
    /// Share of the need's words its card covers, 0 to 1.
    pub text_match: f64,
    /// Track record for that capability (tasks completed vs failed, verified entries).
    pub standing: f64,
    /// How well it did in swarms with the team (`with`): above 1 for teams that completed
    /// tasks together, below 1 for teams that failed, 1 if they never shared one.
    pub teamwork: f64,
}

/// Agents ranked for a need.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiscoverResponse {
    /// Best first.
    pub agents: Vec<CandidateView>,
}

pub(crate) struct Discover;

impl Verb for Discover {
    const NAME: &'static str = "discover";
    const SUMMARY: &'static str = "Find the agents best placed to help with a need.";
    const DESCRIPTION: &'static str = "Ranks agents by how well their signed capability \
        cards match the need's words, times their track record for that capability (tasks \
        completed vs failed, entries others verified), times how well they worked in swarms \
        with you (or the team you name in with). Use it before posting a task or \
        asking for help. About 40 tokens per agent.";
    const EXAMPLE: &'static str = "membrane discover 'review a draft brief for accuracy'";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["need"];
    type Request = DiscoverRequest;
    type Response = DiscoverResponse;

    async fn call(ctx: &Ctx, req: DiscoverRequest) -> Result<DiscoverResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = ctx.node.coordination(&space).await?;
        let limit = req.limit.unwrap_or(5).clamp(1, 100) as usize;
        let with = if req.with.is_empty() {
            vec![*ctx.node.id()]
        } else {
            req.with
                .iter()
                .take(MAX_TEAM)
                .map(|p| parse_peer(p))
                .collect::<Result<_, _>>()?
        };
        let agents = coord::discover_with(&snap, &req.need, &with)
            .into_iter()
            .take(limit)
            .map(|c| CandidateView {
                agent: c.agent.to_string(),
                name: c.name,
                capability: c.capability,
                score: c.score,
                text_match: c.text_match,
                standing: c.standing,
                teamwork: c.teamwork,
            })
            .collect();
        Ok(DiscoverResponse { agents })
    }

    fn render(resp: &DiscoverResponse) -> String {
        let mut out = format!("{} agents", resp.agents.len());
        for a in &resp.agents {
            let _ = write!(
                out,
                "\n{} ({}) via {}: score {:.2} (match {:.2} × record {:.2})",
                a.name,
                short_peer(&a.agent),
                a.capability,
                a.score,
                a.text_match,
                a.standing
            );
        }
        out
    }
}

// ---- help and offers ----

/// A help request's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HelpRecord {
    need: String,
    deadline_ms: u64,
}

/// An offer's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OfferRecord {
    #[serde(default)]
    capability: String,
    #[serde(default)]
    confidence: f64,
    #[serde(default)]
    declined: bool,
    #[serde(default)]
    note: String,
    /// `node` when the node answered on its own, `agent` when the agent did.
    #[serde(default)]
    by: String,
}

/// `help`: ask the space who can help.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelpRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The need, e.g. "book travel to NYC".
    pub need: String,
    /// How long offers are taken, in ms [default: 30000, at most 600000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
}

/// A help request, open until its deadline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HelpResponse {
    /// Its id, for `offers`.
    pub help: String,
    /// When offers stop counting, ms since the Unix epoch.
    pub deadline_ms: u64,
}

pub(crate) struct Help;

impl Verb for Help {
    const NAME: &'static str = "help";
    const SUMMARY: &'static str = "Ask the space who can help with a need; offers come back.";
    const DESCRIPTION: &'static str = "Every node whose agent's capability card matches \
        answers with an offer (capability, confidence from the match and its track record); \
        agents can also offer or decline themselves. Read them, ranked, with offers (which \
        can wait for the deadline). Then post a task or invite offerers into a swarm. Costs \
        about 30 tokens.";
    const EXAMPLE: &'static str =
        "membrane help 'fact-check the sea level figures' --within-ms 10000";
    const POSITIONAL: &'static [&'static str] = &["need"];
    type Request = HelpRequest;
    type Response = HelpResponse;

    async fn call(ctx: &Ctx, req: HelpRequest) -> Result<HelpResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let need = req.need.trim();
        if need.is_empty() || need.len() > membrane_protocol::signals::MAX_NEED_BYTES {
            return Err(ApiError::bad(
                "invalid_request",
                "need is empty or over 1 KiB (expected a short description of the need)",
            ));
        }
        let within = req.within_ms.unwrap_or(DEFAULT_HELP_MS);
        if within == 0 || within > MAX_HELP_MS {
            return Err(ApiError::bad(
                "out_of_range",
                format!("within_ms {within} is out of range (expected 1 to {MAX_HELP_MS})"),
            ));
        }
        let now = now_ms();
        let id = format!("h{}", short_id(&format!("{}|{now}|{need}", ctx.node.id())));
        let deadline_ms = now + within;
        let record = HelpRecord {
            need: need.to_owned(),
            deadline_ms,
        };
        write(
            ctx,
            &space,
            &help_key(&id),
            serde_json::to_string(&record).unwrap_or_default(),
            EntryKind::Question,
            Vec::new(),
            // The request and its offers fade from queries a while after the deadline.
            Some(within + MAX_HELP_MS),
        )
        .await?;
        Ok(HelpResponse {
            help: id,
            deadline_ms,
        })
    }

    fn render(resp: &HelpResponse) -> String {
        format!(
            "help {} open until {}; read offers with: membrane offers {} --wait",
            resp.help, resp.deadline_ms, resp.help
        )
    }
}

/// `offer`: answer a help request yourself.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The help request's id.
    pub help: String,
    /// The capability you offer [default: your best match].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// How sure you are, 0 to 1 [default: 0.5].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Decline instead of offering.
    #[serde(default)]
    pub decline: bool,
    /// A note for the asker.
    #[serde(default)]
    pub note: String,
}

/// One offer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OfferView {
    /// Who offers.
    pub agent: String,
    /// Its name, from its card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The capability offered.
    pub capability: String,
    /// 0 to 1.
    pub confidence: f64,
    /// `node` (answered on its own) or `agent`.
    pub by: String,
    /// A note.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Arrived before the deadline.
    pub in_time: bool,
    /// The circuit breaker that blocks delegating to this offer now (tasks toward the
    /// agent or the capability failed too often in a row lately), if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<super::types::BreakerView>,
}

/// `offers`: the answers to a help request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffersRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The help request's id.
    pub help: String,
    /// Wait until the deadline before answering.
    #[serde(default)]
    pub wait: bool,
}

/// Offers, best first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OffersResponse {
    /// The need.
    pub need: String,
    /// Its deadline.
    pub deadline_ms: u64,
    /// Offers, by confidence; declines left out.
    pub offers: Vec<OfferView>,
    /// Agents that declined.
    pub declined: Vec<String>,
}

async fn find_help(ctx: &Ctx, space: &Space, id: &str) -> Result<(Entry, HelpRecord), ApiError> {
    let entries = visible(ctx, space, &help_key(id)).await?;
    entries
        .into_iter()
        .find_map(|e| {
            let record = serde_json::from_str::<HelpRecord>(&e.body().value).ok()?;
            Some((e, record))
        })
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no help request {id:?} here (yet)"),
            )
        })
}

pub(crate) struct Offer;

impl Verb for Offer {
    const NAME: &'static str = "offer";
    const SUMMARY: &'static str = "Answer a help request yourself: offer, or decline.";
    const DESCRIPTION: &'static str = "Your node may already have offered on its own from \
        your capability card; yours replaces it. Refused (409 breaker_open) while tasks \
        toward you or the capability have failed too often in a row lately; declining is \
        always possible. Costs about 30 tokens.";
    const EXAMPLE: &'static str =
        "membrane offer h1a2b3c4d5 --confidence 0.9 --note 'done it before'";
    const POSITIONAL: &'static [&'static str] = &["help"];
    type Request = OfferRequest;
    type Response = super::types::RecordResponse;

    async fn call(ctx: &Ctx, req: OfferRequest) -> Result<super::types::RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let (help, record) = find_help(ctx, &space, &req.help).await?;
        let confidence = req.confidence.unwrap_or(0.5);
        Score::from_f64(confidence).map_err(|_| {
            ApiError::bad(
                "out_of_range",
                format!("confidence {confidence} is out of range (expected 0 to 1)"),
            )
        })?;
        let capability = match req.capability {
            Some(c) => c,
            None => {
                let snap = ctx.node.coordination(&space).await?;
                coord::discover(&snap, &record.need)
                    .into_iter()
                    .find(|c| c.agent == *ctx.node.id())
                    .map(|c| c.capability)
                    .unwrap_or_default()
            }
        };
        // Offering routes work here: refused while a breaker (this agent's, the
        // capability's) blocks delegation. Declining is always possible.
        if !req.decline
            && let Some(blocked) = ctx
                .node
                .delegation_blocked(*ctx.node.id(), &capability)
                .await?
        {
            return Err(ApiError::breaker(&blocked));
        }
        let offer = OfferRecord {
            capability,
            confidence,
            declined: req.decline,
            note: req.note,
            by: "agent".into(),
        };
        let id = write(
            ctx,
            &space,
            &offer_key(&req.help, ctx.node.id()),
            serde_json::to_string(&offer).unwrap_or_default(),
            EntryKind::Meta,
            vec![help.id()],
            help.body().ttl_ms,
        )
        .await?;
        Ok(super::types::RecordResponse { id: id.to_string() })
    }

    fn render(resp: &super::types::RecordResponse) -> String {
        format!("offered [{}]", short(&resp.id))
    }
}

pub(crate) struct Offers;

impl Verb for Offers {
    const NAME: &'static str = "offers";
    const SUMMARY: &'static str = "Read the offers made to a help request, best first.";
    const DESCRIPTION: &'static str = "With wait=true the answer comes at the deadline, with \
        everything that arrived by then. About 30 tokens per offer.";
    const EXAMPLE: &'static str = "membrane offers h1a2b3c4d5 --wait";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["help"];
    type Request = OffersRequest;
    type Response = OffersResponse;

    async fn call(ctx: &Ctx, req: OffersRequest) -> Result<OffersResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let (_, record) = find_help(ctx, &space, &req.help).await?;
        if req.wait {
            let left = record.deadline_ms.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(left.min(MAX_HELP_MS))).await;
        }
        let snap = ctx.node.coordination(&space).await?;
        let mut offers = Vec::new();
        let mut declined = Vec::new();
        let pattern = format!("{}.offers.*", help_key(&req.help));
        for entry in visible(ctx, &space, &pattern).await? {
            let last = entry.body().key.as_str().rsplit('.').next().unwrap_or("");
            if last != coord::owner_hex(entry.owner()) {
                continue;
            }
            let Ok(offer) = serde_json::from_str::<OfferRecord>(&entry.body().value) else {
                continue;
            };
            if offer.declined {
                declined.push(entry.owner().to_string());
                continue;
            }
            let blocked = ctx
                .node
                .delegation_blocked(*entry.owner(), &offer.capability)
                .await?
                .map(|b| super::types::BreakerView::new(&b.key, &b.state));
            offers.push(OfferView {
                agent: entry.owner().to_string(),
                name: snap.cards.get(entry.owner()).map(|c| c.name.clone()),
                capability: offer.capability,
                confidence: offer.confidence.clamp(0.0, 1.0),
                by: offer.by,
                note: offer.note,
                in_time: entry.created_at_ms() <= record.deadline_ms,
                blocked,
            });
        }
        offers.sort_by(|a, b| {
            a.blocked
                .is_some()
                .cmp(&b.blocked.is_some())
                .then(b.in_time.cmp(&a.in_time))
                .then(b.confidence.total_cmp(&a.confidence))
                .then(a.agent.cmp(&b.agent))
        });
        Ok(OffersResponse {
            need: record.need,
            deadline_ms: record.deadline_ms,
            offers,
            declined,
        })
    }

    fn render(resp: &OffersResponse) -> String {
        let mut out = format!("{} offers for: {}", resp.offers.len(), resp.need);
        for o in &resp.offers {
            let _ = write!(
                out,
                "\n{} ({}) {} {:.2}{}{}{}",
                o.name.as_deref().unwrap_or("?"),
                short_peer(&o.agent),
                o.capability,
                o.confidence,
                if o.in_time { "" } else { " (late)" },
                match &o.blocked {
                    Some(b) => format!(" (blocked: {} breaker {})", b.guards, b.state),
                    None => String::new(),
                },
                if o.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", o.note)
                }
            );
        }
        if !resp.declined.is_empty() {
            let _ = write!(out, "\n{} declined", resp.declined.len());
        }
        out
    }
}

/// Answers help requests on the agent's behalf: when one arrives whose need matches the
/// agent's capability card, the node writes an offer with a confidence from the match and
/// the agent's track record, unless the agent already answered. Runs until the node stops.
pub async fn auto_offer(ctx: Arc<Ctx>) {
    let mut events = ctx.node.subscribe();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let NodeEvent::Medium(event) = event else {
            continue;
        };
        let EventKind::Arrived {
            space, key, owner, ..
        } = event.kind
        else {
            continue;
        };
        let text = key.as_str();
        let Some(id) = text.strip_prefix("coord.help.") else {
            continue;
        };
        if id.contains('.') || owner == *ctx.node.id() || !answered.insert(id.to_owned()) {
            continue;
        }
        if let Err(e) = offer_if_capable(&ctx, &space, id).await {
            tracing::debug!(help = id, error = %e, "no automatic offer");
        }
        if answered.len() > 4096 {
            answered.clear();
        }
    }
}

async fn offer_if_capable(ctx: &Ctx, space: &Space, id: &str) -> Result<(), ApiError> {
    let (help, record) = find_help(ctx, space, id).await?;
    if now_ms() > record.deadline_ms {
        return Ok(());
    }
    let mine = offer_key(id, ctx.node.id());
    if !visible(ctx, space, &mine).await?.is_empty() {
        return Ok(());
    }
    let snap = super::coordination::ensure_card(ctx, space).await?;
    let Some(candidate) = coord::discover(&snap, &record.need)
        .into_iter()
        .find(|c| c.agent == *ctx.node.id())
    else {
        return Ok(());
    };
    if let Some(blocked) = ctx
        .node
        .delegation_blocked(*ctx.node.id(), &candidate.capability)
        .await?
    {
        tracing::debug!(help = id, %blocked, "no automatic offer");
        return Ok(());
    }
    let offer = OfferRecord {
        capability: candidate.capability,
        // The match, weighted by the track record (standing is in (0, 2], 1 when new).
        confidence: (candidate.text_match * candidate.standing / 2.0 + 0.25).clamp(0.0, 1.0),
        declined: false,
        note: String::new(),
        by: "node".into(),
    };
    write(
        ctx,
        space,
        &mine,
        serde_json::to_string(&offer).unwrap_or_default(),
        EntryKind::Meta,
        vec![help.id()],
        help.body().ttl_ms,
    )
    .await?;
    Ok(())
}

// ---- threads ----

/// `propose`: start a thread.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// A title.
    pub title: String,
    /// The proposal.
    pub body: String,
    /// Who may read it [default: public].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<super::types::TierName>,
}

/// `build-on`: answer or extend an entry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildOnRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The entry built on.
    pub parent: String,
    /// What you add.
    pub body: String,
    /// Who may read it [default: public].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<super::types::TierName>,
}

/// `thread`: read a thread as a tree.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The root entry's id.
    pub id: String,
}

/// One node of a thread.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThreadNode {
    /// The entry.
    pub entry: EntryView,
    /// Depth below the root (0 for the root).
    pub depth: u32,
}

/// A thread in depth-first order, oldest reply first at each level.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThreadResponse {
    /// Root first.
    pub nodes: Vec<ThreadNode>,
}

fn tier_of(t: Option<super::types::TierName>) -> Tier {
    t.map_or(Tier::Public, super::verbs::tier)
}

async fn write_thread(
    ctx: &Ctx,
    space: &Space,
    key: String,
    value: String,
    tier: Tier,
    parents: Vec<EnvelopeId>,
) -> Result<super::types::RecordResponse, ApiError> {
    let mut draft = Draft::new(parse_key(&key)?, value, Some(tier));
    draft.kind = EntryKind::Thread;
    draft.parents = parents;
    let id = ctx.node.expose(space, draft).await?.id;
    Ok(super::types::RecordResponse { id: id.to_string() })
}

pub(crate) struct Propose;

impl Verb for Propose {
    const NAME: &'static str = "propose";
    const SUMMARY: &'static str = "Start a thread with a proposal others can build on.";
    const DESCRIPTION: &'static str = "Writes a thread entry; others answer with build-on and \
        anyone reads the whole tree with thread. Costs no context tokens.";
    const EXAMPLE: &'static str =
        "membrane propose 'Structure of the brief' 'Intro, three findings, recommendations'";
    const POSITIONAL: &'static [&'static str] = &["title", "body"];
    type Request = ProposeRequest;
    type Response = super::types::RecordResponse;

    async fn call(
        ctx: &Ctx,
        req: ProposeRequest,
    ) -> Result<super::types::RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let title = req.title.trim();
        if title.is_empty() {
            return Err(ApiError::bad("invalid_request", "title is empty"));
        }
        let slug = coord::slug(title).unwrap_or_else(|| "proposal".into());
        let key = format!(
            "threads.{slug}.p{}",
            short_id(&format!("{}|{}|{title}", ctx.node.id(), now_ms()))
        );
        write_thread(
            ctx,
            &space,
            key,
            format!("{title}\n\n{}", req.body),
            tier_of(req.tier),
            Vec::new(),
        )
        .await
    }

    fn render(resp: &super::types::RecordResponse) -> String {
        format!("proposed [{}]\nid: {}", short(&resp.id), resp.id)
    }
}

pub(crate) struct BuildOn;

impl Verb for BuildOn {
    const NAME: &'static str = "build-on";
    const SUMMARY: &'static str = "Add to an entry: an answer, a refinement, an objection.";
    const DESCRIPTION: &'static str = "Writes a thread entry whose parent is the entry, so the \
        link is signed and every reader sees the tree. Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane build-on <entry id> 'Add a section on costs'";
    const POSITIONAL: &'static [&'static str] = &["parent", "body"];
    type Request = BuildOnRequest;
    type Response = super::types::RecordResponse;

    async fn call(
        ctx: &Ctx,
        req: BuildOnRequest,
    ) -> Result<super::types::RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let parent: EnvelopeId = req.parent.trim().parse().map_err(|e| {
            ApiError::bad(
                "bad_id",
                format!("parent {:?}: {e} (expected 64 hex digits)", req.parent),
            )
        })?;
        let all = visible(ctx, &space, "**").await?;
        let Some(root) = all.iter().find(|e| e.id() == parent) else {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no entry {parent} you can see"),
            ));
        };
        let base = root.body().key.as_str();
        // Replies live beside their parent's key, one segment deeper where there is room.
        let suffix = format!(
            "r{}",
            short_id(&format!("{}|{}|{}", ctx.node.id(), now_ms(), req.body))
        );
        let key = if base.split('.').count() < membrane_protocol::key::MAX_SEGMENTS
            && base.len() + suffix.len() < membrane_protocol::key::MAX_KEY_LEN
        {
            format!("{base}.{suffix}")
        } else {
            format!("threads.replies.{suffix}")
        };
        write_thread(ctx, &space, key, req.body, tier_of(req.tier), vec![parent]).await
    }

    fn render(resp: &super::types::RecordResponse) -> String {
        format!("built on [{}]\nid: {}", short(&resp.id), resp.id)
    }
}

pub(crate) struct Thread;

impl Verb for Thread {
    const NAME: &'static str = "thread";
    const SUMMARY: &'static str = "Read an entry and everything built on it, as a tree.";
    const DESCRIPTION: &'static str = "Only what you may see. Each node costs about its \
        value's length / 4 tokens (charged to your budget).";
    const EXAMPLE: &'static str = "membrane thread <entry id>";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["id"];
    type Request = ThreadRequest;
    type Response = ThreadResponse;

    async fn call(ctx: &Ctx, req: ThreadRequest) -> Result<ThreadResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let root: EnvelopeId = req.id.trim().parse().map_err(|e| {
            ApiError::bad(
                "bad_id",
                format!("id {:?}: {e} (expected 64 hex digits)", req.id),
            )
        })?;
        let all = visible(ctx, &space, "**").await?;
        let by_id: BTreeMap<EnvelopeId, &Entry> = all.iter().map(|e| (e.id(), e)).collect();
        if !by_id.contains_key(&root) {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no entry {root} you can see"),
            ));
        }
        let mut children: BTreeMap<EnvelopeId, Vec<&Entry>> = BTreeMap::new();
        for e in &all {
            for p in &e.body().parents {
                children.entry(*p).or_default().push(e);
            }
        }
        for list in children.values_mut() {
            list.sort_by_key(|e| (e.created_at_ms(), e.id()));
        }
        let mut nodes = Vec::new();
        let mut stack = vec![(root, 0u32)];
        let mut seen = BTreeSet::new();
        while let Some((id, depth)) = stack.pop() {
            if !seen.insert(id) || nodes.len() >= 1000 {
                continue;
            }
            let Some(entry) = by_id.get(&id) else {
                continue;
            };
            nodes.push(ThreadNode {
                entry: EntryView::from(*entry),
                depth,
            });
            if let Some(kids) = children.get(&id) {
                for kid in kids.iter().rev() {
                    stack.push((kid.id(), depth + 1));
                }
            }
        }
        let tokens: u64 = nodes
            .iter()
            .map(|n| ctx.tokens.count(&n.entry.value) as u64)
            .sum();
        let decisions = nodes
            .iter()
            .filter_map(|n| by_id.get(&n.entry.id.parse().ok()?))
            .map(|e| super::verbs::visible(&e.body().key, e.owner()))
            .collect();
        ctx.cross(super::state::Answer {
            verb: Self::NAME,
            space: &space,
            request: &req.id,
            tokens,
            decisions,
        })
        .await?;
        Ok(ThreadResponse { nodes })
    }

    fn render(resp: &ThreadResponse) -> String {
        let mut out = String::new();
        for n in &resp.nodes {
            let _ = writeln!(
                out,
                "{}[{}] {}: {}",
                "  ".repeat(n.depth as usize),
                short(&n.entry.id),
                short_peer(&n.entry.owner),
                n.entry.value.replace('\n', " ")
            );
        }
        let _ = write!(out, "{} entries", resp.nodes.len());
        out
    }
}
