//! Governance verbs: the immune layer's view (`threats`), the operator's overrides
//! (`quarantine`, `release`, `ban`, `unban`, `exonerate`), the emergency stop (`pause`,
//! `resume`) and the audit log (`audit`). Every override, pause and resume is written to
//! the node's signed, hash-chained audit log before it answers; `audit` reads the log back
//! and verifies what it returns.

use std::fmt::Write as _;

use membrane_immune::{AuditRecord, Override, QuarantineReason};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::state::Ctx;
use super::verbs::{Verb, parse_peer, short_peer};
use crate::immune::{MAX_AUDIT_PAGE, PeerStanding};

/// Threat records `threats` returns by default.
pub const DEFAULT_THREATS: u32 = 20;
/// Audit records `audit` returns by default.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---- shapes ----

/// `threats`: how many recent threats to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreatsRequest {
    /// Newest threat records to list [default: 20, at most 256].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One peer's standing with this node's immune layer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StandingView {
    /// The peer.
    pub peer: String,
    /// Reputation in [-100, 100]; 0 is neutral, it decays toward 0.
    pub reputation: f64,
    /// What gossipsub's peer score gets from it.
    pub app_score: f64,
    /// Why it is quarantined (`score`, `quorum`, `operator`), if it is: its entries are
    /// hidden from queries and search and its data is not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// When a quorum's quarantine may lift at the earliest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_until_ms: Option<u64>,
    /// When its ban ends, if banned (its connections are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_until_ms: Option<u64>,
    /// Whether it is connected now.
    pub connected: bool,
}

impl From<&PeerStanding> for StandingView {
    fn from(s: &PeerStanding) -> Self {
        Self {
            peer: s.peer.to_string(),
            reputation: (s.reputation * 100.0).round() / 100.0,
            app_score: (s.app_score * 100.0).round() / 100.0,
            quarantined: s.quarantine.map(|q| {
                match q.reason {
                    QuarantineReason::Score => "score",
                    QuarantineReason::Quorum => "quorum",
                    QuarantineReason::Operator => "operator",
                }
                .to_owned()
            }),
            quarantined_until_ms: s.quarantine.and_then(|q| q.until_ms),
            banned_until_ms: s.banned_until_ms,
            connected: s.connected,
        }
    }
}

/// One threat detected here or reported by another node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThreatView {
    /// Its audit record's index.
    pub index: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// `detected` (by this node) or `received` (a signed report by another node).
    pub source: String,
    /// Who misbehaved, according to it.
    pub offender: String,
    /// Who reported it (received only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
    /// The offence: forgery, trespass, equivocation, malformed, rate_anomaly, flooding,
    /// replay, budget_abuse, capability_violation.
    pub offence: String,
    /// low, mid, high or fatal.
    pub severity: String,
    /// What the evidence showed (received only): confirmed, refuted, unverifiable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Why (detected) or what this node did about it (received).
    pub detail: String,
}

impl ThreatView {
    fn from_record(r: &AuditRecord) -> Option<Self> {
        let event = serde_json::to_value(&r.event).ok()?;
        let (source, body) = match event["type"].as_str()? {
            "threat_detected" => ("detected", &event["detection"]),
            "threat_received" => ("received", &event),
            _ => return None,
        };
        let (offence, detail) = if source == "detected" {
            (text(&body["kind"]), text(&body["reason"]))
        } else {
            (text(&body["kind"]), text(&body["outcome"]))
        };
        Some(Self {
            index: r.index,
            at_ms: r.at_ms,
            source: source.to_owned(),
            offender: text(&body["offender"]),
            reporter: body["reporter"].as_str().map(str::to_owned),
            offence,
            severity: text(&body["severity"]),
            verdict: body["verdict"].as_str().map(str::to_owned),
            detail,
        })
    }
}

/// The immune layer's view.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThreatsResponse {
    /// Whether the operator paused every crossing.
    pub paused: bool,
    /// Peers with a standing: non-neutral, quarantined, banned or connected.
    pub peers: Vec<StandingView>,
    /// The newest threats, oldest first.
    pub threats: Vec<ThreatView>,
    /// Records in the audit log.
    pub audit_records: u64,
    /// Why the audit log did not verify when the node started, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_problem: Option<String>,
    /// Delegation breakers with failures on record: open ones block claims and offers
    /// toward their agent or capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<super::types::BreakerView>,
}

