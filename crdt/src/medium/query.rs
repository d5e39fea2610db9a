//! Reading the medium: queries with hidden counts and denial reasons, and search ranked
//! by relevance × trust × decay × evidence and packed into a token budget.

use std::collections::{BTreeMap, BTreeSet};

use membrane_protocol::cost::{self, Candidate};
use membrane_protocol::permeability::{
    Decision, DenyReason, EntryMeta, HiddenReason, Reader, TrustGraph, decide, tier_gate,
};
use membrane_protocol::{Entry, EntryKind, EnvelopeId, Evidence, Key, Pattern, PublicKey, Space};

use super::{Error, Medium};
use crate::index::{Conflict, Index, Newest};
use crate::storage::Storage;

/// Most candidates search ranks before packing.
pub const SEARCH_CANDIDATES: usize = 256;
/// Fewest candidates search ranks, however small the budget.
const MIN_SEARCH_CANDIDATES: usize = 16;
/// Candidates per token of budget: a hit costs tens to hundreds of tokens, so one
/// candidate per 8 tokens leaves the packer several times more hits than can fit.
const TOKENS_PER_CANDIDATE: u32 = 8;

/// How many BM25 candidates a search with `max_tokens` ranks and packs.
pub fn search_candidates(max_tokens: u32) -> usize {
    usize::try_from(max_tokens / TOKENS_PER_CANDIDATE)
        .unwrap_or(SEARCH_CANDIDATES)
        .clamp(MIN_SEARCH_CANDIDATES, SEARCH_CANDIDATES)
}

/// What a query or search keeps besides what the reader may see: entry kinds, and
/// entries verified by at least `k` agents other than their owner with no dispute the
/// reader trusts ([`coord::verification`](crate::coord::verification)). The default
/// keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Kinds kept; empty keeps every kind.
    pub kinds: BTreeSet<EntryKind>,
    /// Keep only entries verified by at least this many other agents.
    pub verified: Option<usize>,
}

impl Filter {
    /// Keeps only these kinds.
    pub fn kinds(kinds: impl IntoIterator<Item = EntryKind>) -> Self {
        Filter {
            kinds: kinds.into_iter().collect(),
            verified: None,
        }
    }

    /// Whether it keeps everything.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.verified.is_none()
    }

    /// Whether `entry` passes, as `reader` (with `trust`) sees its verdicts.
    fn admits(&self, index: &Index, entry: &Entry, reader: &Reader, trust: &TrustGraph) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&entry.body().kind) {
            return false;
        }
        self.verified.is_none_or(|k| {
            crate::coord::verification(
                index,
                &entry.id(),
                Some(entry.owner()),
                &reader.id,
                trust,
                k,
            )
            .verified
        })
    }
}

/// A denial in a query answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The key denied.
    pub key: Key,
    /// Why.
    pub reason: DenyReason,
}

/// An entry left out of an answer, and why (for the node's audit log; never shown to
/// the agent, which sees only the `hidden` count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// Its key.
    pub key: Key,
    /// Its owner.
    pub owner: PublicKey,
    /// Why, in words.
    pub reason: String,
}

/// Why an entry the reader may not see is hidden, in words.
pub fn hidden_text(reason: &HiddenReason) -> String {
    match reason {
        HiddenReason::Private => "private to its owner".to_owned(),
        HiddenReason::NotAccepted => "the reader's accept patterns do not cover the key".to_owned(),
        HiddenReason::MissingTag { tag } => format!("it lacks the tag {tag} the reader requires"),
        HiddenReason::OwnerBelowMinTrust { trust, min } => {
            format!("the reader trusts its owner {trust} < {min}")
        }
        HiddenReason::WeakEvidence { evidence, min } => {
            format!("its evidence {evidence:?} is weaker than the {min:?} the reader requires")
        }
    }
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAnswer {
    /// Entries the reader may see, newest version per (owner, key), in key order.
    pub hits: Vec<Entry>,
    /// How many matching entries were withheld (private, or filtered by the reader).
    pub hidden: usize,
    /// The withheld entries, with why (as many as `hidden`).
    pub withheld: Vec<Withheld>,
    /// Matching entries the reader was refused, with reasons.
    pub denied: Vec<Denial>,
    /// Tokens each hit costs as rendered for the agent ([`render_hit`]), in `hits` order:
    /// counted once when the entry was indexed.
    pub hit_tokens: Vec<u32>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The entry.
    pub entry: Entry,
    /// Relevance × trust × decay × evidence.
    pub score: f64,
    /// Tokens the hit costs when rendered for the agent.
    pub tokens: u32,
}

/// The answer to a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchAnswer {
    /// Hits packed into the budget, best first.
    pub hits: Vec<SearchHit>,
    /// Their total tokens.
    pub total_tokens: u64,
    /// Relevant visible entries left out for the budget.
    pub left_out: usize,
    /// Entries the node's defences left out (the medium itself leaves none).
    pub withheld: Vec<Withheld>,
}

/// Evidence weight in ranking: tool results count fully, opinions least.
fn evidence_weight(evidence: Evidence) -> f64 {
    match evidence {
        Evidence::ToolResult => 1.0,
        Evidence::ExternalSource => 0.9,
        Evidence::LlmInterpretation => 0.75,
        Evidence::AgentOpinion => 0.6,
    }
}

/// How a hit is shown to an agent; its tokens are what the hit costs.
pub fn render_hit(entry: &Entry) -> String {
    format!(
        "[{}] {} ({}, {}): {}",
        entry.id().short(),
        entry.body().key,
        entry.owner().short(),
        entry.body().kind,
        entry.body().value
    )
}

