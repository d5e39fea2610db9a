//! Direct messages' rules on the receiving side, without IO: a per-sender token bucket and
//! the accept rules, both taking the time as input, and the memory of recent messages that
//! makes a retried message idempotent. The event loop gathers the facts (the sender's
//! standing with the immune layer, the agent's trust in it, the space) and carries out the
//! verdict; the order of the checks is the one in [`Inbox`].

use std::collections::BTreeMap;

use membrane_protocol::signals::{DirectMessage, MAX_DIRECT_BYTES};
use membrane_protocol::{EnvelopeId, PublicKey, Score};

use super::direct_codec::{Reason, Refusal};

/// Senders whose buckets are remembered at most; beyond it the idlest is forgotten (a full
/// bucket, the state a forgotten sender starts in again).
pub(crate) const MAX_SENDERS: usize = 4096;
/// Recent message ids remembered at most, to answer a retried message without logging it
/// twice.
pub(crate) const MAX_SEEN: usize = 4096;
/// How old a message may be when it arrives; older ones are refused as replays (and ids are
/// remembered this long, so a replay inside the window is recognised).
pub(crate) const MAX_AGE_MS: u64 = 10 * 60 * 1000;

/// Whom the agent takes direct messages from, among agents not refused for their standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accept {
    /// Anyone the agent has not rated below its space's trust threshold.
    #[default]
    Open,
    /// Only agents the agent trusts at or above its space's trust threshold.
    Trusted,
}

impl std::str::FromStr for Accept {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "open" => Ok(Accept::Open),
            "trusted" => Ok(Accept::Trusted),
            _ => Err("is not an accept policy".to_owned()),
        }
    }
}

impl std::fmt::Display for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accept::Open => "open",
            Accept::Trusted => "trusted",
        })
    }
}

/// The receiving side's rules for direct messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whom to take messages from.
    pub accept: Accept,
    /// Longest message taken, in bytes (at most [`MAX_DIRECT_BYTES`]).
    pub max_message_bytes: usize,
    /// Messages one sender may send per minute, sustained.
    pub per_minute: u32,
    /// Messages one sender may send at once, after a quiet spell.
    pub burst: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            accept: Accept::Open,
            max_message_bytes: MAX_DIRECT_BYTES,
            per_minute: 30,
            burst: 10,
        }
    }
}

impl Policy {
    /// Checks the invariants: a size limit of 1 to [`MAX_DIRECT_BYTES`] bytes and a rate
    /// and burst of at least one message.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_DIRECT_BYTES {
            return Err(format!(
                "direct message limit of {} bytes is out of range (expected 1 to {MAX_DIRECT_BYTES})",
                self.max_message_bytes
            ));
        }
        if self.per_minute == 0 || self.burst == 0 {
            return Err(format!(
                "direct message rate {}/min with burst {} (expected at least 1 of each)",
                self.per_minute, self.burst
            ));
        }
        Ok(())
    }
}

/// One sender's bucket, in [`UNIT`]ths of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    level: u64,
    at_ms: u64,
}

/// A token bucket per sender: `burst` messages at once, refilled at `per_minute`. Pure:
/// the time is an argument, and a clock going backwards refills nothing.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    per_minute: u64,
    capacity: u64,
    buckets: BTreeMap<PublicKey, Bucket>,
}

/// One message, in bucket units: with a minute's worth of ms per message, a bucket refills
/// exactly `per_minute` units a millisecond, so the arithmetic is exact in integers.
const UNIT: u64 = 60_000;

