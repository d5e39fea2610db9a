//! Token cost: what an answer costs the agent that receives it, and how much it may spend.
//!
//! Every answer that crosses into an agent's context is counted in tokens with a real
//! tokenizer ([`Tiktoken`], OpenAI's o200k encoding, embedded in the binary and usable
//! offline) and charged to that agent's [`Budget`]. A budget whose action is
//! [`BudgetAction::Halt`] refuses, with a [`BudgetExceeded`] error that says what was asked
//! and what remains, once it is spent; one whose action is [`BudgetAction::Warn`] never
//! refuses, and the caller emits an event when a [`Charge`] comes back `over`.
//!
//! Search answers are packed to a caller-given `max_tokens` by relevance ([`pack`]): the
//! most relevant set of results that fits is sent and the rest is left out, so an agent's
//! intake stays flat however large the swarm grows.
//!
//! Everything here is sans-IO and deterministic: time comes in as `now_ms` parameters,
//! and packing works on integer scores so that every platform picks the same set.

use std::cmp::Reverse;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Counts the tokens a piece of text costs in a model's context.
pub trait TokenCounter: Send + Sync {
    /// The number of tokens `text` encodes to.
    fn count(&self, text: &str) -> usize;
}

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The embedded vocabulary did not load.
    #[error(
        "could not load the embedded o200k_base vocabulary: {detail}; \
         expected the copy built into tiktoken-rs to parse"
    )]
    Load {
        /// The tokenizer library's description.
        detail: String,
    },
}

/// The o200k_base tokenizer (GPT-4o and later), loaded from the vocabulary that
/// `tiktoken-rs` embeds in the binary, so it needs neither network nor files.
///
/// Loading parses a vocabulary of 200,000 entries: about 0.2 s in a release build (a
/// second in debug) and some 40 MB of memory. Build it once with [`Tiktoken::o200k`] and
/// share it (e.g. in an `Arc`); counting afterwards is cheap and thread-safe.
pub struct Tiktoken {
    bpe: tiktoken_rs::CoreBPE,
}

impl Tiktoken {
    /// Loads the o200k_base encoding. Expensive: call it once and share the result.
    pub fn o200k() -> Result<Tiktoken, TokenizerError> {
        tiktoken_rs::o200k_base()
            .map(|bpe| Tiktoken { bpe })
            .map_err(|e| TokenizerError::Load {
                detail: e.to_string(),
            })
    }
}

impl TokenCounter for Tiktoken {
    fn count(&self, text: &str) -> usize {
        // Ordinary encoding: text from peers is data, never control. A literal
        // "<|endoftext|>" in an answer is counted as the 7 tokens of its characters, as a
        // model API counts it in message content, rather than as one special token, which
        // would let a peer make an answer look cheaper than it is.
        self.bpe.encode_ordinary(text).len()
    }
}

impl fmt::Debug for Tiktoken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiktoken")
            .field("encoding", &"o200k_base")
            .finish_non_exhaustive()
    }
}

/// [`Tiktoken`] loaded on the first count instead of up front, so a node that has not yet
/// counted anything does not hold the vocabulary's ~40 MB. If the embedded vocabulary
/// cannot be loaded (a corrupt build), counts fall back to [`ApproxCounter`]'s estimate;
/// [`LazyTiktoken::loaded`] tells which.
#[derive(Debug, Default)]
pub struct LazyTiktoken {
    inner: std::sync::OnceLock<Option<Tiktoken>>,
}

impl LazyTiktoken {
    /// A counter that loads o200k_base when first used.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Some(true)` once the tokenizer is loaded, `Some(false)` if loading failed, `None`
    /// before the first count.
    pub fn loaded(&self) -> Option<bool> {
        self.inner.get().map(Option::is_some)
    }
}

impl TokenCounter for LazyTiktoken {
    fn count(&self, text: &str) -> usize {
        match self.inner.get_or_init(|| Tiktoken::o200k().ok()) {
            Some(tokenizer) => tokenizer.count(text),
            None => ApproxCounter.count(text),
        }
    }
}

