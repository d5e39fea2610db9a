//! Our wire bytes are standard CBOR: a second, independent implementation (ciborium)
//! decodes them to the layout `docs/wire-protocol.md` describes, and re-encodes them to the
//! same bytes (so our encoding is the preferred, shortest form).
#![allow(clippy::unwrap_used, clippy::panic)]

use ciborium::value::{Integer, Value};
use membrane_protocol::envelope::{ENVELOPE_OVERHEAD, VERSION};
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, EnvelopeId, Evidence, Keypair, Kind, Space, Tier,
};

fn entry() -> (Keypair, EntryBody) {
    let kp = Keypair::from_seed(&[42; 32]);
    let body = EntryBody {
        space: "climate-brief".parse::<Space>().unwrap(),
        key: "findings.coastal_risk".parse().unwrap(),
        value: "Sea-level rise of 0.3 m doubles flood frequency in 60% of ports.".into(),
        tier: Tier::Trusted,
        tags: vec!["coast".parse().unwrap()],
        kind: EntryKind::Fact,
        evidence: Evidence::ToolResult,
        parents: vec![EnvelopeId([0xAB; 32])],
        seq: 300,
        ttl_ms: Some(3_600_000),
        half_life_ms: None,
    };
    (kp, body)
}

fn decode(bytes: &[u8]) -> Value {
    ciborium::de::from_reader(bytes).unwrap()
}

fn reencode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

fn int(v: &Value) -> i128 {
    match v {
        Value::Integer(i) => i128::from(*i),
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[test]
fn an_envelope_is_a_six_item_cbor_array() {
    let (kp, body) = entry();
    let env = Envelope::seal(&kp, 1_763_700_000_123, &body).unwrap();
    let bytes = env.to_bytes();
    let value = decode(&bytes);
    let Value::Array(items) = &value else {
        panic!("not an array: {value:?}")
    };
    assert_eq!(items.len(), 6);
    assert_eq!(int(&items[0]), i128::from(VERSION));
    assert_eq!(int(&items[1]), i128::from(Kind::Entry.code()));
    assert_eq!(items[2], Value::Bytes(kp.public().as_bytes().to_vec()));
    assert_eq!(int(&items[3]), 1_763_700_000_123);
    assert_eq!(items[4], Value::Bytes(env.payload().to_vec()));
    assert_eq!(items[5], Value::Bytes(env.signature().to_vec()));
    // Same bytes back: our encoding is the shortest form ciborium would write.
    assert_eq!(reencode(&value), bytes);
    assert!(bytes.len() <= env.payload().len() + ENVELOPE_OVERHEAD);
}

#[test]
fn an_entry_payload_is_a_map_with_short_keys() {
    let (kp, body) = entry();
    let env = Envelope::seal(&kp, 0, &body).unwrap();
    let value = decode(env.payload());
    let Value::Map(fields) = &value else {
        panic!("not a map: {value:?}")
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == Value::Text(name.into()))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    assert_eq!(get("sp"), Value::Text("climate-brief".into()));
    assert_eq!(get("k"), Value::Text("findings.coastal_risk".into()));
    assert_eq!(get("t"), Value::Integer(Integer::from(1u8)));
    assert_eq!(get("n"), Value::Integer(Integer::from(0u8)));
    assert_eq!(get("e"), Value::Integer(Integer::from(3u8)));
    assert_eq!(get("s"), Value::Integer(Integer::from(300u16)));
    assert_eq!(get("l"), Value::Integer(Integer::from(3_600_000u32)));
    assert_eq!(get("p"), Value::Array(vec![Value::Bytes(vec![0xAB; 32])]));
    assert_eq!(get("g"), Value::Array(vec![Value::Text("coast".into())]));
    // Absent optional fields are omitted, not null.
    assert!(fields.iter().all(|(k, _)| *k != Value::Text("h".into())));
    assert_eq!(reencode(&value), env.payload());
}

#[test]
fn ciborium_written_envelopes_decode_and_verify_with_ours() {
    // Build the envelope with the other implementation from our signed parts.
    let (kp, body) = entry();
    let env = Envelope::seal(&kp, 5, &body).unwrap();
    let value = Value::Array(vec![
        Value::Integer(Integer::from(VERSION)),
        Value::Integer(Integer::from(Kind::Entry.code())),
        Value::Bytes(kp.public().as_bytes().to_vec()),
        Value::Integer(Integer::from(5u8)),
        Value::Bytes(env.payload().to_vec()),
        Value::Bytes(env.signature().to_vec()),
    ]);
    let bytes = reencode(&value);
    let back = Envelope::decode(&bytes, 1 << 16, 5).unwrap();
    assert_eq!(back.id(), env.id());
}
