//! Gossip topics: `membrane/<space>/{threats,capabilities,intents,heads,broadcasts}`, and which
//! envelope kind each carries.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use membrane_protocol::{Kind, Space};

/// The gossip channels of a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Channel {
    Threats,
    Capabilities,
    Intents,
    Heads,
    Broadcasts,
}

impl Channel {
    pub(crate) const ALL: [Channel; 5] = [
        Channel::Threats,
        Channel::Capabilities,
        Channel::Intents,
        Channel::Heads,
        Channel::Broadcasts,
    ];

    /// The channel's name, as in its topic and in metric labels.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Channel::Threats => "threats",
            Channel::Capabilities => "capabilities",
            Channel::Intents => "intents",
            Channel::Heads => "heads",
            Channel::Broadcasts => "broadcasts",
        }
    }

    /// The only envelope kind this channel carries.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Channel::Threats => Kind::ThreatSignal,
            Channel::Capabilities => Kind::CapabilityAd,
            Channel::Intents => Kind::Intent,
            Channel::Heads => Kind::Heads,
            Channel::Broadcasts => Kind::Broadcast,
        }
    }

    pub(crate) fn topic(self, space: &Space) -> IdentTopic {
        IdentTopic::new(format!("membrane/{space}/{}", self.name()))
    }
}

/// Which space and channel a topic hash names, among the spaces joined.
pub(crate) fn lookup<'a>(
    hash: &TopicHash,
    spaces: impl IntoIterator<Item = &'a Space>,
) -> Option<(Space, Channel)> {
    for space in spaces {
        for channel in Channel::ALL {
            if &channel.topic(space).hash() == hash {
                return Some((space.clone(), channel));
            }
        }
    }
    None
}
