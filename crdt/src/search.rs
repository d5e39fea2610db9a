//! # Text relevance: an incremental, in-memory BM25 index
//!
//! The medium ranks visible entries by *text relevance × owner trust × time decay ×
//! evidence weight*. This module is the first factor only: a full-text index over the
//! entries' text that answers "which documents match these words, and how well" with
//! Okapi BM25 scores. Trust, decay, visibility and the token budget are applied by the
//! caller; [`SearchIndex::search_filtered`] lets it reject documents (for example ones the
//! asking agent may not see) before they take a result slot.
//!
//! ## Scoring
//!
//! BM25 as described by Robertson & Zaragoza, *"The Probabilistic Relevance Framework:
//! BM25 and Beyond"*, Foundations and Trends in Information Retrieval 3(4), 2009. For a
//! query `Q` (its distinct analysed terms; a repeated query term counts once) and a
//! document `D`:
//!
//! ```text
//! score(D, Q) = Σ_{t ∈ Q}  idf(t) · tf(t, D) · (k1 + 1) / (tf(t, D) + k1 · (1 − b + b · |D| / avgdl))
//! idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
//! ```
//!
//! where `tf(t, D)` is how often the analysed term occurs in `D`, `|D|` is the number of
//! analysed tokens of `D`, `avgdl` the mean of `|D|` over the live documents, `N` the
//! number of live documents and `df(t)` how many of them contain `t`. The idf is the
//! Robertson–Spärck Jones weight without relevance information, shifted by one inside the
//! logarithm (as Lucene does) so that it stays positive even for terms in more than half
//! of the documents; a matching term therefore never lowers a score. [`K1`] = 1.2 and
//! [`B`] = 0.75 are the customary defaults. Every statistic always describes exactly the
//! live documents: a removed document stops counting in `N`, `df` and `avgdl` at once.
//!
//! ## Index layout
//!
//! * Each distinct analysed term gets a dense `u32` term id (looked up through a
//!   `HashMap`) and a posting list of `(document number, tf)` pairs, stored as two
//!   parallel vectors (`u32` document numbers, `u16` frequencies; a document has at most
//!   [`MAX_TOKENS`] tokens, so every `tf` fits) in increasing document order.
//! * Each document gets a dense `u32` document number, assigned in arrival order. Per
//!   document the index keeps its caller id, its token count and the list of its
//!   distinct term ids (needed to undo it on removal) — nothing else, not its text.
//! * Caller ids map to document numbers through a `BTreeMap`, since `Id` is only `Ord`.
//!
//! **Removal** marks the document number as a tombstone and decrements `df` of each of
//! its terms (`O(distinct terms)`); its postings stay in place and are skipped while
//! scoring. A term whose `df` drops to zero is forgotten at once and its id reused. When
//! tombstones outnumber live documents (more than half of all document numbers are
//! dead), the index **compacts**: it renumbers the live documents densely, keeping their
//! order, and rewrites every posting list without the dead entries. A compaction costs
//! time linear in the postings, and since it needs at least as many removals since the
//! previous one as there are live documents, its cost is amortised `O(1)` per removal
//! (in units of one document's postings). An individual removal that triggers it is the
//! one slow step. Re-inserting an existing id is a removal followed by an insertion.
//!
//! **Search** analyses the query, scores term-at-a-time into a dense accumulator (one
//! `f64` per document number, plus a list of the documents touched), then keeps the best
//! `limit` in a bounded binary heap (`O(matches · log limit)`) instead of sorting every
//! match. Results are ordered by score descending, ties broken by id ascending; only
//! documents with a score above zero are returned.
//!
//! ## Determinism
//!
//! No hash-map iteration order ever reaches a result: hash maps are only used for
//! lookups, query terms are scored in lexicographic order of their text, and the final
//! order is a total order on `(score, id)`. Because every statistic is an integer count
//! and the floating-point operations run in the same order, the score of a document
//! depends only on the set of live documents and the query — not on the order in which
//! documents arrived, were replaced or removed, nor on when the index compacted — and it
//! is bit-for-bit reproducible. (The hash maps use the standard library's randomly keyed
//! hasher, which resists hash flooding by hostile text; that randomness affects speed
//! only, never a result.) The module is sans-IO: no clocks, no randomness of its own, no
//! files, no threads.
//!
//! ## Analyzer
//!
//! [`tokenize`] is the one analyzer, used for documents and queries alike:
//!
//! 1. Split the text into runs of alphanumeric characters (`char::is_alphanumeric`, so
//!    letters and digits of every script). Everything else separates tokens; combining
//!    diacritical marks (U+0300–U+036F and the related supplement blocks) do not break
//!    a word they follow. Han ideographs and Hiragana, which are written without
//!    spaces, become one token per character. Numbers are ordinary tokens: `"1985"`
//!    stays `"1985"`, and `"3.14"` is `"3"`, `"14"`.
//! 2. Lowercase with Unicode case mapping (`char::to_lowercase`); Greek final sigma `ς`
//!    is folded to `σ` so that a word matches whether it was written in capitals or not.
//!    No Unicode normalisation is done: text that should match across NFC/NFD forms must
//!    be normalised by the caller.
//! 3. Truncate a token to at most [`MAX_TOKEN_BYTES`] (64) bytes of its lowercase form, at a
//!    character boundary. A query for the same long word is truncated the same way, so it
//!    still matches; a 64-character hex digest is kept whole.
//! 4. Drop the tokens in [`STOPWORDS`], a fixed list of 77 English function words
//!    (articles, pronouns, auxiliaries, question words). Words that are often names or
//!    abbreviations (`"us"`, `"may"`, `"will"`, `"can"`) are deliberately not in it.
//! 5. Stem tokens made only of ASCII letters `a`–`z` (and not truncated) with step 1 of
//!    Porter's algorithm (M. F. Porter, *"An algorithm for suffix stripping"*, Program
//!    14(3), 1980): plurals (`-sses`, `-ies`, `-s`) and `-eed`/`-ed`/`-ing`, with its
//!    clean-ups (`-at`/`-bl`/`-iz` regain their `e`, doubled final consonants are
//!    undoubled, short stems regain an `e`), and a final `y` after a vowel-bearing stem
//!    becomes `i`. So `"cities"` and `"city"` both become `"citi"`, `"running"` becomes
//!    `"run"`, `"hoping"` becomes `"hope"`. The stems are index keys, not words. Tokens
//!    with digits or non-ASCII letters are left as they are. (A full Snowball stemmer,
//!    the `rust-stemmers` crate, was considered: its last release, 1.2.0, dates from
//!    2020 and has a reported out-of-bounds panic on some non-ASCII words, and a panic
//!    on text a peer sent would crash the node. Light stemming is enough for recall.)
//! 6. Stop after [`MAX_TOKENS`] (4096) kept tokens: a document contributes at most that
//!    many, and a longer text is indexed by its beginning only, so the work per document
//!    is bounded whatever a peer sends. Queries are capped the same way.
//!
//! Tokenising is otherwise linear in the text, with one token buffer of 64 bytes.
//!
//! ## Why not tantivy
//!
//! A general search engine such as tantivy was considered and not used:
//!
//! * Entries arrive, are retracted and expire one at a time, and each change must be
//!   searchable at once. Segment-based engines make changes visible through a commit and
//!   a reader reload, which is costly to do after every single entry.
//! * Results must be deterministic and depend only on the live entries. Segment-based
//!   engines typically keep deleted documents in their statistics until segments merge,
//!   and their merge schedule and threads are outside the caller's control.
//! * The index lives in memory and is rebuilt from the medium's entries; it needs no
//!   directory, files or background threads, and this crate is sans-IO.
//! * The corpus is small digests (entries of at most 16 KiB, usually a paragraph):
//!   a plain inverted index answers a ten-word query over 100 000 of them in well under
//!   a millisecond at the median, and its whole behaviour fits in this one file.
//! * It costs no dependency and a fraction of the compile time.
//!
//! ## Limits
//!
//! Document numbers and term ids are `u32`; an index holds fewer than 2³² documents and
//! distinct terms (memory runs out long before). There is no phrase or field search and
//! no word segmentation for scripts other than Han and Hiragana (Thai, for example, is
//! indexed by whole runs of letters).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;

