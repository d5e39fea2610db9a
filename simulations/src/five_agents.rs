//! The five-agent scenario (`shared/scenarios/five-agents.md`) over five real nodes.
//!
//! Each agent has its own node in this process (libp2p memory transport, full mesh) with
//! its own HTTP API; every step goes through the agent's client (`Client::call`), and every
//! wait follows the node's event stream (`GET /v1/events`), re-checking after each event,
//! bounded by a deadline. [`run`] stops at the first outcome that differs from the
//! scenario and names its step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use membrane_protocol::Space;
use membrane_protocol::cost::TokenCounter;
use serde_json::{Value, json};

use crate::apinode::{ApiNode, keypair};

/// The space the scenario runs in.
pub const SPACE: &str = "climate-brief";
/// The trusted-tier threshold the scenario assumes (the node's default).
const THRESHOLD: f64 = 0.5;

/// The agents and their capabilities, in start order.
pub const AGENTS: [(&str, [&str; 3]); 5] = [
    ("orchestrator", ["coordination", "planning", "synthesis"]),
    ("researcher", ["research", "fact_check", "data_analysis"]),
    ("writer", ["writing", "drafting", "summarization"]),
    ("editor", ["editing", "reviewing", "style"]),
    ("reviewer", ["reviewing", "critique", "quality_check"]),
];
const ORCHESTRATOR: usize = 0;
const RESEARCHER: usize = 1;
const WRITER: usize = 2;
const EDITOR: usize = 3;
const REVIEWER: usize = 4;

/// The directed trust edges of step 2.
const TRUST: [(usize, usize, f64); 6] = [
    (ORCHESTRATOR, WRITER, 0.7),
    (ORCHESTRATOR, EDITOR, 0.7),
    (ORCHESTRATOR, RESEARCHER, 0.7),
    (WRITER, EDITOR, 0.9),
    (EDITOR, WRITER, 0.9),
    (EDITOR, REVIEWER, 0.8),
];

/// The design documents' own figures for the scenario, in one process without a network.
pub const DESIGN_FIGURES: &str =
    "32 events, 8 visible entries, 4 subscriptions, 1 broadcast, 1 swarm, 22 ms wall clock";

/// How to run it.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seeds the agents' keys (so their peer ids repeat from run to run).
    pub seed: u64,
    /// Longest any one wait may take.
    pub deadline: Duration,
}

impl Options {
    /// For CI: the same scenario, waiting at most 20 s for any one outcome.
    pub fn quick() -> Self {
        Self {
            seed: 7,
            deadline: Duration::from_secs(20),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 1,
            deadline: Duration::from_secs(60),
        }
    }
}

/// An entry of the final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// Its key.
    pub key: String,
    /// Its owner's agent name.
    pub owner: String,
    /// Its tier.
    pub tier: String,
    /// Its value.
    pub value: String,
    /// Retracted (kept for audit, visible to nobody).
    pub retracted: bool,
}

/// Counts of what happened, for comparison with the design documents' figures.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// State-changing calls the agents made (register, trust, subscribe, expose, retract,
    /// swarm verbs, broadcast).
    pub actions: usize,
    /// Read calls the agents made (query, swarms, trusts, events).
    pub reads: usize,
    /// Events in each node's log at the end, by agent name.
    pub events_per_node: Vec<(String, u64)>,
    /// Events of every node's log at the end, by type, summed over nodes.
    pub events_by_type: BTreeMap<String, u64>,
    /// Live shared entries (public or trusted, not retracted, not coordination records).
    pub visible_entries: usize,
    /// Private entries.
    pub private_entries: usize,
    /// Retracted entries.
    pub retracted_entries: usize,
    /// Subscriptions made.
    pub subscriptions: usize,
    /// Broadcasts sent, and deliveries observed on other nodes' streams.
    pub broadcasts: usize,
    /// Broadcast deliveries observed.
    pub deliveries: usize,
    /// Swarms at the end.
    pub swarms: usize,
    /// Trust edges at the end.
    pub trust_edges: usize,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One line per action and its observed outcome.
    pub transcript: Vec<String>,
    /// The final state.
    pub state: Vec<StateRow>,
    /// The swarm as every node sees it.
    pub swarm: String,
    /// Wall clock of the script, from the first register to the last check (the mesh
    /// start-up before it is not included, the late joiner is).
    pub wall: Duration,
    /// Time to start five nodes and connect them in a full mesh.
    pub setup: Duration,
    /// Outcomes checked.
    pub checks: usize,
    /// Counts.
    pub counts: Counts,
}

/// The first outcome that differed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The scenario step.
    pub step: String,
    /// What was expected and what was observed.
    pub detail: String,
    /// The transcript up to the failure.
    pub transcript: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} failed: {}", self.step, self.detail)
    }
}

impl std::error::Error for Failure {}

