//! The verbs: one place per verb for all three front doors. Each is a [`Verb`] (its name,
//! its words for humans and LLMs, its request and answer types, what it does); [`all`]
//! erases them into [`VerbSpec`]s, from which the HTTP router, the OpenAPI document, the
//! MCP tool list and the CLI's subcommands are all built. Adding a verb is one `impl Verb`
//! and one line in [`all`].

use std::fmt::Write as _;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use membrane_crdt::coord;
use membrane_crdt::{Draft, Filter};
use membrane_protocol::signals::Capability;
use membrane_protocol::{EntryKind, EnvelopeId, Key, Pattern, PublicKey, Score, Space, Tag, Tier};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::state::{Answer, Ctx};
use super::types::*;
use membrane_immune::{Crossed, CrossingDecision};

/// One verb, typed.
pub(crate) trait Verb {
    /// Its name: the URL path under `/v1/`, the MCP tool, the CLI subcommand.
    const NAME: &'static str;
    /// One line.
    const SUMMARY: &'static str;
    /// For an LLM deciding whether to call it: when to use it, what it costs.
    const DESCRIPTION: &'static str;
    /// A CLI example.
    const EXAMPLE: &'static str;
    /// Reads only; `GET` is allowed too.
    const READ_ONLY: bool = false;
    /// Request fields the CLI takes as positional arguments, in order.
    const POSITIONAL: &'static [&'static str] = &[];
    /// The request body.
    type Request: DeserializeOwned + JsonSchema + Send;
    /// The answer.
    type Response: Serialize + DeserializeOwned + JsonSchema + Send;
    /// Does it.
    fn call(
        ctx: &Ctx,
        req: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, ApiError>> + Send;
    /// The answer as compact text for a person or an LLM.
    fn render(resp: &Self::Response) -> String;
}

type Dispatch = for<'a> fn(&'a Ctx, &'a [u8]) -> BoxFuture<'a, Result<Value, ApiError>>;

/// A verb with its types erased: what the front doors are built from.
#[derive(Debug, Clone, Copy)]
pub struct VerbSpec {
    /// Its name: `POST /v1/<name>`, the MCP tool, `membrane <name>`.
    pub name: &'static str,
    /// One line.
    pub summary: &'static str,
    /// For an LLM: when to use it, what it costs in tokens.
    pub description: &'static str,
    /// A CLI example.
    pub example: &'static str,
    /// Reads only (`GET` allowed too).
    pub read_only: bool,
    /// Request fields the CLI takes as positional arguments.
    pub positional: &'static [&'static str],
    /// The request's JSON Schema, self-contained.
    pub request_schema: fn() -> Value,
    /// The answer's JSON Schema, self-contained.
    pub response_schema: fn() -> Value,
    /// Renders an answer as compact text (falls back to JSON).
    pub render: fn(&Value) -> String,
    pub(crate) dispatch: Dispatch,
    pub(crate) parse: fn(&[u8]) -> Result<(), ApiError>,
    pub(crate) openapi_request: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    pub(crate) openapi_response: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

/// A self-contained schema (subschemas inlined), for MCP and the CLI.
pub(crate) fn inline_schema<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    schema.to_value()
}

fn render_value<V: Verb>(value: &Value) -> String {
    match serde_json::from_value::<V::Response>(value.clone()) {
        Ok(resp) => V::render(&resp),
        Err(_) => value.to_string(),
    }
}

/// Parses a request body: empty means `{}`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => "invalid_request",
            _ => "invalid_json",
        };
        ApiError::bad(
            code,
            format!("{e} (expected a JSON object as in the OpenAPI document, /v1/openapi.json)"),
        )
    })
}

fn dispatch<'a, V: Verb + 'static>(
    ctx: &'a Ctx,
    body: &'a [u8],
) -> BoxFuture<'a, Result<Value, ApiError>> {
    Box::pin(async move {
        let req: V::Request = parse_body(body)?;
        let resp = V::call(ctx, req).await?;
        serde_json::to_value(&resp).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })
    })
}

fn spec<V: Verb + 'static>() -> VerbSpec {
    VerbSpec {
        name: V::NAME,
        summary: V::SUMMARY,
        description: V::DESCRIPTION,
        example: V::EXAMPLE,
        read_only: V::READ_ONLY,
        positional: V::POSITIONAL,
        request_schema: inline_schema::<V::Request>,
        response_schema: inline_schema::<V::Response>,
        render: render_value::<V>,
        dispatch: dispatch::<V>,
        parse: |body| parse_body::<V::Request>(body).map(drop),
        openapi_request: |g| g.subschema_for::<V::Request>(),
        openapi_response: |g| g.subschema_for::<V::Response>(),
    }
}