/// BM25 term-frequency saturation `k1`: how quickly repeated occurrences of a term stop
/// adding to a score (1.2, the customary default).
pub const K1: f64 = 1.2;

/// BM25 length normalisation `b`: 0 ignores document length, 1 normalises fully by
/// length relative to the average (0.75, the customary default).
pub const B: f64 = 0.75;

/// Longest token kept, in bytes of its lowercase UTF-8 form; longer tokens are truncated
/// to this many bytes at a character boundary (and then not stemmed).
pub const MAX_TOKEN_BYTES: usize = 64;

/// Most tokens [`tokenize`] produces for one text; a document contributes at most this
/// many tokens to the index, and the rest of its text is not indexed.
pub const MAX_TOKENS: usize = 4096;

/// The fixed English stopword list, sorted; these lowercase tokens are dropped before
/// stemming. It holds articles, pronouns, auxiliaries, common prepositions and
/// conjunctions, question words, and the `s` and `t` left over from splitting `it's`
/// and `don't`.
pub const STOPWORDS: &[&str] = &[
    "a", "also", "am", "an", "and", "are", "as", "at", "be", "been", "being", "but", "by", "could",
    "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "hers", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or",
    "our", "s", "she", "should", "so", "such", "t", "than", "that", "the", "their", "theirs",
    "them", "then", "there", "these", "they", "this", "those", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "whom", "whose", "why", "with", "would", "you", "your",
];

/// Byte length of the longest word in [`STOPWORDS`].
const LONGEST_STOPWORD: usize = 6;

/// Marks a tombstoned document number in `SearchIndex::lens` (real lengths are at most
/// [`MAX_TOKENS`]).
const DEAD: u32 = u32::MAX;

/// One ranked result of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<Id> {
    /// The id the document was inserted under.
    pub id: Id,
    /// Its BM25 score for the query; always greater than zero.
    pub score: f64,
}

/// The posting list of one term.
#[derive(Debug, Clone, Default)]
struct Postings {
    /// The term's text, so that it can be dropped from the dictionary when `df` reaches
    /// zero. Empty for a free term id.
    term: Box<str>,
    /// Document numbers, increasing; may include tombstoned documents.
    docs: Vec<u32>,
    /// Term frequency in the document at the same position of `docs`.
    tfs: Vec<u16>,
    /// Number of live documents containing the term.
    df: u32,
}

/// What the index keeps about a live document.
#[derive(Debug, Clone)]
struct Slot<Id> {
    id: Id,
    /// The document's distinct term ids, to undo it on removal.
    terms: Box<[u32]>,
}

/// An incremental, in-memory BM25 index over short texts, keyed by caller ids.
///
/// Insertions and removals take effect immediately; see the [module documentation](self)
/// for the scoring, the analyzer and the cost of each operation.
#[derive(Clone)]
pub struct SearchIndex<Id> {
    /// Term text → term id, for live terms only (`df > 0`).
    terms: HashMap<Box<str>, u32>,
    /// Indexed by term id.
    postings: Vec<Postings>,
    /// Term ids whose term is gone, for reuse.
    free_terms: Vec<u32>,
    /// Indexed by document number; `None` for a tombstone.
    slots: Vec<Option<Slot<Id>>>,
    /// Indexed by document number: token count, or [`DEAD`] for a tombstone. Kept apart
    /// from `slots` so that scoring reads a dense array.
    lens: Vec<u32>,
    /// Caller id → document number, for live documents.
    ids: BTreeMap<Id, u32>,
    /// Sum of the live documents' token counts.
    total_len: u64,
    /// Number of tombstones in `slots`.
    dead: usize,
}

impl<Id> Default for SearchIndex<Id> {
    fn default() -> Self {
        Self {
            terms: HashMap::new(),
            postings: Vec::new(),
            free_terms: Vec::new(),
            slots: Vec::new(),
            lens: Vec::new(),
            ids: BTreeMap::new(),
            total_len: 0,
            dead: 0,
        }
    }
}