/// A written entry, as the script knows it.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    owner: usize,
    tier: &'static str,
    value: String,
    id: String,
    retracted: bool,
}

struct Run {
    nodes: Vec<ApiNode>,
    names: BTreeMap<String, String>,
    transcript: Vec<String>,
    start: Instant,
    step: String,
    checks: usize,
    counts: Counts,
    written: Vec<Written>,
    deadline: Duration,
}

fn hits(answer: &Value) -> Vec<Value> {
    answer["hits"].as_array().cloned().unwrap_or_default()
}

fn keys_of(answer: &Value) -> Vec<String> {
    let mut keys: Vec<String> = hits(answer)
        .iter()
        .filter_map(|h| h["key"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

fn denied(answer: &Value) -> Vec<(String, String)> {
    answer["denied"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| {
                    (
                        x["key"].as_str().unwrap_or_default().to_owned(),
                        x["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A swarm with its members sorted, for comparison across nodes.
fn normalised_swarm(answer: &Value, slug: &str) -> Value {
    let mut swarm = answer["swarms"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["swarm"] == slug).cloned())
        .unwrap_or(Value::Null);
    if let Some(members) = swarm.get_mut("members").and_then(Value::as_array_mut) {
        members.sort_by_key(ToString::to_string);
    }
    swarm
}

fn normalised_trusts(answer: &Value) -> BTreeSet<(String, String, String)> {
    answer["edges"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    (
                        text(&e["truster"]),
                        text(&e["trustee"]),
                        format!("{:.2}", e["score"].as_f64().unwrap_or(-1.0)),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Run {
    fn name(&self, i: usize) -> &'static str {
        AGENTS.get(i).map_or("latecomer", |a| a.0)
    }

    fn peer(&self, i: usize) -> String {
        self.nodes[i].peer.clone()
    }

    fn say(&mut self, who: usize, action: &str, outcome: impl AsRef<str>) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        let line = format!(
            "{ms:>8.1} ms  {:<12} {action:<44} -> {}",
            self.name(who),
            outcome.as_ref()
        );
        self.transcript.push(line);
    }

    fn check(&mut self, ok: bool, detail: impl FnOnce() -> String) -> anyhow::Result<()> {
        self.checks += 1;
        anyhow::ensure!(ok, "{}", detail());
        Ok(())
    }

    async fn act(&mut self, who: usize, verb: &str, body: Value) -> anyhow::Result<Value> {
        self.counts.actions += 1;
        self.nodes[who]
            .call(verb, body)
            .await
            .map_err(|e| anyhow::anyhow!("{} {verb}: {e}", self.name(who)))
    }

    async fn read(&mut self, who: usize, verb: &str, body: Value) -> anyhow::Result<Value> {
        self.counts.reads += 1;
        self.nodes[who]
            .call(verb, body)
            .await
            .map_err(|e| anyhow::anyhow!("{} {verb}: {e}", self.name(who)))
    }

    /// Reads `verb` at `who` until `done` holds (re-reading after each of the node's
    /// events), and returns the answer that satisfied it.
    async fn read_until(
        &mut self,
        who: usize,
        verb: &str,
        body: Value,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let node = &self.nodes[who];
        let reads = std::cell::Cell::new(0usize);
        let (body, done, reads_ref) = (&body, &done, &reads);
        let answer = node
            .until(what, self.deadline, || async move {
                reads_ref.set(reads_ref.get() + 1);
                let answer = node.call(verb, body.clone()).await?;
                Ok(done(&answer).then_some(answer))
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} {verb}: {e}",
                    AGENTS.get(who).map_or("latecomer", |a| a.0)
                )
            })?;
        self.counts.reads += reads.get();
        Ok(answer)
    }

    async fn expose(
        &mut self,
        who: usize,
        key: &str,
        value: &str,
        tier: &'static str,
        extra: Value,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "key": key, "value": value, "tier": tier });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let answer = self.act(who, "expose", body).await?;
        let id = text(&answer["id"]);
        self.check(id.len() == 64 && answer["tier"] == tier, || {
            format!("expose {key} answered {answer}, expected a 64-hex id at tier {tier}")
        })?;
        self.say(
            who,
            &format!("expose {key} ({tier})"),
            format!("id {}…, seq {}", &id[..12], answer["seq"]),
        );
        self.written.push(Written {
            key: key.to_owned(),
            owner: who,
            tier,
            value: value.to_owned(),
            id: id.clone(),
            retracted: false,
        });
        Ok(id)
    }

    fn trust_of(&self, from: usize, to: usize) -> f64 {
        TRUST
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
            .map_or(0.0, |e| e.2)
    }

    /// The live shared or own entries `reader` may see, as (key, owner peer, id).
    fn expected_view(&self, reader: usize) -> BTreeSet<(String, String, String)> {
        self.written
            .iter()
            .filter(|w| !w.retracted)
            .filter(|w| match w.tier {
                "public" => true,
                "trusted" => w.owner == reader || self.trust_of(w.owner, reader) >= THRESHOLD,
                _ => w.owner == reader,
            })
            .map(|w| (w.key.clone(), self.peer(w.owner), w.id.clone()))
            .collect()
    }
}

fn view_of(answer: &Value) -> BTreeSet<(String, String, String)> {
    hits(answer)
        .iter()
        .filter(|h| !text(&h["key"]).starts_with("coord."))
        .map(|h| (text(&h["key"]), text(&h["owner"]), text(&h["id"])))
        .collect()
}

/// Runs the scenario. `tokens` counts tokens for every node (o200k in the binary).
pub async fn run(options: Options, tokens: Arc<dyn TokenCounter>) -> Result<Outcome, Failure> {
    let space: Space = SPACE.parse().map_err(|e| Failure {
        step: "setup".into(),
        detail: format!("space {SPACE}: {e}"),
        transcript: Vec::new(),
    })?;
    let setup_start = Instant::now();
    let mut nodes: Vec<ApiNode> = Vec::new();
    let setup = async {
        for i in 0..AGENTS.len() {
            let boot: Vec<String> = nodes.iter().flat_map(|n| n.addrs.clone()).collect();
            nodes.push(
                ApiNode::start(keypair(options.seed, i), &space, &boot, Arc::clone(&tokens))
                    .await?,
            );
        }
        for node in &nodes {
            node.wait_peers(AGENTS.len() - 1, options.deadline).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = setup {
        for node in nodes {
            node.stop().await;
        }
        return Err(Failure {
            step: "setup (five nodes in a full mesh)".into(),
            detail: e.to_string(),
            transcript: Vec::new(),
        });
    }
    let setup = setup_start.elapsed();
    let names = nodes
        .iter()
        .zip(AGENTS)
        .map(|(n, a)| (n.peer.clone(), a.0.to_owned()))
        .collect();
    let mut run = Run {
        nodes,
        names,
        transcript: Vec::new(),
        start: Instant::now(),
        step: "1".into(),
        checks: 0,
        counts: Counts::default(),
        written: Vec::new(),
        deadline: options.deadline,
    };
    let result = script(&mut run, &space, options, &tokens).await;
    let wall = run.start.elapsed();
    let Run {
        nodes,
        transcript,
        step,
        checks,
        counts,
        written,
        ..
    } = run;
    for node in nodes {
        node.stop().await;
    }
    match result {
        Ok(swarm) => {
            let state = written
                .iter()
                .map(|w| StateRow {
                    key: w.key.clone(),
                    owner: AGENTS[w.owner].0.to_owned(),
                    tier: w.tier.to_owned(),
                    value: w.value.clone(),
                    retracted: w.retracted,
                })
                .collect();
            Ok(Outcome {
                transcript,
                state,
                swarm,
                wall,
                setup,
                checks,
                counts,
            })
        }
        Err(e) => Err(Failure {
            step,
            detail: format!("{e:#}"),
            transcript,
        }),
    }
}

async fn script(
    run: &mut Run,
    space: &Space,
    options: Options,
    tokens: &Arc<dyn TokenCounter>,
) -> anyhow::Result<String> {
    let n = AGENTS.len();

    run.step = "1 (all five register with their capabilities)".into();
    for (i, (name, caps)) in AGENTS.iter().enumerate() {
        let capabilities: Vec<Value> = caps
            .iter()
            .map(|c| json!({ "name": c, "description": format!("{c} for the brief") }))
            .collect();
        let answer = run
            .act(
                i,
                "register",
                json!({ "name": name, "capabilities": capabilities }),
            )
            .await?;
        let got: Vec<String> = answer["capabilities"]
            .as_array()
            .map(|c| c.iter().map(|c| text(&c["name"])).collect())
            .unwrap_or_default();
        run.check(
            answer["name"] == *name && got == caps.to_vec() && answer["peer"] == run.peer(i),
            || format!("register {name} answered {answer}"),
        )?;
        run.say(i, "register", caps.join(", "));
    }
    // Every card reaches every node (cards are signed entries of the medium).
    for (i, (agent, _)) in AGENTS.iter().enumerate() {
        let answer = run
            .read_until(
                i,
                "query",
                json!({ "pattern": "coord.agents.*" }),
                "all five capability cards",
                |a| hits(a).len() >= n,
            )
            .await?;
        let count = hits(&answer).len();
        run.check(count == n, || format!("{count} cards at {agent}"))?;
    }
    run.say(
        ORCHESTRATOR,
        "(every node)",
        "5 capability cards seen on all 5 nodes",
    );

    run.step = "2 (the trust edges are set)".into();
    for (from, to, score) in TRUST {
        let peer = run.peer(to);
        let answer = run
            .act(from, "trust", json!({ "peer": peer, "score": score }))
            .await?;
        run.check(text(&answer["id"]).len() == 64, || {
            format!("trust answered {answer}")
        })?;
        run.say(
            from,
            &format!("trust {} {score}", AGENTS[to].0),
            "signed edge",
        );
    }
    let expected_edges: BTreeSet<(String, String, String)> = TRUST
        .iter()
        .map(|(f, t, s)| (run.peer(*f), run.peer(*t), format!("{s:.2}")))
        .collect();
    for (i, (agent, _)) in AGENTS.iter().enumerate() {
        let want = expected_edges.clone();
        let answer = run
            .read_until(i, "trusts", json!({}), "the six trust edges", move |a| {
                normalised_trusts(a) == want
            })
            .await?;
        let edges = normalised_trusts(&answer).len();
        run.check(edges == TRUST.len(), || format!("{edges} edges at {agent}"))?;
    }
    run.say(
        ORCHESTRATOR,
        "(every node) trusts",
        "the same 6 edges on all 5 nodes",
    );

    // Four subscriptions, as in the design documents' run.
    let mut subscriptions = Vec::new();
    for (who, pattern) in [
        (RESEARCHER, "tasks.**"),
        (WRITER, "findings.**"),
        (EDITOR, "drafts.**"),
        (WRITER, "feedback.**"),
    ] {
        let answer = run
            .act(who, "subscribe", json!({ "patterns": [pattern] }))
            .await?;
        let id = text(&answer["subscription"]);
        run.check(!id.is_empty(), || format!("subscribe answered {answer}"))?;
        run.say(
            who,
            &format!("subscribe {pattern}"),
            format!("subscription {id}"),
        );
        subscriptions.push((who, pattern, id));
    }
    run.counts.subscriptions = subscriptions.len();

    run.step = "3 (orchestrator exposes tasks.brief public)".into();
    let brief_text = "Write a 500-word brief on how cities adapt to climate change: heat \
                      islands, coastal risk and green infrastructure, citing findings.";
    let brief = run
        .expose(
            ORCHESTRATOR,
            "tasks.brief",
            brief_text,
            "public",
            json!({"kind": "task"}),
        )
        .await?;

    run.step = "4 (researcher queries tasks.* -> one hit, the brief)".into();
    let arrived = run.nodes[RESEARCHER]
        .wait_event("the brief at the researcher", run.deadline, |e| {
            e.kind == "arrived" && e.key.as_deref() == Some("tasks.brief")
        })
        .await?;
    run.check(arrived.id.as_deref() == Some(brief.as_str()), || {
        format!("arrived event {arrived:?}")
    })?;
    let answer = run
        .read(RESEARCHER, "query", json!({"pattern": "tasks.*"}))
        .await?;
    let h = hits(&answer);
    run.check(
        h.len() == 1 && h[0]["id"] == brief && h[0]["value"] == brief_text,
        || format!("expected exactly the brief, got {answer}"),
    )?;
    run.say(
        RESEARCHER,
        "query tasks.*",
        format!(
            "1 hit: tasks.brief by orchestrator ({} tokens)",
            answer["tokens"]
        ),
    );

    run.step = "5 (researcher exposes three public findings and one private note)".into();
    let findings = [
        (
            "findings.heat_islands",
            "Urban heat islands leave city centres 1-3 C warmer than their surroundings on \
             average and up to 12 C warmer on calm nights (US EPA).",
        ),
        (
            "findings.coastal_risk",
            "About 11% of the world's population lives in low-elevation coastal zones exposed \
             to sea-level rise and storm surge (IPCC AR6 WGII).",
        ),
        (
            "findings.green_infra",
            "Street trees and green roofs cut peak surface temperatures by 15-20 C and absorb \
             stormwater runoff (EEA 2021).",
        ),
    ];
    let mut finding_ids = Vec::new();
    for (key, value) in findings {
        let id = run
            .expose(
                RESEARCHER,
                key,
                value,
                "public",
                json!({"kind": "finding", "evidence": "external_source"}),
            )
            .await?;
        finding_ids.push(id);
    }
    let private_note = "Coastal figure still to double-check; the EPA range may be outdated.";
    run.expose(
        RESEARCHER,
        "findings.notes_internal",
        private_note,
        "private",
        json!({}),
    )
    .await?;

    run.step = "6 (writer queries findings.* -> exactly 3 hits, the private note hidden)".into();
    let answer = run
        .read_until(
            WRITER,
            "query",
            json!({"pattern": "findings.*"}),
            "three findings and the private trace at the writer",
            |a| hits(a).len() >= 3 && a["hidden"].as_u64().unwrap_or(0) >= 1,
        )
        .await?;
    let want: Vec<String> = {
        let mut k: Vec<String> = findings.iter().map(|f| f.0.to_owned()).collect();
        k.sort();
        k
    };
    run.check(keys_of(&answer) == want, || {
        format!("expected {want:?}, got {answer}")
    })?;
    run.check(answer["hidden"] == 1, || {
        format!("expected 1 hidden entry, got {answer}")
    })?;
    run.check(!answer.to_string().contains("double-check"), || {
        format!("the private note's value leaked: {answer}")
    })?;
    run.say(
        WRITER,
        "query findings.*",
        format!(
            "3 hits, 1 hidden (value not shown), {} tokens",
            answer["tokens"]
        ),
    );

    run.step = "7 (writer exposes three drafts trusted)".into();
    let drafts = [
        (
            "drafts.intro",
            "Cities are where climate change is felt first: hotter streets, higher seas.",
        ),
        (
            "drafts.body",
            "Heat islands add up to 12 C on calm nights; trees and green roofs cut peak \
             surface heat by 15-20 C. One person in nine lives in low coastal zones.",
        ),
        (
            "drafts.outro",
            "Adaptation is local: shade, drainage and setbacks, planned a decade ahead.",
        ),
    ];
    let mut draft_ids = BTreeMap::new();
    for (key, value) in drafts {
        let id = run
            .expose(WRITER, key, value, "trusted", json!({"kind": "draft"}))
            .await?;
        draft_ids.insert(key, id);
    }

    run.step = "8 (reviewer queries drafts.* -> denied with the reason)".into();
    let reason = "writer's trust in reviewer is 0.00 < 0.50";
    let answer = run
        .read_until(
            REVIEWER,
            "query",
            json!({"pattern": "drafts.*"}),
            "three denied drafts at the reviewer",
            |a| denied(a).len() >= 3,
        )
        .await?;
    let d = denied(&answer);
    run.check(hits(&answer).is_empty(), || {
        format!("the reviewer sees drafts: {answer}")
    })?;
    run.check(d.len() == 3 && d.iter().all(|(_, r)| r == reason), || {
        format!("expected 3 denials with \"{reason}\", got {answer}")
    })?;
    run.check(!answer.to_string().contains("hotter streets"), || {
        format!("a draft's value leaked to the reviewer: {answer}")
    })?;
    run.say(REVIEWER, "query drafts.*", format!("denied x3: {reason}"));

    run.step = "9 (editor queries drafts.* -> 3 hits)".into();
    let answer = run
        .read_until(
            EDITOR,
            "query",
            json!({"pattern": "drafts.*"}),
            "three drafts at the editor",
            |a| hits(a).len() >= 3,
        )
        .await?;
    run.check(
        keys_of(&answer) == ["drafts.body", "drafts.intro", "drafts.outro"],
        || format!("expected the three drafts, got {answer}"),
    )?;
    run.say(
        EDITOR,
        "query drafts.*",
        format!(
            "3 hits (writer trusts editor 0.9), {} tokens",
            answer["tokens"]
        ),
    );

    run.step = "10 (editor exposes feedback trusted; writer queries feedback.* -> 2 hits)".into();
    let mut feedback_ids = Vec::new();
    for (key, value) in [
        (
            "feedback.intro",
            "Open with a concrete city example rather than a general claim.",
        ),
        (
            "feedback.body",
            "Give the source for the 15-20 C figure and say it is surface, not air, temperature.",
        ),
    ] {
        let id = run
            .expose(EDITOR, key, value, "trusted", json!({"kind": "feedback"}))
            .await?;
        feedback_ids.push(id);
    }
    let answer = run
        .read_until(
            WRITER,
            "query",
            json!({"pattern": "feedback.*"}),
            "the editor's feedback at the writer",
            |a| hits(a).len() >= 2,
        )
        .await?;
    run.check(
        keys_of(&answer) == ["feedback.body", "feedback.intro"],
        || format!("expected the two feedback entries, got {answer}"),
    )?;
    run.say(
        WRITER,
        "query feedback.*",
        format!(
            "2 hits (editor trusts writer 0.9), {} tokens",
            answer["tokens"]
        ),
    );

    run.step = "11 (writer retracts drafts.intro)".into();
    let intro = draft_ids.get("drafts.intro").cloned().unwrap_or_default();
    let answer = run
        .act(WRITER, "retract", json!({"key": "drafts.intro"}))
        .await?;
    let record = text(&answer["id"]);
    run.check(record.len() == 64 && record != intro, || {
        format!("retract answered {answer}; expected a new signed record's id")
    })?;
    if let Some(w) = run.written.iter_mut().find(|w| w.id == intro) {
        w.retracted = true;
    }
    run.say(
        WRITER,
        "retract drafts.intro",
        format!("retraction record {}…", &record[..12]),
    );
    let withdrawn = run.nodes[EDITOR]
        .wait_event("the retraction at the editor", run.deadline, |e| {
            e.kind == "withdrawn" && e.id.as_deref() == Some(intro.as_str())
        })
        .await?;
    let writer_peer = run.peer(WRITER);
    run.check(
        withdrawn.from.as_deref() == Some(writer_peer.as_str()),
        || format!("withdrawn event {withdrawn:?} not from the writer"),
    )?;
    for who in [WRITER, EDITOR] {
        let answer = run
            .read(who, "query", json!({"pattern": "drafts.*"}))
            .await?;
        run.check(keys_of(&answer) == ["drafts.body", "drafts.outro"], || {
            format!("drafts.intro still visible at {}: {answer}", AGENTS[who].0)
        })?;
    }
    let answer = run
        .read_until(
            REVIEWER,
            "query",
            json!({"pattern": "drafts.*"}),
            "the retraction at the reviewer",
            |a| denied(a).len() <= 2,
        )
        .await?;
    run.check(
        hits(&answer).is_empty() && !denied(&answer).iter().any(|(k, _)| k == "drafts.intro"),
        || format!("drafts.intro still listed at the reviewer: {answer}"),
    )?;
    for who in [ORCHESTRATOR, RESEARCHER] {
        let answer = run
            .read(who, "query", json!({"pattern": "drafts.*"}))
            .await?;
        run.check(hits(&answer).is_empty(), || {
            format!("{} sees drafts: {answer}", AGENTS[who].0)
        })?;
    }
    run.say(
        EDITOR,
        "(stream) withdrawn drafts.intro",
        "gone from every agent's query (writer, editor: drafts.body, drafts.outro)",
    );

    run.step = "12 (writer exposes final.brief public with its parents)".into();
    let mut parents: Vec<String> = finding_ids.clone();
    parents.extend(feedback_ids.iter().cloned());
    let final_text = "How cities adapt to climate change: cooling heat islands with trees \
                      and green roofs, planning for coastal risk, and building green \
                      infrastructure that also drains storms.";
    let final_id = run
        .expose(
            WRITER,
            "final.brief",
            final_text,
            "public",
            json!({"kind": "result", "parents": parents}),
        )
        .await?;
    let answer = run
        .read_until(
            ORCHESTRATOR,
            "query",
            json!({"pattern": "final.*"}),
            "the final brief at the orchestrator",
            |a| !hits(a).is_empty(),
        )
        .await?;
    let h = hits(&answer);
    let got_parents: BTreeSet<String> = h[0]["parents"]
        .as_array()
        .map(|p| p.iter().map(text).collect())
        .unwrap_or_default();
    let want_parents: BTreeSet<String> = parents.iter().cloned().collect();
    run.check(
        h.len() == 1 && h[0]["id"] == final_id && got_parents == want_parents,
        || format!("final.brief at the orchestrator: {answer}, expected parents {want_parents:?}"),
    )?;
    run.say(
        ORCHESTRATOR,
        "query final.*",
        "final.brief with 5 parents (3 findings, 2 feedback)",
    );

    run.step = "13 (orchestrator creates swarm Final Review, reviewing, threshold 2)".into();
    let answer = run
        .act(
            ORCHESTRATOR,
            "swarm-create",
            json!({"name": "Final Review", "capability": "reviewing", "threshold": 2}),
        )
        .await?;
    run.check(
        answer["swarm"] == "final-review"
            && answer["state"] == "forming"
            && answer["members"].as_array().is_some_and(Vec::is_empty),
        || format!("swarm-create answered {answer}"),
    )?;
    run.say(
        ORCHESTRATOR,
        "swarm-create \"Final Review\"",
        "final-review forming, 0/2",
    );

    run.step = "14 (editor joins 1/2; researcher refused; reviewer joins 2/2, active)".into();
    let has_swarm = |a: &Value| normalised_swarm(a, "final-review") != Value::Null;
    run.read_until(
        EDITOR,
        "swarms",
        json!({}),
        "the swarm at the editor",
        has_swarm,
    )
    .await?;
    let answer = run
        .act(EDITOR, "swarm-join", json!({"swarm": "final-review"}))
        .await?;
    run.check(
        answer["state"] == "forming" && answer["members"].as_array().map(Vec::len) == Some(1),
        || format!("the editor's join answered {answer}; expected 1/2 forming"),
    )?;
    run.say(
        EDITOR,
        "swarm-join final-review",
        "members 1/2, forming (not active)",
    );
    run.read_until(
        RESEARCHER,
        "swarms",
        json!({}),
        "the swarm at the researcher",
        has_swarm,
    )
    .await?;
    run.counts.actions += 1;
    let refused = run.nodes[RESEARCHER]
        .call("swarm-join", json!({"swarm": "final-review"}))
        .await;
    let message = match &refused {
        Ok(v) => format!("accepted: {v}"),
        Err(e) => e.to_string(),
    };
    run.check(
        refused.is_err() && message.contains("lacks reviewing"),
        || format!("expected the researcher refused for lacking reviewing, got {message}"),
    )?;
    run.say(
        RESEARCHER,
        "swarm-join final-review",
        format!(
            "refused: {}",
            message.split(" (").next().unwrap_or(&message)
        ),
    );
    run.read_until(
        REVIEWER,
        "swarms",
        json!({}),
        "the editor's membership at the reviewer",
        |a| {
            normalised_swarm(a, "final-review")["members"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        },
    )
    .await?;
    let answer = run
        .act(REVIEWER, "swarm-join", json!({"swarm": "final-review"}))
        .await?;
    run.check(
        answer["state"] == "active" && answer["members"].as_array().map(Vec::len) == Some(2),
        || format!("the reviewer's join answered {answer}; expected 2/2 active"),
    )?;
    run.say(REVIEWER, "swarm-join final-review", "members 2/2, active");
    for i in 0..n {
        let event = run.nodes[i]
            .wait_event("the swarm's activation", run.deadline, |e| {
                e.kind == "swarm"
                    && e.key.as_deref() == Some("coord.swarms.final-review")
                    && e.text.as_deref().is_some_and(|t| t.starts_with("active"))
            })
            .await?;
        run.check(event.space == SPACE, || {
            format!("activation event {event:?}")
        })?;
    }
    run.say(
        ORCHESTRATOR,
        "(every node's stream)",
        "swarm final-review active",
    );

    run.step = "15 (writer broadcasts \"Brief complete\" -> delivered to the 4 others)".into();
    run.act(WRITER, "broadcast", json!({"message": "Brief complete"}))
        .await?;
    run.counts.broadcasts = 1;
    for i in (0..n).filter(|&i| i != WRITER) {
        let wp = writer_peer.clone();
        let event = run.nodes[i]
            .wait_event("the broadcast", run.deadline, move |e| {
                e.kind == "broadcast"
                    && e.text.as_deref() == Some("Brief complete")
                    && e.from.as_deref() == Some(wp.as_str())
            })
            .await?;
        run.check(event.space == SPACE, || {
            format!("broadcast event {event:?}")
        })?;
        run.counts.deliveries += 1;
    }
    run.say(
        WRITER,
        "broadcast \"Brief complete\"",
        "delivered to 4/4 other agents",
    );

    run.step = "16 (final state consistent on every node; a late joiner replays it)".into();
    for i in 0..n {
        let want = run.expected_view(i);
        let answer = run
            .read_until(
                i,
                "query",
                json!({"pattern": "**"}),
                "the final view",
                move |a| view_of(a) == want,
            )
            .await?;
        run.check(!view_of(&answer).is_empty(), || "empty view".into())?;
    }
    run.say(
        ORCHESTRATOR,
        "(every node) query **",
        "each node sees exactly the entries its trust allows",
    );
    // Public coordination records (cards, the swarm, memberships) are the same everywhere.
    let mut coord = Vec::new();
    for i in 0..n {
        let answer = run.read(i, "query", json!({"pattern": "coord.**"})).await?;
        let ids: BTreeSet<String> = hits(&answer).iter().map(|h| text(&h["id"])).collect();
        coord.push(ids);
    }
    run.check(coord.windows(2).all(|w| w[0] == w[1]), || {
        format!("coordination records differ across nodes: {coord:?}")
    })?;
    let mut swarms = Vec::new();
    let mut trusts = Vec::new();
    for i in 0..n {
        let s = run.read(i, "swarms", json!({})).await?;
        swarms.push(normalised_swarm(&s, "final-review"));
        run.counts.swarms = s["swarms"].as_array().map_or(0, Vec::len);
        let t = run.read(i, "trusts", json!({})).await?;
        trusts.push(normalised_trusts(&t));
    }
    run.check(swarms.windows(2).all(|w| w[0] == w[1]), || {
        format!("the swarm differs across nodes: {swarms:?}")
    })?;
    run.check(
        swarms[0]["state"] == "active" && swarms[0]["members"].as_array().map(Vec::len) == Some(2),
        || format!("the swarm at the end: {}", swarms[0]),
    )?;
    run.check(trusts.iter().all(|t| *t == expected_edges), || {
        format!("trust edges differ: {trusts:?}")
    })?;
    run.counts.trust_edges = expected_edges.len();
    // Each subscription delivered its keys' events, and only those (or broadcasts).
    for (who, pattern, id) in &subscriptions {
        let answer = run
            .read(*who, "events", json!({"subscription": id, "limit": 1000}))
            .await?;
        let events = answer["events"].as_array().cloned().unwrap_or_default();
        let prefix = pattern.trim_end_matches("**");
        let keyed: BTreeSet<String> = events
            .iter()
            .filter_map(|e| e["key"].as_str().map(str::to_owned))
            .collect();
        let stray: Vec<&String> = keyed.iter().filter(|k| !k.starts_with(prefix)).collect();
        let wanted: BTreeSet<String> = run
            .written
            .iter()
            .filter(|w| w.key.starts_with(prefix) && w.tier != "private")
            .map(|w| w.key.clone())
            .collect();
        run.check(stray.is_empty() && wanted.is_subset(&keyed), || {
            format!(
                "subscription {id} ({pattern}) at {}: keys {keyed:?}, expected {wanted:?}",
                AGENTS[*who].0
            )
        })?;
    }
    run.say(
        WRITER,
        "(4 subscriptions) events",
        "each delivered exactly its keys' events",
    );
    // Nothing was refused anywhere: every change merged passed signature verification.
    for (i, (agent, _)) in AGENTS.iter().enumerate() {
        let rejected: Vec<_> = run.nodes[i]
            .events()
            .into_iter()
            .filter(|e| e.kind == "rejected")
            .collect();
        let metrics = run.nodes[i].handle.metrics().encode();
        let refused = metric(&metrics, "membrane_changes_rejected_total");
        run.check(rejected.is_empty() && refused == Some(0.0), || {
            format!("{agent} rejected changes: {rejected:?}, metric {refused:?}")
        })?;
    }
    run.say(
        ORCHESTRATOR,
        "(every node) rejected changes",
        "0: every merged change verified",
    );

    // A node started afterwards joins the space and replays the same history.
    let boot: Vec<String> = run.nodes.iter().flat_map(|n| n.addrs.clone()).collect();
    let late = ApiNode::start(keypair(options.seed, n), space, &boot, Arc::clone(tokens)).await?;
    run.nodes.push(late);
    let late_i = n;
    run.act(late_i, "register", json!({"name": "latecomer"}))
        .await?;
    let want = run.expected_view(late_i);
    let want_coord = coord[0].clone();
    let answer = run
        .read_until(
            late_i,
            "query",
            json!({"pattern": "**"}),
            "the replayed history at the late joiner",
            move |a| {
                let coord_ids: BTreeSet<String> = hits(a)
                    .iter()
                    .filter(|h| text(&h["key"]).starts_with("coord."))
                    .map(|h| text(&h["id"]))
                    .collect();
                view_of(a) == want && want_coord.is_subset(&coord_ids)
            },
        )
        .await?;
    let replayed = view_of(&answer).len();
    let want_edges = expected_edges.clone();
    run.read_until(
        late_i,
        "trusts",
        json!({}),
        "the trust edges at the late joiner",
        move |a| normalised_trusts(a) == want_edges,
    )
    .await?;
    let want_swarm = swarms[0].clone();
    run.read_until(
        late_i,
        "swarms",
        json!({}),
        "the swarm at the late joiner",
        move |a| normalised_swarm(a, "final-review") == want_swarm,
    )
    .await?;
    let late_drafts = run
        .read(late_i, "query", json!({"pattern": "drafts.*"}))
        .await?;
    run.check(
        hits(&late_drafts).is_empty()
            && !denied(&late_drafts)
                .iter()
                .any(|(k, _)| k == "drafts.intro"),
        || format!("the late joiner's drafts: {late_drafts}"),
    )?;
    run.say(
        late_i,
        "start, join climate-brief, query **",
        format!(
            "replayed {replayed} public entries, the swarm and 6 trust edges; drafts.intro stays retracted"
        ),
    );

    // Counts.
    for (i, (agent, _)) in AGENTS.iter().enumerate() {
        let mut since = 0u64;
        let mut total = 0u64;
        loop {
            let answer = run
                .read(i, "events", json!({"since": since, "limit": 1000}))
                .await?;
            let events = answer["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            for e in &events {
                *run.counts
                    .events_by_type
                    .entry(text(&e["type"]))
                    .or_default() += 1;
            }
            total += events.len() as u64;
            since = answer["next"].as_u64().unwrap_or(u64::MAX);
        }
        run.counts
            .events_per_node
            .push(((*agent).to_owned(), total));
    }
    run.counts.visible_entries = run
        .written
        .iter()
        .filter(|w| !w.retracted && w.tier != "private")
        .count();
    run.counts.private_entries = run.written.iter().filter(|w| w.tier == "private").count();
    run.counts.retracted_entries = run.written.iter().filter(|w| w.retracted).count();
    let swarm = format!(
        "final-review ({}, capability {}, threshold {}): members {}",
        swarms[0]["state"].as_str().unwrap_or("?"),
        swarms[0]["capability"].as_str().unwrap_or("?"),
        swarms[0]["threshold"],
        swarms[0]["members"]
            .as_array()
            .map(|m| m
                .iter()
                .map(|p| run.names.get(&text(p)).cloned().unwrap_or_else(|| text(p)))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    Ok(swarm)
}

/// A counter's value in OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
