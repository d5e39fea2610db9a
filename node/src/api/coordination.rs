//! Coordination verbs: swarms, tasks and verdicts. Each writes an ordinary signed entry in
//! the agent's own slot under `coord.…` (see `membrane_crdt::coord`) and answers with the
//! state every node computes from the medium. The checks here (capability, creator,
//! winner) refuse early with a reason; every node applies the same rules on its own.

use std::fmt::Write as _;

use membrane_crdt::Draft;
use membrane_crdt::coord::{self, Snapshot, SwarmState, TaskState};
use membrane_protocol::{EntryKind, EnvelopeId, Key, PublicKey, Space, Tier};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::state::Ctx;
use super::verbs::{Verb, parse_key, short, short_id, short_peer};

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, "refused", message)
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} {name:?} in this space (list them with {what}s)"),
    )
}

fn key(text: &str) -> Result<Key, ApiError> {
    parse_key(text)
}

/// Writes a public record of the agent's (a coordination or mesh record) and returns its
/// id.
pub(crate) async fn write(
    ctx: &Ctx,
    space: &Space,
    key_text: &str,
    value: impl ToString,
    kind: EntryKind,
    parents: Vec<EnvelopeId>,
    ttl_ms: Option<u64>,
) -> Result<EnvelopeId, ApiError> {
    let mut draft = Draft::new(key(key_text)?, value.to_string(), Some(Tier::Public));
    draft.kind = kind;
    draft.parents = parents;
    draft.ttl_ms = ttl_ms;
    Ok(ctx.node.expose(space, draft).await?.id)
}

async fn snapshot(ctx: &Ctx, space: &Space) -> Result<Snapshot, ApiError> {
    Ok(ctx.node.coordination(space).await?)
}

/// Makes sure the agent's capability card in `space` says what the node was told
/// (`register` or `--capability`), writing it if not.
pub(crate) async fn ensure_card(ctx: &Ctx, space: &Space) -> Result<Snapshot, ApiError> {
    let snap = snapshot(ctx, space).await?;
    let status = ctx.node.status().await?;
    let card = coord::Card {
        name: status.name,
        capabilities: status
            .capabilities
            .into_iter()
            .map(|c| coord::CardCapability {
                name: c.name,
                description: c.description,
            })
            .collect(),
    };
    if snap.cards.get(ctx.node.id()) == Some(&card) {
        return Ok(snap);
    }
    let value = serde_json::to_value(&card).unwrap_or_default();
    write(
        ctx,
        space,
        &coord::agent_key(ctx.node.id()),
        &value,
        EntryKind::Meta,
        Vec::new(),
        None,
    )
    .await?;
    snapshot(ctx, space).await
}

// ---- views ----

/// A swarm as every node computes it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SwarmView {
    /// Its id (the name's slug).
    pub swarm: String,
    /// Its name.
    pub name: String,
    /// The capability members need.
    pub capability: String,
    /// Members needed to activate.
    pub threshold: u32,
    /// Who created it.
    pub creator: String,
    /// Members now (peer ids).
    pub members: Vec<String>,
    /// `forming`, `active` or `dissolved`.
    pub state: String,
    /// Why it dissolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it first reached its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at_ms: Option<u64>,
    /// Joins that count nowhere, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

fn swarm_view(s: &coord::Swarm) -> SwarmView {
    let (state, reason) = match &s.state {
        SwarmState::Forming => ("forming", None),
        SwarmState::Active => ("active", None),
        SwarmState::Dissolved { reason } => ("dissolved", Some(reason.clone())),
    };
    SwarmView {
        swarm: s.slug.clone(),
        name: s.spec.name.clone(),
        capability: s.spec.capability.clone(),
        threshold: s.spec.threshold,
        creator: s.creator.to_string(),
        members: s.members.iter().map(ToString::to_string).collect(),
        state: state.to_owned(),
        reason,
        activated_at_ms: s.activated_at_ms,
        refused: s
            .refused
            .iter()
            .map(|(who, why)| format!("{who}: {why}"))
            .collect(),
    }
}

