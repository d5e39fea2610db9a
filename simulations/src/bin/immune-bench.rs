//! The immune layer's cost and speed.
//!
//! `cargo run -p membrane-simulations --release --bin immune-bench [-- --quick]`
//!
//! * **Detector overhead per message**, in the same run: the node's receive path for sync
//!   frames and for gossip messages, without the immune layer and with it. The steps are
//!   those of `node/src/network/service.rs` (`receive_frames`, `refuse_replay`,
//!   `count_applied`, `on_gossip`), run on the same public pieces the node uses: the
//!   medium (`Medium::sync_receive`), the envelope checks of `check_gossip`, and, with the
//!   immune layer, the content signatures (`membrane_node::content`) and the engine
//!   (`membrane_immune::Immune`) holding 10,000 remembered payloads and 100 punished
//!   peers. Traffic is honest (no detection fires; the run checks), as in steady state:
//!   2,000 one-entry sync frames in the order a replica received them from a writer, and
//!   20,000 heads announcements from 20 authors at 10/s each. Trials alternate (and which
//!   side goes first alternates), 15 each
//!   (5 with `--quick`); medians of the CPU time of the measuring thread (the machine is
//!   shared). The immune layer's steps are also timed alone (no medium, no envelope
//!   checks), as a share of the path without them: the same figure, without the noise of
//!   timing two long paths. `--overhead-only` stops after this part.
//! * **Time to quarantine on every honest node at N = 20**: 20 real nodes in this process
//!   (libp2p memory transport, in-memory storage, default settings), fully connected; then
//!   an offender joins: a forger (a forged and a trespassing change in its store), an
//!   equivocator (two entries with one seq), or a gossip flooder (distinct broadcasts as
//!   fast as its node sends them). Measured from the first threat record about it on any
//!   honest node to the last honest node's quarantine or ban (audit timestamps, one
//!   clock), and from the offender's start. 5 runs each (3 with `--quick`); medians.
//!   `--only <forger|equivocator|gossipflooder>` runs one kind.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use membrane_crdt::hostile::Hostile;
use membrane_crdt::{DocId, Draft, EventKind, Medium, MemoryStorage};
use membrane_immune::{AuditEvent, Channel, Config, Fault, Immune, Observation, content_hash};
use membrane_node::content::{change_signatures, gossip_payload};
use membrane_node::{Node, NodeEvent, NodeHandle, NodeOptions};
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::envelope::Kind;
use membrane_protocol::signals::{DocRef, Heads};
use membrane_protocol::{Envelope, Keypair, PublicKey, Space, Tier};
use membrane_simulations::stats::quantile;
use serde_bytes::ByteBuf;
use tokio::sync::broadcast::error::RecvError;

const SYNC_FRAMES: usize = 2_000;
const GOSSIP_MESSAGES: usize = 20_000;
const GOSSIP_AUTHORS: usize = 20;
/// Records signed longer ago are history (`RECENT_RECORD_MS` in the node).
const RECENT_RECORD_MS: u64 = 60_000;
const NODES: usize = 20;
const DEADLINE: Duration = Duration::from_secs(90);

/// A gossip message as it arrives: its bytes, its id, its origin, when.
type Gossip = (Vec<u8>, [u8; 32], PublicKey, u64);

/// Time this thread spent on a CPU (`/proc/thread-self/schedstat`, Linux), so other
/// processes on the shared machine weigh less on the figures; wall time elsewhere.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures CPU time on this thread (wall time where unavailable).
struct Clock(Instant, Option<Duration>);

impl Clock {
    fn start() -> Self {
        Self(Instant::now(), thread_cpu())
    }

    fn elapsed(&self) -> Duration {
        match (self.1, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.0.elapsed(),
        }
    }
}