static VERBS: LazyLock<Vec<VerbSpec>> = LazyLock::new(|| {
    vec![
        spec::<Register>(),
        spec::<Expose>(),
        spec::<Query>(),
        spec::<Search>(),
        spec::<Retract>(),
        spec::<Trust>(),
        spec::<Trusts>(),
        spec::<Subscribe>(),
        spec::<Events>(),
        spec::<Broadcast>(),
        spec::<Peers>(),
        spec::<Status>(),
        spec::<BudgetVerb>(),
        spec::<super::coordination::SwarmCreate>(),
        spec::<super::coordination::SwarmJoin>(),
        spec::<super::coordination::SwarmLeave>(),
        spec::<super::coordination::SwarmDissolve>(),
        spec::<super::coordination::Swarms>(),
        spec::<super::coordination::TaskPost>(),
        spec::<super::coordination::TaskClaim>(),
        spec::<super::coordination::TaskComplete>(),
        spec::<super::coordination::TaskFail>(),
        spec::<super::coordination::Tasks>(),
        spec::<super::coordination::Verify>(),
        spec::<super::coordination::Dispute>(),
        spec::<super::mesh::Discover>(),
        spec::<super::mesh::Help>(),
        spec::<super::mesh::Offer>(),
        spec::<super::mesh::Offers>(),
        spec::<super::mesh::Propose>(),
        spec::<super::mesh::BuildOn>(),
        spec::<super::mesh::Thread>(),
        spec::<super::intents::IntentVerb>(),
        spec::<super::intents::Intents>(),
        spec::<super::direct::SendVerb>(),
        spec::<super::direct::Messages>(),
        spec::<super::direct::FanOut>(),
        spec::<super::direct::Gather>(),
        spec::<super::governance::Threats>(),
        spec::<super::governance::Quarantine>(),
        spec::<super::governance::Release>(),
        spec::<super::governance::Ban>(),
        spec::<super::governance::Unban>(),
        spec::<super::governance::Exonerate>(),
        spec::<super::governance::Pause>(),
        spec::<super::governance::Resume>(),
        spec::<super::governance::Audit>(),
    ]
});

/// Every verb, in the order the docs list them.
pub fn all() -> &'static [VerbSpec] {
    &VERBS
}

/// The verb named `name`.
pub fn find(name: &str) -> Option<&'static VerbSpec> {
    all().iter().find(|v| v.name == name)
}

// ---- parsing the agent's text into protocol types, with the API's error codes ----

pub(crate) fn parse_key(raw: &str) -> Result<Key, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad("bad_key", format!("key {raw:?}: {e}")))
}

pub(crate) fn parse_pattern(raw: &str) -> Result<Pattern, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad("bad_pattern", format!("pattern {raw:?}: {e}")))
}

pub(crate) fn parse_peer(raw: &str) -> Result<PublicKey, ApiError> {
    raw.trim().parse().map_err(|e| {
        ApiError::bad(
            "bad_peer",
            format!("peer {raw:?}: {e} (expected a peer id such as 12D3KooW…)"),
        )
    })
}

fn parse_id(raw: &str) -> Result<EnvelopeId, ApiError> {
    raw.trim().parse().map_err(|e| {
        ApiError::bad(
            "bad_id",
            format!("id {raw:?}: {e} (expected 64 hex digits, as returned by expose)"),
        )
    })
}

fn parse_named<T: std::str::FromStr<Err = String>>(
    field: &str,
    raw: Option<&str>,
    default: T,
) -> Result<T, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|e| ApiError::bad("invalid_request", format!("{field} {raw:?}: {e}"))),
    }
}

/// Most kinds one filter names.
const MAX_FILTER_KINDS: usize = 16;

/// A query or search filter from the request's `kinds` and `verified`.
fn filter(kinds: &[String], verified: bool) -> Result<Filter, ApiError> {
    if kinds.len() > MAX_FILTER_KINDS {
        return Err(ApiError::bad(
            "invalid_request",
            format!(
                "{} kinds named (expected at most {MAX_FILTER_KINDS})",
                kinds.len()
            ),
        ));
    }
    let kinds = kinds
        .iter()
        .map(|k| parse_named("kinds", Some(k), EntryKind::Fact))
        .collect::<Result<_, _>>()?;
    Ok(Filter {
        kinds,
        verified: verified.then_some(coord::DEFAULT_VERIFIERS),
    })
}

