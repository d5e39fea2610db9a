//! The shared medium against raw Automerge, in the same run.
//!
//! `cargo run -p membrane-simulations --release --bin medium-bench [-- --quick] [--latency-only]`
//!
//! Prints one table per measurement: signed write throughput vs raw put+commit; cold sync
//! of a 20,000-change document with full verification vs raw Automerge sync; a one-change
//! incremental sync; query and search latency at 10k and 100k entries; storage per entry
//! after compaction and peak memory.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use membrane_crdt::{Config, DocId, Draft, Medium, MemoryStorage, Storage};
use membrane_protocol::cost::{Tiktoken, TokenCounter};
use membrane_protocol::permeability::Reader;
use membrane_protocol::{EntryKind, Evidence, Keypair, PublicKey, Space, Tier};
use membrane_simulations::corpus::{self, Paragraph, Question};
use membrane_simulations::stats::{peak_rss_bytes, quantile, rss_bytes};

const NOW: u64 = 1_763_700_000_000;

type Replica = Medium<MemoryStorage>;

fn replica(seed: u8, tokens: &Arc<dyn TokenCounter>) -> anyhow::Result<Replica> {
    Ok(Medium::open(
        Keypair::from_seed(&[seed; 32]),
        MemoryStorage::new(),
        Config::default(),
        Arc::clone(tokens),
    )?)
}

fn draft(i: usize, p: &Paragraph) -> anyhow::Result<Draft> {
    let mut d = Draft::new(
        format!("p.n{}.c{}", i / 1000, i % 1000).parse()?,
        format!("{}: {}", p.title, p.text),
        Some(Tier::Public),
    );
    d.kind = EntryKind::Fact;
    d.evidence = Evidence::ExternalSource;
    Ok(d)
}

fn fill(r: &mut Replica, space: &Space, n: usize, paragraphs: &[Paragraph]) -> anyhow::Result<()> {
    for i in 0..n {
        r.expose(space, draft(i, &paragraphs[i % paragraphs.len()])?, NOW)?;
    }
    Ok(())
}

/// Runs sync both ways until quiet; returns (messages, bytes).
fn sync_until_quiet(
    a: &mut Replica,
    b: &mut Replica,
    doc: &DocId,
) -> anyhow::Result<(usize, usize)> {
    let (ka, kb): (PublicKey, PublicKey) = (*a.me(), *b.me());
    let (mut messages, mut bytes) = (0, 0);
    loop {
        let mut quiet = true;
        for f in a.sync_generate(&kb, doc) {
            quiet = false;
            messages += 1;
            bytes += f.len();
            b.sync_receive(&ka, &f)?;
        }
        for f in b.sync_generate(&ka, doc) {
            quiet = false;
            messages += 1;
            bytes += f.len();
            a.sync_receive(&kb, &f)?;
        }
        if quiet {
            return Ok((messages, bytes));
        }
    }
}