/// A cheap deterministic estimate: one token per four bytes of UTF-8, rounded up.
///
/// An approximation for simulations and tests only; real accounting uses [`Tiktoken`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApproxCounter;

impl TokenCounter for ApproxCounter {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

/// What a budget does once it is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetAction {
    /// Refuse answers that would take `used` past `limit`.
    Halt,
    /// Let answers through; the caller emits an event when a charge goes over.
    Warn,
}

/// A token budget over a fixed window of time. Pure accounting: no clock, no IO.
///
/// The window is fixed, not sliding: once `now_ms >= window_start_ms + window_ms`, `used`
/// resets to 0 and `window_start_ms` advances by whole multiples of `window_ms` to the
/// start of the window that contains `now_ms`, so the windows depend only on the first
/// start, never on when the budget happened to be looked at. `window_ms == 0` means one
/// window forever: `used` never resets. A `now_ms` earlier than `window_start_ms` leaves
/// the window as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Tokens allowed per window.
    pub limit: u64,
    /// Tokens charged in the current window.
    pub used: u64,
    /// Length of a window in milliseconds; 0 means the budget never resets.
    pub window_ms: u64,
    /// Start of the current window, in milliseconds.
    pub window_start_ms: u64,
    /// What happens once the budget is spent.
    pub action: BudgetAction,
}

/// The outcome of [`Budget::charge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Tokens used in the window after this charge.
    pub used: u64,
    /// Tokens allowed per window.
    pub limit: u64,
    /// Tokens left in the window (0 when over).
    pub remaining: u64,
    /// `used > limit`: with [`BudgetAction::Warn`] the caller emits an event.
    pub over: bool,
}

/// A snapshot of a budget, as carried in errors and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Tokens allowed per window.
    pub limit: u64,
    /// Tokens charged in the current window.
    pub used: u64,
    /// Tokens left in the current window.
    pub remaining: u64,
    /// Window length in milliseconds; 0 means no window.
    pub window_ms: u64,
    /// When `used` next resets, in milliseconds; `None` if it never does.
    pub resets_at_ms: Option<u64>,
    /// What happens once the budget is spent.
    pub action: BudgetAction,
}

/// Why [`Budget::check`] refused an answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BudgetExceeded {
    /// The answer would fit an empty window but not what is left of this one.
    #[error(
        "token budget exhausted: answer needs {cost} tokens but {} of {} remain ({})",
        .state.remaining, .state.limit, ResetNote(.state.resets_at_ms)
    )]
    Exhausted {
        /// Tokens the answer needs.
        cost: u64,
        /// The budget when it refused.
        state: BudgetState,
    },
    /// The answer is larger than the whole limit: waiting will not help, only a smaller
    /// answer (pack it to at most `limit` tokens) will.
    #[error(
        "token budget too small: answer needs {cost} tokens but the whole budget is {} \
         tokens, so it can never pass; expected an answer of at most {} tokens",
        .state.limit, .state.limit
    )]
    LargerThanLimit {
        /// Tokens the answer needs.
        cost: u64,
        /// The budget when it refused.
        state: BudgetState,
    },
}

impl BudgetExceeded {
    /// Tokens the refused answer needed.
    pub fn cost(&self) -> u64 {
        match self {
            Self::Exhausted { cost, .. } | Self::LargerThanLimit { cost, .. } => *cost,
        }
    }

    /// The budget when it refused.
    pub fn state(&self) -> &BudgetState {
        match self {
            Self::Exhausted { state, .. } | Self::LargerThanLimit { state, .. } => state,
        }
    }
}

struct ResetNote(Option<u64>);

impl fmt::Display for ResetNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, "window resets at {at} ms"),
            None => f.write_str("the budget never resets"),
        }
    }
}

impl Budget {
    /// A fresh budget of `limit` tokens per `window_ms` (0: no window), starting at `now_ms`.
    pub fn new(limit: u64, window_ms: u64, action: BudgetAction, now_ms: u64) -> Budget {
        Budget {
            limit,
            used: 0,
            window_ms,
            window_start_ms: now_ms,
            action,
        }
    }

