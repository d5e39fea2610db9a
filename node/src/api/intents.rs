//! Intent verbs: quorum sensing. An agent says what it wants to work on and how much
//! (`intent`); every node sums the decaying strengths per topic (`intents`), and when
//! enough distinct agents want the same thing a quorum event reaches every agent (and, if
//! the node runs with `--intent-swarms`, a swarm forms around the topic).

use std::fmt::Write as _;

use membrane_crdt::intents::TopicView;
use membrane_protocol::Score;
use membrane_protocol::signals::MAX_TOPIC_BYTES;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::state::Ctx;
use super::verbs::{Verb, short_peer};

/// `intent`'s request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// What you want to work on, in a few words (at most 128 bytes).
    pub topic: String,
    /// How much, 0 to 1 (0 withdraws your intent) [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
}

/// `intents`' request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentsRequest {
    /// Space [default: the node's home space].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// One agent's current strength on a topic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IntentAgent {
    /// Its peer id.
    pub agent: String,
    /// Its strength now, after decay.
    pub strength: f64,
}

/// A topic as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TopicInfo {
    /// The topic, lower case.
    pub topic: String,
    /// Sum of all agents' decayed strengths.
    pub concentration: f64,
    /// Whether enough agents want it (a quorum).
    pub quorate: bool,
    /// The agents, strongest first.
    pub agents: Vec<IntentAgent>,
}

/// The topics of a space, most concentrated first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IntentsResponse {
    /// The topics.
    pub topics: Vec<TopicInfo>,
}

fn respond(topics: Vec<TopicView>) -> IntentsResponse {
    IntentsResponse {
        topics: topics
            .into_iter()
            .map(|t| TopicInfo {
                topic: t.topic,
                concentration: t.concentration,
                quorate: t.quorate,
                agents: t
                    .agents
                    .into_iter()
                    .map(|(agent, strength)| IntentAgent {
                        agent: agent.to_string(),
                        strength,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn render(resp: &IntentsResponse) -> String {
    let mut out = String::new();
    for t in &resp.topics {
        let _ = writeln!(
            out,
            "{} — concentration {:.2}, {} agents{}",
            t.topic,
            t.concentration,
            t.agents.len(),
            if t.quorate { ", quorum" } else { "" }
        );
        for a in t.agents.iter().take(5) {
            let _ = writeln!(out, "  {} {:.2}", short_peer(&a.agent), a.strength);
        }
    }
    if resp.topics.is_empty() {
        out.push_str("no intents");
    }
    out.trim_end().to_owned()
}

pub(crate) struct IntentVerb;

impl Verb for IntentVerb {
    const NAME: &'static str = "intent";
    const SUMMARY: &'static str = "Say what you want to work on, and how much.";
    const DESCRIPTION: &'static str = "Quorum sensing: your intent (topic, strength 0 to 1) \
        goes to every node of the space and decays with time (half-life set per node, 60 s by \
        default), so repeat it while you still mean it; strength 0 withdraws it. When enough \
        distinct agents want the same topic, every agent gets an `intent` quorum event (and \
        nodes run with --intent-swarms form a swarm around it). Answers the space's topics, \
        about 20 tokens each.";
    const EXAMPLE: &'static str = "membrane intent 'rust parser fuzzing' --strength 0.8";
    const POSITIONAL: &'static [&'static str] = &["topic"];
    type Request = IntentRequest;
    type Response = IntentsResponse;

    async fn call(ctx: &Ctx, req: IntentRequest) -> Result<IntentsResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        let topic = req.topic.trim();
        if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
            return Err(ApiError::bad(
                "invalid_request",
                format!(
                    "topic is {} bytes (expected 1 to {MAX_TOPIC_BYTES})",
                    topic.len()
                ),
            ));
        }
        let raw = req.strength.unwrap_or(1.0);
        let strength = Score::from_f64(raw).map_err(|e| {
            ApiError::bad(
                "out_of_range",
                format!("strength {raw}: {e} (expected 0 to 1)"),
            )
        })?;
        let topics = ctx.node.intent(&space, topic.to_owned(), strength).await?;
        Ok(respond(topics))
    }

    fn render(resp: &IntentsResponse) -> String {
        render(resp)
    }
}

pub(crate) struct Intents;

impl Verb for Intents {
    const NAME: &'static str = "intents";
    const SUMMARY: &'static str = "See where the agents of a space want to work.";
    const DESCRIPTION: &'static str = "Topics agents stated intents on, most concentrated \
        first, with each agent's decayed strength and whether the topic has a quorum. Use it \
        to join work that is gathering momentum. About 20 tokens per topic.";
    const EXAMPLE: &'static str = "membrane intents";
    const READ_ONLY: bool = true;
    type Request = IntentsRequest;
    type Response = IntentsResponse;

    async fn call(ctx: &Ctx, req: IntentsRequest) -> Result<IntentsResponse, ApiError> {
        let space = ctx.space(req.space.as_deref())?;
        Ok(respond(ctx.node.intents(&space).await?))
    }

    fn render(resp: &IntentsResponse) -> String {
        render(resp)
    }
}