impl<Id> fmt::Debug for SearchIndex<Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchIndex")
            .field("documents", &self.ids.len())
            .field("terms", &self.terms.len())
            .field("tombstones", &self.dead)
            .field("total_tokens", &self.total_len)
            .finish_non_exhaustive()
    }
}

impl<Id: Ord + Clone> SearchIndex<Id> {
    /// An empty index scoring with BM25, `k1` = [`K1`] and `b` = [`B`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes `text` under `id`, replacing whatever `id` held before. The document is
    /// searchable as soon as this returns. A text with no indexable token (empty, or only
    /// stopwords) is still a document: it counts in [`len`](Self::len) and in the corpus
    /// statistics but matches no query. Only the first [`MAX_TOKENS`] tokens are indexed.
    ///
    /// # Panics
    ///
    /// If the index would need more than `u32::MAX - 1` document numbers or term ids,
    /// which takes far more memory than any machine has.
    pub fn insert(&mut self, id: Id, text: &str) {
        self.remove(&id);

        let mut term_ids: Vec<u32> = Vec::new();
        {
            let terms = &mut self.terms;
            let postings = &mut self.postings;
            let free_terms = &mut self.free_terms;
            for_each_token(text, |token| {
                let term_id = match terms.get(token) {
                    Some(&term_id) => term_id,
                    None => {
                        let term_id = match free_terms.pop() {
                            Some(term_id) => term_id,
                            None => {
                                postings.push(Postings::default());
                                to_u32(postings.len() - 1)
                            }
                        };
                        if let Some(list) = postings.get_mut(term_id as usize) {
                            list.term = token.into();
                        }
                        terms.insert(token.into(), term_id);
                        term_id
                    }
                };
                term_ids.push(term_id);
            });
        }

        // At most MAX_TOKENS tokens, so the length and every tf fit.
        let len = to_u32(term_ids.len());
        let doc = to_u32(self.slots.len());
        term_ids.sort_unstable();
        let mut distinct = Vec::new();
        for run in term_ids.chunk_by(|a, b| a == b) {
            let term_id = run[0];
            if let Some(list) = self.postings.get_mut(term_id as usize) {
                list.docs.push(doc);
                list.tfs.push(u16::try_from(run.len()).unwrap_or(u16::MAX));
                list.df += 1;
            }
            distinct.push(term_id);
        }

        self.slots.push(Some(Slot {
            id: id.clone(),
            terms: distinct.into_boxed_slice(),
        }));
        self.lens.push(len);
        self.ids.insert(id, doc);
        self.total_len += u64::from(len);
    }

    /// Removes the document stored under `id`; returns whether there was one. It stops
    /// matching, and stops counting in the corpus statistics, immediately. Usually
    /// `O(distinct terms of the document)`; see the module docs for compaction.
    pub fn remove(&mut self, id: &Id) -> bool {
        let Some(doc) = self.ids.remove(id) else {
            return false;
        };
        let doc = doc as usize;
        if let Some(slot) = self.slots.get_mut(doc).and_then(Option::take) {
            for &term_id in &slot.terms {
                let Some(list) = self.postings.get_mut(term_id as usize) else {
                    continue;
                };
                list.df = list.df.saturating_sub(1);
                if list.df == 0 {
                    // Every remaining posting is a tombstone: forget the term.
                    self.terms.remove(&list.term);
                    *list = Postings::default();
                    self.free_terms.push(term_id);
                }
            }
        }
        if let Some(len) = self.lens.get_mut(doc) {
            self.total_len -= u64::from(std::mem::replace(len, DEAD));
        }
        self.dead += 1;
        if self.dead > self.ids.len() {
            self.compact();
        }
        true
    }

    /// Whether a document is stored under `id`.
    pub fn contains(&self, id: &Id) -> bool {
        self.ids.contains_key(id)
    }

    /// The number of documents in the index.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of distinct analysed terms in the live documents.
    pub fn vocabulary_len(&self) -> usize {
        self.terms.len()
    }