/// A peer to act on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// The peer's id (12D3KooW…).
    pub peer: String,
}

/// What an override did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OverrideResponse {
    /// The peer.
    pub peer: String,
    /// The override: quarantine, release, ban, unban or exonerate.
    pub action: String,
    /// Indexes of the audit records it wrote.
    pub audit: Vec<u64>,
    /// The peer's standing afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<StandingView>,
}

/// `pause` / `resume`: why, for the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why, in a few words (kept in the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The pause's state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PauseResponse {
    /// Whether every crossing is paused now.
    pub paused: bool,
    /// Indexes of the audit records written (none when nothing changed).
    pub audit: Vec<u64>,
}

/// `audit`: which records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRequest {
    /// First record's index [default: 0]; pass the `next` of the previous answer.
    #[serde(default)]
    pub since: u64,
    /// Most records to return [default: 100, at most 1000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Render the records as JSON Lines (one record per line, for export and
    /// `membrane_immune::audit::from_jsonl`) instead of text [default: false].
    #[serde(default)]
    pub jsonl: bool,
}

/// One audit record, exactly as the node signed it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecordView {
    /// Position in the log, from 0.
    pub index: u64,
    /// When it was written, ms since the Unix epoch.
    pub at_ms: u64,
    /// What happened: an object with a `type` (answer, crossing, budget_charge,
    /// threat_detected, threat_received, override, quarantine, release, ban, unban,
    /// breaker, pause, conflict).
    pub event: Value,
    /// Hash of the record before (hex; zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of prev_hash and the record's canonical bytes (hex).
    pub hash: String,
    /// The node's signature over the hash (hex).
    pub signature: String,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditResponse {
    /// The records, oldest first.
    pub records: Vec<AuditRecordView>,
    /// The index to read on from.
    pub next: u64,
    /// Records in the log.
    pub total: u64,
    /// Hash of the newest record (hex): keep it elsewhere to detect a cut-off tail.
    pub head: String,
    /// Whether these records verified: each links to the one before and carries a valid
    /// hash and this node's signature.
    pub verified: bool,
    /// Why not, naming the first bad record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Whether to render as JSON Lines (echoes the request).
    #[serde(default)]
    pub jsonl: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        e.to_string(),
    )
}

async fn standing(ctx: &Ctx, peer: &str) -> Option<StandingView> {
    let report = ctx.node.immune_report(0).await.ok()?;
    report
        .peers
        .iter()
        .find(|s| s.peer.to_string() == peer)
        .map(StandingView::from)
}

async fn govern(
    ctx: &Ctx,
    req: PeerRequest,
    action: &str,
    make: fn(membrane_protocol::PublicKey) -> Override,
) -> Result<OverrideResponse, ApiError> {
    let peer = parse_peer(&req.peer)?;
    let records = ctx.node.govern(make(peer)).await?;
    let peer = peer.to_string();
    Ok(OverrideResponse {
        standing: standing(ctx, &peer).await,
        peer,
        action: action.to_owned(),
        audit: records.iter().map(|r| r.index).collect(),
    })
}

fn render_override(resp: &OverrideResponse) -> String {
    let mut out = format!(
        "{} {}: audit records {:?}",
        resp.action, resp.peer, resp.audit
    );
    if let Some(s) = &resp.standing {
        let _ = write!(out, "\n{}", render_standing(s));
    }
    out
}

fn render_standing(s: &StandingView) -> String {
    let mut out = format!("{} reputation {:.1}", short_peer(&s.peer), s.reputation);
    if let Some(q) = &s.quarantined {
        let _ = write!(out, ", quarantined ({q})");
    }
    if let Some(until) = s.banned_until_ms {
        let _ = write!(out, ", banned until {until}");
    }
    if s.connected {
        out.push_str(", connected");
    }
    out
}

// ---- the verbs ----

pub(crate) struct Threats;

