//! Criterion benchmarks for the protocol's hot paths: signing, verification (single,
//! strict, batch), envelope encoding and decoding, and token counting.
//!
//! `cargo bench -p membrane-protocol`; figures are recorded in `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use membrane_protocol::cost::{Tiktoken, TokenCounter};
use membrane_protocol::envelope::{MAX_FRAME_BYTES, RawEnvelope};
use membrane_protocol::{Envelope, Keypair, Kind};

const NOW: u64 = 1_763_700_000_000;

fn message(i: usize) -> Vec<u8> {
    (0..256).map(|j| (i * 31 + j) as u8).collect()
}

fn signatures(c: &mut Criterion) {
    let kp = Keypair::from_seed(&[1; 32]);
    let signing = SigningKey::from_bytes(&[1; 32]);
    let verifying: VerifyingKey = signing.verifying_key();
    let msg = message(0);
    let sig: Signature = signing.sign(&msg);

    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| kp.sign(black_box(&msg))));
    group.bench_function("verify", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(&msg), black_box(&sig))
                .is_ok()
        });
        // `verify` and `verify_strict` differ only in extra point checks; measure both.
    });
    group.bench_function("verify_cofactorless", |b| {
        b.iter(|| {
            ed25519_dalek::Verifier::verify(&verifying, black_box(&msg), black_box(&sig)).is_ok()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("ed25519_batch");
    for n in [16usize, 64, 256] {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[(i % 251) as u8 + 1; 32]))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..n).map(message).collect();
        let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("batch", n), &n, |b, _| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &vks).is_ok())
        });
        group.bench_with_input(BenchmarkId::new("one_by_one_strict", n), &n, |b, _| {
            b.iter(|| {
                refs.iter()
                    .zip(&sigs)
                    .zip(&vks)
                    .all(|((m, s), k)| k.verify_strict(black_box(m), s).is_ok())
            })
        });
    }
    group.finish();
}

fn envelopes(c: &mut Criterion) {
    let kp = Keypair::from_seed(&[2; 32]);
    let env = Envelope::seal_bytes(&kp, Kind::Broadcast, NOW, message(7)).unwrap();
    let bytes = env.to_bytes();
    let mut group = c.benchmark_group("envelope_256b");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| black_box(&env).to_bytes()));
    group.bench_function("decode", |b| {
        b.iter(|| RawEnvelope::decode(black_box(&bytes), MAX_FRAME_BYTES).unwrap())
    });
    group.bench_function("encode_decode", |b| {
        b.iter(|| RawEnvelope::decode(&black_box(&env).to_bytes(), MAX_FRAME_BYTES).unwrap())
    });
    group.bench_function("decode_verify", |b| {
        b.iter(|| Envelope::decode(black_box(&bytes), MAX_FRAME_BYTES, NOW).unwrap())
    });
    group.bench_function("seal", |b| {
        b.iter(|| Envelope::seal_bytes(&kp, Kind::Broadcast, NOW, black_box(message(7))).unwrap())
    });
    group.bench_function("id", |b| b.iter(|| black_box(&env).id()));
    group.finish();
}

const PARAGRAPH: &str = "Justice League is an upcoming American superhero film based on the \
DC Comics superhero team of the same name, distributed by Warner Bros. Pictures. It is \
intended to be the fifth installment in the DC Extended Universe (DCEU). The film is directed \
by Zack Snyder and written by Chris Terrio and Joss Whedon, from a story by Snyder and Terrio, \
and features an ensemble cast that includes Ben Affleck, Henry Cavill, Gal Gadot, Jason Momoa, \
Ezra Miller, Ray Fisher, Ciarán Hinds, Amy Adams, Willem Dafoe, Jesse Eisenberg, Jeremy Irons, \
Diane Lane, Connie Nielsen, and J. K. Simmons.";

fn tokens(c: &mut Criterion) {
    let tokenizer = Tiktoken::o200k().unwrap();
    let mut group = c.benchmark_group("tokens_o200k");
    group.throughput(Throughput::Bytes(PARAGRAPH.len() as u64));
    group.bench_function("count_paragraph", |b| {
        b.iter(|| tokenizer.count(black_box(PARAGRAPH)))
    });
    group.finish();
}

criterion_group!(benches, signatures, envelopes, tokens);
criterion_main!(benches);