impl RateLimiter {
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: u64::from(per_minute.max(1)),
            capacity: u64::from(burst.max(1)) * UNIT,
            buckets: BTreeMap::new(),
        }
    }

    /// The bucket's level at `now_ms`, refilled since it was last touched.
    fn level(&self, bucket: &Bucket, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        let refill = elapsed.saturating_mul(self.per_minute);
        bucket.level.saturating_add(refill).min(self.capacity)
    }

    /// Takes one message from `sender`'s bucket, or says in how many ms one will be there.
    pub(crate) fn take(&mut self, sender: &PublicKey, now_ms: u64) -> Result<(), u64> {
        let (level, at_ms) = match self.buckets.get(sender) {
            // The level as of the later of the two instants: time never runs backwards.
            Some(bucket) => (self.level(bucket, now_ms), bucket.at_ms.max(now_ms)),
            None => {
                self.make_room(now_ms);
                (self.capacity, now_ms)
            }
        };
        if level >= UNIT {
            self.buckets.insert(
                *sender,
                Bucket {
                    level: level - UNIT,
                    at_ms,
                },
            );
            Ok(())
        } else {
            self.buckets.insert(*sender, Bucket { level, at_ms });
            // ms for the missing units to refill, rounded up.
            Err((UNIT - level).div_ceil(self.per_minute))
        }
    }

    /// Keeps at most [`MAX_SENDERS`] - 1 buckets before a new one: forgets the full ones
    /// (no different from a sender never seen), then the least recently touched.
    fn make_room(&mut self, now_ms: u64) {
        if self.buckets.len() < MAX_SENDERS {
            return;
        }
        let capacity = self.capacity;
        let full: Vec<PublicKey> = self
            .buckets
            .iter()
            .filter(|(_, b)| self.level(b, now_ms) >= capacity)
            .map(|(k, _)| *k)
            .collect();
        for key in full {
            self.buckets.remove(&key);
        }
        while self.buckets.len() >= MAX_SENDERS {
            let Some(idlest) = self
                .buckets
                .iter()
                .min_by_key(|(k, b)| (b.at_ms, **k))
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.buckets.remove(&idlest);
        }
    }

    /// Senders tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// What the immune layer says of a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Nothing against it.
    Good,
    /// Quarantined: nothing it sends is used until released.
    Quarantined,
    /// Banned, or its reputation fell below the disconnect threshold.
    ShutOut,
}

/// What the event loop knows of a decoded message's context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// This node's agent.
    pub(crate) me: PublicKey,
    /// Whether this node has joined the message's space.
    pub(crate) joined: bool,
    /// The agent's own trust edge to the sender in that space, if it set one.
    pub(crate) trust: Option<Score>,
    /// That space's trust threshold.
    pub(crate) threshold: Score,
}

/// A message that passed the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// New: count its tokens, check the budget, log it.
    Fresh,
    /// Accepted before (a retry): acknowledge again, log nothing.
    Duplicate {
        /// Its tokens as counted the first time.
        tokens: u64,
    },
}

/// The receiving side's state: the policy, the buckets and the recent ids.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    policy: Policy,
    rate: RateLimiter,
    /// Accepted message id → (when accepted, its tokens).
    seen: BTreeMap<EnvelopeId, (u64, u64)>,
}