    /// Removes every document and releases the memory.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The best `limit` documents for `query`, by BM25 score descending, ties broken by
    /// id ascending; only documents with a score above zero (sharing at least one analysed
    /// term with the query). A query with no indexable token finds nothing.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit<Id>> {
        self.search_filtered(query, limit, |_| true)
    }

    /// Like [`search`](Self::search), but only documents whose id passes `keep` are
    /// eligible: a rejected document never takes one of the `limit` places, so the result
    /// is the best `limit` among the kept ones. `keep` is called only for documents that
    /// would otherwise enter the current top `limit`, at most once per matching document.
    pub fn search_filtered(
        &self,
        query: &str,
        limit: usize,
        keep: impl Fn(&Id) -> bool,
    ) -> Vec<Hit<Id>> {
        if limit == 0 || self.ids.is_empty() {
            return Vec::new();
        }
        let mut words = tokenize(query);
        // Lexicographic order fixes the order of the floating-point additions.
        words.sort_unstable();
        words.dedup();

        let n = self.ids.len() as f64;
        let avgdl = self.total_len as f64 / n;
        let mut scores = vec![0.0_f64; self.slots.len()];
        let mut touched: Vec<u32> = Vec::new();
        for word in &words {
            let Some(list) = self
                .terms
                .get(word.as_str())
                .and_then(|&term_id| self.postings.get(term_id as usize))
            else {
                continue;
            };
            let df = f64::from(list.df);
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (&doc, &tf) in list.docs.iter().zip(&list.tfs) {
                let (Some(&len), Some(acc)) =
                    (self.lens.get(doc as usize), scores.get_mut(doc as usize))
                else {
                    continue;
                };
                if len == DEAD {
                    continue;
                }
                let tf = f64::from(tf);
                let norm = K1 * (1.0 - B + B * f64::from(len) / avgdl);
                // Every contribution is positive (idf > 0, tf ≥ 1), so a zero accumulator
                // means the document has not been touched yet.
                if *acc <= 0.0 {
                    touched.push(doc);
                }
                *acc += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }

        let mut top: BinaryHeap<Candidate<'_, Id>> =
            BinaryHeap::with_capacity(limit.min(touched.len()));
        for doc in touched {
            let doc = doc as usize;
            let (Some(&score), Some(Some(slot))) = (scores.get(doc), self.slots.get(doc)) else {
                continue;
            };
            if score <= 0.0 {
                continue;
            }
            let candidate = Candidate {
                score,
                id: &slot.id,
            };
            if top.len() < limit {
                if keep(candidate.id) {
                    top.push(candidate);
                }
            } else if let Some(mut worst) = top.peek_mut()
                && candidate < *worst
                && keep(candidate.id)
            {
                *worst = candidate;
            }
        }
        top.into_sorted_vec()
            .into_iter()
            .map(|candidate| Hit {
                id: candidate.id.clone(),
                score: candidate.score,
            })
            .collect()
    }

    /// Drops the tombstones: renumbers the live documents densely (keeping their order)
    /// and rewrites the posting lists without dead entries.
    fn compact(&mut self) {
        if self.ids.is_empty() {
            // Every term is gone already; start afresh and release the memory.
            *self = Self::default();
            return;
        }
        let mut remap = vec![DEAD; self.lens.len()];
        let mut next = 0_u32;
        for (new, &len) in remap.iter_mut().zip(&self.lens) {
            if len != DEAD {
                *new = next;
                next += 1;
            }
        }
        for list in &mut self.postings {
            if list.df == 0 {
                continue;
            }
            let mut kept = 0;
            for read in 0..list.docs.len() {
                let new = remap.get(list.docs[read] as usize).copied().unwrap_or(DEAD);
                if new != DEAD {
                    list.docs[kept] = new;
                    list.tfs[kept] = list.tfs[read];
                    kept += 1;
                }
            }
            list.docs.truncate(kept);
            list.tfs.truncate(kept);
            if list.docs.capacity() > 2 * kept + 4 {
                list.docs.shrink_to_fit();
                list.tfs.shrink_to_fit();
            }
        }
        self.slots.retain(Option::is_some);
        self.lens.retain(|&len| len != DEAD);
        for doc in self.ids.values_mut() {
            *doc = remap.get(*doc as usize).copied().unwrap_or(DEAD);
        }
        self.dead = 0;
    }
}

/// A document competing for a place in the top `limit`. Ordered so that the *worse*
/// candidate is the greater, making the binary heap's top the one to evict first.
struct Candidate<'a, Id> {
    score: f64,
    id: &'a Id,
}

impl<Id: Ord> Ord for Candidate<'_, Id> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(other.id))
    }
}

impl<Id: Ord> PartialOrd for Candidate<'_, Id> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<Id: Ord> PartialEq for Candidate<'_, Id> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<Id: Ord> Eq for Candidate<'_, Id> {}

/// Converts a count or index to `u32`, keeping `u32::MAX` free for [`DEAD`].
///
/// # Panics
///
/// If it does not fit; see [`SearchIndex::insert`].
#[expect(
    clippy::expect_used,
    reason = "2^32 documents or terms cannot be held in memory; documented on insert"
)]
fn to_u32(n: usize) -> u32 {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != DEAD)
        .expect("search index exceeds u32::MAX - 1 documents or terms")
}

/// Analyses `text` into index terms: the exact analyzer used for both documents and
/// queries (see the [module documentation](self#analyzer)). Lowercases, splits on
/// anything that is not alphanumeric, truncates tokens to [`MAX_TOKEN_BYTES`], drops
/// [`STOPWORDS`], applies light English stemming to ASCII words, and returns at most
/// [`MAX_TOKENS`] tokens, in text order and with repetitions.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for_each_token(text, |token| tokens.push(token.to_owned()));
    tokens
}

/// Calls `emit` with each analysed token of `text`, at most [`MAX_TOKENS`] times.
fn for_each_token(text: &str, mut emit: impl FnMut(&str)) {
    let mut scanner = Scanner {
        buf: String::with_capacity(MAX_TOKEN_BYTES),
        in_word: false,
        truncated: false,
        emitted: 0,
    };
    for c in text.chars() {
        if scanner.emitted >= MAX_TOKENS {
            return;
        }
        if is_standalone(c) {
            scanner.finish(&mut emit);
            scanner.push(c);
            scanner.finish(&mut emit);
        } else if c.is_alphanumeric() || (scanner.in_word && is_combining_mark(c)) {
            scanner.push(c);
        } else {
            scanner.finish(&mut emit);
        }
    }
    if scanner.emitted < MAX_TOKENS {
        scanner.finish(&mut emit);
    }
}

/// The tokenizer's state: the lowercase token being built.
struct Scanner {
    buf: String,
    in_word: bool,
    /// Whether characters were dropped from `buf` for length.
    truncated: bool,
    emitted: usize,
}

impl Scanner {
    /// Appends the lowercase form of `c` to the current token, up to the length limit.
    fn push(&mut self, c: char) {
        self.in_word = true;
        if self.truncated {
            return;
        }
        if c.is_ascii() {
            if self.buf.len() < MAX_TOKEN_BYTES {
                self.buf.push(c.to_ascii_lowercase());
            } else {
                self.truncated = true;
            }
            return;
        }
        for lower in c.to_lowercase() {
            let lower = if lower == 'ς' { 'σ' } else { lower };
            if self.buf.len() + lower.len_utf8() > MAX_TOKEN_BYTES {
                self.truncated = true;
                return;
            }
            self.buf.push(lower);
        }
    }

    /// Ends the current token, if any: drops it if it is a stopword, else stems it and
    /// emits it.
    fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        if !self.buf.is_empty() && !is_stopword(&self.buf) {
            if !self.truncated {
                stem(&mut self.buf);
            }
            emit(&self.buf);
            self.emitted += 1;
        }
        self.buf.clear();
        self.in_word = false;
        self.truncated = false;
    }
}

/// Whether `word` is in [`STOPWORDS`].
fn is_stopword(word: &str) -> bool {
    word.len() <= LONGEST_STOPWORD && STOPWORD_KEYS.binary_search(&pack(word.as_bytes())).is_ok()
}

