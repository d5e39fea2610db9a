//! A corpus of mutated envelopes, none of which may verify: bit flips in every field, wrong
//! keys, cross-kind replay, truncation, oversize, swapped signatures and payloads.
#![allow(clippy::unwrap_used, clippy::panic)]

use membrane_protocol::envelope::{
    EnvelopeError, Kind, MAX_CLOCK_SKEW_MS, MAX_FRAME_BYTES, RawEnvelope,
};
use membrane_protocol::signals::{Broadcast, Intent, ThreatKind, ThreatSignal};
use membrane_protocol::{
    Entry, EntryBody, EntryKind, Envelope, Evidence, Keypair, Score, Space, Tier,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_bytes::ByteBuf;

const NOW: u64 = 1_763_700_000_000;

fn originals() -> Vec<Envelope> {
    let alice = Keypair::from_seed(&[1; 32]);
    let bob = Keypair::from_seed(&[2; 32]);
    let space = Space::default_space();
    let entry = EntryBody {
        space: space.clone(),
        key: "findings.heat_islands".parse().unwrap(),
        value: "Urban heat islands raise night temperatures by 2-5 °C.".into(),
        tier: Tier::Public,
        tags: vec!["climate".parse().unwrap()],
        kind: EntryKind::Finding,
        evidence: Evidence::ExternalSource,
        parents: vec![],
        seq: 1,
        ttl_ms: Some(86_400_000),
        half_life_ms: None,
    };
    vec![
        Envelope::seal(&alice, NOW, &entry).unwrap(),
        Envelope::seal(
            &bob,
            NOW - 5,
            &Broadcast {
                space: space.clone(),
                message: "Brief complete".into(),
            },
        )
        .unwrap(),
        Envelope::seal(
            &alice,
            NOW,
            &Intent {
                space: space.clone(),
                topic: "heat".into(),
                strength: Score::from_milli(800).unwrap(),
            },
        )
        .unwrap(),
        Envelope::seal(
            &bob,
            NOW,
            &ThreatSignal {
                space,
                offender: alice.public(),
                kind: ThreatKind::Forgery,
                severity: membrane_protocol::signals::Severity::Fatal,
                evidence_hash: [9; 32],
                evidence: None,
            },
        )
        .unwrap(),
    ]
}

/// Decodes and verifies as a receiver would, including opening the payload as its kind.
fn accept(bytes: &[u8]) -> Result<(), EnvelopeError> {
    let env = Envelope::decode(bytes, MAX_FRAME_BYTES, NOW)?;
    if env.kind() == Kind::Entry {
        Entry::from_envelope(env)?;
    }
    Ok(())
}

fn accept_raw(raw: RawEnvelope) -> Result<(), EnvelopeError> {
    accept(&raw.encode().unwrap())
}

#[test]
fn ten_thousand_mutations_and_none_verifies() {
    let originals = originals();
    for env in &originals {
        accept(&env.to_bytes()).expect("the originals are valid");
    }
    let mut rng = ChaCha20Rng::seed_from_u64(
        std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x6d656d62),
    );
    let mut tried = 0usize;
    let mut check = |label: &str, result: Result<(), EnvelopeError>| {
        tried += 1;
        assert!(result.is_err(), "mutation {label} verified");
    };

    for (n, env) in originals.iter().enumerate() {
        let bytes = env.to_bytes();
        // Every single-bit flip, in every field.
        for bit in 0..bytes.len() * 8 {
            let mut m = bytes.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            check(&format!("env {n} bit {bit}"), accept(&m));
        }
        // Random multi-byte corruption.
        for i in 0..1000 {
            let mut m = bytes.clone();
            for _ in 0..1 + (rng.next_u32() % 4) {
                let at = rng.next_u32() as usize % m.len();
                m[at] = rng.next_u32() as u8;
            }
            if m != bytes {
                check(&format!("env {n} random {i}"), accept(&m));
            }
        }
        // Every truncation.
        for len in 0..bytes.len() {
            check(
                &format!("env {n} truncated to {len}"),
                accept(&bytes[..len]),
            );
        }
        // Trailing garbage.
        let mut trailing = bytes.clone();
        trailing.push(0);
        check(&format!("env {n} trailing"), accept(&trailing));

        let raw = env.to_raw();
        // Cross-kind replay: the same signature claimed for every other kind.
        for kind in Kind::ALL.iter().filter(|k| **k != env.kind()) {
            let mut m = raw.clone();
            m.1 = u64::from(kind.code());
            let result = accept_raw(m);
            assert!(
                matches!(result, Err(EnvelopeError::BadSignature { .. })),
                "{result:?}"
            );
            check("cross-kind", result);
        }
        // Wrong key: another valid author.
        for seed in 10..30u8 {
            let mut m = raw.clone();
            m.2 = ByteBuf::from(Keypair::from_seed(&[seed; 32]).public().as_bytes().to_vec());
            check("wrong key", accept_raw(m));
        }
        // Timestamps moved by a millisecond either way, and past the clock limit.
        for delta in [1i64, -1, 1000, -1000] {
            let mut m = raw.clone();
            m.3 = m.3.saturating_add_signed(delta);
            check("time", accept_raw(m));
        }
        let mut future = Envelope::seal_bytes(
            &Keypair::from_seed(&[1; 32]),
            env.kind(),
            NOW + MAX_CLOCK_SKEW_MS + 1,
            env.payload().to_vec(),
        )
        .unwrap()
        .to_raw();
        assert!(matches!(
            accept_raw(future.clone()),
            Err(EnvelopeError::FromTheFuture { .. })
        ));
        future.3 = NOW;
        check("future re-dated", accept_raw(future));
        // Versions and kinds this node does not know.
        for version in [0u64, 2, 255, u64::MAX] {
            let mut m = raw.clone();
            m.0 = version;
            check("version", accept_raw(m));
        }
        for kind in [0u64, 4, 15, 99, 65_535, 65_536, u64::MAX] {
            let mut m = raw.clone();
            m.1 = kind;
            check("unknown kind", accept_raw(m));
        }
        // Signatures: zero, all-ones, truncated, lengthened, from another envelope.
        for sig in [
            vec![0u8; 64],
            vec![0xFF; 64],
            vec![0; 63],
            vec![0; 65],
            vec![],
        ] {
            let mut m = raw.clone();
            m.5 = ByteBuf::from(sig);
            check("signature", accept_raw(m));
        }
        for other in originals.iter().filter(|o| *o != env) {
            let mut m = raw.clone();
            m.5 = ByteBuf::from(other.signature().to_vec());
            check("foreign signature", accept_raw(m));
            let mut m = raw.clone();
            m.4 = ByteBuf::from(other.payload().to_vec());
            check("foreign payload", accept_raw(m));
        }
        // Malformed author keys.
        let mut identity_point = vec![0u8; 32];
        identity_point[0] = 1;
        for author in [vec![], vec![1; 31], vec![1; 33], identity_point] {
            let mut m = raw.clone();
            m.2 = ByteBuf::from(author);
            check("bad author", accept_raw(m));
        }
        // Oversize: a payload over its kind's limit, and a frame over the global one.
        let mut m = raw.clone();
        m.4 = ByteBuf::from(vec![0; env.kind().max_payload_bytes() + 1]);
        let result = accept_raw(m);
        assert!(matches!(result, Err(EnvelopeError::PayloadTooLarge { .. })));
        check("oversize payload", result);
        let mut m = raw.clone();
        m.4 = ByteBuf::from(vec![0; MAX_FRAME_BYTES]);
        check("oversize frame", accept(&m.encode().unwrap()));
    }

    // Pure garbage.
    for len in [0usize, 1, 2, 7, 64, 200, 1000] {
        for _ in 0..50 {
            let mut m = vec![0u8; len];
            rng.fill_bytes(&mut m);
            check("garbage", accept(&m));
        }
    }

    assert!(tried >= 10_000, "only {tried} mutations tried");
}

#[test]
fn well_signed_nonsense_payloads_are_refused_as_payloads() {
    // A peer with a real key can sign anything; the receiver must still refuse payloads
    // that are not valid for their kind.
    let kp = Keypair::from_seed(&[7; 32]);
    for payload in [
        vec![],
        vec![0xA0],
        vec![0xFF; 10],
        b"not cbor at all".to_vec(),
    ] {
        let env = Envelope::seal_bytes(&kp, Kind::Entry, NOW, payload).unwrap();
        let received = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, NOW).unwrap();
        assert!(matches!(
            Entry::from_envelope(received),
            Err(EnvelopeError::Payload { .. }) | Err(EnvelopeError::InvalidPayload { .. })
        ));
    }
}