    /// Moves to the window containing `now_ms`, resetting `used` if that is a new window.
    /// Returns whether it rolled. [`check`](Self::check) and [`charge`](Self::charge) call it.
    pub fn roll(&mut self, now_ms: u64) -> bool {
        if self.window_ms == 0 {
            return false;
        }
        match self.window_start_ms.checked_add(self.window_ms) {
            Some(end) if now_ms >= end => {
                let elapsed = now_ms - self.window_start_ms;
                self.window_start_ms += elapsed - elapsed % self.window_ms;
                self.used = 0;
                true
            }
            _ => false,
        }
    }

    /// Call BEFORE an answer crosses. With [`BudgetAction::Halt`], refuses if
    /// `used + cost > limit` (so a cost that brings `used` to exactly `limit` passes);
    /// with [`BudgetAction::Warn`], never refuses. Charges nothing.
    pub fn check(&mut self, cost: u64, now_ms: u64) -> Result<(), BudgetExceeded> {
        self.roll(now_ms);
        if self.action == BudgetAction::Warn {
            return Ok(());
        }
        let fits = self.used.checked_add(cost).is_some_and(|t| t <= self.limit);
        if fits {
            Ok(())
        } else if cost > self.limit {
            Err(BudgetExceeded::LargerThanLimit {
                cost,
                state: self.state(),
            })
        } else {
            Err(BudgetExceeded::Exhausted {
                cost,
                state: self.state(),
            })
        }
    }

    /// Call AFTER an answer crossed: adds `cost` to `used` (saturating) and reports where
    /// the budget stands. `over` means `used > limit`.
    pub fn charge(&mut self, cost: u64, now_ms: u64) -> Charge {
        self.roll(now_ms);
        self.used = self.used.saturating_add(cost);
        Charge {
            used: self.used,
            limit: self.limit,
            remaining: self.remaining(),
            over: self.used > self.limit,
        }
    }

    /// Tokens left in the window as of the last [`roll`](Self::roll), `check` or `charge`.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// A snapshot for errors and events.
    pub fn state(&self) -> BudgetState {
        let resets_at_ms = match self.window_ms {
            0 => None,
            w => self.window_start_ms.checked_add(w),
        };
        BudgetState {
            limit: self.limit,
            used: self.used,
            remaining: self.remaining(),
            window_ms: self.window_ms,
            resets_at_ms,
            action: self.action,
        }
    }
}

/// Bound on the packing table: candidates × (`max_tokens` + 1) cells at most.
pub const MAX_PACK_CELLS: usize = 2_000_000;

/// Scores are compared as integers in millionths.
const SCORE_SCALE: f64 = 1e6;

/// One thing that could go into an answer: its relevance and what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<Id> {
    /// What the caller knows it by.
    pub id: Id,
    /// Relevance; higher is better. See [`pack`] for how it is compared.
    pub score: f64,
    /// What it costs in tokens.
    pub tokens: u32,
}

/// The outcome of [`pack`].
#[derive(Debug, Clone, PartialEq)]
pub struct Packing<Id> {
    /// The chosen candidates, best first (score descending, then id ascending).
    pub chosen: Vec<Id>,
    /// Every other candidate, in the same order.
    pub left_out: Vec<Id>,
    /// Tokens of the chosen candidates; never more than `max_tokens`.
    pub total_tokens: u64,
    /// Sum of the chosen candidates' scores.
    pub total_score: f64,
}

/// A score in integer millionths; NaN, infinite, negative and zero scores (and anything
/// that rounds to 0) are worth nothing. Saturates at `u64::MAX`.
fn score_units(score: f64) -> u64 {
    if score.is_finite() && score > 0.0 {
        // `as` saturates on overflow; the value is finite and non-negative here.
        (score * SCORE_SCALE).round() as u64
    } else {
        0
    }
}

