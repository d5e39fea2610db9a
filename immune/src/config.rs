//! The immune layer's settings: plain structs with defaults and one `validate`.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::detectors::{BudgetAbuseConfig, FloodConfig, RateConfig};
use crate::quorum::QuorumConfig;
use crate::reputation::ReputationConfig;

/// Most peers with per-peer state (reputation, rate, flood and budget trackers). When
/// full, the most neutral peer (smallest |score|, not quarantined, least recently seen)
/// makes room, so a flood of fresh identities only ever displaces other nobodies.
pub const MAX_PEERS: usize = 4_096;
/// Most (offender, kind) pairs whose last publication time is remembered.
pub const MAX_PUBLISHED: usize = 4_096;

const HOUR_MS: u64 = 3_600_000;

/// Everything the [`Immune`](crate::Immune) engine can be tuned by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Scores, penalties, thresholds.
    pub reputation: ReputationConfig,
    /// Rate anomaly on entries applied from a peer.
    pub entry_rate: RateConfig,
    /// Rate anomaly on gossip messages from a peer.
    pub gossip_rate: RateConfig,
    /// Duplicate-content flooding.
    pub flood: FloodConfig,
    /// Budget abuse.
    pub budget: BudgetAbuseConfig,
    /// Unverifiable reports.
    pub quorum: QuorumConfig,
    /// Delegation circuit breakers.
    pub breaker: BreakerConfig,
    /// How long a ban earned by score lasts.
    pub ban_ms: u64,
    /// How long a ban for a fatal offence (proof of malice) lasts.
    pub fatal_ban_ms: u64,
    /// How long a rejected payload's hash is remembered.
    pub content_memory_ms: u64,
    /// How long a quarantine decided by a quorum lasts (at least).
    pub quarantine_ms: u64,
    /// At most one threat publication per (offender, kind) per this interval.
    pub publish_interval_ms: u64,
    /// Most peers with per-peer state.
    pub max_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            reputation: ReputationConfig::default(),
            entry_rate: RateConfig::entries(),
            gossip_rate: RateConfig::gossip(),
            flood: FloodConfig::default(),
            budget: BudgetAbuseConfig::default(),
            quorum: QuorumConfig::default(),
            breaker: BreakerConfig::default(),
            ban_ms: 24 * HOUR_MS,
            fatal_ban_ms: 7 * 24 * HOUR_MS,
            content_memory_ms: 7 * 24 * HOUR_MS,
            quarantine_ms: HOUR_MS,
            publish_interval_ms: 60_000,
            max_peers: MAX_PEERS,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One section's invariant does not hold.
    #[error("immune config, {section}: {detail}")]
    Invalid {
        /// Which section.
        section: &'static str,
        /// What is wrong and what is expected.
        detail: String,
    },
}

impl Config {
    /// Checks every section's invariants.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |section: &'static str, r: Result<(), String>| {
            r.map_err(|detail| ConfigError::Invalid { section, detail })
        };
        check("reputation", self.reputation.validate())?;
        check("entry_rate", self.entry_rate.validate())?;
        check("gossip_rate", self.gossip_rate.validate())?;
        check("quorum", self.quorum.validate())?;
        check("breaker", self.breaker.validate())?;
        if self.flood.copies < 2 || self.flood.max_tracked == 0 {
            return Err(ConfigError::Invalid {
                section: "flood",
                detail: "copies must be at least 2 and max_tracked positive".into(),
            });
        }
        if self.max_peers == 0 || self.ban_ms == 0 || self.fatal_ban_ms < self.ban_ms {
            return Err(ConfigError::Invalid {
                section: "limits",
                detail: "max_peers and ban_ms must be positive, fatal_ban_ms ≥ ban_ms".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_section() {
        assert_eq!(Config::default().validate(), Ok(()));
        let mut c = Config::default();
        c.entry_rate.alpha = 0.0;
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("immune config, entry_rate: alpha"),
            "{err}"
        );
        let mut c = Config::default();
        c.flood.copies = 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn partial_config_fills_defaults() {
        let c: Config = serde_json::from_str(r#"{"ban_ms": 5}"#).unwrap();
        assert_eq!((c.ban_ms, c.quorum.quorum), (5, 3));
        assert!(serde_json::from_str::<Config>(r#"{"bogus": 1}"#).is_err());
    }
}