fn raw_sync(a: &mut Automerge, b: &mut Automerge) -> anyhow::Result<(usize, usize)> {
    let (mut sa, mut sb) = (State::new(), State::new());
    let (mut messages, mut bytes) = (0, 0);
    loop {
        let mut quiet = true;
        if let Some(m) = a.generate_sync_message(&mut sa) {
            quiet = false;
            let enc = m.encode();
            messages += 1;
            bytes += enc.len();
            b.receive_sync_message(&mut sb, automerge::sync::Message::decode(&enc)?)?;
        }
        if let Some(m) = b.generate_sync_message(&mut sb) {
            quiet = false;
            let enc = m.encode();
            messages += 1;
            bytes += enc.len();
            a.receive_sync_message(&mut sa, automerge::sync::Message::decode(&enc)?)?;
        }
        if quiet {
            return Ok((messages, bytes));
        }
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn writes(
    paragraphs: &[Paragraph],
    tokens: &Arc<dyn TokenCounter>,
    n: usize,
) -> anyhow::Result<()> {
    let space = Space::default_space();
    // Raw: one put + commit per change, same bytes as our entries carry.
    let mut raw = Automerge::new().with_actor(ActorId::from([7u8; 32].as_slice()));
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let p = &paragraphs[i % paragraphs.len()];
            format!("{}: {}", p.title, p.text).into_bytes()
        })
        .collect();
    let start = Instant::now();
    for (i, v) in values.iter().enumerate() {
        let mut tx = raw.transaction();
        tx.put(
            ROOT,
            format!("k{i}"),
            automerge::ScalarValue::Bytes(v.clone()),
        )?;
        tx.commit();
    }
    let raw_time = start.elapsed();
    let mut ours = replica(1, tokens)?;
    let drafts: Vec<Draft> = (0..n)
        .map(|i| draft(i, &paragraphs[i % paragraphs.len()]))
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    for d in drafts {
        ours.expose(&space, d, NOW)?;
    }
    let ours_time = start.elapsed();
    let (r, o) = (per_sec(n, raw_time), per_sec(n, ours_time));
    println!("## Write throughput ({n} changes, one entry each)\n");
    println!("| path | changes/s | ratio to raw |");
    println!("|---|---|---|");
    println!("| raw Automerge put + commit | {r:.0} | 1.00 |");
    println!(
        "| medium.expose: validate, seal (sign), commit, sign change, index, count tokens, persist (in-memory storage) | {o:.0} | {:.2} |",
        o / r
    );
    println!();
    Ok(())
}

fn cold_sync(
    paragraphs: &[Paragraph],
    tokens: &Arc<dyn TokenCounter>,
    n: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let space = Space::default_space();
    let doc = DocId::public(space.clone());
    let mut source = replica(1, tokens)?;
    fill(&mut source, &space, n, paragraphs)?;
    // The raw reference holds the very same changes.
    let raw_source = {
        let mut d = Automerge::new();
        let changes = source
            .docs(&space)
            .first()
            .map(|d| d.automerge().get_changes(&[]))
            .unwrap_or_default();
        d.apply_changes(changes)?;
        d
    };
    let (mut ours_t, mut raw_t) = (Vec::new(), Vec::new());
    let (mut ours_io, mut raw_io) = ((0, 0), (0, 0));
    for _ in 0..runs {
        let mut fresh = replica(2, tokens)?;
        source.drop_sessions(fresh.me());
        let start = Instant::now();
        ours_io = sync_until_quiet(&mut source, &mut fresh, &doc)?;
        ours_t.push(start.elapsed());
        anyhow::ensure!(
            fresh.heads(&doc) == source.heads(&doc),
            "cold sync did not converge"
        );
        let mut a = raw_source.clone();
        let mut b = Automerge::new();
        let start = Instant::now();
        raw_io = raw_sync(&mut a, &mut b)?;
        raw_t.push(start.elapsed());
    }
    let (o, r) = (quantile(&mut ours_t, 0.5), quantile(&mut raw_t, 0.5));
    println!("## Cold sync of a {n}-change document (median of {runs})\n");
    println!("| path | time | messages | bytes | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw Automerge sync | {:.1} ms | {} | {} | 1.00 |",
        r.as_secs_f64() * 1e3,
        raw_io.0,
        raw_io.1
    );
    println!(
        "| medium sync, every signature verified | {:.1} ms | {} | {} | {:.2} |",
        o.as_secs_f64() * 1e3,
        ours_io.0,
        ours_io.1,
        o.as_secs_f64() / r.as_secs_f64()
    );
    println!();

    // One more change on a settled pair.
    let mut fresh = replica(2, tokens)?;
    sync_until_quiet(&mut source, &mut fresh, &doc)?;
    let before = source.heads(&doc).unwrap_or_default();
    source.expose(
        &space,
        Draft::new(
            "p.one.more".parse()?,
            "one more short entry",
            Some(Tier::Public),
        ),
        NOW,
    )?;
    let change_len: usize = source
        .docs(&space)
        .first()
        .map(|d| {
            d.automerge()
                .get_changes(&before)
                .iter()
                .map(|c| c.raw_bytes().len())
                .sum()
        })
        .unwrap_or(0);
    let (messages, bytes) = sync_until_quiet(&mut source, &mut fresh, &doc)?;
    println!("## One-change incremental sync\n");
    println!(
        "| messages | bytes on the wire | the change itself | signature + hash | overhead beyond change and signature |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {messages} | {bytes} | {change_len} | 96 | {} |",
        bytes.saturating_sub(change_len + 96)
    );
    println!();
    Ok(())
}