/// Chooses the set of candidates with the largest total score whose tokens fit in
/// `max_tokens`, and lists what it left out. Deterministic and platform-independent.
///
/// - Scores are compared as integers, `round(score × 10⁶)`; NaN, infinite (either sign),
///   negative and zero scores count as 0, and a candidate worth 0 is never chosen:
///   sending it would spend the agent's tokens on nothing.
/// - Canonical order is score descending, then id ascending (then tokens ascending, then
///   the raw score, so equal-looking candidates are still ordered). Among sets with the
///   best total, the one chosen is first in canonical order: an item is taken whenever
///   taking it still attains the optimum. Both output lists are in canonical order.
/// - Candidates with 0 tokens and a positive score are always chosen; candidates with
///   more than `max_tokens` tokens are always left out.
/// - Duplicate ids are distinct candidates; a caller that wants one per id dedupes first.
/// - The search is an exact 0/1 knapsack by dynamic programming over token capacity, on a
///   table of (candidates that could be chosen) × (`max_tokens` + 1) cells. When that
///   would exceed [`MAX_PACK_CELLS`], only the highest-ranked candidates that keep the
///   table under the bound are packed exactly; the capacity they leave is then filled
///   greedily (canonical order) from the rest, and if plain greedy over all candidates
///   scores strictly higher, its set is used instead. Work and memory stay bounded, the
///   result is never worse than greedy, and it is exact whenever the table fits.
pub fn pack<Id: Ord + Clone>(candidates: &[Candidate<Id>], max_tokens: u32) -> Packing<Id> {
    let (order, chosen) = choose(candidates, max_tokens);
    let mut packing = Packing {
        chosen: Vec::new(),
        left_out: Vec::new(),
        total_tokens: 0,
        total_score: 0.0,
    };
    for i in order {
        let c = &candidates[i];
        if chosen[i] {
            packing.chosen.push(c.id.clone());
            packing.total_tokens += u64::from(c.tokens);
            packing.total_score += c.score;
        } else {
            packing.left_out.push(c.id.clone());
        }
    }
    packing
}

/// The canonical order (indices into `candidates`) and, per index, whether it is chosen.
fn choose<Id: Ord>(candidates: &[Candidate<Id>], max_tokens: u32) -> (Vec<usize>, Vec<bool>) {
    let units: Vec<u64> = candidates.iter().map(|c| score_units(c.score)).collect();
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        (Reverse(units[a]), &ca.id, ca.tokens)
            .cmp(&(Reverse(units[b]), &cb.id, cb.tokens))
            .then_with(|| cb.score.total_cmp(&ca.score))
    });
    let mut chosen = vec![false; candidates.len()];
    // Candidates that compete for capacity, in canonical order.
    let mut contest: Vec<(usize, u32, u64)> = Vec::new();
    for &i in &order {
        let tokens = candidates[i].tokens;
        if units[i] == 0 || tokens > max_tokens {
            continue;
        }
        if tokens == 0 {
            chosen[i] = true;
        } else {
            contest.push((i, tokens, units[i]));
        }
    }
    let total: u64 = contest.iter().map(|&(_, t, _)| u64::from(t)).sum();
    let picked = if total <= u64::from(max_tokens) {
        vec![true; contest.len()]
    } else {
        // Exact over the best-ranked candidates the cell bound allows (all of them when
        // it allows), greedy fill from the rest, and plain greedy if that does better.
        let cap = usize::try_from(max_tokens).unwrap_or(usize::MAX);
        let exact = (MAX_PACK_CELLS / cap.saturating_add(1)).min(contest.len());
        let (head, rest) = contest.split_at(exact);
        let mut bounded = knapsack(head, cap);
        let room = u64::from(max_tokens) - picked(head, &bounded).0;
        bounded.extend(greedy(rest, room));
        let plain = greedy(&contest, u64::from(max_tokens));
        if picked(&contest, &plain).1 > picked(&contest, &bounded).1 {
            plain
        } else {
            bounded
        }
    };
    for (&(i, _, _), take) in contest.iter().zip(picked) {
        chosen[i] = take;
    }
    (order, chosen)
}