fn render_swarm(s: &SwarmView) -> String {
    let mut out = format!(
        "swarm {} ({}): {}, {}/{} members needing {}",
        s.swarm,
        s.name,
        s.state,
        s.members.len(),
        s.threshold,
        s.capability
    );
    if let Some(reason) = &s.reason {
        let _ = write!(out, " ({reason})");
    }
    for r in &s.refused {
        let _ = write!(out, "\nrefused {r}");
    }
    out
}

/// A task as every node computes it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    /// Its id.
    pub task: String,
    /// What is to be done.
    pub description: String,
    /// The capability a claimant needs.
    pub capability: String,
    /// Who posted it.
    pub poster: String,
    /// The task entry's id (cite it as a result's parent).
    pub entry: String,
    /// `open`, `claimed`, `completed` or `failed`.
    pub state: String,
    /// The winning claimant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// Valid claims, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimants: Vec<String>,
    /// The result entry, when completed; the reason, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// What the poster offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<String>,
    /// Higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Claims that count nowhere, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// The swarm it was posted to (its outcome counts toward that team's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
}

fn task_view(t: &coord::Task) -> TaskView {
    let (state, outcome) = match &t.state {
        TaskState::Open => ("open", None),
        TaskState::Claimed => ("claimed", None),
        TaskState::Completed { result } => ("completed", Some(result.clone())),
        TaskState::Failed { reason } => ("failed", Some(reason.clone())),
    };
    TaskView {
        task: t.id.clone(),
        description: t.description.clone(),
        capability: t.capability.clone(),
        poster: t.poster.to_string(),
        entry: t.entry.to_string(),
        state: state.to_owned(),
        winner: t.winner.map(|w| w.to_string()),
        claimants: t.claims.iter().map(|(w, _)| w.to_string()).collect(),
        outcome,
        reward: t.reward.clone(),
        priority: t.priority,
        refused: t
            .refused
            .iter()
            .map(|(who, why)| format!("{who}: {why}"))
            .collect(),
        swarm: t.swarm.clone(),
    }
}

fn render_task(t: &TaskView) -> String {
    let mut out = format!(
        "task {} [{}] needs {}: {}",
        t.task, t.state, t.capability, t.description
    );
    if let Some(w) = &t.winner {
        let _ = write!(out, "\nwinner {}", short_peer(w));
    }
    if let Some(o) = &t.outcome {
        let _ = write!(out, "\noutcome {o}");
    }
    out
}

// ---- requests ----

/// `swarm-create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmCreateRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Its name, e.g. "Final Review" (its id is the slug, final-review).
    pub name: String,
    /// The capability members need.
    pub capability: String,
    /// Members needed to activate (1 to 1000).
    pub threshold: u32,
    /// Milliseconds after which it dissolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A request naming a swarm.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The swarm's id (slug) or name.
    pub swarm: String,
}

/// Swarms of a space.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SwarmsResponse {
    /// Every swarm.
    pub swarms: Vec<SwarmView>,
}

/// Tasks of a space.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TasksResponse {
    /// Every task.
    pub tasks: Vec<TaskView>,
}

/// `task-post`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPostRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
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
    /// The swarm working on it, if any: its outcome then counts toward that team's record,
    /// which `discover` uses to prefer teams that worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
}

/// A request naming a task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The task's id.
    pub task: String,
}

/// `task-complete` and `task-fail`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOutcomeRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The task's id.
    pub task: String,
    /// The result (complete) or why it failed (fail).
    pub result: String,
}

/// `verify` and `dispute`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// The entry's id.
    pub id: String,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// An entry's verdicts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VerificationResponse {
    /// The entry.
    pub id: String,
    /// Agents other than its owner who verified it.
    pub verifiers: Vec<String>,
    /// Agents who dispute it.
    pub disputers: Vec<String>,
    /// Verified: enough verifiers, no dispute you trust.
    pub verified: bool,
    /// A dispute you trust stands.
    pub contested: bool,
}