pub(crate) fn tier(name: TierName) -> Tier {
    match name {
        TierName::Private => Tier::Private,
        TierName::Trusted => Tier::Trusted,
        TierName::Public => Tier::Public,
    }
}

/// An id's first 8 characters, for people and LLMs.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A peer id's last 8 characters, for people and LLMs.
pub(crate) fn short_peer(peer: &str) -> &str {
    peer.get(peer.len().saturating_sub(8)..).unwrap_or(peer)
}

/// A short id for a new record (task, help request, thread entry): 10 hex digits of
/// SHA-256 of `seed`, which callers make unique with the agent and the time.
pub(crate) fn short_id(seed: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    digest[..5].iter().map(|b| format!("{b:02x}")).collect()
}

// ---- the verbs ----

struct Register;

impl Verb for Register {
    const NAME: &'static str = "register";
    const SUMMARY: &'static str = "Set this agent's name and capabilities, and announce them.";
    const DESCRIPTION: &'static str = "Call once at start (and again when your skills change). \
        Peers see your name and capabilities in your signed capability ad; capabilities are \
        also published in the DHT so other agents can find you. Costs no context tokens.";
    const EXAMPLE: &'static str =
        "membrane register researcher --capabilities 'fact_check=Checks claims against sources'";
    const POSITIONAL: &'static [&'static str] = &["name"];
    type Request = RegisterRequest;
    type Response = RegisterResponse;

    async fn call(ctx: &Ctx, req: RegisterRequest) -> Result<RegisterResponse, ApiError> {
        let capabilities: Vec<Capability> = req
            .capabilities
            .iter()
            .map(|c| Capability {
                name: c.name.clone(),
                description: c.description.clone(),
            })
            .collect();
        crate::config::check_agent(&req.name, &capabilities)
            .map_err(|message| ApiError::bad("invalid_request", message))?;
        ctx.node.register(req.name.clone(), capabilities).await?;
        // The signed card in the medium is what swarms and tasks check, on every node.
        super::coordination::ensure_card(ctx, &ctx.home).await?;
        Ok(RegisterResponse {
            peer: ctx.node.id().to_string(),
            name: req.name,
            capabilities: req.capabilities,
        })
    }

    fn render(resp: &RegisterResponse) -> String {
        let caps: Vec<&str> = resp.capabilities.iter().map(|c| c.name.as_str()).collect();
        format!(
            "registered {} ({}) with capabilities: {}",
            resp.name,
            resp.peer,
            if caps.is_empty() {
                "none".to_owned()
            } else {
                caps.join(", ")
            }
        )
    }
}

struct Expose;