/// Total tokens and total score units of the `picked` items.
fn picked(items: &[(usize, u32, u64)], picked: &[bool]) -> (u64, u128) {
    let taken = items.iter().zip(picked).filter(|(_, take)| **take);
    taken.fold((0, 0), |(t, v), (&(_, tokens, units), _)| {
        (t + u64::from(tokens), v + u128::from(units))
    })
}

/// Takes each item, in order, that still fits in `cap`.
fn greedy(items: &[(usize, u32, u64)], mut cap: u64) -> Vec<bool> {
    items
        .iter()
        .map(|&(_, t, _)| {
            let fits = u64::from(t) <= cap;
            if fits {
                cap -= u64::from(t);
            }
            fits
        })
        .collect()
}

/// Exact 0/1 knapsack over `items` (tokens ≥ 1) with capacity `cap`, returning the
/// optimal set that is first in the items' order. The table holds one bit per cell:
/// `take[i][c]` says whether item `i` belongs in an optimal choice from items `i..`
/// with capacity `c`, preferring to take it on a tie. Filling runs from the last item
/// backwards so that reconstruction can run forwards and decide the best items first.
fn knapsack(items: &[(usize, u32, u64)], cap: usize) -> Vec<bool> {
    // Capacity beyond what all the items need changes nothing; don't allocate it.
    let need: u64 = items.iter().map(|&(_, t, _)| u64::from(t)).sum();
    let cap = cap.min(usize::try_from(need).unwrap_or(usize::MAX));
    let width = cap + 1;
    // best[c]: the best total of the items after the current one, within capacity c.
    let mut best = vec![0u128; width];
    let mut take = vec![false; items.len() * width];
    for (i, &(_, tokens, value)) in items.iter().enumerate().rev() {
        let t = usize::try_from(tokens).unwrap_or(usize::MAX);
        let row = &mut take[i * width..(i + 1) * width];
        for c in (t..width).rev() {
            let with = best[c - t] + u128::from(value);
            if with >= best[c] {
                best[c] = with;
                row[c] = true;
            }
        }
    }
    let mut c = cap;
    items
        .iter()
        .enumerate()
        .map(|(i, &(_, tokens, _))| {
            let t = take[i * width + c];
            if t {
                c -= usize::try_from(tokens).unwrap_or(usize::MAX);
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use std::sync::LazyLock;

    static O200K: LazyLock<Tiktoken> = LazyLock::new(|| Tiktoken::o200k().expect("embedded"));

    #[test]
    fn o200k_pinned_counts() {
        let cases = [
            ("hello world", 2),
            ("", 0),
            ("The quick brown fox jumps over the lazy dog.", 10),
            ("fn main() { println!(\"hi\"); }", 9),
            ("héllo wörld 👋", 7),
            ("こんにちは世界", 2),
            // Counted as ordinary text, not as the one special token.
            ("<|endoftext|>", 7),
        ];
        for (text, tokens) in cases {
            assert_eq!(O200K.count(text), tokens, "{text:?}");
        }
        assert!(format!("{:?}", *O200K).contains("o200k_base"));
    }

    #[test]
    fn lazy_tiktoken_loads_on_first_count_and_counts_the_same() {
        let lazy = LazyTiktoken::new();
        assert_eq!(lazy.loaded(), None);
        assert_eq!(
            lazy.count("The quick brown fox jumps over the lazy dog."),
            10
        );
        assert_eq!(lazy.loaded(), Some(true));
        assert_eq!(lazy.count("héllo wörld 👋"), O200K.count("héllo wörld 👋"));
    }

    #[test]
    fn approx_counts_bytes_over_four() {
        assert_eq!(ApproxCounter.count(""), 0);
        assert_eq!(ApproxCounter.count("abcd"), 1);
        assert_eq!(ApproxCounter.count("abcde"), 2);
        assert_eq!(ApproxCounter.count("👋"), 1);
        let shared: &dyn TokenCounter = &ApproxCounter;
        assert_eq!(shared.count("hello world"), 3);
    }

    #[test]
    fn action_names_are_lowercase() {
        let de = |s: &'static str| {
            BudgetAction::deserialize(s.into_deserializer())
                .map_err(|e: serde::de::value::Error| e.to_string())
        };
        assert_eq!(de("halt"), Ok(BudgetAction::Halt));
        assert_eq!(de("warn"), Ok(BudgetAction::Warn));
        assert!(de("Halt").is_err());
    }

    #[test]
    fn exactly_at_limit_passes_one_more_is_refused() {
        let mut b = Budget::new(100, 0, BudgetAction::Halt, 5);
        assert_eq!(b.check(100, 5), Ok(()));
        let charge = b.charge(100, 5);
        assert_eq!(
            charge,
            Charge {
                used: 100,
                limit: 100,
                remaining: 0,
                over: false
            }
        );
        let err = b.check(1, 6).expect_err("one token over");
        assert!(matches!(err, BudgetExceeded::Exhausted { cost: 1, .. }));
        assert_eq!(err.state().resets_at_ms, None);
        assert!(err.to_string().contains("never resets"), "{err}");
        assert_eq!(b.check(0, 7), Ok(()));
    }

    #[test]
    fn refusal_message_says_what_remains() {
        let mut b = Budget::new(1000, 60_000, BudgetAction::Halt, 1_000);
        b.charge(970, 2_000);
        let err = b.check(120, 3_000).expect_err("over");
        assert_eq!(err.cost(), 120);
        assert_eq!(
            err.to_string(),
            "token budget exhausted: answer needs 120 tokens but 30 of 1000 remain \
             (window resets at 61000 ms)"
        );
        let too_big = b.check(1001, 3_000).expect_err("never fits");
        assert!(matches!(too_big, BudgetExceeded::LargerThanLimit { .. }));
        assert!(
            too_big.to_string().contains("at most 1000 tokens"),
            "{too_big}"
        );
    }

    #[test]
    fn zero_limit_halts_every_nonzero_cost() {
        let mut b = Budget::new(0, 1_000, BudgetAction::Halt, 0);
        assert_eq!(b.check(0, 0), Ok(()));
        for now in [0, 999, 1_000, 50_000] {
            assert!(b.check(1, now).is_err());
        }
    }

    #[test]
    fn warn_never_refuses_and_reports_over() {
        let mut b = Budget::new(10, 0, BudgetAction::Warn, 0);
        assert_eq!(b.check(50, 0), Ok(()));
        let charge = b.charge(50, 0);
        assert!(charge.over);
        assert_eq!((charge.used, charge.remaining), (50, 0));
        assert_eq!(b.check(u64::MAX, 1), Ok(()));
        assert_eq!(b.charge(u64::MAX, 1).used, u64::MAX);
    }

    #[test]
    fn window_rolls_by_whole_windows() {
        let mut b = Budget::new(100, 1_000, BudgetAction::Halt, 500);
        b.charge(100, 600);
        assert!(b.check(1, 1_499).is_err());
        assert_eq!(b.check(1, 1_500), Ok(()));
        assert_eq!((b.used, b.window_start_ms), (0, 1_500));
        b.charge(40, 1_600);
        // Skips 2,500..3,499 and 3,500..4,499 entirely.
        assert!(b.roll(4_999));
        assert_eq!((b.used, b.window_start_ms), (0, 4_500));
        assert_eq!(b.state().resets_at_ms, Some(5_500));
        // Time going backwards leaves the window alone.
        b.charge(10, 100);
        assert_eq!((b.used, b.window_start_ms), (10, 4_500));
        // No overflow near the end of time.
        let mut late = Budget::new(1, u64::MAX, BudgetAction::Halt, 10);
        assert!(!late.roll(u64::MAX));
        assert_eq!(late.state().resets_at_ms, None);
    }

    fn c(id: u32, score: f64, tokens: u32) -> Candidate<u32> {
        Candidate { id, score, tokens }
    }

    #[test]
    fn beats_greedy_on_a_small_case() {
        let p = pack(&[c(1, 10.0, 10), c(2, 6.0, 5), c(3, 6.0, 5)], 10);
        assert_eq!(p.chosen, vec![2, 3]);
        assert_eq!(p.left_out, vec![1]);
        assert_eq!((p.total_tokens, p.total_score), (10, 12.0));
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let p = pack(&[c(9, 1.0, 4), c(3, 1.0, 4), c(5, 1.0, 4)], 8);
        assert_eq!((p.chosen, p.left_out), (vec![3, 5], vec![9]));
        // Equal totals: {score 2} vs {1, 1}; the set starting with the best item wins.
        let p = pack(&[c(1, 1.0, 1), c(2, 1.0, 1), c(3, 2.0, 2)], 2);
        assert_eq!((p.chosen, p.left_out), (vec![3], vec![1, 2]));
    }

    #[test]
    fn edge_cases() {
        let all = [c(1, 0.5, 3), c(2, 0.7, 3), c(3, 0.1, 0)];
        let p = pack(&all, 6);
        assert_eq!((p.chosen, p.total_tokens), (vec![2, 1, 3], 6));
        let p = pack(&all, 0);
        assert_eq!((p.chosen, p.left_out), (vec![3], vec![2, 1]));
        let p = pack::<u32>(&[], 100);
        assert!(p.chosen.is_empty() && p.left_out.is_empty() && p.total_score == 0.0);
        let odd = [
            c(1, f64::NAN, 1),
            c(2, -1.0, 1),
            c(3, f64::INFINITY, 1),
            c(4, 0.0, 0),
        ];
        let p = pack(&odd, 10);
        assert!(p.chosen.is_empty());
        assert_eq!(p.left_out, vec![1, 2, 3, 4]);
        let p = pack(&[c(1, 1.0, 11), c(2, 0.1, 10)], 10);
        assert_eq!((p.chosen, p.left_out), (vec![2], vec![1]));
    }

    #[test]
    fn bounded_table_stays_sane() {
        // 300 × 10,000 cells > MAX_PACK_CELLS: 200 exact, the rest greedy.
        let many: Vec<_> = (0..300)
            .map(|i| c(i, f64::from(i % 7 + 1), 60 + i % 13))
            .collect();
        let p = pack(&many, 9_999);
        assert!(p.total_tokens <= 9_999 && p.total_tokens > 9_900);
        assert_eq!(p.chosen.len() + p.left_out.len(), 300);
        // max_tokens beyond the bound: nothing exact, still a full greedy answer.
        let huge = [
            c(1, 3.0, 1_500_000),
            c(2, 2.0, 1_500_000),
            c(3, 1.0, 900_000),
        ];
        let p = pack(&huge, 2_500_000);
        assert_eq!((p.chosen, p.left_out), (vec![1, 3], vec![2]));
    }

    fn units_of(cands: &[Candidate<u32>], max: u32) -> (u128, Vec<bool>) {
        let (_, chosen) = choose(cands, max);
        let total = cands
            .iter()
            .zip(&chosen)
            .filter(|(_, t)| **t)
            .map(|(c, _)| u128::from(score_units(c.score)))
            .sum();
        (total, chosen)
    }

    /// Total score units of greedy by score: canonical order, take what still fits.
    fn greedy_units(cands: &[Candidate<u32>], max: u32) -> u128 {
        let mut room = u64::from(max);
        let mut total = 0u128;
        for i in choose(cands, max).0 {
            let (u, t) = (score_units(cands[i].score), u64::from(cands[i].tokens));
            if u > 0 && t <= room {
                room -= t;
                total += u128::from(u);
            }
        }
        total
    }

    fn arb_candidates(max_len: usize) -> impl Strategy<Value = Vec<Candidate<u32>>> {
        let score = prop_oneof![
            4 => 0.0..5.0f64,
            4 => (0u8..4).prop_map(f64::from),
            1 => prop::sample::select(vec![f64::NAN, -1.0, f64::INFINITY, 0.0]),
        ];
        prop::collection::vec((0u32..6, score, 0u32..12), 0..max_len)
            .prop_map(|v| v.into_iter().map(|(id, s, t)| c(id, s, t)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn bounded_packing_invariants(
            cands in prop::collection::vec((0u32..1000, 0.0..10.0f64, 1u32..150), 201..260),
        ) {
            // Over MAX_PACK_CELLS with max_tokens 9,999: exact head, greedy rest.
            let cands: Vec<_> = cands.into_iter().map(|(id, s, t)| c(id, s, t)).collect();
            let p = pack(&cands, 9_999);
            prop_assert!(p.total_tokens <= 9_999);
            prop_assert_eq!(p.chosen.len() + p.left_out.len(), cands.len());
            prop_assert!(units_of(&cands, 9_999).0 >= greedy_units(&cands, 9_999));
        }
    }

    proptest! {
        #[test]
        fn halt_never_overspends(
            limit in 0u64..500,
            window in 0u64..100,
            ops in prop::collection::vec((0u64..200, 0u64..40), 0..60),
        ) {
            let mut b = Budget::new(limit, window, BudgetAction::Halt, 7);
            let mut now = 7;
            for (cost, dt) in ops {
                now += dt;
                if b.check(cost, now).is_ok() {
                    let charge = b.charge(cost, now);
                    prop_assert!(!charge.over);
                }
                prop_assert!(b.used <= b.limit);
            }
        }

        #[test]
        fn rolling_is_deterministic(
            start in 0u64..1_000,
            window in 1u64..500,
            steps in prop::collection::vec(0u64..700, 0..20),
        ) {
            let mut stepped = Budget::new(10, window, BudgetAction::Warn, start);
            let mut now = start;
            for dt in steps {
                now += dt;
                stepped.charge(1, now);
            }
            let mut direct = Budget::new(10, window, BudgetAction::Warn, start);
            direct.roll(now);
            prop_assert_eq!(stepped.window_start_ms, direct.window_start_ms);
            prop_assert_eq!((direct.window_start_ms - start) % window, 0);
            prop_assert!(direct.window_start_ms <= now && now < direct.window_start_ms + window);
        }

        #[test]
        fn packing_invariants(cands in arb_candidates(24), max in 0u32..60, seed in any::<u64>()) {
            let p = pack(&cands, max);
            prop_assert!(p.total_tokens <= u64::from(max));
            let mut ids: Vec<u32> = p.chosen.iter().chain(&p.left_out).copied().collect();
            let mut expected: Vec<u32> = cands.iter().map(|c| c.id).collect();
            ids.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(ids, expected);

            // Shuffle deterministically from the seed.
            let mut shuffled = cands.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                shuffled.swap(i, usize::try_from(s % (i as u64 + 1)).unwrap_or(0));
            }
            prop_assert_eq!(pack(&shuffled, max), p);

            prop_assert!(units_of(&cands, max).0 >= greedy_units(&cands, max));
        }

        #[test]
        fn packing_matches_brute_force(cands in arb_candidates(11), max in 0u32..40) {
            let (order, _) = choose(&cands, max);
            let (total, chosen) = units_of(&cands, max);
            // Best over all subsets; ties go to the subset first in canonical order.
            let mut best: Option<(u128, Vec<bool>)> = None;
            for mask in 0u32..(1 << cands.len()) {
                let pick: Vec<bool> = order
                    .iter()
                    .map(|&i| mask & (1 << i) != 0 && score_units(cands[i].score) > 0)
                    .collect();
                if pick.iter().zip(&order).any(|(p, &i)| !p && mask & (1 << i) != 0) {
                    continue;
                }
                let mut t = 0u64;
                let mut v = 0u128;
                for (p, &i) in pick.iter().zip(&order) {
                    if *p {
                        t += u64::from(cands[i].tokens);
                        v += u128::from(score_units(cands[i].score));
                    }
                }
                if t > u64::from(max) {
                    continue;
                }
                let better = match &best {
                    None => true,
                    Some((bv, bp)) => v > *bv || (v == *bv && pick > *bp),
                };
                if better {
                    best = Some((v, pick));
                }
            }
            let (bv, bp) = best.unwrap_or_default();
            prop_assert_eq!(total, bv);
            let got: Vec<bool> = order.iter().map(|&i| chosen[i]).collect();
            prop_assert_eq!(got, bp);
        }
    }
}