fn slug_of(raw: &str) -> Result<String, ApiError> {
    coord::slug(raw).ok_or_else(|| {
        ApiError::bad(
            "invalid_request",
            format!("swarm {raw:?} has no usable name (expected letters or digits, at most 48)"),
        )
    })
}

fn find_swarm<'a>(snap: &'a Snapshot, raw: &str) -> Result<&'a coord::Swarm, ApiError> {
    let slug = slug_of(raw)?;
    snap.swarms
        .get(&slug)
        .ok_or_else(|| not_found("swarm", &slug))
}

fn find_task<'a>(snap: &'a Snapshot, id: &str) -> Result<&'a coord::Task, ApiError> {
    snap.tasks.get(id).ok_or_else(|| not_found("task", id))
}

fn lacks(snap: &Snapshot, me: &PublicKey, capability: &str) -> Option<ApiError> {
    let has = snap.cards.get(me).is_some_and(|c| c.has(capability));
    (!has).then(|| {
        conflict(format!(
            "your capability card lacks {capability} (register with it first: membrane \
             register <name> --capabilities {capability}=<description>)"
        ))
    })
}

// ---- verbs ----

pub(crate) struct SwarmCreate;

impl Verb for SwarmCreate {
    const NAME: &'static str = "swarm-create";
    const SUMMARY: &'static str = "Create a swarm that activates when enough capable agents join.";
    const DESCRIPTION: &'static str = "Quorum sensing: the swarm is active once `threshold` \
        distinct agents with `capability` have joined, on every node at once, and dissolves \
        when you dissolve it, its ttl runs out, or members fall below the threshold after \
        activation. Costs about 60 tokens.";
    const EXAMPLE: &'static str =
        "membrane swarm-create 'Final Review' --capability reviewing --threshold 2";
    const POSITIONAL: &'static [&'static str] = &["name"];
    type Request = SwarmCreateRequest;
    type Response = SwarmView;

    async fn call(ctx: &Ctx, req: SwarmCreateRequest) -> Result<SwarmView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let slug = slug_of(&req.name)?;
        if !(1..=1000).contains(&req.threshold) {
            return Err(ApiError::bad(
                "out_of_range",
                format!(
                    "threshold {} is out of range (expected 1 to 1000)",
                    req.threshold
                ),
            ));
        }
        let capability = req.capability.trim();
        if capability.is_empty() || capability.len() > 64 {
            return Err(ApiError::bad(
                "invalid_request",
                "capability is empty or over 64 bytes (expected a capability name)",
            ));
        }
        let snap = snapshot(ctx, &space).await?;
        if let Some(existing) = snap.swarms.get(&slug)
            && !matches!(existing.state, SwarmState::Dissolved { .. })
            && existing.creator != *ctx.node.id()
        {
            return Err(conflict(format!(
                "swarm {slug} already exists, created by {}",
                existing.creator
            )));
        }
        let spec = coord::SwarmSpec {
            name: req.name.trim().to_owned(),
            capability: capability.to_owned(),
            threshold: req.threshold,
        };
        let value = serde_json::to_value(&spec).unwrap_or_default();
        write(
            ctx,
            &space,
            &coord::swarm_key(&slug),
            &value,
            EntryKind::Meta,
            Vec::new(),
            req.ttl_ms,
        )
        .await?;
        let snap = snapshot(ctx, &space).await?;
        Ok(swarm_view(find_swarm(&snap, &slug)?))
    }

    fn render(resp: &SwarmView) -> String {
        render_swarm(resp)
    }
}

pub(crate) struct SwarmJoin;

