//! Criterion benchmarks for the audit log: what one answer's record costs the node when it
//! is written (hash, sign, encode as the JSON line it is stored as), and what verifying one
//! stored record costs when the node checks its whole log at start (parse the line, hash,
//! check the signature), against the bare ed25519 signature check in the same run.
//!
//! `cargo bench -p membrane-immune --bench audit`; figures are in `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use membrane_immune::audit::{AuditLog, to_jsonl};
use membrane_immune::{AuditEvent, AuditRecord, ChainVerifier, Crossed, CrossingDecision};
use membrane_protocol::Keypair;
use membrane_protocol::identity::verify_strict;

/// An answer of `n` entries by one owner as a query records it, each visible.
fn answer(n: usize) -> AuditEvent {
    let owner = Keypair::from_seed(&[2; 32]).public();
    AuditEvent::answer(
        "query",
        "climate-brief",
        "findings.**",
        60 * n as u64,
        (0..n).map(|i| Crossed {
            key: format!("findings.sea_level.item{i}"),
            owner,
            decision: CrossingDecision::Visible,
            reason: None,
        }),
    )
}

fn write(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 100] {
        let event = answer(n);
        let mut log = AuditLog::new(Keypair::from_seed(&[1; 32]));
        group.bench_with_input(BenchmarkId::new("answer_record", n), &n, |b, _| {
            b.iter(|| {
                let record = log.append(1, black_box(event.clone())).unwrap();
                serde_json::to_vec(&record).unwrap()
            })
        });
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let key = Keypair::from_seed(&[1; 32]);
    let mut log = AuditLog::new(key.clone());
    let records: Vec<AuditRecord> = (0..1_000)
        .map(|i| log.append(i, answer(10)).unwrap())
        .collect();
    let lines: Vec<Vec<u8>> = to_jsonl(&records)
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let mut group = c.benchmark_group("audit_verify_at_start");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("1000_records_of_10_entries", |b| {
        b.iter(|| {
            let mut v = ChainVerifier::new(key.public());
            for line in &lines {
                let record: AuditRecord = serde_json::from_slice(black_box(line)).unwrap();
                v.push(&record).unwrap();
            }
            v.verified()
        })
    });
    // The reference: the signature checks alone, over the same records.
    let message = |r: &AuditRecord| [b"membrane/v1/audit".as_slice(), &r.hash].concat();
    group.bench_function("signatures_only", |b| {
        b.iter(|| {
            records
                .iter()
                .all(|r| verify_strict(&key.public(), &message(r), black_box(&r.signature)))
        })
    });
    group.finish();
}

criterion_group!(benches, write, verify);
criterion_main!(benches);