impl Verb for Expose {
    const NAME: &'static str = "expose";
    const SUMMARY: &'static str =
        "Write an entry (a fact, finding, decision …) into the shared medium.";
    const DESCRIPTION: &'static str = "Use it to share what you learned so other agents need \
        not redo the work: one entry per fact, as a short digest in your own words (not raw \
        tool output). tier=public reaches every agent of the space, trusted only agents you \
        trust (see trust), private stays on this node. Writing again under the same key \
        supersedes your previous entry. Costs no context tokens; the answer is an id to cite.";
    const EXAMPLE: &'static str =
        "membrane expose findings.sea_level.rate '3.7 mm/yr since 2006 (IPCC AR6)' --tier public";
    const POSITIONAL: &'static [&'static str] = &["key", "value"];
    type Request = ExposeRequest;
    type Response = ExposeResponse;

    async fn call(ctx: &Ctx, req: ExposeRequest) -> Result<ExposeResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let mut draft = Draft::new(parse_key(&req.key)?, req.value, req.tier.map(tier));
        draft.tags = req
            .tags
            .iter()
            .map(|t| {
                t.parse::<Tag>()
                    .map_err(|e| ApiError::bad("invalid_request", format!("tag {t:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        draft.kind = parse_named("kind", req.kind.as_deref(), draft.kind)?;
        draft.evidence = parse_named("evidence", req.evidence.as_deref(), draft.evidence)?;
        draft.parents = req
            .parents
            .iter()
            .map(|p| parse_id(p))
            .collect::<Result<_, _>>()?;
        draft.ttl_ms = req.ttl_ms;
        draft.half_life_ms = req.half_life_ms;
        let exposed = ctx.node.expose(&space, draft).await?;
        Ok(ExposeResponse {
            id: exposed.id.to_string(),
            seq: exposed.seq,
            tier: tier_name(exposed.exposure.tier),
            capped: exposed.exposure.capped.map(|c| c.reason.to_string()),
            superseded: exposed.superseded.map(|id| id.to_string()),
            conflicts: exposed.conflicts.iter().map(ConflictView::from).collect(),
        })
    }

    fn render(resp: &ExposeResponse) -> String {
        let mut out = format!(
            "exposed [{}] seq {} at tier {}",
            short(&resp.id),
            resp.seq,
            tier_text(resp.tier)
        );
        if let Some(capped) = &resp.capped {
            let _ = write!(out, " (capped: {capped})");
        }
        if let Some(old) = &resp.superseded {
            let _ = write!(out, ", superseding [{}]", short(old));
        }
        for c in &resp.conflicts {
            let _ = write!(
                out,
                "\nconflict on {}: {} owners disagree",
                c.key,
                c.owners.len()
            );
        }
        let _ = write!(out, "\nid: {}", resp.id);
        out
    }
}

fn tier_text(tier: TierName) -> &'static str {
    match tier {
        TierName::Private => "private",
        TierName::Trusted => "trusted",
        TierName::Public => "public",
    }
}

/// How a hit reads for an LLM: `[id8] key (owner8, kind, tier): value`.
fn render_entry(e: &EntryView) -> String {
    format!(
        "[{}] {} ({}, {}, {}): {}",
        short(&e.id),
        e.key,
        short_peer(&e.owner),
        e.kind,
        tier_text(e.tier),
        e.value
    )
}

/// An entry that crosses.
pub(crate) fn visible(key: &Key, owner: &PublicKey) -> Crossed {
    Crossed {
        key: key.to_string(),
        owner: *owner,
        decision: CrossingDecision::Visible,
        reason: None,
    }
}

fn hidden(w: &membrane_crdt::Withheld) -> Crossed {
    Crossed {
        key: w.key.to_string(),
        owner: w.owner,
        decision: CrossingDecision::Hidden,
        reason: Some(w.reason.clone()),
    }
}

struct Query;

impl Verb for Query {
    const NAME: &'static str = "query";
    const SUMMARY: &'static str = "Read the entries whose keys match a pattern.";
    const DESCRIPTION: &'static str = "Use it when you know where the knowledge lives \
        (e.g. pattern findings.** or tasks.*.status). Returns every visible match, so a broad \
        pattern can cost many tokens: each hit costs about its value's length / 4 tokens, \
        charged to your budget. Also tells how many entries exist that you may not see and \
        why. Narrow it with kinds (e.g. only facts and conflicts) or verified (only entries \
        other agents verified). Prefer search when you only know what you are looking for.";
    const EXAMPLE: &'static str = "membrane query 'findings.**'";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["pattern"];
    type Request = QueryRequest;
    type Response = QueryResponse;

    async fn call(ctx: &Ctx, req: QueryRequest) -> Result<QueryResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let pattern = parse_pattern(&req.pattern)?;
        let filter = filter(&req.kinds, req.verified)?;
        let answer = ctx
            .node
            .query_with(&space, &pattern, req.include_expired, filter)
            .await?;
        let tokens: u64 = answer.hit_tokens.iter().map(|t| u64::from(*t)).sum();
        let names = if answer.denied.is_empty() {
            Default::default()
        } else {
            ctx.names().await
        };
        let denied: Vec<DenialView> = answer
            .denied
            .iter()
            .map(|d| DenialView {
                key: d.key.to_string(),
                reason: d
                    .reason
                    .describe(|k| names.get(k).cloned().unwrap_or_else(|| k.short())),
            })
            .collect();
        let decisions = answer
            .hits
            .iter()
            .map(|e| visible(&e.body().key, e.owner()))
            .chain(answer.withheld.iter().map(hidden))
            .chain(answer.denied.iter().zip(&denied).map(|(d, view)| {
                let membrane_protocol::permeability::DenyReason::NotTrusted { owner, .. } =
                    &d.reason;
                Crossed {
                    key: view.key.clone(),
                    owner: *owner,
                    decision: CrossingDecision::Denied,
                    reason: Some(view.reason.clone()),
                }
            }))
            .collect();
        ctx.cross(Answer {
            verb: Self::NAME,
            space: &space,
            request: &req.pattern,
            tokens,
            decisions,
        })
        .await?;
        Ok(QueryResponse {
            hits: answer.hits.iter().map(EntryView::from).collect(),
            hidden: answer.hidden,
            denied,
            tokens,
        })
    }

    fn render(resp: &QueryResponse) -> String {
        let mut out = String::new();
        for hit in &resp.hits {
            let _ = writeln!(out, "{}", render_entry(hit));
        }
        let _ = write!(
            out,
            "{} hits, {} hidden, {} tokens",
            resp.hits.len(),
            resp.hidden,
            resp.tokens
        );
        for d in &resp.denied {
            let _ = write!(out, "\ndenied {}: {}", d.key, d.reason);
        }
        out
    }
}

/// Default `max_tokens` of a search.
pub const DEFAULT_SEARCH_TOKENS: u32 = 2000;

struct Search;

impl Verb for Search {
    const NAME: &'static str = "search";
    const SUMMARY: &'static str =
        "Find the most relevant entries for a question, within a token budget.";
    const DESCRIPTION: &'static str = "Use it before researching anything: someone may \
        already know. Ranks entries by text relevance × trust in their owner × freshness × \
        strength of evidence, and returns the best that fit max_tokens (default 2000), so the \
        cost to your context is bounded by max_tokens. Set verified to get only entries \
        that other agents verified, or kinds to get only facts, hypotheses, solutions…. Cite \
        hits by their [id].";
    const EXAMPLE: &'static str =
        "membrane search 'sea level rise rate' --max-tokens 500 --verified";
    const READ_ONLY: bool = true;
    const POSITIONAL: &'static [&'static str] = &["text"];
    type Request = SearchRequest;
    type Response = SearchResponse;

    async fn call(ctx: &Ctx, req: SearchRequest) -> Result<SearchResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        if req.text.trim().is_empty() {
            return Err(ApiError::bad(
                "invalid_request",
                "text is empty (expected words to search for)",
            ));
        }
        let max_tokens = req.max_tokens.unwrap_or(DEFAULT_SEARCH_TOKENS);
        let filter = filter(&req.kinds, req.verified)?;
        let answer = ctx
            .node
            .search_with(&space, &req.text, max_tokens, filter)
            .await?;
        let decisions = answer
            .hits
            .iter()
            .map(|h| visible(&h.entry.body().key, h.entry.owner()))
            .chain(answer.withheld.iter().map(hidden))
            .collect();
        ctx.cross(Answer {
            verb: Self::NAME,
            space: &space,
            request: &req.text,
            tokens: answer.total_tokens,
            decisions,
        })
        .await?;
        Ok(SearchResponse {
            hits: answer
                .hits
                .iter()
                .map(|h| SearchHitView {
                    entry: EntryView::from(&h.entry),
                    score: h.score,
                    tokens: h.tokens,
                })
                .collect(),
            total_tokens: answer.total_tokens,
            left_out: answer.left_out,
        })
    }

    fn render(resp: &SearchResponse) -> String {
        let mut out = String::new();
        for hit in &resp.hits {
            let _ = writeln!(out, "{} (score {:.3})", render_entry(&hit.entry), hit.score);
        }
        let _ = write!(
            out,
            "{} hits, {} tokens, {} left out",
            resp.hits.len(),
            resp.total_tokens,
            resp.left_out
        );
        out
    }
}

