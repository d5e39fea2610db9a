//! Intents and quorum sensing in the event loop: the agent's own intents go out on
//! `membrane/<space>/intents` and count locally; peers' arrive through gossip validation;
//! both feed [`membrane_crdt::intents::Intents`], ticked on a timer so decay takes effect.
//! A quorum or its end is logged as an event for the agent, and, with
//! `NodeOptions::intent_swarms`, turned into a swarm in the medium: every node whose agent
//! is in the quorum joins `intent-<topic>`, the one whose agent has the lowest id creates
//! it (capability [`ANY_CAPABILITY`], threshold the quorum), and that creator dissolves it
//! when the intents decay below the quorum.

use membrane_crdt::coord::{self, ANY_CAPABILITY, Card, CardCapability, SwarmSpec, SwarmState};
use membrane_crdt::intents::{Change, TopicView};
use membrane_crdt::{Draft, EventKind, Storage};
use membrane_protocol::signals::Intent;
use membrane_protocol::{EntryKind, Key, PublicKey, Score, Space, Tier};
use tracing::{debug, info, warn};

use super::{Service, now_ms};
use crate::network::topics::Channel;
use crate::node::NodeError;

impl<S: Storage + Send + 'static> Service<S> {
    /// The agent states an intent: gossiped to the space and counted here.
    pub(in crate::network) fn intent(
        &mut self,
        space: Space,
        topic: String,
        strength: Score,
    ) -> Result<Vec<TopicView>, NodeError> {
        if !self.medium.spaces().any(|s| s == &space) {
            return Err(NodeError::UnknownSpace(space));
        }
        let payload = Intent {
            space: space.clone(),
            topic,
            strength,
        };
        membrane_protocol::Payload::validate(&payload).map_err(NodeError::Invalid)?;
        // No peer in the mesh yet is fine: the intent still counts here.
        self.publish(&space, Channel::Intents, &payload);
        let me = self.me();
        self.observe_intent(&payload, me);
        Ok(self.intents.topics(&space, now_ms()))
    }

    /// A peer's intent, already verified by gossip validation.
    pub(in crate::network) fn on_intent(&mut self, intent: &Intent, author: PublicKey) {
        debug!(agent = %author, topic = %intent.topic, "intent");
        self.observe_intent(intent, author);
    }

    fn observe_intent(&mut self, intent: &Intent, author: PublicKey) {
        let change = self.intents.observe(
            &intent.space,
            &intent.topic,
            author,
            intent.strength.as_f64(),
            now_ms(),
        );
        if let Some(change) = change {
            self.on_intent_change(change);
        }
    }

    /// Lets decay take effect.
    pub(in crate::network) fn intent_tick(&mut self) {
        for change in self.intents.tick(now_ms()) {
            self.on_intent_change(change);
        }
    }

    fn on_intent_change(&mut self, change: Change) {
        let (space, topic, state, agents, concentration) = match change {
            Change::Quorum {
                space,
                topic,
                agents,
                concentration,
            } => (space, topic, "quorum", agents, concentration),
            Change::Dispersed {
                space,
                topic,
                agents,
                concentration,
            } => (space, topic, "dispersed", agents, concentration),
        };
        info!(%space, %topic, state, agents = agents.len(), concentration, "intent {state}");
        if self.options.intent_swarms {
            let result = if state == "quorum" {
                self.form_intent_swarm(&space, &topic, &agents)
            } else {
                self.dissolve_intent_swarm(&space, &topic)
            };
            if let Err(e) = result {
                warn!(%space, %topic, error = %e, "intent swarm");
            }
        }
        self.note(EventKind::Intent {
            space,
            topic,
            state: state.to_owned(),
            agents,
            concentration,
        });
    }

    fn write_record(
        &mut self,
        space: &Space,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), NodeError> {
        let key: Key = key
            .parse()
            .map_err(|e| NodeError::Invalid(format!("{key}: {e}")))?;
        let mut draft = Draft::new(key, value.to_string(), Some(Tier::Public));
        draft.kind = EntryKind::Meta;
        self.medium
            .expose(space, draft, now_ms())
            .map_err(crate::node::medium_error::<S::Error>)?;
        self.announce(space);
        Ok(())
    }

    /// Joins (and, as the lowest id in the quorum, creates) the topic's swarm.
    fn form_intent_swarm(
        &mut self,
        space: &Space,
        topic: &str,
        agents: &[PublicKey],
    ) -> Result<(), NodeError> {
        let me = self.me();
        if !agents.contains(&me) {
            return Ok(());
        }
        let slug = coord::intent_slug(topic);
        let index = self
            .medium
            .index(space)
            .ok_or_else(|| NodeError::UnknownSpace(space.clone()))?;
        let snapshot = coord::snapshot(index, now_ms());
        let card = Card {
            name: self.options.name.clone(),
            capabilities: self
                .options
                .capabilities
                .iter()
                .map(|c| CardCapability {
                    name: c.name.clone(),
                    description: c.description.clone(),
                })
                .collect(),
        };
        if snapshot.cards.get(&me) != Some(&card) {
            let value = serde_json::to_value(&card).unwrap_or_default();
            self.write_record(space, &coord::agent_key(&me), &value)?;
        }
        let live = snapshot
            .swarms
            .get(&slug)
            .is_some_and(|s| !matches!(s.state, SwarmState::Dissolved { .. }));
        if !live && agents.iter().min() == Some(&me) {
            let spec = SwarmSpec {
                name: format!("intent: {topic}"),
                capability: ANY_CAPABILITY.to_owned(),
                threshold: u32::try_from(self.intents.config().quorum).unwrap_or(u32::MAX),
            };
            let value = serde_json::to_value(&spec).unwrap_or_default();
            self.write_record(space, &coord::swarm_key(&slug), &value)?;
            info!(%space, %slug, "intent swarm created");
        }
        let member = snapshot
            .swarms
            .get(&slug)
            .is_some_and(|s| s.members.contains(&me));
        if !member {
            self.write_record(
                space,
                &coord::member_key(&slug, &me),
                &serde_json::json!({}),
            )?;
        }
        Ok(())
    }

    /// Dissolves the topic's swarm if this node's agent created it.
    fn dissolve_intent_swarm(&mut self, space: &Space, topic: &str) -> Result<(), NodeError> {
        let slug = coord::intent_slug(topic);
        let me = self.me();
        let Some(index) = self.medium.index(space) else {
            return Ok(());
        };
        let snapshot = coord::snapshot(index, now_ms());
        let Some(swarm) = snapshot.swarms.get(&slug) else {
            return Ok(());
        };
        if swarm.creator != me || matches!(swarm.state, SwarmState::Dissolved { .. }) {
            return Ok(());
        }
        let key: Key = coord::swarm_key(&slug)
            .parse()
            .map_err(|e| NodeError::Invalid(format!("{slug}: {e}")))?;
        self.medium
            .retract(
                space,
                &key,
                Some("intents decayed below the quorum".into()),
                now_ms(),
            )
            .map_err(crate::node::medium_error::<S::Error>)?;
        self.announce(space);
        info!(%space, %slug, "intent swarm dissolved");
        Ok(())
    }

    /// The topics of `space` as this node sees them now.
    pub(in crate::network) fn intent_topics(
        &self,
        space: &Space,
    ) -> Result<Vec<TopicView>, NodeError> {
        if !self.medium.spaces().any(|s| s == space) {
            return Err(NodeError::UnknownSpace(space.clone()));
        }
        Ok(self.intents.topics(space, now_ms()))
    }
}
