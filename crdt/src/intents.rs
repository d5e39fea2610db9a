//! Quorum sensing over intents: each agent gossips "I want to work on `topic` this much"
//! ([`membrane_protocol::signals::Intent`]); each node keeps, per (space, topic), every
//! agent's last signal and lets it decay with a configurable half-life. When the number of
//! distinct agents whose decayed strength is at least [`Config::strength`] reaches
//! [`Config::quorum`], the topic is *quorate* and a [`Change::Quorum`] fires; when decay (or
//! withdrawals) bring it below, a [`Change::Dispersed`] fires. Concentration, the sum of the
//! decayed strengths, is what an agent reads to see where attention gathers.
//!
//! Sans-IO: time comes in as `now_ms` (the node passes its receive time, so a sender's
//! clock cannot make a signal last longer), and the node ticks [`Intents::tick`] to let
//! decay take effect between signals. Everything is bounded: topics per node and agents
//! per topic, the weakest evicted first.

use std::collections::BTreeMap;

use membrane_protocol::{PublicKey, Space};

/// How quorum sensing behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Half-life of an intent's strength, in milliseconds.
    pub half_life_ms: u64,
    /// Decayed strength at which an agent counts toward the quorum.
    pub strength: f64,
    /// Distinct agents needed for a quorum.
    pub quorum: usize,
    /// Topics tracked at most (all spaces); the least concentrated is forgotten first.
    pub max_topics: usize,
    /// Agents tracked per topic at most; the weakest is forgotten first.
    pub max_agents: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            half_life_ms: 60_000,
            strength: 0.3,
            quorum: 3,
            max_topics: 1024,
            max_agents: 1024,
        }
    }
}

impl Config {
    /// Checks the invariants: a positive half-life, a strength in (0, 1], a quorum of at
    /// least one that the agent bound can reach.
    pub fn validate(&self) -> Result<(), String> {
        if self.half_life_ms == 0 {
            return Err("intent half-life is 0 (expected at least 1 ms)".into());
        }
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(format!(
                "intent strength threshold {} is out of range (expected above 0, at most 1)",
                self.strength
            ));
        }
        if self.quorum == 0 || self.quorum > self.max_agents {
            return Err(format!(
                "intent quorum {} is out of range (expected 1 to {})",
                self.quorum, self.max_agents
            ));
        }
        if self.max_topics == 0 {
            return Err("intent topic bound is 0 (expected at least 1)".into());
        }
        Ok(())
    }
}

/// A topic crossing its quorum, one way or the other.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Enough agents want to work on it.
    Quorum {
        /// Space.
        space: Space,
        /// The topic, normalised ([`topic_key`]).
        topic: String,
        /// The agents above the strength threshold, ascending.
        agents: Vec<PublicKey>,
        /// Sum of all decayed strengths.
        concentration: f64,
    },
    /// It fell below the quorum.
    Dispersed {
        /// Space.
        space: Space,
        /// The topic, normalised.
        topic: String,
        /// The agents still above the strength threshold, ascending.
        agents: Vec<PublicKey>,
        /// Sum of all decayed strengths.
        concentration: f64,
    },
}

/// A topic as a node sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicView {
    /// The topic, normalised.
    pub topic: String,
    /// Sum of all decayed strengths.
    pub concentration: f64,
    /// Every agent with its decayed strength, strongest first.
    pub agents: Vec<(PublicKey, f64)>,
    /// Whether it has a quorum.
    pub quorate: bool,
}

#[derive(Debug, Clone, Copy)]
struct Signal {
    strength: f64,
    at_ms: u64,
}

#[derive(Debug, Default)]
struct Topic {
    signals: BTreeMap<PublicKey, Signal>,
    quorate: bool,
}

/// Below this concentration a topic without a quorum is forgotten.
const FORGET_BELOW: f64 = 0.01;

fn decay(signal: &Signal, now_ms: u64, half_life_ms: u64) -> f64 {
    let age = now_ms.saturating_sub(signal.at_ms) as f64;
    signal.strength * 0.5_f64.powf(age / half_life_ms as f64)
}