struct Retract;

impl Verb for Retract {
    const NAME: &'static str = "retract";
    const SUMMARY: &'static str = "Withdraw your entry under a key.";
    const DESCRIPTION: &'static str = "Use it when something you exposed turns out wrong or \
        stale. The entry leaves every agent's queries and search; a signed retraction stays \
        for audit. Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane retract findings.sea_level.rate";
    const POSITIONAL: &'static [&'static str] = &["key"];
    type Request = RetractRequest;
    type Response = RecordResponse;

    async fn call(ctx: &Ctx, req: RetractRequest) -> Result<RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let id = ctx.node.retract(&space, &parse_key(&req.key)?).await?;
        Ok(RecordResponse { id: id.to_string() })
    }

    fn render(resp: &RecordResponse) -> String {
        format!("done [{}]", short(&resp.id))
    }
}

struct Trust;

impl Verb for Trust {
    const NAME: &'static str = "trust";
    const SUMMARY: &'static str = "Set how much you trust another agent (0 to 1).";
    const DESCRIPTION: &'static str = "At or above the threshold (0.5 by default) the agent \
        receives your trusted-tier entries; trust also weighs its entries in your search \
        ranking. Published as a signed edge every agent can see. Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane trust 12D3KooWExample… 0.8";
    const POSITIONAL: &'static [&'static str] = &["peer", "score"];
    type Request = TrustRequest;
    type Response = RecordResponse;

    async fn call(ctx: &Ctx, req: TrustRequest) -> Result<RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let peer = parse_peer(&req.peer)?;
        let score = Score::from_f64(req.score).map_err(|_| {
            ApiError::bad(
                "out_of_range",
                format!("score {} is out of range (expected 0 to 1)", req.score),
            )
        })?;
        let id = ctx.node.trust(&space, peer, score).await?;
        Ok(RecordResponse { id: id.to_string() })
    }

    fn render(resp: &RecordResponse) -> String {
        format!("done [{}]", short(&resp.id))
    }
}