impl Inbox {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            rate: RateLimiter::new(policy.per_minute, policy.burst),
            policy,
            seen: BTreeMap::new(),
        }
    }

    /// The checks made before the request is decoded, cheapest and most final first:
    /// the operator's pause, the sender's standing, then its rate (every attempt that gets
    /// this far counts, so a sender cannot make this node verify signatures and count
    /// tokens faster than its rate).
    pub(crate) fn gate(
        &mut self,
        sender: &PublicKey,
        paused: bool,
        standing: Standing,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if paused {
            return Err(Refusal::new(
                Reason::Paused,
                "the receiver's operator paused every crossing; try again after it resumes",
            ));
        }
        match standing {
            Standing::Good => {}
            Standing::Quarantined => {
                return Err(Refusal::new(
                    Reason::Quarantined,
                    "the receiver's immune layer holds you in quarantine",
                ));
            }
            Standing::ShutOut => {
                return Err(Refusal::new(
                    Reason::Banned,
                    "the receiver's immune layer shut you out (banned, or reputation below \
                     its disconnect threshold)",
                ));
            }
        }
        self.rate.take(sender, now_ms).map_err(|wait| {
            Refusal::new(
                Reason::RateLimited,
                format!(
                    "more than {} messages at once or {} a minute from one sender",
                    self.policy.burst, self.policy.per_minute
                ),
            )
            .retry_after(wait)
        })
    }

    /// The accept rules for a decoded message sent by `sender` at `sent_at_ms`, in order:
    /// recipient, age, a retry of an accepted message, space, size, trust. The budget is
    /// checked after these, once the tokens are counted.
    pub(crate) fn judge(
        &self,
        sender: &PublicKey,
        id: &EnvelopeId,
        sent_at_ms: u64,
        message: &DirectMessage,
        facts: &Facts,
        now_ms: u64,
    ) -> Result<Admitted, Refusal> {
        if message.to != facts.me {
            return Err(Refusal::new(
                Reason::NotForYou,
                format!(
                    "the message is addressed to {}, not to this agent",
                    message.to
                ),
            ));
        }
        let age = now_ms.saturating_sub(sent_at_ms);
        if age > MAX_AGE_MS {
            return Err(Refusal::new(
                Reason::Stale,
                format!(
                    "the message was signed {} s ago (expected at most {} s: send it again)",
                    age / 1000,
                    MAX_AGE_MS / 1000
                ),
            ));
        }
        if let Some((_, tokens)) = self.seen.get(id) {
            return Ok(Admitted::Duplicate { tokens: *tokens });
        }
        if !facts.joined {
            return Err(Refusal::new(
                Reason::UnknownSpace,
                format!(
                    "the receiver has not joined space {} (send in a space you share)",
                    message.space
                ),
            ));
        }
        if message.message.len() > self.policy.max_message_bytes {
            return Err(Refusal::new(
                Reason::TooLarge,
                format!(
                    "the message has {} bytes; this receiver takes at most {}",
                    message.message.len(),
                    self.policy.max_message_bytes
                ),
            ));
        }
        match (facts.trust, self.policy.accept) {
            (Some(score), _) if score < facts.threshold => Err(Refusal::new(
                Reason::Untrusted,
                format!(
                    "the receiving agent trusts you {score} in {}, below its threshold {}",
                    message.space, facts.threshold
                ),
            )),
            (None, Accept::Trusted) => Err(Refusal::new(
                Reason::Untrusted,
                format!(
                    "the receiving agent takes messages only from agents it trusts at {} or \
                     more in {}, and has not rated {sender}",
                    facts.threshold, message.space
                ),
            )),
            _ => Ok(Admitted::Fresh),
        }
    }

    /// Remembers an accepted message, so a retry is acknowledged without a second event.
    pub(crate) fn remember(&mut self, id: EnvelopeId, tokens: u64, now_ms: u64) {
        if self.seen.len() >= MAX_SEEN {
            self.seen
                .retain(|_, (at, _)| now_ms.saturating_sub(*at) <= MAX_AGE_MS);
        }
        while self.seen.len() >= MAX_SEEN {
            let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(id, (at, _))| (*at, **id))
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.seen.remove(&oldest);
        }
        self.seen.insert(id, (now_ms, tokens));
    }

    /// Senders whose rate is tracked now.
    #[cfg(test)]
    pub(crate) fn senders(&self) -> usize {
        self.rate.len()
    }
}

#[cfg(test)]
mod tests {
    use membrane_protocol::{Keypair, Space};

    use super::*;

    fn key(n: u16) -> PublicKey {
        let mut seed = [0u8; 32];
        seed[..2].copy_from_slice(&n.to_le_bytes());
        seed[2] = 1;
        Keypair::from_seed(&seed).public()
    }

    fn score(v: f64) -> Score {
        Score::from_f64(v).unwrap()
    }

    const T0: u64 = 1_000_000;

    #[test]
    fn a_bucket_gives_its_burst_then_one_message_per_refill_interval() {
        // 6 a minute: one every 10 s; 3 at once.
        let mut rate = RateLimiter::new(6, 3);
        let a = key(1);
        for _ in 0..3 {
            assert_eq!(rate.take(&a, T0), Ok(()));
        }
        assert_eq!(rate.take(&a, T0), Err(10_000));
        // 4 s later 0.4 of a message has refilled: 6 s to go.
        assert_eq!(rate.take(&a, T0 + 4_000), Err(6_000));
        assert_eq!(rate.take(&a, T0 + 9_999), Err(1));
        assert_eq!(rate.take(&a, T0 + 10_000), Ok(()));
        assert_eq!(rate.take(&a, T0 + 10_000), Err(10_000));
        // After a long quiet spell the bucket is full again, never more than full.
        for _ in 0..3 {
            assert_eq!(rate.take(&a, T0 + 3_600_000), Ok(()));
        }
        assert!(rate.take(&a, T0 + 3_600_000).is_err());
    }