/// A topic as compared across spellings: lower case, words separated by one space.
pub fn topic_key(topic: &str) -> String {
    topic
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every node's view of intents, per (space, topic).
#[derive(Debug)]
pub struct Intents {
    config: Config,
    topics: BTreeMap<(Space, String), Topic>,
}

impl Intents {
    /// An empty view.
    pub fn new(config: Config) -> Self {
        Intents {
            config,
            topics: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn decayed(&self, signal: &Signal, now_ms: u64) -> f64 {
        decay(signal, now_ms, self.config.half_life_ms)
    }

    /// Takes `agent`'s signal on `topic` (strength 0 withdraws it) and reports a quorum
    /// change if it made one. Strengths outside [0, 1] are clamped; an empty topic is
    /// ignored.
    pub fn observe(
        &mut self,
        space: &Space,
        topic: &str,
        agent: PublicKey,
        strength: f64,
        now_ms: u64,
    ) -> Option<Change> {
        let name = topic_key(topic);
        if name.is_empty() {
            return None;
        }
        let strength = if strength.is_nan() {
            0.0
        } else {
            strength.clamp(0.0, 1.0)
        };
        let key = (space.clone(), name);
        if !self.topics.contains_key(&key) {
            if strength == 0.0 {
                return None;
            }
            self.make_room(now_ms);
        }
        let (max_agents, half_life) = (self.config.max_agents, self.config.half_life_ms);
        let topic = self.topics.entry(key.clone()).or_default();
        if strength == 0.0 {
            topic.signals.remove(&agent);
        } else {
            topic.signals.insert(
                agent,
                Signal {
                    strength,
                    at_ms: now_ms,
                },
            );
        }
        if topic.signals.len() > max_agents {
            let weakest = topic
                .signals
                .iter()
                .filter(|(who, _)| **who != agent)
                .map(|(who, s)| (*who, decay(s, now_ms, half_life)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(who, _)| who);
            if let Some(weakest) = weakest {
                topic.signals.remove(&weakest);
            }
        }
        self.check(&key, now_ms)
    }

    /// Forgets the least concentrated topic while the bound is reached.
    fn make_room(&mut self, now_ms: u64) {
        while self.topics.len() >= self.config.max_topics {
            let least = self
                .topics
                .iter()
                .map(|(key, t)| (key.clone(), self.concentration_of(t, now_ms)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(key, _)| key);
            match least {
                Some(key) => {
                    self.topics.remove(&key);
                }
                None => break,
            }
        }
    }

    fn concentration_of(&self, topic: &Topic, now_ms: u64) -> f64 {
        topic
            .signals
            .values()
            .map(|s| self.decayed(s, now_ms))
            .sum()
    }

    fn above(&self, topic: &Topic, now_ms: u64) -> Vec<PublicKey> {
        topic
            .signals
            .iter()
            .filter(|(_, s)| self.decayed(s, now_ms) >= self.config.strength)
            .map(|(who, _)| *who)
            .collect()
    }

    fn check(&mut self, key: &(Space, String), now_ms: u64) -> Option<Change> {
        let topic = self.topics.get(key)?;
        let agents = self.above(topic, now_ms);
        let concentration = self.concentration_of(topic, now_ms);
        let quorate = agents.len() >= self.config.quorum;
        let was = topic.quorate;
        if concentration < FORGET_BELOW && !quorate {
            self.topics.remove(key);
        } else if let Some(topic) = self.topics.get_mut(key) {
            topic.quorate = quorate;
        }
        let (space, topic) = key.clone();
        match (was, quorate) {
            (false, true) => Some(Change::Quorum {
                space,
                topic,
                agents,
                concentration,
            }),
            (true, false) => Some(Change::Dispersed {
                space,
                topic,
                agents,
                concentration,
            }),
            _ => None,
        }
    }

    /// Lets decay take effect: the changes since the last tick, in topic order.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Change> {
        let keys: Vec<_> = self.topics.keys().cloned().collect();
        keys.iter()
            .filter_map(|key| self.check(key, now_ms))
            .collect()
    }

    /// The topics of `space`, most concentrated first.
    pub fn topics(&self, space: &Space, now_ms: u64) -> Vec<TopicView> {
        let mut out: Vec<TopicView> = self
            .topics
            .iter()
            .filter(|((s, _), _)| s == space)
            .map(|((_, name), topic)| {
                let mut agents: Vec<(PublicKey, f64)> = topic
                    .signals
                    .iter()
                    .map(|(who, s)| (*who, self.decayed(s, now_ms)))
                    .collect();
                agents.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                TopicView {
                    topic: name.clone(),
                    concentration: agents.iter().map(|(_, s)| s).sum(),
                    agents,
                    quorate: topic.quorate,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.concentration
                .total_cmp(&a.concentration)
                .then_with(|| a.topic.cmp(&b.topic))
        });
        out
    }

    /// How many topics are tracked, all spaces.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether no topic is tracked.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use membrane_protocol::Keypair;

    use super::*;

    fn agent(seed: u8) -> PublicKey {
        Keypair::from_seed(&[seed; 32]).public()
    }

    fn space() -> Space {
        Space::default_space()
    }

    fn config() -> Config {
        Config {
            half_life_ms: 10_000,
            strength: 0.4,
            quorum: 3,
            max_topics: 4,
            max_agents: 8,
        }
    }

    #[test]
    fn the_third_strong_agent_makes_a_quorum_and_decay_disperses_it() {
        let mut intents = Intents::new(config());
        assert_eq!(
            intents.observe(&space(), "Rust parsers", agent(1), 0.9, 0),
            None
        );
        // Weak interest does not count.
        assert_eq!(
            intents.observe(&space(), "rust  PARSERS", agent(2), 0.2, 0),
            None
        );
        assert_eq!(
            intents.observe(&space(), "rust parsers", agent(3), 0.8, 0),
            None
        );
        let change = intents.observe(&space(), "rust parsers", agent(4), 0.8, 1_000);
        let Some(Change::Quorum {
            topic,
            agents,
            concentration,
            ..
        }) = change
        else {
            panic!("expected a quorum, got {change:?}");
        };
        assert_eq!(topic, "rust parsers");
        let mut want = vec![agent(1), agent(3), agent(4)];
        want.sort();
        assert_eq!(agents, want);
        assert!(
            concentration > 2.5 && concentration < 2.7,
            "{concentration}"
        );
        // Nothing changes while strengths stay above 0.4: 0.8 halves to 0.4 at 10 s.
        assert!(intents.tick(9_000).is_empty());
        let changes = intents.tick(10_500);
        assert!(
            matches!(&changes[..], [Change::Dispersed { agents, .. }] if agents.len() == 2),
            "{changes:?}"
        );
        // It stays dispersed; a renewed signal brings the quorum back.
        assert!(intents.tick(11_000).is_empty());
        assert!(matches!(
            intents.observe(&space(), "rust parsers", agent(3), 0.9, 11_000),
            Some(Change::Quorum { .. })
        ));
    }

    #[test]
    fn withdrawing_drops_below_the_quorum_at_once() {
        let mut intents = Intents::new(config());
        for seed in 1..=3 {
            intents.observe(&space(), "maps", agent(seed), 1.0, 0);
        }
        assert!(intents.topics(&space(), 0)[0].quorate);
        assert!(matches!(
            intents.observe(&space(), "maps", agent(2), 0.0, 1),
            Some(Change::Dispersed { .. })
        ));
        // Withdrawing from a topic nobody holds creates nothing.
        assert_eq!(intents.observe(&space(), "unknown", agent(2), 0.0, 1), None);
        assert_eq!(intents.len(), 1);
    }

    #[test]
    fn spaces_are_apart_and_topics_rank_by_concentration() {
        let mut intents = Intents::new(config());
        let other: Space = "other".parse().unwrap();
        for seed in 1..=2 {
            intents.observe(&space(), "maps", agent(seed), 1.0, 0);
            intents.observe(&other, "maps", agent(seed + 2), 1.0, 0);
        }
        intents.observe(&space(), "trains", agent(9), 0.5, 0);
        let topics = intents.topics(&space(), 0);
        assert_eq!(
            topics.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(),
            ["maps", "trains"]
        );
        assert!(!topics[0].quorate);
        assert_eq!(topics[0].agents.len(), 2);
        // A third agent in the other space does not make a quorum here.
        intents.observe(&other, "maps", agent(7), 1.0, 0);
        assert!(!intents.topics(&space(), 0)[0].quorate);
        assert!(intents.topics(&other, 0)[0].quorate);
    }

    #[test]
    fn bounds_forget_the_weakest() {
        let mut intents = Intents::new(config());
        for (i, topic) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let strength = if i == 1 { 0.1 } else { 0.9 };
            intents.observe(&space(), topic, agent(1), strength, 0);
        }
        assert_eq!(intents.len(), 4);
        let names: Vec<String> = intents
            .topics(&space(), 0)
            .into_iter()
            .map(|t| t.topic)
            .collect();
        assert!(!names.contains(&"b".to_owned()), "{names:?}");
        for seed in 1..=20 {
            intents.observe(&space(), "a", agent(seed), 0.5, u64::from(seed));
        }
        assert_eq!(intents.topics(&space(), 20)[0].agents.len(), 8);
    }

    #[test]
    fn odd_strengths_are_clamped_and_empty_topics_ignored() {
        let mut intents = Intents::new(config());
        assert_eq!(intents.observe(&space(), "  ", agent(1), 1.0, 0), None);
        intents.observe(&space(), "x", agent(1), 7.0, 0);
        intents.observe(&space(), "x", agent(2), f64::NAN, 0);
        intents.observe(&space(), "x", agent(3), -1.0, 0);
        let topics = intents.topics(&space(), 0);
        assert_eq!(topics[0].agents, vec![(agent(1), 1.0)]);
        assert!(Config::default().validate().is_ok());
        for bad in [
            Config {
                half_life_ms: 0,
                ..config()
            },
            Config {
                strength: 0.0,
                ..config()
            },
            Config {
                quorum: 0,
                ..config()
            },
            Config {
                quorum: 9,
                ..config()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