fn space() -> Space {
    Space::default_space()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn medium(seed: u8) -> anyhow::Result<Medium<MemoryStorage>> {
    let mut m = Medium::open(
        Keypair::from_seed(&[seed; 32]),
        MemoryStorage::new(),
        membrane_crdt::Config::default(),
        Arc::new(ApproxCounter),
    )?;
    m.join(space())?;
    Ok(m)
}

/// The frames a replica received from a writer exposing one entry at a time, and when
/// the writer started.
fn sync_frames() -> anyhow::Result<(PublicKey, Vec<Vec<u8>>, u64)> {
    let mut writer = medium(1)?;
    let mut reader = medium(2)?;
    let (w, r) = (*writer.me(), *reader.me());
    let doc = DocId::public(space());
    let start = now_ms();
    let mut frames = Vec::new();
    for i in 0..SYNC_FRAMES {
        let draft = Draft::new(
            format!("bench.e{i}").parse()?,
            format!("finding {i}: the measured value was within the expected range"),
            Some(Tier::Public),
        );
        writer.expose(&space(), draft, start + i as u64)?;
        loop {
            let out = writer.sync_generate(&r, &doc);
            let back = reader.sync_generate(&w, &doc);
            if out.is_empty() && back.is_empty() {
                break;
            }
            for f in out {
                reader.sync_receive(&w, &f)?;
                frames.push(f);
            }
            for f in back {
                writer.sync_receive(&r, &f)?;
            }
        }
    }
    Ok((w, frames, start))
}

/// An engine that has seen attacks: 10,000 remembered payloads of 100 punished peers.
fn seasoned_engine(me: PublicKey, now: u64) -> anyhow::Result<Immune> {
    let mut engine = Immune::new(Config::default(), me)?;
    for i in 0..10_000u32 {
        let mut seed = [7u8; 32];
        seed[0] = 200;
        seed[1] = (i % 100) as u8;
        let offender = Keypair::from_seed(&seed).public();
        engine.on_event(
            Observation::Rejected {
                peer: offender,
                author: None,
                content: content_hash(&i.to_be_bytes()),
                fault: Fault::Undecodable,
            },
            now,
        );
    }
    Ok(engine)
}

/// Receives every frame as the node does without the immune layer: the medium only.
fn sync_without(sender: &PublicKey, frames: &[Vec<u8>]) -> anyhow::Result<Duration> {
    let mut b = medium(3)?;
    let t = Clock::start();
    for f in frames {
        b.sync_receive(sender, f)?;
    }
    Ok(t.elapsed())
}

/// Receives every frame as the node does: the admission check, the replay check by frame
/// and by change, the medium, the entry rate per owner, the contribution. Returns the
/// time and how many actions the engine took (0 for honest traffic).
fn sync_with(
    sender: &PublicKey,
    frames: &[Vec<u8>],
    start: u64,
) -> anyhow::Result<(Duration, usize)> {
    let mut b = medium(3)?;
    let mut engine = seasoned_engine(*b.me(), start)?;
    let mut actions = 0;
    let t = Clock::start();
    for (k, f) in frames.iter().enumerate() {
        // One frame every 10 ms: 100 one-entry frames a second.
        let now = start + 10 * k as u64;
        ensure!(engine.accepts_from(sender, now), "the writer is refused");
        let replayed = engine.is_replayed(&content_hash(f), now)
            || change_signatures(f)
                .iter()
                .any(|c| engine.is_replayed(c, now));
        ensure!(!replayed, "an honest frame counted as a replay");
        let before = b.last_event();
        let report = b.sync_receive(sender, f)?;
        if report.records > 0 {
            let mut owners: BTreeMap<PublicKey, u32> = BTreeMap::new();
            for event in b.events_since(before) {
                if let EventKind::Arrived {
                    space, id, owner, ..
                } = &event.kind
                {
                    let recent = b
                        .index(space)
                        .and_then(|index| index.entry(id))
                        .is_some_and(|e| now.saturating_sub(e.created_at_ms()) <= RECENT_RECORD_MS);
                    if recent {
                        *owners.entry(*owner).or_default() += 1;
                    }
                }
            }
            for (owner, records) in owners {
                actions += engine
                    .on_event(Observation::Applied { owner, records }, now)
                    .len();
            }
            actions += engine
                .on_event(Observation::Contributed { peer: *sender }, now)
                .len();
            ensure!(engine.accepts_from(sender, now));
        }
    }
    Ok((t.elapsed(), actions))
}

/// Heads announcements from 20 authors, 10 a second each (one every 5 ms in all).
fn gossip_messages(start: u64) -> anyhow::Result<Vec<Gossip>> {
    let keys: Vec<Keypair> = (0..GOSSIP_AUTHORS)
        .map(|i| Keypair::from_seed(&[100 + i as u8; 32]))
        .collect();
    let mut out = Vec::with_capacity(GOSSIP_MESSAGES);
    for i in 0..GOSSIP_MESSAGES {
        let key = &keys[i % GOSSIP_AUTHORS];
        let at = start + 5 * i as u64;
        let mut head = [0u8; 32];
        head[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let payload = Heads {
            space: space(),
            doc: DocRef::Public,
            heads: vec![ByteBuf::from(head.to_vec())],
        };
        let data = Envelope::seal(key, at, &payload)?.to_bytes();
        out.push((data.clone(), content_hash(&data), key.public(), at));
    }
    Ok(out)
}

/// `check_gossip` and the heads handler: decode and verify, the author is the origin,
/// the payload opens, compare with the heads held.
fn take_gossip(
    m: &Medium<MemoryStorage>,
    data: &[u8],
    origin: &PublicKey,
    now: u64,
) -> anyhow::Result<Envelope> {
    let envelope = Envelope::decode(data, Kind::Heads.max_frame_bytes(), now)?;
    envelope.expect_author(origin)?;
    let heads = envelope.open::<Heads>()?;
    let held = m.heads(&DocId::public(space())).unwrap_or_default();
    let unknown = heads
        .heads
        .iter()
        .any(|h| !held.iter().any(|k| k.0.as_slice() == h.as_slice()));
    ensure!(unknown, "bench heads are all new");
    Ok(envelope)
}

fn gossip_without(msgs: &[Gossip]) -> anyhow::Result<Duration> {
    let m = medium(4)?;
    let t = Clock::start();
    for (data, _, origin, at) in msgs {
        take_gossip(&m, data, origin, *at)?;
    }
    Ok(t.elapsed())
}

/// `on_gossip` with the immune layer: the replay check on the message id, admission of
/// the origin, then the rate, duplicate and replay checks on what it says.
fn gossip_with(msgs: &[Gossip], start: u64) -> anyhow::Result<(Duration, usize)> {
    let m = medium(4)?;
    let mut engine = seasoned_engine(*m.me(), start)?;
    let mut actions = 0;
    let t = Clock::start();
    for (data, id, origin, at) in msgs {
        ensure!(!engine.is_replayed(id, *at));
        let envelope = take_gossip(&m, data, origin, *at)?;
        ensure!(engine.accepts_from(origin, *at));
        actions += engine
            .on_event(
                Observation::Received {
                    peer: *origin,
                    channel: Channel::Gossip,
                    content: gossip_payload(&envelope),
                },
                *at,
            )
            .len();
    }
    Ok((t.elapsed(), actions))
}

/// The immune layer's own steps on the sync path, alone (no medium): what it adds per
/// frame.
fn sync_steps_only(sender: &PublicKey, frames: &[Vec<u8>], start: u64) -> anyhow::Result<Duration> {
    let mut engine = seasoned_engine(Keypair::from_seed(&[3; 32]).public(), start)?;
    let t = Clock::start();
    for (k, f) in frames.iter().enumerate() {
        let now = start + 10 * k as u64;
        ensure!(engine.accepts_from(sender, now));
        let replayed = engine.is_replayed(&content_hash(f), now)
            || change_signatures(f)
                .iter()
                .any(|c| engine.is_replayed(c, now));
        ensure!(!replayed);
        let a = engine.on_event(
            Observation::Applied {
                owner: *sender,
                records: 1,
            },
            now,
        );
        let b = engine.on_event(Observation::Contributed { peer: *sender }, now);
        ensure!(a.is_empty() && b.is_empty() && engine.accepts_from(sender, now));
    }
    Ok(t.elapsed())
}

/// The immune layer's own steps on the gossip path, alone (envelopes decoded beforehand).
fn gossip_steps_only(msgs: &[Gossip], start: u64) -> anyhow::Result<Duration> {
    let mut engine = seasoned_engine(Keypair::from_seed(&[4; 32]).public(), start)?;
    let opened: Vec<Envelope> = msgs
        .iter()
        .map(|(data, _, _, at)| Envelope::decode(data, Kind::Heads.max_frame_bytes(), *at))
        .collect::<Result<_, _>>()?;
    let t = Clock::start();
    for ((_, id, origin, at), envelope) in msgs.iter().zip(&opened) {
        ensure!(!engine.is_replayed(id, *at) && engine.accepts_from(origin, *at));
        let a = engine.on_event(
            Observation::Received {
                peer: *origin,
                channel: Channel::Gossip,
                content: gossip_payload(envelope),
            },
            *at,
        );
        ensure!(a.is_empty());
    }
    Ok(t.elapsed())
}

fn per_message_us(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

fn overhead(trials: usize) -> anyhow::Result<()> {
    let (sender, frames, start) = sync_frames()?;
    let msgs = gossip_messages(start)?;
    let (mut s0, mut s1, mut g0, mut g1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s2, mut g2) = (Vec::new(), Vec::new());
    // One untimed warm-up of each.
    sync_without(&sender, &frames)?;
    sync_with(&sender, &frames, start)?;
    gossip_without(&msgs)?;
    gossip_with(&msgs, start)?;
    for trial in 0..trials {
        // Which side runs first alternates, so neither always follows the other.
        for with in [trial % 2 == 0, trial % 2 != 0] {
            if with {
                let (t, actions) = sync_with(&sender, &frames, start)?;
                ensure!(
                    actions == 0,
                    "honest sync traffic made the engine act {actions} times"
                );
                s1.push(t);
                let (t, actions) = gossip_with(&msgs, start)?;
                ensure!(
                    actions == 0,
                    "honest gossip made the engine act {actions} times"
                );
                g1.push(t);
            } else {
                s0.push(sync_without(&sender, &frames)?);
                g0.push(gossip_without(&msgs)?);
            }
        }
        s2.push(sync_steps_only(&sender, &frames, start)?);
        g2.push(gossip_steps_only(&msgs, start)?);
    }
    println!("## Detector overhead per message ({trials} alternating trials, medians)\n");
    println!(
        "| path | messages | without detectors | with the immune layer | ratio | the immune steps alone | share of the path |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        (
            "sync frames (one entry each)",
            frames.len(),
            &mut s0,
            &mut s1,
            &mut s2,
        ),
        (
            "gossip (heads announcements)",
            msgs.len(),
            &mut g0,
            &mut g1,
            &mut g2,
        ),
    ];
    for (name, n, without, with, alone) in rows {
        let (a, b, c) = (
            quantile(without, 0.5),
            quantile(with, 0.5),
            quantile(alone, 0.5),
        );
        println!(
            "| {name} | {n} | {:.2} µs | {:.2} µs | **{:.3}** | {:.2} µs | {:.1} % |",
            per_message_us(a, n),
            per_message_us(b, n),
            b.as_secs_f64() / a.as_secs_f64(),
            per_message_us(c, n),
            100.0 * c.as_secs_f64() / a.as_secs_f64()
        );
    }
    println!();
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Offender {
    Forger,
    Equivocator,
    GossipFlooder,
}

async fn spawn(
    seed: u8,
    boot: Option<&str>,
    storage: MemoryStorage,
) -> anyhow::Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let mut options = NodeOptions::memory(Keypair::from_seed(&[seed; 32]));
    options.spaces = vec![space()];
    if let Some(addr) = boot {
        options.bootstrap = vec![addr.parse()?];
    }
    Node::spawn(options, storage, Arc::new(ApproxCounter)).await
}

/// Waits, following `node`'s events, until `check` holds.
async fn until<F, Fut>(node: &NodeHandle, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut events = node.subscribe();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => bail!("node stopped waiting for {what}"),
            Err(_) => bail!("timed out waiting for {what}"),
        }
    }
}

