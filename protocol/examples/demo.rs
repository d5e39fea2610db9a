//! The five-agent trust cases, decided by the permeability engine over real signed
//! entries, plus a byte-level look at one envelope.
//!
//! Run with `cargo run -p membrane-protocol --example demo`.
#![allow(clippy::print_stdout)]

use membrane_protocol::envelope::MAX_FRAME_BYTES;
use membrane_protocol::permeability::{Decision, EntryMeta, Reader, TrustGraph, decide};
use membrane_protocol::{
    Entry, EntryBody, EntryKind, Envelope, Evidence, Keypair, PublicKey, Score, Space, Tier,
};

fn main() -> anyhow::Result<()> {
    let names = ["orchestrator", "researcher", "writer", "editor", "reviewer"];
    let keys: Vec<Keypair> = (1..=5u8).map(|i| Keypair::from_seed(&[i; 32])).collect();
    let id = |name: &str| -> PublicKey {
        let i = names.iter().position(|n| *n == name).unwrap_or(0);
        keys[i].public()
    };
    let name_of = |key: &PublicKey| -> String {
        keys.iter()
            .position(|k| &k.public() == key)
            .map_or_else(|| key.short(), |i| names[i].to_owned())
    };
    for (name, key) in names.iter().zip(&keys) {
        println!("{name:>12}  {}", key.public());
    }

    let mut trust = TrustGraph::default();
    for (from, to, score) in [
        ("orchestrator", "writer", 0.7),
        ("orchestrator", "editor", 0.7),
        ("orchestrator", "researcher", 0.7),
        ("writer", "editor", 0.9),
        ("editor", "writer", 0.9),
        ("editor", "reviewer", 0.8),
    ] {
        trust.set(id(from), id(to), Score::from_f64(score)?);
    }

    let now = 1_763_700_000_000;
    let mut entries = Vec::new();
    for (seq, (owner, key, tier)) in (1..).zip([
        ("orchestrator", "tasks.brief", Tier::Public),
        ("researcher", "findings.heat_islands", Tier::Public),
        ("researcher", "findings.coastal_risk", Tier::Public),
        ("researcher", "findings.green_infra", Tier::Public),
        ("researcher", "findings.notes_internal", Tier::Private),
        ("writer", "drafts.intro", Tier::Trusted),
        ("writer", "drafts.body", Tier::Trusted),
        ("writer", "drafts.outro", Tier::Trusted),
        ("editor", "feedback.intro", Tier::Trusted),
        ("editor", "feedback.body", Tier::Trusted),
    ]) {
        let body = EntryBody {
            space: "climate-brief".parse::<Space>()?,
            key: key.parse()?,
            value: format!("{owner}'s {key}"),
            tier,
            tags: vec![],
            kind: EntryKind::Finding,
            evidence: Evidence::ExternalSource,
            parents: vec![],
            seq,
            ttl_ms: None,
            half_life_ms: None,
        };
        let owner_key = &keys[names.iter().position(|n| *n == owner).unwrap_or(0)];
        let sealed = Envelope::seal(owner_key, now, &body)?;
        // Every entry goes through the wire and back, verified, as a peer would see it.
        let received = Envelope::decode(&sealed.to_bytes(), MAX_FRAME_BYTES, now)?;
        entries.push(Entry::from_envelope(received)?);
    }

    println!();
    for (reader, pattern) in [
        ("researcher", "tasks.*"),
        ("writer", "findings.*"),
        ("reviewer", "drafts.*"),
        ("editor", "drafts.*"),
        ("writer", "feedback.*"),
    ] {
        let pattern: membrane_protocol::Pattern = pattern.parse()?;
        let reader_view = Reader::open(id(reader));
        let (mut hits, mut hidden, mut denied) = (0, 0, Vec::new());
        for entry in entries.iter().filter(|e| pattern.matches(&e.body().key)) {
            match decide(&reader_view, EntryMeta::from(entry), &trust) {
                Decision::Visible => hits += 1,
                Decision::Hidden { .. } => hidden += 1,
                Decision::Denied { reason } => denied.push(reason.describe(name_of)),
            }
        }
        denied.dedup();
        println!(
            "{reader:>12} queries {:<11} → {hits} hits, {hidden} hidden{}",
            pattern.as_str(),
            if denied.is_empty() {
                String::new()
            } else {
                format!(", denied: {}", denied.join("; "))
            }
        );
    }

    let first = &entries[0];
    let bytes = first.envelope().to_bytes();
    println!();
    println!("entry {} ({} bytes on the wire)", first.id(), bytes.len());
    println!("{}", hex::encode(&bytes));
    Ok(())
}