impl Verb for SwarmJoin {
    const NAME: &'static str = "swarm-join";
    const SUMMARY: &'static str = "Join a swarm (needs its capability on your card).";
    const DESCRIPTION: &'static str = "Refused, with the reason, when your capability card \
        lacks the swarm's capability. The answer shows the swarm's state after your join; \
        its activation reaches every member as an event. Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane swarm-join final-review";
    const POSITIONAL: &'static [&'static str] = &["swarm"];
    type Request = SwarmRequest;
    type Response = SwarmView;

    async fn call(ctx: &Ctx, req: SwarmRequest) -> Result<SwarmView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = ensure_card(ctx, &space).await?;
        let swarm = find_swarm(&snap, &req.swarm)?;
        if let SwarmState::Dissolved { reason } = &swarm.state {
            return Err(conflict(format!(
                "swarm {} is dissolved: {reason}",
                swarm.slug
            )));
        }
        if let Some(e) = lacks(&snap, ctx.node.id(), &swarm.spec.capability) {
            return Err(e);
        }
        let slug = swarm.slug.clone();
        write(
            ctx,
            &space,
            &coord::member_key(&slug, ctx.node.id()),
            &serde_json::json!({}),
            EntryKind::Meta,
            vec![swarm.id],
            None,
        )
        .await?;
        let snap = snapshot(ctx, &space).await?;
        Ok(swarm_view(find_swarm(&snap, &slug)?))
    }

    fn render(resp: &SwarmView) -> String {
        render_swarm(resp)
    }
}

pub(crate) struct SwarmLeave;

impl Verb for SwarmLeave {
    const NAME: &'static str = "swarm-leave";
    const SUMMARY: &'static str = "Leave a swarm.";
    const DESCRIPTION: &'static str = "Retracts your membership. If an active swarm falls \
        below its threshold it dissolves. Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane swarm-leave final-review";
    const POSITIONAL: &'static [&'static str] = &["swarm"];
    type Request = SwarmRequest;
    type Response = SwarmView;

    async fn call(ctx: &Ctx, req: SwarmRequest) -> Result<SwarmView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = snapshot(ctx, &space).await?;
        let slug = find_swarm(&snap, &req.swarm)?.slug.clone();
        ctx.node
            .retract(&space, &key(&coord::member_key(&slug, ctx.node.id()))?)
            .await
            .map_err(|e| match e {
                crate::NodeError::NotFound(_) => conflict(format!("you are not in swarm {slug}")),
                other => other.into(),
            })?;
        let snap = snapshot(ctx, &space).await?;
        Ok(swarm_view(find_swarm(&snap, &slug)?))
    }

    fn render(resp: &SwarmView) -> String {
        render_swarm(resp)
    }
}

pub(crate) struct SwarmDissolve;

impl Verb for SwarmDissolve {
    const NAME: &'static str = "swarm-dissolve";
    const SUMMARY: &'static str = "Dissolve a swarm you created.";
    const DESCRIPTION: &'static str = "Only its creator may; every node sees it dissolved. \
        Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane swarm-dissolve final-review";
    const POSITIONAL: &'static [&'static str] = &["swarm"];
    type Request = SwarmRequest;
    type Response = SwarmView;

    async fn call(ctx: &Ctx, req: SwarmRequest) -> Result<SwarmView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = snapshot(ctx, &space).await?;
        let swarm = find_swarm(&snap, &req.swarm)?;
        if swarm.creator != *ctx.node.id() {
            return Err(conflict(format!(
                "only its creator {} may dissolve swarm {}",
                swarm.creator, swarm.slug
            )));
        }
        let slug = swarm.slug.clone();
        ctx.node
            .retract(&space, &key(&coord::swarm_key(&slug))?)
            .await?;
        let snap = snapshot(ctx, &space).await?;
        Ok(swarm_view(find_swarm(&snap, &slug)?))
    }

    fn render(resp: &SwarmView) -> String {
        render_swarm(resp)
    }
}

pub(crate) struct Swarms;