impl Verb for Threats {
    const NAME: &'static str = "threats";
    const SUMMARY: &'static str =
        "The immune layer's view: peers' reputation, quarantines, bans and recent threats.";
    const DESCRIPTION: &'static str = "Use it when entries seem missing, a peer misbehaves or \
        a claim is refused: lists every peer with a standing (reputation in [-100, 100], \
        quarantine, ban), the newest threats this node detected or received with what the \
        evidence showed, and the delegation breakers with failures on record. Quarantined \
        peers' entries are hidden from query and search. About 40 tokens per peer, threat \
        and breaker.";
    const EXAMPLE: &'static str = "membrane threats --limit 10";
    const READ_ONLY: bool = true;
    type Request = ThreatsRequest;
    type Response = ThreatsResponse;

    async fn call(ctx: &Ctx, req: ThreatsRequest) -> Result<ThreatsResponse, ApiError> {
        let limit = req.limit.unwrap_or(DEFAULT_THREATS) as usize;
        let report = ctx.node.immune_report(limit).await?;
        Ok(ThreatsResponse {
            paused: report.paused,
            peers: report.peers.iter().map(StandingView::from).collect(),
            threats: report
                .threats
                .iter()
                .filter_map(ThreatView::from_record)
                .collect(),
            audit_records: report.audit_records,
            audit_problem: report.audit_problem.clone(),
            breakers: report
                .breakers
                .iter()
                .map(|(k, st)| super::types::BreakerView::new(k, st))
                .collect(),
        })
    }