    #[test]
    fn buckets_are_per_sender_and_a_clock_going_back_refills_nothing() {
        let mut rate = RateLimiter::new(1, 1);
        let (a, b) = (key(1), key(2));
        assert_eq!(rate.take(&a, T0), Ok(()));
        assert_eq!(rate.take(&b, T0), Ok(()), "b has its own bucket");
        assert_eq!(rate.take(&a, T0 - 50_000), Err(60_000));
        assert_eq!(rate.take(&a, T0 + 59_999), Err(1));
        assert_eq!(rate.take(&a, T0 + 60_000), Ok(()));
    }

    #[test]
    fn the_bucket_map_is_bounded_and_forgets_full_buckets_first() {
        let mut rate = RateLimiter::new(60, 2);
        // A busy sender (one message taken, bucket not full) and many quiet ones.
        let busy = key(0);
        assert_eq!(rate.take(&busy, T0), Ok(()));
        for n in 1..MAX_SENDERS as u16 {
            assert_eq!(rate.take(&key(n), T0), Ok(()));
        }
        assert_eq!(rate.len(), MAX_SENDERS);
        // 1.5 s later everyone has refilled to full but the busy sender, which took again.
        assert_eq!(rate.take(&busy, T0 + 500), Ok(()));
        assert_eq!(rate.take(&key(60_000), T0 + 1_500), Ok(()));
        assert!(
            rate.len() < 10,
            "full buckets were forgotten: {}",
            rate.len()
        );
        // The busy sender's bucket was kept, not reset to a full burst: 0.5 left at 0.5 s,
        // +1 by 1.5 s, so one more passes and the next waits 0.5 s.
        assert_eq!(rate.take(&busy, T0 + 1_500), Ok(()));
        assert_eq!(rate.take(&busy, T0 + 1_500), Err(500));
    }

    #[test]
    fn with_every_bucket_busy_the_least_recently_touched_is_forgotten() {
        let mut rate = RateLimiter::new(1, 1);
        for n in 0..MAX_SENDERS as u16 {
            assert_eq!(rate.take(&key(n), T0 + u64::from(n)), Ok(()));
        }
        assert_eq!(rate.take(&key(60_000), T0 + 10_000), Ok(()));
        assert_eq!(rate.len(), MAX_SENDERS);
        // key(0) was the idlest: forgotten, so it starts again with a full bucket (and
        // key(1), now the idlest, makes room for it); key(2) is still held to its rate.
        assert_eq!(rate.take(&key(0), T0 + 10_001), Ok(()));
        assert_eq!(rate.take(&key(2), T0 + 10_002), Err(50_000));
    }

    fn message(to: PublicKey, len: usize) -> DirectMessage {
        DirectMessage {
            space: "brief".parse::<Space>().unwrap(),
            to,
            message: "x".repeat(len),
            reply_to: None,
            entry: None,
        }
    }

    fn facts(me: PublicKey) -> Facts {
        Facts {
            me,
            joined: true,
            trust: None,
            threshold: Score::DEFAULT_THRESHOLD,
        }
    }

    fn reason(r: Result<impl std::fmt::Debug, Refusal>) -> Reason {
        r.expect_err("refused").reason
    }

    #[test]
    fn the_gate_refuses_a_pause_first_then_standing_then_rate() {
        let mut inbox = Inbox::new(Policy {
            burst: 1,
            per_minute: 1,
            ..Policy::default()
        });
        let sender = key(1);
        assert_eq!(
            reason(inbox.gate(&sender, true, Standing::ShutOut, T0)),
            Reason::Paused
        );
        assert_eq!(
            reason(inbox.gate(&sender, false, Standing::Quarantined, T0)),
            Reason::Quarantined
        );
        assert_eq!(
            reason(inbox.gate(&sender, false, Standing::ShutOut, T0)),
            Reason::Banned
        );
        // Refusals for standing took nothing from the bucket.
        assert_eq!(inbox.gate(&sender, false, Standing::Good, T0), Ok(()));
        let limited = inbox
            .gate(&sender, false, Standing::Good, T0 + 1_000)
            .unwrap_err();
        assert_eq!(limited.reason, Reason::RateLimited);
        assert_eq!(limited.retry_after_ms, Some(59_000));
        assert_eq!(inbox.senders(), 1);
    }