impl Verb for Swarms {
    const NAME: &'static str = "swarms";
    const SUMMARY: &'static str = "List the swarms of a space with their state and members.";
    const DESCRIPTION: &'static str = "About 50 tokens per swarm.";
    const EXAMPLE: &'static str = "membrane swarms";
    const READ_ONLY: bool = true;
    type Request = super::types::SpaceRequest;
    type Response = SwarmsResponse;

    async fn call(ctx: &Ctx, req: super::types::SpaceRequest) -> Result<SwarmsResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = snapshot(ctx, &space).await?;
        Ok(SwarmsResponse {
            swarms: snap.swarms.values().map(swarm_view).collect(),
        })
    }

    fn render(resp: &SwarmsResponse) -> String {
        let mut out = format!("{} swarms", resp.swarms.len());
        for s in &resp.swarms {
            let _ = write!(out, "\n{}", render_swarm(s));
        }
        out
    }
}

pub(crate) struct TaskPost;

impl Verb for TaskPost {
    const NAME: &'static str = "task-post";
    const SUMMARY: &'static str = "Post a task for an agent with a capability to claim.";
    const DESCRIPTION: &'static str = "The task goes to every agent of the space; one \
        claimant wins deterministically on every node. Costs about 60 tokens.";
    const EXAMPLE: &'static str =
        "membrane task-post 'Review the brief for accuracy' --capability reviewing";
    const POSITIONAL: &'static [&'static str] = &["description"];
    type Request = TaskPostRequest;
    type Response = TaskView;

    async fn call(ctx: &Ctx, req: TaskPostRequest) -> Result<TaskView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        if req.description.trim().is_empty() || req.capability.trim().is_empty() {
            return Err(ApiError::bad(
                "invalid_request",
                "description and capability must not be empty",
            ));
        }
        let now = super::state::now_ms();
        let id = format!(
            "t{}",
            short_id(&format!("{}|{now}|{}", ctx.node.id(), req.description))
        );
        let swarm = match req.swarm.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => {
                let slug = slug_of(name)?;
                let snap = snapshot(ctx, &space).await?;
                find_swarm(&snap, &slug)?;
                Some(slug)
            }
        };
        let spec = coord::TaskSpec {
            description: req.description,
            capability: req.capability.trim().to_owned(),
            reward: req.reward,
            priority: req.priority,
            swarm,
        };
        let value = serde_json::to_value(&spec).unwrap_or_default();
        write(
            ctx,
            &space,
            &coord::task_key(&id),
            &value,
            EntryKind::Task,
            Vec::new(),
            None,
        )
        .await?;
        let snap = snapshot(ctx, &space).await?;
        Ok(task_view(find_task(&snap, &id)?))
    }

    fn render(resp: &TaskView) -> String {
        render_task(resp)
    }
}

pub(crate) struct TaskClaim;

impl Verb for TaskClaim {
    const NAME: &'static str = "task-claim";
    const SUMMARY: &'static str = "Claim a task; the answer says who won.";
    const DESCRIPTION: &'static str = "Concurrent claims resolve to one winner on every \
        node: the lowest (lamport time, agent id). You may lose a claim made at the same \
        time elsewhere; the task's events tell you. Needs the task's capability. Refused \
        (409 breaker_open, naming the breaker) while tasks toward you or toward the \
        capability have failed too often in a row lately. Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane task-claim t1a2b3c4d5";
    const POSITIONAL: &'static [&'static str] = &["task"];
    type Request = TaskRequest;
    type Response = TaskView;

    async fn call(ctx: &Ctx, req: TaskRequest) -> Result<TaskView, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = ensure_card(ctx, &space).await?;
        let task = find_task(&snap, &req.task)?;
        if let Some(e) = lacks(&snap, ctx.node.id(), &task.capability) {
            return Err(e);
        }
        if matches!(
            task.state,
            TaskState::Completed { .. } | TaskState::Failed { .. }
        ) {
            return Err(conflict(format!("task {} is already over", task.id)));
        }
        // A claim routes the task to this agent: the delegation breakers (this agent's,
        // the capability's) must admit it; a half-open one takes this claim as its trial.
        ctx.node
            .admit_delegation(*ctx.node.id(), &task.capability)
            .await?;
        let lamport = 1 + task.claims.iter().map(|(_, l)| *l).max().unwrap_or(0);
        let id = task.id.clone();
        let parent = task.entry;
        write(
            ctx,
            &space,
            &coord::claim_key(&id, ctx.node.id()),
            &serde_json::json!({ "lamport": lamport }),
            EntryKind::Meta,
            vec![parent],
            None,
        )
        .await?;
        let snap = snapshot(ctx, &space).await?;
        Ok(task_view(find_task(&snap, &id)?))
    }

    fn render(resp: &TaskView) -> String {
        render_task(resp)
    }
}