impl<S: Storage> Medium<S> {
    /// Entries matching `pattern` as `reader` may see them: hits, a hidden count and
    /// denials with reasons. Expired entries are left out unless `include_expired`.
    pub fn query(
        &self,
        reader: &Reader,
        space: &Space,
        pattern: &Pattern,
        now_ms: u64,
        include_expired: bool,
    ) -> Result<QueryAnswer, Error<S::Error>> {
        self.query_with(
            reader,
            space,
            pattern,
            now_ms,
            include_expired,
            &Filter::default(),
        )
    }

    /// [`query`](Self::query) keeping only what `filter` admits; entries it leaves out
    /// are neither hits nor hidden.
    pub fn query_with(
        &self,
        reader: &Reader,
        space: &Space,
        pattern: &Pattern,
        now_ms: u64,
        include_expired: bool,
        filter: &Filter,
    ) -> Result<QueryAnswer, Error<S::Error>> {
        let state = self.space(space)?;
        let trust = state.index.trust_graph(self.config.trust_threshold);
        let mut answer = QueryAnswer {
            hits: Vec::new(),
            hidden: 0,
            withheld: Vec::new(),
            denied: Vec::new(),
            hit_tokens: Vec::new(),
        };
        for (key, owner, newest) in state
            .index
            .newest(pattern.literal_prefix(), |k| pattern.matches(k))
        {
            let decision = match &newest {
                Newest::Held(id) => {
                    let Some(entry) = state.index.entry(id) else {
                        continue;
                    };
                    if entry.expired(now_ms) && !include_expired {
                        continue;
                    }
                    if !filter.is_empty() && !filter.admits(&state.index, entry, reader, &trust) {
                        continue;
                    }
                    let decision = decide(reader, EntryMeta::from(entry), &trust);
                    if decision.is_visible() {
                        let tokens = state.index.tokens(id).unwrap_or_else(|| {
                            u32::try_from(self.tokens.count(&render_hit(entry))).unwrap_or(u32::MAX)
                        });
                        answer.hit_tokens.push(tokens);
                        answer.hits.push(entry.clone());
                        continue;
                    }
                    decision
                }
                Newest::Traced(_, tier) => tier_gate(&reader.id, &owner, *tier, &trust),
            };
            let reason = match decision {
                Decision::Visible => "known from its trace, not held here".to_owned(),
                Decision::Hidden { reason } => hidden_text(&reason),
                Decision::Denied { reason } => {
                    answer.denied.push(Denial { key, reason });
                    continue;
                }
            };
            answer.hidden += 1;
            answer.withheld.push(Withheld { key, owner, reason });
        }
        Ok(answer)
    }

    /// Ranks the entries `reader` may see by relevance to `text` × the reader's trust in
    /// the owner × time decay × evidence, and packs the best into `max_tokens`.
    pub fn search(
        &self,
        reader: &Reader,
        space: &Space,
        text: &str,
        max_tokens: u32,
        now_ms: u64,
    ) -> Result<SearchAnswer, Error<S::Error>> {
        self.search_with(reader, space, text, max_tokens, now_ms, &Filter::default())
    }

    /// [`search`](Self::search) among the entries `filter` admits only: a left-out entry
    /// never takes a candidate's place.
    pub fn search_with(
        &self,
        reader: &Reader,
        space: &Space,
        text: &str,
        max_tokens: u32,
        now_ms: u64,
        filter: &Filter,
    ) -> Result<SearchAnswer, Error<S::Error>> {
        let state = self.space(space)?;
        let trust = state.index.trust_graph(self.config.trust_threshold);
        let index = &state.index;
        let visible = |id: &EnvelopeId| {
            index.entry(id).is_some_and(|entry| {
                !entry.expired(now_ms)
                    && !index.is_retracted(id)
                    && index.is_newest(entry)
                    && decide(reader, EntryMeta::from(entry), &trust).is_visible()
                    && (filter.is_empty() || filter.admits(index, entry, reader, &trust))
            })
        };
        let found =
            index
                .search_index()
                .search_filtered(text, search_candidates(max_tokens), visible);
        let mut candidates = Vec::with_capacity(found.len());
        let mut scored = BTreeMap::new();
        for hit in found {
            let Some(entry) = index.entry(&hit.id) else {
                continue;
            };
            let trust_weight = if entry.owner() == &reader.id {
                1.0
            } else {
                0.5 + 0.5 * trust.get(&reader.id, entry.owner()).as_f64()
            };
            let score = hit.score
                * trust_weight
                * entry.decay(now_ms)
                * evidence_weight(entry.body().evidence);
            let tokens = index.tokens(&hit.id).unwrap_or_else(|| {
                u32::try_from(self.tokens.count(&render_hit(entry))).unwrap_or(u32::MAX)
            });
            candidates.push(Candidate {
                id: hit.id,
                score,
                tokens,
            });
            scored.insert(hit.id, (entry.clone(), score, tokens));
        }
        let packing = cost::pack(&candidates, max_tokens);
        let hits = packing
            .chosen
            .iter()
            .filter_map(|id| scored.get(id))
            .map(|(entry, score, tokens)| SearchHit {
                entry: entry.clone(),
                score: *score,
                tokens: *tokens,
            })
            .collect();
        Ok(SearchAnswer {
            hits,
            total_tokens: packing.total_tokens,
            left_out: packing.left_out.len(),
            withheld: Vec::new(),
        })
    }

    /// Current conflicts on keys matching `pattern`.
    pub fn conflicts(&self, space: &Space, pattern: &Pattern) -> Vec<Conflict> {
        self.spaces
            .get(space)
            .map(|s| {
                s.index
                    .conflicts(pattern.literal_prefix(), |k| pattern.matches(k))
            })
            .unwrap_or_default()
    }
}
