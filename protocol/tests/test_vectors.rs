//! The test vector printed in `docs/wire-protocol.md` §7, byte for byte.
#![allow(clippy::unwrap_used)]

use membrane_protocol::envelope::MAX_FRAME_BYTES;
use membrane_protocol::{Entry, EntryBody, EntryKind, Envelope, Evidence, Keypair, Tier};

const ENVELOPE_HEX: &str = "86010158208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c1b0000019aa4b64500584aa76273706d636c696d6174652d6272696566616b6b7461736b732e62726965666176781a6f7263686573747261746f722773207461736b732e6272696566617402616e0261650261730158409ea5d4d2a8637a10a14e86d7e13c6caec29d197c158bb062ca6857ee77c0fb44ee47f8c42d69ab942748427db26b94dd3cf52bd3db0dfb27a30fd4c0a9986e08";
const ENVELOPE_ID: &str = "e208ecd663569f21d2493c5e5e551f32e44d8d6df2d56e60e0cd0915a5ccc887";
const PEER_ID: &str = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5";
const CREATED_AT_MS: u64 = 1_763_700_000_000;

fn body() -> EntryBody {
    EntryBody {
        space: "climate-brief".parse().unwrap(),
        key: "tasks.brief".parse().unwrap(),
        value: "orchestrator's tasks.brief".into(),
        tier: Tier::Public,
        tags: vec![],
        kind: EntryKind::Finding,
        evidence: Evidence::ExternalSource,
        parents: vec![],
        seq: 1,
        ttl_ms: None,
        half_life_ms: None,
    }
}

#[test]
fn sealing_the_documented_entry_gives_the_documented_bytes() {
    let keypair = Keypair::from_seed(&[1; 32]);
    assert_eq!(keypair.public().to_string(), PEER_ID);
    let env = Envelope::seal(&keypair, CREATED_AT_MS, &body()).unwrap();
    assert_eq!(hex::encode(env.to_bytes()), ENVELOPE_HEX);
    assert_eq!(env.id().to_string(), ENVELOPE_ID);
}

#[test]
fn the_documented_bytes_verify_and_open() {
    let bytes = hex::decode(ENVELOPE_HEX).unwrap();
    let env = Envelope::decode(&bytes, MAX_FRAME_BYTES, CREATED_AT_MS).unwrap();
    let entry = Entry::from_envelope(env).unwrap();
    assert_eq!(entry.body(), &body());
    assert_eq!(entry.owner().to_string(), PEER_ID);
    assert_eq!(entry.id().to_string(), ENVELOPE_ID);
}