struct Trusts;

impl Verb for Trusts {
    const NAME: &'static str = "trusts";
    const SUMMARY: &'static str = "List the trust edges of a space.";
    const DESCRIPTION: &'static str = "Who trusts whom and how much, as published in the \
        space. Use it to see why an entry is hidden from you. About 20 tokens per edge.";
    const EXAMPLE: &'static str = "membrane trusts";
    const READ_ONLY: bool = true;
    type Request = SpaceRequest;
    type Response = TrustsResponse;

    async fn call(ctx: &Ctx, req: SpaceRequest) -> Result<TrustsResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let edges = ctx.node.trusts(&space).await?;
        Ok(TrustsResponse {
            space: space.to_string(),
            edges: edges
                .iter()
                .map(|(from, to, score)| TrustEdgeJson {
                    truster: from.to_string(),
                    trustee: to.to_string(),
                    score: score.as_f64(),
                })
                .collect(),
        })
    }

    fn render(resp: &TrustsResponse) -> String {
        let mut out = format!("{} trust edges in {}", resp.edges.len(), resp.space);
        for e in &resp.edges {
            let _ = write!(
                out,
                "\n{} -> {}: {:.2}",
                short_peer(&e.truster),
                short_peer(&e.trustee),
                e.score
            );
        }
        out
    }
}

/// Subscriptions a node keeps at most.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Patterns in one subscription at most.
pub const MAX_PATTERNS: usize = 32;

struct Subscribe;

impl Verb for Subscribe {
    const NAME: &'static str = "subscribe";
    const SUMMARY: &'static str =
        "Name the keys you want to hear about; follow them at GET /v1/events.";
    const DESCRIPTION: &'static str = "Creates a subscription for key patterns; follow it as \
        Server-Sent Events at /v1/events?subscription=<id> (resumable with Last-Event-ID), \
        or poll it with the events verb (subscription=<id>). Events carry keys and ids, not values: read the \
        entries you care about with query. Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane subscribe 'tasks.**' 'findings.**'";
    const POSITIONAL: &'static [&'static str] = &["patterns"];
    type Request = SubscribeRequest;
    type Response = SubscribeResponse;

    async fn call(ctx: &Ctx, req: SubscribeRequest) -> Result<SubscribeResponse, ApiError> {
        let patterns = parse_patterns(&req.patterns)?;
        let id = ctx.subscribe(patterns)?;
        Ok(SubscribeResponse {
            events_url: format!("/v1/events?subscription={id}"),
            subscription: id,
            patterns: req.patterns,
        })
    }

    fn render(resp: &SubscribeResponse) -> String {
        format!(
            "subscription {} on {}; follow with: membrane events --subscription {}",
            resp.subscription,
            resp.patterns.join(" "),
            resp.subscription
        )
    }
}

pub(crate) fn parse_patterns(raw: &[String]) -> Result<Vec<Pattern>, ApiError> {
    if raw.len() > MAX_PATTERNS {
        return Err(ApiError::bad(
            "invalid_request",
            format!(
                "{} patterns given (expected at most {MAX_PATTERNS})",
                raw.len()
            ),
        ));
    }
    raw.iter().map(|p| parse_pattern(p)).collect()
}

pub(crate) fn unknown_subscription(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "unknown_subscription",
        format!("no subscription {id:?} (expected an id returned by subscribe)"),
    )
}

/// Events one `events` call returns at most.
pub const MAX_EVENTS_PAGE: u32 = 1000;

struct Events;