async fn outcome(ctx: &Ctx, req: TaskOutcomeRequest, status: &str) -> Result<TaskView, ApiError> {
    let space = ctx.space(req.space.as_deref())?;
    let snap = snapshot(ctx, &space).await?;
    let task = find_task(&snap, &req.task)?;
    if task.winner != Some(*ctx.node.id()) {
        return Err(conflict(match task.winner {
            Some(w) => format!("task {} was won by {w}, not you", task.id),
            None => format!("task {} has no claim of yours (claim it first)", task.id),
        }));
    }
    let id = task.id.clone();
    let parent = task.entry;
    let kind = if status == "completed" {
        EntryKind::Result
    } else {
        EntryKind::Meta
    };
    let value = serde_json::json!({ "status": status, "result": req.result });
    write(
        ctx,
        &space,
        &coord::outcome_key(&id, ctx.node.id()),
        &value,
        kind,
        vec![parent],
        None,
    )
    .await?;
    let snap = snapshot(ctx, &space).await?;
    Ok(task_view(find_task(&snap, &id)?))
}

pub(crate) struct TaskComplete;

impl Verb for TaskComplete {
    const NAME: &'static str = "task-complete";
    const SUMMARY: &'static str = "Complete a task you won, with its result.";
    const DESCRIPTION: &'static str = "Writes a result entry whose parent is the task. Only \
        the winning claimant may. Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane task-complete t1a2b3c4d5 'Reviewed: two fixes'";
    const POSITIONAL: &'static [&'static str] = &["task", "result"];
    type Request = TaskOutcomeRequest;
    type Response = TaskView;

    async fn call(ctx: &Ctx, req: TaskOutcomeRequest) -> Result<TaskView, ApiError> {
        outcome(ctx, req, "completed").await
    }

    fn render(resp: &TaskView) -> String {
        render_task(resp)
    }
}

pub(crate) struct TaskFail;

impl Verb for TaskFail {
    const NAME: &'static str = "task-fail";
    const SUMMARY: &'static str = "Give up a task you won, saying why.";
    const DESCRIPTION: &'static str = "Only the winning claimant may. Costs about 60 tokens.";
    const EXAMPLE: &'static str = "membrane task-fail t1a2b3c4d5 'source unavailable'";
    const POSITIONAL: &'static [&'static str] = &["task", "result"];
    type Request = TaskOutcomeRequest;
    type Response = TaskView;

    async fn call(ctx: &Ctx, req: TaskOutcomeRequest) -> Result<TaskView, ApiError> {
        outcome(ctx, req, "failed").await
    }

    fn render(resp: &TaskView) -> String {
        render_task(resp)
    }
}

pub(crate) struct Tasks;

impl Verb for Tasks {
    const NAME: &'static str = "tasks";
    const SUMMARY: &'static str = "List the tasks of a space with their state and winner.";
    const DESCRIPTION: &'static str = "About 60 tokens per task.";
    const EXAMPLE: &'static str = "membrane tasks";
    const READ_ONLY: bool = true;
    type Request = super::types::SpaceRequest;
    type Response = TasksResponse;