/// Waits, following `node`'s audit records, until it quarantines or bans `peer`.
async fn wait_shut(node: &NodeHandle, peer: &PublicKey) -> anyhow::Result<()> {
    let mut events = node.subscribe();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    if marks(node, peer).await?.1.is_some() {
        return Ok(());
    }
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(NodeEvent::Audit(record))) => {
                if matches!(&record.event,
                    AuditEvent::Quarantine { peer: p, .. } | AuditEvent::Ban { peer: p, .. } if p == peer)
                {
                    return Ok(());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                if marks(node, peer).await?.1.is_some() {
                    return Ok(());
                }
            }
            Ok(Err(RecvError::Closed)) => bail!("node stopped"),
            Err(_) => bail!("timed out"),
        }
    }
}

/// (first threat record about `peer`, first quarantine or ban of it) at `node`, in ms.
async fn marks(node: &NodeHandle, peer: &PublicKey) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let (mut first, mut shut) = (None, None);
    let mut since = 0;
    loop {
        let page = node.audit(since, 1000).await?;
        for r in &page.records {
            let (threat, gate) = match &r.event {
                AuditEvent::ThreatDetected { detection } => (detection.offender == *peer, false),
                AuditEvent::ThreatReceived { offender, .. } => (offender == peer, false),
                AuditEvent::Quarantine { peer: p, .. } | AuditEvent::Ban { peer: p, .. } => {
                    (false, p == peer)
                }
                _ => (false, false),
            };
            if threat && first.is_none() {
                first = Some(r.at_ms);
            }
            if gate && shut.is_none() {
                shut = Some(r.at_ms);
            }
        }
        if page.records.is_empty() || page.next >= page.total {
            return Ok((first, shut));
        }
        since = page.next;
    }
}