impl Verb for Events {
    const NAME: &'static str = "events";
    const SUMMARY: &'static str = "Read what happened since a sequence number (entries arriving, retractions, conflicts, broadcasts, threats).";
    const DESCRIPTION: &'static str = "Poll the node's event log: pass the `next` of the \
        previous answer as `since`. Each event is one short line (about 30 tokens) with a key \
        and an id, never a value. Filter with patterns to keep it cheap.";
    const EXAMPLE: &'static str = "membrane events --since 0 --patterns 'tasks.**'";
    const READ_ONLY: bool = true;
    type Request = EventsRequest;
    type Response = EventsResponse;

    async fn call(ctx: &Ctx, req: EventsRequest) -> Result<EventsResponse, ApiError> {
        let mut patterns = parse_patterns(&req.patterns)?;
        if let Some(id) = &req.subscription {
            patterns.extend(
                ctx.subscription(id)
                    .ok_or_else(|| unknown_subscription(id))?,
            );
        }
        let limit = req.limit.unwrap_or(100).clamp(1, MAX_EVENTS_PAGE) as usize;
        let mut since = req.since;
        let mut events = Vec::new();
        // Filtered-out events still advance `next`, so a sparse filter reads on.
        'pages: loop {
            let page = ctx.node.events_since(since, limit).await?;
            for event in &page {
                since = event.seq;
                let view = EventView::from(event);
                if super::state::matches(&patterns, &view) {
                    events.push(view);
                    if events.len() == limit {
                        break 'pages;
                    }
                }
            }
            if page.len() < limit {
                break;
            }
        }
        let next = since;
        Ok(EventsResponse { events, next })
    }

    fn render(resp: &EventsResponse) -> String {
        let mut out = String::new();
        for e in &resp.events {
            let _ = writeln!(out, "{}", render_event(e));
        }
        let _ = write!(out, "{} events; next: {}", resp.events.len(), resp.next);
        out
    }
}

/// One event as a line: `#seq type space key [id] from …: text`.
pub fn render_event(e: &EventView) -> String {
    let mut out = format!("#{} {} {}", e.seq, e.kind, e.space);
    if let Some(key) = &e.key {
        let _ = write!(out, " {key}");
    }
    if let Some(id) = &e.id {
        // A direct message's whole id: it is what a reply names.
        if e.kind == "direct" {
            let _ = write!(out, " [{id}]");
        } else {
            let _ = write!(out, " [{}]", short(id));
        }
    }
    if let Some(tier) = e.tier {
        let _ = write!(out, " {}", tier_text(tier));
    }
    if let Some(from) = &e.from {
        let _ = write!(out, " from {}", short_peer(from));
    }
    if !e.about.is_empty() {
        let about: Vec<&str> = e.about.iter().map(|p| short_peer(p)).collect();
        let _ = write!(out, " about {}", about.join(","));
    }
    if let Some(re) = &e.reply_to {
        let _ = write!(out, " re [{}]", short(re));
    }
    if let Some(entry) = &e.entry {
        let _ = write!(out, " entry [{}]", short(entry));
    }
    if let Some(text) = &e.text {
        let _ = write!(out, ": {text}");
    }
    out
}

struct Broadcast;

impl Verb for Broadcast {
    const NAME: &'static str = "broadcast";
    const SUMMARY: &'static str = "Send a short message to every agent of a space.";
    const DESCRIPTION: &'static str = "For announcements that are not knowledge (\"starting \
        the literature review\", \"shutting down\"). Every agent's event stream shows it, so it \
        costs each of them about its length / 4 tokens; prefer expose for anything worth \
        keeping.";
    const EXAMPLE: &'static str = "membrane broadcast 'starting the literature review'";
    const POSITIONAL: &'static [&'static str] = &["message"];
    type Request = BroadcastRequest;
    type Response = RecordResponse;

    async fn call(ctx: &Ctx, req: BroadcastRequest) -> Result<RecordResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        if req.message.trim().is_empty() {
            return Err(ApiError::bad(
                "invalid_request",
                "message is empty (expected some text)",
            ));
        }
        if req.message.len() > membrane_protocol::signals::MAX_MESSAGE_BYTES {
            return Err(ApiError::bad(
                "invalid_request",
                format!(
                    "message is {} bytes (expected at most {})",
                    req.message.len(),
                    membrane_protocol::signals::MAX_MESSAGE_BYTES
                ),
            ));
        }
        let id = ctx.node.broadcast(&space, req.message).await?;
        Ok(RecordResponse { id: id.to_string() })
    }

    fn render(resp: &RecordResponse) -> String {
        format!("sent [{}]", short(&resp.id))
    }
}

struct Peers;