    #[test]
    fn the_accept_rules_in_order() {
        let mut inbox = Inbox::new(Policy {
            max_message_bytes: 100,
            ..Policy::default()
        });
        let (me, sender, other) = (key(1), key(2), key(3));
        let id = EnvelopeId([9; 32]);
        let ok = |inbox: &Inbox, m: &DirectMessage, f: &Facts, sent: u64| {
            inbox.judge(&sender, &id, sent, m, f, T0)
        };
        assert_eq!(
            ok(&inbox, &message(me, 10), &facts(me), T0),
            Ok(Admitted::Fresh)
        );
        assert_eq!(
            reason(ok(&inbox, &message(other, 10), &facts(me), T0)),
            Reason::NotForYou
        );
        assert_eq!(
            reason(ok(
                &inbox,
                &message(me, 10),
                &facts(me),
                T0 - MAX_AGE_MS - 1
            )),
            Reason::Stale
        );
        assert_eq!(
            ok(&inbox, &message(me, 10), &facts(me), T0 - MAX_AGE_MS),
            Ok(Admitted::Fresh)
        );
        let elsewhere = Facts {
            joined: false,
            ..facts(me)
        };
        assert_eq!(
            reason(ok(&inbox, &message(me, 10), &elsewhere, T0)),
            Reason::UnknownSpace
        );
        assert_eq!(
            ok(&inbox, &message(me, 100), &facts(me), T0),
            Ok(Admitted::Fresh)
        );
        let big = ok(&inbox, &message(me, 101), &facts(me), T0).unwrap_err();
        assert_eq!(big.reason, Reason::TooLarge);
        assert!(big.detail.contains("101") && big.detail.contains("100"));
        // Trust: an explicit edge below the threshold refuses; at it, passes.
        let low = Facts {
            trust: Some(score(0.2)),
            ..facts(me)
        };
        let refused = ok(&inbox, &message(me, 10), &low, T0).unwrap_err();
        assert_eq!(refused.reason, Reason::Untrusted);
        assert!(refused.detail.contains("0.20") && refused.detail.contains("0.50"));
        let at = Facts {
            trust: Some(score(0.5)),
            ..facts(me)
        };
        assert_eq!(ok(&inbox, &message(me, 10), &at, T0), Ok(Admitted::Fresh));
        // A retry of an accepted message is acknowledged again, even if the rules changed
        // since (it was accepted under the old ones), but never if it is for someone else.
        inbox.remember(id, 7, T0);
        assert_eq!(
            ok(&inbox, &message(me, 10), &low, T0),
            Ok(Admitted::Duplicate { tokens: 7 })
        );
        assert_eq!(
            reason(ok(&inbox, &message(other, 10), &facts(me), T0)),
            Reason::NotForYou
        );
    }

    #[test]
    fn a_trusted_only_inbox_refuses_the_unrated() {
        let inbox = Inbox::new(Policy {
            accept: Accept::Trusted,
            ..Policy::default()
        });
        let (me, sender) = (key(1), key(2));
        let id = EnvelopeId([1; 32]);
        let unrated = inbox
            .judge(&sender, &id, T0, &message(me, 5), &facts(me), T0)
            .unwrap_err();
        assert_eq!(unrated.reason, Reason::Untrusted);
        assert!(unrated.detail.contains("has not rated"));
        let trusted = Facts {
            trust: Some(score(0.8)),
            ..facts(me)
        };
        assert_eq!(
            inbox.judge(&sender, &id, T0, &message(me, 5), &trusted, T0),
            Ok(Admitted::Fresh)
        );
    }

    #[test]
    fn remembered_ids_are_bounded() {
        let mut inbox = Inbox::new(Policy::default());
        for n in 0..(MAX_SEEN as u64 + 10) {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&n.to_le_bytes());
            inbox.remember(EnvelopeId(id), 1, T0 + n);
        }
        assert_eq!(inbox.seen.len(), MAX_SEEN);
        // The oldest went first.
        assert!(!inbox.seen.contains_key(&EnvelopeId([0; 32])));
    }

    #[test]
    fn policies_validate() {
        assert!(Policy::default().validate().is_ok());
        for bad in [
            Policy {
                max_message_bytes: 0,
                ..Policy::default()
            },
            Policy {
                max_message_bytes: MAX_DIRECT_BYTES + 1,
                ..Policy::default()
            },
            Policy {
                per_minute: 0,
                ..Policy::default()
            },
            Policy {
                burst: 0,
                ..Policy::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!("trusted".parse::<Accept>(), Ok(Accept::Trusted));
        assert!("closed".parse::<Accept>().is_err());
    }
}