/// [`STOPWORDS`] packed by [`pack`]; sorted because `STOPWORDS` is.
const STOPWORD_KEYS: [u64; STOPWORDS.len()] = {
    let mut keys = [0; STOPWORDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = pack(STOPWORDS[i].as_bytes());
        i += 1;
    }
    keys
};

/// Packs up to 8 bytes big-endian into a `u64`, padding with zeros on the right, so that
/// integer order is the lexicographic order of the bytes and (tokens holding no NUL) two
/// tokens pack equal only if they are equal. Longer input packs its first 8 bytes.
const fn pack(bytes: &[u8]) -> u64 {
    let mut key = 0_u64;
    let mut i = 0;
    while i < 8 {
        key <<= 8;
        if i < bytes.len() {
            key |= bytes[i] as u64;
        }
        i += 1;
    }
    key
}

/// Characters that form a token on their own: Han ideographs and Hiragana, written
/// without spaces between words.
fn is_standalone(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{309F}'     // Hiragana
        | '\u{3400}'..='\u{4DBF}'   // CJK Unified Ideographs Extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK Unified Ideographs
        | '\u{F900}'..='\u{FAFF}'   // CJK Compatibility Ideographs
        | '\u{20000}'..='\u{3134F}' // CJK Unified Ideographs Extensions B–G
    )
}

/// Combining marks that continue the word they follow instead of splitting it.
fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'   // Combining Diacritical Marks
        | '\u{1AB0}'..='\u{1AFF}' // Combining Diacritical Marks Extended
        | '\u{1DC0}'..='\u{1DFF}' // Combining Diacritical Marks Supplement
        | '\u{20D0}'..='\u{20FF}' // Combining Diacritical Marks for Symbols
        | '\u{FE20}'..='\u{FE2F}' // Combining Half Marks
    )
}

/// Light stemming: step 1 of Porter's (1980) algorithm, in place, for words of three or
/// more ASCII letters `a`–`z`; anything else is left unchanged.
fn stem(word: &mut String) {
    if word.len() < 3 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return;
    }
    let mut w = std::mem::take(word).into_bytes();

    // Step 1a: plurals. (The checks of the last byte are a fast path: most words end
    // in none of the suffixes.)
    if w.last() == Some(&b's') {
        if w.ends_with(b"sses") || w.ends_with(b"ies") {
            w.truncate(w.len() - 2);
        } else if !w.ends_with(b"ss") {
            w.truncate(w.len() - 1);
        }
    }

    // Step 1b: -eed, -ed, -ing.
    let mut stripped = false;
    if !matches!(w.last(), Some(b'd' | b'g')) {
        // No suffix of step 1b.
    } else if w.ends_with(b"eed") {
        if measure(&w[..w.len() - 3]) > 0 {
            w.truncate(w.len() - 1);
        }
    } else if w.ends_with(b"ed") && has_vowel(&w[..w.len() - 2]) {
        w.truncate(w.len() - 2);
        stripped = true;
    } else if w.ends_with(b"ing") && has_vowel(&w[..w.len() - 3]) {
        w.truncate(w.len() - 3);
        stripped = true;
    }
    if stripped {
        if w.ends_with(b"at") || w.ends_with(b"bl") || w.ends_with(b"iz") {
            w.push(b'e');
        } else if ends_with_double_consonant(&w) && !matches!(w.last(), Some(b'l' | b's' | b'z')) {
            w.truncate(w.len() - 1);
        } else if measure(&w) == 1 && ends_cvc(&w) {
            w.push(b'e');
        }
    }

    // Step 1c: y → i after a stem with a vowel.
    if w.last() == Some(&b'y') && has_vowel(&w[..w.len() - 1]) {
        let last = w.len() - 1;
        w[last] = b'i';
    }

    // Only ASCII letters were removed or added.
    *word = String::from_utf8(w).unwrap_or_default();
}

/// Porter's consonant: a letter other than a, e, i, o, u, and other than a `y` that
/// follows a consonant.
fn is_consonant(w: &[u8], i: usize) -> bool {
    match w[i] {
        b'a' | b'e' | b'i' | b'o' | b'u' => false,
        b'y' => i == 0 || !is_consonant(w, i - 1),
        _ => true,
    }
}

/// Porter's measure `m` of a stem `[C](VC)^m[V]`: the number of vowel-consonant
/// sequences.
fn measure(w: &[u8]) -> usize {
    let mut m = 0;
    let mut previous_vowel = false;
    for i in 0..w.len() {
        let consonant = is_consonant(w, i);
        if consonant && previous_vowel {
            m += 1;
        }
        previous_vowel = !consonant;
    }
    m
}

/// Whether the stem contains a vowel.
fn has_vowel(w: &[u8]) -> bool {
    (0..w.len()).any(|i| !is_consonant(w, i))
}