fn latency(
    paragraphs: &[Paragraph],
    questions: &[Question],
    tokens: &Arc<dyn TokenCounter>,
    n: usize,
) -> anyhow::Result<()> {
    let space = Space::default_space();
    let rss_before = rss_bytes().unwrap_or(0);
    let mut r = replica(1, tokens)?;
    let start = Instant::now();
    fill(&mut r, &space, n, paragraphs)?;
    let fill_time = start.elapsed();
    let rss_after = rss_bytes().unwrap_or(0);
    let reader = Reader::open(Keypair::from_seed(&[3; 32]).public());
    let mut q_times = Vec::new();
    for i in 0..200 {
        let pattern = format!("p.n{}.*", i % (n / 1000).max(1)).parse()?;
        let start = Instant::now();
        let answer = r.query(&reader, &space, &pattern, NOW, false)?;
        q_times.push(start.elapsed());
        anyhow::ensure!(!answer.hits.is_empty(), "query found nothing");
    }
    let mut s_times = Vec::new();
    for q in questions.iter().take(150) {
        let start = Instant::now();
        let answer = r.search(&reader, &space, &q.question, 512, NOW)?;
        s_times.push(start.elapsed());
        anyhow::ensure!(answer.total_tokens <= 512, "search overran its budget");
    }
    let stored = r.storage().size_on_disk().unwrap_or(0);
    println!(
        "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.1} MiB | {:.1} s |",
        quantile(&mut q_times, 0.5).as_secs_f64() * 1e3,
        quantile(&mut q_times, 0.99).as_secs_f64() * 1e3,
        quantile(&mut s_times, 0.5).as_secs_f64() * 1e3,
        quantile(&mut s_times, 0.99).as_secs_f64() * 1e3,
        stored as f64 / n as f64,
        rss_after.saturating_sub(rss_before) as f64 / (1024.0 * 1024.0),
        fill_time.as_secs_f64(),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let questions = corpus::load(&corpus::default_path())?;
    let paragraphs = corpus::paragraphs(&questions);
    let tokens: Arc<dyn TokenCounter> = Arc::new(Tiktoken::o200k()?);
    println!(
        "# medium-bench ({} paragraphs, {} questions, o200k tokens)\n",
        paragraphs.len(),
        questions.len()
    );
    let scale = if quick { 10 } else { 1 };
    writes(&paragraphs, &tokens, 5_000 / scale)?;
    cold_sync(
        &paragraphs,
        &tokens,
        20_000 / scale,
        if quick { 1 } else { 5 },
    )?;
    println!("## Query and search latency, storage and memory\n");
    println!(
        "Query: a pattern matching 1,000 keys. Search: the {} corpus questions, max_tokens 512.\n",
        questions.len().min(150)
    );
    println!(
        "| entries | query p50 | query p99 | search p50 | search p99 | stored bytes/entry (compacted) | RSS growth | fill time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    latency(&paragraphs, &questions, &tokens, 10_000 / scale)?;
    latency(&paragraphs, &questions, &tokens, 100_000 / scale)?;
    println!();
    println!(
        "peak RSS of the whole run: {:.1} MiB",
        peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