impl Verb for Peers {
    const NAME: &'static str = "peers";
    const SUMMARY: &'static str = "List connected peers with their names and capabilities.";
    const DESCRIPTION: &'static str = "Who is around and what they can do. About 30 tokens \
        per peer.";
    const EXAMPLE: &'static str = "membrane peers";
    const READ_ONLY: bool = true;
    type Request = Empty;
    type Response = PeersResponse;

    async fn call(ctx: &Ctx, _: Empty) -> Result<PeersResponse, ApiError> {
        let peers = ctx.node.peer_infos().await?;
        Ok(PeersResponse {
            peers: peers
                .into_iter()
                .map(|p| PeerView {
                    peer: p.peer.to_string(),
                    name: p.name,
                    capabilities: p
                        .capabilities
                        .into_iter()
                        .map(|c| CapabilityView {
                            name: c.name,
                            description: c.description,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    fn render(resp: &PeersResponse) -> String {
        let mut out = format!("{} peers", resp.peers.len());
        for p in &resp.peers {
            let caps: Vec<&str> = p.capabilities.iter().map(|c| c.name.as_str()).collect();
            let _ = write!(
                out,
                "\n{} {} [{}]",
                p.peer,
                p.name.as_deref().unwrap_or("?"),
                caps.join(", ")
            );
        }
        out
    }
}

struct Status;

impl Verb for Status {
    const NAME: &'static str = "status";
    const SUMMARY: &'static str = "This node's identity, spaces, addresses and peer count.";
    const DESCRIPTION: &'static str = "Check that the node is up and connected. About 100 \
        tokens.";
    const EXAMPLE: &'static str = "membrane status";
    const READ_ONLY: bool = true;
    type Request = Empty;
    type Response = StatusResponse;

    async fn call(ctx: &Ctx, _: Empty) -> Result<StatusResponse, ApiError> {
        let s = ctx.node.status().await?;
        Ok(StatusResponse {
            peer: s.peer.to_string(),
            name: s.name,
            capabilities: s
                .capabilities
                .into_iter()
                .map(|c| CapabilityView {
                    name: c.name,
                    description: c.description,
                })
                .collect(),
            spaces: s.spaces.iter().map(ToString::to_string).collect(),
            home_space: ctx.home.to_string(),
            listening: s.listening,
            peers: s.peers,
            uptime_ms: super::state::now_ms().saturating_sub(s.started_at_ms),
            last_event: s.last_event,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    fn render(resp: &StatusResponse) -> String {
        format!(
            "{} ({}), membrane {}\nspaces: {} (home {})\npeers: {}\nlistening: {}\nlast event: {}",
            resp.name,
            resp.peer,
            resp.version,
            resp.spaces.join(", "),
            resp.home_space,
            resp.peers,
            resp.listening.join(" "),
            resp.last_event
        )
    }
}

struct BudgetVerb;

impl Verb for BudgetVerb {
    const NAME: &'static str = "budget";
    const SUMMARY: &'static str = "How many context tokens the agent has taken in, and may still.";
    const DESCRIPTION: &'static str = "Query and search answers are charged to your token \
        budget and to their space's, if it has one; when a halt budget is spent they are \
        refused (HTTP 429, with that budget's state) until its window resets, and a spent \
        warn budget lets them through with a `budget` event. Check it before a broad query. \
        About 40 tokens, and 30 per space budget.";
    const EXAMPLE: &'static str = "membrane budget";
    const READ_ONLY: bool = true;
    type Request = Empty;
    type Response = BudgetResponse;

    async fn call(ctx: &Ctx, _: Empty) -> Result<BudgetResponse, ApiError> {
        Ok(ctx.budget_state())
    }

    fn render(resp: &BudgetResponse) -> String {
        let out = match (resp.limit, resp.remaining) {
            (Some(limit), Some(remaining)) => format!(
                "{} of {limit} tokens used, {remaining} remain ({}); {} since start",
                resp.used,
                resp.action.as_deref().unwrap_or("halt"),
                resp.total
            ),
            _ => format!("no budget; {} tokens taken in since start", resp.total),
        };
        let mut out = out;
        for s in &resp.spaces {
            let _ = write!(
                out,
                "\nspace {}: {} of {} tokens used, {} remain ({}); {} since start",
                s.space, s.used, s.limit, s.remaining, s.action, s.total
            );
        }
        out
    }
}

/// The spaces a request may name: `None` is the home space.
pub(crate) fn parse_space(raw: &str) -> Result<Space, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad("bad_space", format!("space {raw:?}: {e}")))
}