/// Whether the stem ends with two equal consonants.
fn ends_with_double_consonant(w: &[u8]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// Whether the stem ends consonant-vowel-consonant, the last not w, x or y.
fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOLERANCE: f64 = 1e-9;

    fn index(docs: &[(u32, &str)]) -> SearchIndex<u32> {
        let mut index = SearchIndex::new();
        for &(id, text) in docs {
            index.insert(id, text);
        }
        index
    }

    fn ids(hits: &[Hit<u32>]) -> Vec<u32> {
        hits.iter().map(|hit| hit.id).collect()
    }

    fn assert_same_hits(a: &[Hit<u32>], b: &[Hit<u32>]) {
        assert_eq!(ids(a), ids(b));
        for (x, y) in a.iter().zip(b) {
            assert!((x.score - y.score).abs() <= TOLERANCE, "{x:?} vs {y:?}");
        }
    }

    /// A direct, unindexed BM25 over `docs`, for comparison.
    fn reference(docs: &BTreeMap<u32, String>, query: &str, limit: usize) -> Vec<Hit<u32>> {
        let analysed: BTreeMap<u32, Vec<String>> = docs
            .iter()
            .map(|(&id, text)| (id, tokenize(text)))
            .collect();
        let n = analysed.len() as f64;
        let avgdl = analysed.values().map(Vec::len).sum::<usize>() as f64 / n;
        let mut words = tokenize(query);
        words.sort();
        words.dedup();
        let mut hits = Vec::new();
        for (&id, tokens) in &analysed {
            let mut score = 0.0;
            for word in &words {
                let df = analysed.values().filter(|t| t.contains(word)).count() as f64;
                let tf = tokens.iter().filter(|t| *t == word).count() as f64;
                if tf > 0.0 {
                    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    let norm = K1 * (1.0 - B + B * tokens.len() as f64 / avgdl);
                    score += idf * tf * (K1 + 1.0) / (tf + norm);
                }
            }
            if score > 0.0 {
                hits.push(Hit { id, score });
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(limit);
        hits
    }

    #[test]
    fn stopwords_are_sorted_and_unique() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(STOPWORDS.len(), 77);
        assert_eq!(
            STOPWORDS.iter().map(|w| w.len()).max(),
            Some(LONGEST_STOPWORD)
        );
        assert!(STOPWORD_KEYS.windows(2).all(|w| w[0] < w[1]));
        for word in STOPWORDS {
            assert!(is_stopword(word));
            assert!(!is_stopword(&format!("{word}x")));
            assert!(!is_stopword(&word[1..]) || STOPWORDS.contains(&&word[1..]));
        }
        for word in [
            "", "us", "may", "will", "can", "heat", "thes", "wha", "théir", "yours",
        ] {
            assert!(!is_stopword(word), "{word}");
        }
    }

    #[test]
    fn tokenize_basics() {
        assert_eq!(
            tokenize("The Heat-Islands of 2023: cities, running & hoping!"),
            ["heat", "island", "2023", "citi", "run", "hope"]
        );
        assert_eq!(tokenize("city"), tokenize("Cities"));
        assert_eq!(tokenize("agreed"), ["agree"]);
        assert_eq!(tokenize("speeding speed"), ["speed", "speed"]);
        assert_eq!(tokenize("classes class"), ["class", "class"]);
        assert_eq!(tokenize("generalized"), ["generalize"]);
        assert_eq!(tokenize("falling"), ["fall"]);
        assert_eq!(tokenize("1990s 3.14"), ["1990s", "3", "14"]);
        assert_eq!(tokenize("it's the DON'T"), ["don"]);
        assert!(tokenize("").is_empty());
        assert!(tokenize("   ,;. -- !!").is_empty());
        assert!(tokenize("the of and is was which").is_empty());
    }

    #[test]
    fn tokenize_unicode() {
        assert_eq!(tokenize("Ünïcödé ÜNÏCÖDÉ"), ["ünïcödé", "ünïcödé"]);
        // Final sigma folds, so capitals and lowercase agree.
        assert_eq!(tokenize("ΟΔΟΣ"), tokenize("οδος"));
        // Decomposed accents stay inside the word.
        assert_eq!(tokenize("cafe\u{301} noir"), ["cafe\u{301}", "noir"]);
        // Han ideographs are one token each; other scripts split on non-letters.
        assert_eq!(
            tokenize("東京都 Москва-река"),
            ["東", "京", "都", "москва", "река"]
        );
        assert_eq!(tokenize("İstanbul"), ["i\u{307}stanbul"]);
        assert_eq!(tokenize("naïve"), ["naïve"]);
    }

    #[test]
    fn long_tokens_are_truncated_at_a_char_boundary() {
        let long = "x".repeat(200);
        assert_eq!(tokenize(&long), ["x".repeat(MAX_TOKEN_BYTES)]);
        let wide = "é".repeat(100); // two bytes each
        let tokens = tokenize(&wide);
        assert_eq!(tokens, ["é".repeat(MAX_TOKEN_BYTES / 2)]);
        let odd = format!("a{}", "é".repeat(100));
        assert_eq!(tokenize(&odd)[0].len(), MAX_TOKEN_BYTES - 1);
        // A 64-character hex digest is kept whole.
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(tokenize(&hex), std::slice::from_ref(&hex));
        // The same long word in a query finds the document.
        let index = index(&[(1, &long), (2, "short words")]);
        assert_eq!(ids(&index.search(&"X".repeat(100), 10)), [1]);
    }

    #[test]
    fn document_with_the_term_ranks_above_one_without() {
        let index = index(&[
            (1, "urban heat islands raise night temperatures"),
            (2, "rainfall patterns over the ocean"),
            (3, "heat waves and rainfall"),
        ]);
        let hits = index.search("heat", 10);
        // The shorter of the two matching documents first; the one without never.
        assert_eq!(ids(&hits), [3, 1]);
        assert!(hits.iter().all(|hit| hit.score > 0.0));
        assert!(index.search("volcano", 10).is_empty());
    }

    #[test]
    fn rarer_terms_weigh_more() {
        let index = index(&[
            (1, "common rare"),
            (2, "common other"),
            (3, "common thing"),
            (4, "common stuff"),
        ]);
        let hits = index.search("common rare", 10);
        assert_eq!(hits[0].id, 1);
        let common = index.search("common", 10);
        let rare = index.search("rare", 10);
        assert!(rare[0].score > common[0].score);
    }

    #[test]
    fn shorter_documents_win_at_equal_tf() {
        let index = index(&[
            (1, "heat island effect in many large dense cities"),
            (2, "heat island"),
            (3, "unrelated words only"),
        ]);
        let hits = index.search("heat", 10);
        assert_eq!(ids(&hits), [2, 1]);
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn more_occurrences_score_higher_but_saturate() {
        let index = index(&[
            (1, "heat heat heat cold"),
            (2, "heat cold cold cold"),
            (3, "x y z w"),
        ]);
        let hits = index.search("heat", 10);
        assert_eq!(ids(&hits), [1, 2]);
        assert!(hits[0].score < 3.0 * hits[1].score);
    }

    #[test]
    fn stopwords_and_repeated_query_terms_are_ignored() {
        let index = index(&[(1, "the city of light"), (2, "a town in the dark")]);
        assert!(index.search("the of a in", 10).is_empty());
        assert_same_hits(&index.search("the light", 10), &index.search("light", 10));
        assert_same_hits(
            &index.search("light light LIGHT", 10),
            &index.search("light", 10),
        );
    }

    #[test]
    fn stemming_matches_inflections() {
        let index = index(&[(1, "The city council met."), (2, "Rivers and lakes")]);
        assert_eq!(ids(&index.search("cities", 10)), [1]);
        assert_eq!(ids(&index.search("river", 10)), [2]);
        assert_eq!(ids(&index.search("meeting councils", 10)), [1]);
    }

    #[test]
    fn numbers_are_searchable() {
        let index = index(&[
            (1, "founded in 1985 with 30 members"),
            (2, "founded in 1990"),
        ]);
        assert_eq!(ids(&index.search("1985", 10)), [1]);
        assert_eq!(ids(&index.search("founded 1990", 10)), [2, 1]);
    }

    #[test]
    fn ties_break_by_id_and_limit_applies() {
        let index = index(&[
            (5, "same text"),
            (2, "same text"),
            (9, "same text"),
            (1, "other"),
        ]);
        let hits = index.search("same", 10);
        assert_eq!(ids(&hits), [2, 5, 9]);
        assert_eq!(hits[0].score, hits[2].score);
        assert_eq!(ids(&index.search("same", 2)), [2, 5]);
        assert!(index.search("same", 0).is_empty());
        assert_eq!(index.search("same", usize::MAX).len(), 3);
    }

    #[test]
    fn removal_really_removes() {
        let docs = [
            (1, "heat island city"),
            (2, "heat wave"),
            (3, "city park trees"),
            (4, "heat heat city"),
        ];
        let mut index = index(&docs);
        assert!(index.remove(&2));
        assert!(!index.remove(&2));
        assert!(!index.contains(&2));
        assert_eq!(index.len(), 3);
        assert!(index.search("wave", 10).is_empty());
        let fresh = super::tests::index(&[docs[0], docs[2], docs[3]]);
        for query in ["heat", "city", "heat city trees", "wave island"] {
            assert_same_hits(&index.search(query, 10), &fresh.search(query, 10));
            assert!(!ids(&index.search(query, 10)).contains(&2));
        }
        // The idf did change: "heat" is now in two of three documents, not three of four.
        let before = super::tests::index(&docs).search("heat", 10);
        let after = index.search("heat", 10);
        assert!((before[0].score - after[0].score).abs() > 1e-6);
        assert_eq!(index.vocabulary_len(), fresh.vocabulary_len());
    }

    #[test]
    fn removing_everything_empties_the_index() {
        let mut index = index(&[(1, "alpha beta"), (2, "beta gamma")]);
        assert!(index.remove(&1));
        assert!(index.remove(&2));
        assert!(index.is_empty());
        assert_eq!(index.vocabulary_len(), 0);
        assert!(index.search("beta", 10).is_empty());
        index.insert(3, "beta");
        assert_eq!(ids(&index.search("beta", 10)), [3]);
    }

    #[test]
    fn reinsert_replaces() {
        let mut index = index(&[(1, "old words about volcanoes"), (2, "other text")]);
        index.insert(1, "new words about glaciers");
        assert_eq!(index.len(), 2);
        assert!(index.search("volcano", 10).is_empty());
        assert_eq!(ids(&index.search("glacier", 10)), [1]);
        let fresh = super::tests::index(&[(1, "new words about glaciers"), (2, "other text")]);
        assert_same_hits(
            &index.search("words glaciers", 10),
            &fresh.search("words glaciers", 10),
        );
    }

    #[test]
    fn empty_documents_count_but_never_match() {
        let mut index = index(&[(1, ""), (2, "the of"), (3, "heat")]);
        assert_eq!(index.len(), 3);
        assert!(index.contains(&1));
        assert_eq!(ids(&index.search("heat", 10)), [3]);
        assert!(index.search("", 10).is_empty());
        assert!(index.search("...", 10).is_empty());
        assert!(index.remove(&1));
        assert!(index.remove(&3));
        assert!(index.search("heat", 10).is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn filtered_search_skips_rejected_and_still_fills_the_limit() {
        let mut index = SearchIndex::new();
        for id in 0..50_u32 {
            // Lower ids mention the term more often, so they rank first.
            let text = format!("{} filler{id}", "heat ".repeat(1 + (50 - id as usize) / 5));
            index.insert(id, &text);
        }
        let keep = |id: &u32| !id.is_multiple_of(3);
        let hits = index.search_filtered("heat", 10, keep);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|hit| keep(&hit.id)));
        let expected: Vec<u32> = index
            .search("heat", 50)
            .into_iter()
            .filter(|hit| keep(&hit.id))
            .take(10)
            .map(|hit| hit.id)
            .collect();
        assert_eq!(ids(&hits), expected);
        assert!(index.search_filtered("heat", 10, |_| false).is_empty());
    }

    #[test]
    fn a_megabyte_document_is_capped() {
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 1 << 20 {
            text.push_str(&format!("word{i} "));
            i += 1;
        }
        text.push_str("needle");
        let tokens = tokenize(&text);
        assert_eq!(tokens.len(), MAX_TOKENS);
        assert_eq!(tokens[MAX_TOKENS - 1], format!("word{}", MAX_TOKENS - 1));
        let mut index = SearchIndex::new();
        index.insert(1_u32, &text);
        assert_eq!(index.total_len, MAX_TOKENS as u64);
        assert_eq!(index.vocabulary_len(), MAX_TOKENS);
        assert!(index.search("needle", 10).is_empty());
        assert_eq!(ids(&index.search("word4095", 10)), [1]);
        assert!(index.search("word4096", 10).is_empty());
        // A single repeated word saturates the cap with one term of tf 4096.
        let mut index = SearchIndex::new();
        index.insert(2_u32, &"heat ".repeat(300_000));
        assert_eq!(index.postings[0].tfs, [4096]);
        assert_eq!(ids(&index.search("heat", 10)), [2]);
    }

    #[test]
    fn compaction_keeps_results() {
        let mut index = SearchIndex::new();
        let mut survivors = BTreeMap::new();
        for id in 0..100_u32 {
            let text = format!("doc{} common group{} word{}", id, id % 7, id % 13);
            index.insert(id, &text);
            survivors.insert(id, text);
        }
        for id in (0..100_u32).filter(|id| id % 4 != 0) {
            assert!(index.remove(&id));
            survivors.remove(&id);
            // Tombstones never outnumber live documents.
            assert!(index.dead <= index.ids.len());
        }
        assert!(index.slots.len() < 2 * survivors.len() + 1);
        let mut fresh = SearchIndex::new();
        for (&id, text) in &survivors {
            fresh.insert(id, text);
        }
        for query in ["common", "group3 word5", "doc8 doc9 doc12"] {
            assert_eq!(index.search(query, 200), fresh.search(query, 200));
            assert_same_hits(
                &index.search(query, 200),
                &reference(&survivors, query, 200),
            );
        }
    }

    #[test]
    fn matches_a_direct_computation() {
        let docs: BTreeMap<u32, String> = [
            "Justice League is an upcoming American superhero film.",
            "Gal Gadot is an Israeli actress and model, known as Wonder Woman.",
            "Wonder Woman is a 2017 American superhero film.",
            "Heat islands make cities warmer than their rural surroundings.",
            "The film was directed by Zack Snyder.",
        ]
        .iter()
        .enumerate()
        .map(|(i, text)| (i as u32, (*text).to_owned()))
        .collect();
        let mut index = SearchIndex::new();
        for (&id, text) in &docs {
            index.insert(id, text);
        }
        for query in [
            "american superhero film",
            "wonder woman actress",
            "heat city",
            "zack",
        ] {
            assert_same_hits(&index.search(query, 10), &reference(&docs, query, 10));
        }
    }

    #[test]
    fn debug_is_a_summary() {
        let index = index(&[(1, "alpha beta")]);
        let text = format!("{index:?}");
        assert!(text.contains("documents: 1"), "{text}");
    }

    const WORDS: &[&str] = &[
        "heat",
        "island",
        "islands",
        "city",
        "cities",
        "the",
        "running",
        "run",
        "2020",
        "of",
        "trust",
        "decay",
        "évidence",
        "東京",
    ];

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(WORDS), 0..12).prop_map(|w| w.join(" "))
    }

    const QUERIES: &[&str] = &[
        "heat",
        "cities running",
        "island decay 2020",
        "évidence 東京 trust",
        "the of",
        "heat island city run trust decay",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, String),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..24_u8, text()).prop_map(|(id, text)| Op::Insert(id, text)),
            2 => (0..24_u8).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn results_do_not_depend_on_insertion_order(
            (docs, shuffled) in prop::collection::btree_map(0..200_u32, text(), 0..40)
                .prop_flat_map(|docs| {
                    let docs: Vec<(u32, String)> = docs.into_iter().collect();
                    (Just(docs.clone()), Just(docs).prop_shuffle())
                }),
            limit in 1..50_usize,
        ) {
            let mut a = SearchIndex::new();
            for (id, text) in &docs {
                a.insert(*id, text);
            }
            let mut b = SearchIndex::new();
            for (id, text) in &shuffled {
                b.insert(*id, text);
            }
            for query in QUERIES {
                let (x, y) = (a.search(query, limit), b.search(query, limit));
                prop_assert_eq!(ids(&x), ids(&y));
                for (p, q) in x.iter().zip(&y) {
                    prop_assert!((p.score - q.score).abs() <= TOLERANCE);
                }
                // In fact the scores are bit-for-bit equal, as the module docs promise.
                prop_assert_eq!(x, y);
            }
        }

        #[test]
        fn any_text_is_found_by_itself(text in any::<String>(), other in "\\PC{0,40}") {
            let tokens = tokenize(&text);
            prop_assert!(tokens.len() <= MAX_TOKENS);
            for token in &tokens {
                prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
                prop_assert!(!is_stopword(token));
            }
            let mut index = SearchIndex::new();
            index.insert(1_u32, &text);
            index.insert(2_u32, &other);
            let hits = index.search(&text, 10);
            prop_assert_eq!(hits.iter().any(|hit| hit.id == 1), !tokens.is_empty());
            prop_assert!(hits.iter().all(|hit| hit.score > 0.0 && hit.score.is_finite()));
        }

        #[test]
        fn random_updates_equal_a_fresh_index_of_the_survivors(
            ops in prop::collection::vec(op(), 0..120),
            limit in 1..30_usize,
        ) {
            let mut index = SearchIndex::new();
            let mut model = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Insert(id, text) => {
                        index.insert(u32::from(*id), text);
                        model.insert(u32::from(*id), text.clone());
                    }
                    Op::Remove(id) => {
                        let id = u32::from(*id);
                        prop_assert_eq!(index.remove(&id), model.remove(&id).is_some());
                    }
                }
                prop_assert!(index.dead <= index.ids.len());
            }
            let mut fresh = SearchIndex::new();
            for (id, text) in &model {
                fresh.insert(*id, text);
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.vocabulary_len(), fresh.vocabulary_len());
            prop_assert_eq!(index.total_len, fresh.total_len);
            for id in 0..24_u32 {
                prop_assert_eq!(index.contains(&id), model.contains_key(&id));
            }
            for query in QUERIES {
                let got = index.search(query, limit);
                let want = fresh.search(query, limit);
                prop_assert_eq!(ids(&got), ids(&want));
                for (p, q) in got.iter().zip(&want) {
                    prop_assert!((p.score - q.score).abs() <= TOLERANCE);
                }
                prop_assert_eq!(&got, &want);
                if !model.is_empty() {
                    let direct = reference(&model, query, limit);
                    prop_assert_eq!(ids(&got), ids(&direct));
                    for (p, q) in got.iter().zip(&direct) {
                        prop_assert!((p.score - q.score).abs() <= TOLERANCE);
                    }
                }
                let keep = |id: &u32| id % 2 == 1;
                let filtered = index.search_filtered(query, limit, keep);
                let expected: Vec<u32> = index
                    .search(query, usize::MAX)
                    .into_iter()
                    .map(|hit| hit.id)
                    .filter(keep)
                    .take(limit)
                    .collect();
                prop_assert_eq!(ids(&filtered), expected);
            }
        }
    }
}
