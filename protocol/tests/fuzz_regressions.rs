//! Every input under `protocol/fuzz/regressions/<target>/` (crash inputs the fuzzers found,
//! and the seeds they started from) replayed through the same checks as the fuzz targets.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use membrane_protocol::codec;
use membrane_protocol::envelope::MAX_FRAME_BYTES;
use membrane_protocol::{Entry, EntryBody, Envelope, Keypair, Kind};

const NOW: u64 = 1_763_700_000_000;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn envelope_decode_regressions() {
    let inputs = inputs("envelope_decode");
    assert!(!inputs.is_empty(), "the seed at least is committed");
    for (path, data) in inputs {
        if let Ok(env) = Envelope::decode(&data, MAX_FRAME_BYTES, NOW) {
            let again = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, NOW)
                .unwrap_or_else(|e| panic!("{}: re-encoding fails: {e}", path.display()));
            assert_eq!(again.id(), env.id(), "{}", path.display());
            let _ = Entry::from_envelope(env);
        }
    }
}

#[test]
fn entry_decode_regressions() {
    let inputs = inputs("entry_decode");
    assert!(!inputs.is_empty(), "the seed at least is committed");
    let keypair = Keypair::from_seed(&[1; 32]);
    for (path, data) in inputs {
        let Ok(body) = codec::from_slice::<EntryBody>(&data, Kind::Entry.max_payload_bytes())
        else {
            continue;
        };
        let env = Envelope::seal_bytes(&keypair, Kind::Entry, 0, data.clone()).unwrap();
        let received = Envelope::decode(&env.to_bytes(), MAX_FRAME_BYTES, 0).unwrap();
        match Entry::from_envelope(received) {
            Ok(entry) => assert_eq!(entry.body(), &body, "{}", path.display()),
            Err(_) => assert!(body.check().is_err(), "{}", path.display()),
        }
    }
}