/// One run: (first offence → all shut out, offender start → all shut out), in ms.
async fn quarantine_run(kind: Offender) -> anyhow::Result<(u64, u64)> {
    let (first, first_task) = spawn(1, None, MemoryStorage::new()).await?;
    let boot = first.listening().await?[0].clone();
    let mut honest = vec![(first, first_task)];
    for seed in 2..=NODES as u8 {
        honest.push(spawn(seed, Some(&boot), MemoryStorage::new()).await?);
    }
    for (node, _) in &honest {
        until(node, "the full mesh", || async {
            node.peers().await.is_ok_and(|p| p.len() >= NODES - 1)
        })
        .await?;
    }
    let evil_key = Keypair::from_seed(&[250; 32]);
    let mut storage = MemoryStorage::new();
    let doc = DocId::public(space());
    match kind {
        Offender::Forger => Hostile::forgery_and_trespass(&evil_key, honest[1].0.id(), &space())
            .plant(&mut storage, &doc)?,
        Offender::Equivocator => {
            Hostile::equivocation(&evil_key, &space()).plant(&mut storage, &doc)?
        }
        Offender::GossipFlooder => {}
    }
    let started = now_ms();
    let (evil, evil_task) = spawn(250, Some(&boot), storage).await?;
    let evil_id = *evil.id();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood_start = Instant::now();
    let flood = if let Offender::GossipFlooder = kind {
        let f = evil.clone();
        until(&evil, "the flooder's first peer", || async {
            f.peers().await.is_ok_and(|p| !p.is_empty())
        })
        .await?;
        let f = evil.clone();
        let sent = sent.clone();
        Some(tokio::spawn(async move {
            for n in 0..1_000_000u32 {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if f.broadcast(&space(), format!("flood {n}")).await.is_err() {
                    break;
                }
                // The node's event loop takes commands before swarm events: without a
                // gap between commands, it would queue the flood and hardly send it.
                tokio::task::yield_now().await;
            }
        }))
    } else {
        None
    };
    let mut first_offence = u64::MAX;
    let mut all_shut = 0;
    for (i, (node, _)) in honest.iter().enumerate() {
        if let Err(e) = wait_shut(node, &evil_id).await {
            let report = node.immune_report(0).await?;
            let standing = report.peers.iter().find(|p| p.peer == evil_id);
            bail!("node {i} shutting the {kind:?} out: {e}; its standing there: {standing:?}");
        }
        let (f, s) = marks(node, &evil_id).await?;
        if std::env::var_os("IMMUNE_BENCH_TRACE").is_some() {
            eprintln!("{kind:?} node {i}: first threat {f:?}, shut {s:?} (start {started})");
        }
        first_offence = first_offence.min(f.context("a shut-out without a threat record")?);
        all_shut = all_shut.max(s.context("shut out")?);
    }
    if let Some(flood) = flood {
        flood.abort();
        let secs = flood_start.elapsed().as_secs_f64();
        let delivered = honest[0]
            .0
            .events_since(0, usize::MAX)
            .await?
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Broadcast { from, .. } if *from == evil_id))
            .count();
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "  flood: {sent} sent in {secs:.1} s ({:.0}/s), {delivered} taken by node 0 ({:.0}/s)",
            sent as f64 / secs,
            delivered as f64 / secs
        );
    }
    evil.shutdown().await;
    let _ = evil_task.await;
    for (node, task) in honest {
        node.shutdown().await;
        let _ = task.await;
    }
    Ok((
        all_shut.saturating_sub(first_offence),
        all_shut.saturating_sub(started),
    ))
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("# immune-bench\n");
    if !std::env::args().any(|a| a == "--no-overhead") {
        overhead(if quick { 5 } else { 15 })?;
    }
    if std::env::args().any(|a| a == "--overhead-only") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runs = if quick { 3 } else { 5 };
    println!("## Time to quarantine on all {NODES} honest nodes ({runs} runs each, medians)\n");
    println!(
        "| offender | first offence → all shut out: median | min | max | offender start → all shut out: median |"
    );
    println!("|---|---|---|---|---|");
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let kinds = [
        Offender::Forger,
        Offender::Equivocator,
        Offender::GossipFlooder,
    ];
    for kind in kinds.into_iter().filter(|k| {
        only.as_ref()
            .is_none_or(|o| format!("{k:?}").eq_ignore_ascii_case(o))
    }) {
        let mut from_offence = Vec::new();
        let mut from_start = Vec::new();
        for _ in 0..runs {
            let (a, b) = runtime.block_on(quarantine_run(kind))?;
            from_offence.push(Duration::from_millis(a));
            from_start.push(Duration::from_millis(b));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {kind:?} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms(quantile(&mut from_offence, 0.5)),
            ms(quantile(&mut from_offence, 0.0)),
            ms(quantile(&mut from_offence, 1.0)),
            ms(quantile(&mut from_start, 0.5)),
        );
    }
    Ok(())
}