    async fn call(ctx: &Ctx, req: super::types::SpaceRequest) -> Result<TasksResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let snap = snapshot(ctx, &space).await?;
        Ok(TasksResponse {
            tasks: snap.tasks.values().map(task_view).collect(),
        })
    }

    fn render(resp: &TasksResponse) -> String {
        let mut out = format!("{} tasks", resp.tasks.len());
        for t in &resp.tasks {
            let _ = write!(out, "\n{}", render_task(t));
        }
        out
    }
}

async fn verdict(
    ctx: &Ctx,
    req: VerdictRequest,
    verdict: &str,
) -> Result<VerificationResponse, ApiError> {
    let space = ctx.space(req.space.as_deref())?;
    let id: EnvelopeId = req.id.trim().parse().map_err(|e| {
        ApiError::bad(
            "bad_id",
            format!("id {:?}: {e} (expected 64 hex digits)", req.id),
        )
    })?;
    let (_, owner) = ctx
        .node
        .verification(&space, id, coord::DEFAULT_VERIFIERS)
        .await?;
    match owner {
        None => return Err(not_found("entry", &req.id)),
        Some(owner) if owner == *ctx.node.id() => {
            return Err(conflict("you cannot verify or dispute your own entry"));
        }
        Some(_) => {}
    }
    let value = serde_json::json!({ "verdict": verdict, "note": req.note });
    write(
        ctx,
        &space,
        &coord::verdict_key(&id, ctx.node.id()),
        &value,
        EntryKind::Meta,
        vec![id],
        None,
    )
    .await?;
    let (v, _) = ctx
        .node
        .verification(&space, id, coord::DEFAULT_VERIFIERS)
        .await?;
    Ok(VerificationResponse {
        id: id.to_string(),
        verifiers: v.verifiers.iter().map(ToString::to_string).collect(),
        disputers: v.disputers.iter().map(ToString::to_string).collect(),
        verified: v.verified,
        contested: v.contested,
    })
}

fn render_verification(v: &VerificationResponse) -> String {
    format!(
        "[{}] {} ({} verifiers, {} disputers{})",
        short(&v.id),
        if v.verified {
            "verified"
        } else {
            "not verified"
        },
        v.verifiers.len(),
        v.disputers.len(),
        if v.contested { ", contested" } else { "" }
    )
}

pub(crate) struct Verify;

impl Verb for Verify {
    const NAME: &'static str = "verify";
    const SUMMARY: &'static str = "Vouch for another agent's entry after checking it.";
    const DESCRIPTION: &'static str = "An entry is verified once 2 agents other than its \
        owner verify it and no agent you trust disputes it. Only verify what you checked. \
        Costs about 40 tokens.";
    const EXAMPLE: &'static str = "membrane verify <entry id> --note 'matches IPCC AR6 table 9.1'";
    const POSITIONAL: &'static [&'static str] = &["id"];
    type Request = VerdictRequest;
    type Response = VerificationResponse;

    async fn call(ctx: &Ctx, req: VerdictRequest) -> Result<VerificationResponse, ApiError> {
        verdict(ctx, req, "verify").await
    }

    fn render(resp: &VerificationResponse) -> String {
        render_verification(resp)
    }
}

pub(crate) struct Dispute;

impl Verb for Dispute {
    const NAME: &'static str = "dispute";
    const SUMMARY: &'static str = "Dispute another agent's entry, saying why.";
    const DESCRIPTION: &'static str = "A dispute by an agent a reader trusts keeps the entry \
        from counting as verified for that reader and marks it contested. Costs about 40 \
        tokens.";
    const EXAMPLE: &'static str =
        "membrane dispute <entry id> --note 'the source says 3.3, not 3.7'";
    const POSITIONAL: &'static [&'static str] = &["id"];
    type Request = VerdictRequest;
    type Response = VerificationResponse;

    async fn call(ctx: &Ctx, req: VerdictRequest) -> Result<VerificationResponse, ApiError> {
        verdict(ctx, req, "dispute").await
    }

    fn render(resp: &VerificationResponse) -> String {
        render_verification(resp)
    }
}