    fn render(resp: &ThreatsResponse) -> String {
        let mut out = String::new();
        if resp.paused {
            out.push_str("PAUSED: nothing crosses in or out (membrane resume)\n");
        }
        if let Some(problem) = &resp.audit_problem {
            let _ = writeln!(out, "AUDIT LOG NOT VERIFIED: {problem}");
        }
        for b in &resp.breakers {
            let _ = writeln!(
                out,
                "breaker {} {}: {}{}",
                b.guards,
                if b.guards == "agent" {
                    short_peer(&b.id)
                } else {
                    b.id.as_str()
                },
                b.state,
                b.until_ms
                    .map(|t| format!(" until {t}"))
                    .unwrap_or_default()
            );
        }
        let _ = write!(out, "{} peers", resp.peers.len());
        for s in &resp.peers {
            let _ = write!(out, "\n  {}", render_standing(s));
        }
        let _ = write!(out, "\n{} threats", resp.threats.len());
        for t in &resp.threats {
            let _ = write!(
                out,
                "\n  #{} {} {} {} by {} ({})",
                t.index,
                t.source,
                t.offence,
                t.severity,
                short_peer(&t.offender),
                t.detail
            );
            if let Some(reporter) = &t.reporter {
                let _ = write!(
                    out,
                    " reported by {} [{}]",
                    short_peer(reporter),
                    t.verdict.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }
}

macro_rules! override_verb {
    ($name:ident, $verb:literal, $summary:literal, $description:literal, $make:expr) => {
        pub(crate) struct $name;

        impl Verb for $name {
            const NAME: &'static str = $verb;
            const SUMMARY: &'static str = $summary;
            const DESCRIPTION: &'static str = $description;
            const EXAMPLE: &'static str = concat!("membrane ", $verb, " 12D3KooWExample…");
            const POSITIONAL: &'static [&'static str] = &["peer"];
            type Request = PeerRequest;
            type Response = OverrideResponse;

            async fn call(ctx: &Ctx, req: PeerRequest) -> Result<OverrideResponse, ApiError> {
                govern(ctx, req, $verb, $make).await
            }

            fn render(resp: &OverrideResponse) -> String {
                render_override(resp)
            }
        }
    };
}

override_verb!(
    Quarantine,
    "quarantine",
    "Quarantine a peer: its data is no longer applied and its entries are hidden.",
    "An operator's decision, audited. The peer's entries stay stored (for audit) but leave \
     query and search, its sync sessions are dropped, and nothing more it sends is applied, \
     until release. Survives a restart. Costs no context tokens.",
    Override::Quarantine
);
override_verb!(
    Release,
    "release",
    "Lift a peer's quarantine (and forgive its negative reputation).",
    "An operator's decision, audited: its entries show again and its data is applied again. \
     Costs no context tokens.",
    Override::Release
);
override_verb!(
    Ban,
    "ban",
    "Ban a peer: its connections are refused and it is disconnected now.",
    "An operator's decision, audited, remembered across restarts for the ban period (a day \
     by default). Its entries are hidden while it is banned. Costs no context tokens.",
    Override::Ban
);
override_verb!(
    Unban,
    "unban",
    "Lift a peer's ban (and its quarantine and negative reputation).",
    "An operator's decision, audited: the peer may connect again. Costs no context tokens.",
    Override::Unban
);
override_verb!(
    Exonerate,
    "exonerate",
    "Declare a peer innocent of what others reported it for.",
    "An operator's decision, audited: undoes what a quorum of reports did to the peer, and \
     every reporter of it loses reputation for a false report. Costs no context tokens.",
    Override::Exonerate
);

pub(crate) struct Pause;

impl Verb for Pause {
    const NAME: &'static str = "pause";
    const SUMMARY: &'static str =
        "Stop every crossing in or out: queries, search, writes and sync, until resume.";
    const DESCRIPTION: &'static str = "The emergency stop, audited and kept across restarts. \
        While paused, query, search, expose and the other verbs that read or write the \
        shared medium answer 503 with error `paused`, and sync with peers stops; the immune \
        layer keeps working. Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane pause --reason 'suspected poisoning'";
    type Request = PauseRequest;
    type Response = PauseResponse;

    async fn call(ctx: &Ctx, req: PauseRequest) -> Result<PauseResponse, ApiError> {
        let records = ctx.node.pause(req.reason).await?;
        Ok(PauseResponse {
            paused: true,
            audit: records.iter().map(|r| r.index).collect(),
        })
    }

    fn render(resp: &PauseResponse) -> String {
        format!(
            "paused: nothing crosses in or out until `membrane resume` (audit {:?})",
            resp.audit
        )
    }
}

pub(crate) struct Resume;

impl Verb for Resume {
    const NAME: &'static str = "resume";
    const SUMMARY: &'static str = "Lift a pause: crossings and sync start again.";
    const DESCRIPTION: &'static str = "Audited; the node resyncs with every connected peer. \
        Costs no context tokens.";
    const EXAMPLE: &'static str = "membrane resume";
    type Request = PauseRequest;
    type Response = PauseResponse;

    async fn call(ctx: &Ctx, req: PauseRequest) -> Result<PauseResponse, ApiError> {
        let records = ctx.node.resume(req.reason).await?;
        Ok(PauseResponse {
            paused: false,
            audit: records.iter().map(|r| r.index).collect(),
        })
    }

    fn render(resp: &PauseResponse) -> String {
        format!("resumed (audit {:?})", resp.audit)
    }
}

/// A short line for one record: `#index at_ms type who: why`.
fn render_record(r: &AuditRecordView) -> String {
    let e = &r.event;
    let kind = text(&e["type"]);
    let (who, why) = match kind.as_str() {
        "answer" => {
            let entries: Vec<&Value> = e["decisions"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|o| o["entries"].as_array().into_iter().flatten())
                .collect();
            let count = |d: &str| entries.iter().filter(|x| x["decision"] == d).count();
            (
                format!(
                    "{} {:?} in {}",
                    text(&e["verb"]),
                    text(&e["request"]),
                    text(&e["space"])
                ),
                format!(
                    "{} visible, {} hidden, {} denied, {} tokens",
                    count("visible"),
                    count("hidden"),
                    count("denied"),
                    text(&e["tokens"])
                ),
            )
        }
        "budget_charge" => (
            e["space"]
                .as_str()
                .map_or_else(|| "agent".to_owned(), |s| format!("space {s}")),
            format!(
                "{} tokens, {} of {} used{}",
                text(&e["tokens"]),
                text(&e["used"]),
                text(&e["limit"]),
                if e["over"] == true { " (over)" } else { "" }
            ),
        ),
        "pause" => (
            if e["paused"] == true {
                "paused"
            } else {
                "resumed"
            }
            .to_owned(),
            text(&e["reason"]),
        ),
        "breaker" => (
            format!("{} {}", text(&e["key"]["type"]), text(&e["key"]["id"])),
            text(&e["transition"]["to"]),
        ),
        _ => {
            let who = [
                &e["peer"],
                &e["offender"],
                &e["detection"]["offender"],
                &e["key"],
            ]
            .into_iter()
            .find(|v| v.is_string())
            .map(text)
            .unwrap_or_default();
            let why = [
                &e["reason"],
                &e["outcome"],
                &e["detection"]["reason"],
                &e["action"],
            ]
            .into_iter()
            .find(|v| v.is_string())
            .map(text)
            .unwrap_or_default();
            (who, why)
        }
    };
    format!("#{} {} {kind} {who}: {why}", r.index, r.at_ms)
}

pub(crate) struct Audit;

impl Verb for Audit {
    const NAME: &'static str = "audit";
    const SUMMARY: &'static str =
        "Read the node's signed, hash-chained audit log, verified on read.";
    const DESCRIPTION: &'static str = "Every answer that crossed into your context (each \
        entry visible, hidden or denied, and why), budget charge, threat detected or \
        received, quarantine, ban, release, operator override, pause, breaker change and \
        escalated conflict, in order, each signed by this node and linked to the one before. \
        The whole chain is verified when the node starts and each page when read: \
        `verified` says whether all checks out, `problem` names the first bad record. Page \
        with since = the previous `next`; jsonl renders one record per line for export. \
        About 60 tokens per record.";
    const EXAMPLE: &'static str = "membrane audit --since 0 --limit 50";
    const READ_ONLY: bool = true;
    type Request = AuditRequest;
    type Response = AuditResponse;

    async fn call(ctx: &Ctx, req: AuditRequest) -> Result<AuditResponse, ApiError> {
        let limit = req
            .limit
            .unwrap_or(DEFAULT_AUDIT_PAGE)
            .clamp(1, MAX_AUDIT_PAGE as u32) as usize;
        let page = ctx.node.audit(req.since, limit).await?;
        let records = page
            .records
            .iter()
            .map(|r| serde_json::to_value(r).and_then(serde_json::from_value))
            .collect::<Result<Vec<AuditRecordView>, _>>()
            .map_err(internal)?;
        Ok(AuditResponse {
            records,
            next: page.next,
            total: page.total,
            head: hex(&page.head),
            verified: page.problem.is_none(),
            problem: page.problem,
            jsonl: req.jsonl,
        })
    }

    fn render(resp: &AuditResponse) -> String {
        let mut out = String::new();
        if resp.jsonl {
            for r in &resp.records {
                let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            }
            // A consumer reading the export back fails at this line, as it should.
            if let Some(problem) = &resp.problem {
                let _ = writeln!(out, "{}", serde_json::json!({ "problem": problem }));
            }
            return out.trim_end().to_owned();
        }
        for r in &resp.records {
            let _ = writeln!(out, "{}", render_record(r));
        }
        let _ = write!(
            out,
            "{} records (next {} of {}); ",
            resp.records.len(),
            resp.next,
            resp.total
        );
        match &resp.problem {
            None => out.push_str("chain verified"),
            Some(p) => {
                let _ = write!(out, "NOT VERIFIED: {p}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_views_round_trip_into_records() {
        let mut log =
            membrane_immune::AuditLog::new(membrane_protocol::Keypair::from_seed(&[5; 32]));
        let peer = membrane_protocol::Keypair::from_seed(&[6; 32]).public();
        let record = log
            .append(
                7,
                membrane_immune::AuditEvent::Ban {
                    peer,
                    until_ms: 9,
                    reason: "operator".into(),
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let view: AuditRecordView = serde_json::to_value(&record)
            .and_then(serde_json::from_value)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(render_record(&view), format!("#0 7 ban {peer}: operator"));
        let answer = log
            .append(
                8,
                membrane_immune::AuditEvent::answer(
                    "query",
                    "gov",
                    "notes.*",
                    12,
                    [
                        membrane_immune::CrossingDecision::Visible,
                        membrane_immune::CrossingDecision::Hidden,
                        membrane_immune::CrossingDecision::Visible,
                    ]
                    .into_iter()
                    .enumerate()
                    .map(|(i, decision)| membrane_immune::Crossed {
                        key: format!("notes.n{i}"),
                        owner: peer,
                        decision,
                        reason: None,
                    }),
                ),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let answer_view: AuditRecordView = serde_json::to_value(&answer)
            .and_then(serde_json::from_value)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render_record(&answer_view),
            "#1 8 answer query \"notes.*\" in gov: 2 visible, 1 hidden, 0 denied, 12 tokens"
        );
        let back: AuditRecord = serde_json::to_value(&view)
            .and_then(serde_json::from_value)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, record);
    }
}
