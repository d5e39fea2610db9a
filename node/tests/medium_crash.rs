//! Crash test for the shared medium on sled: a child process exposes entries and prints an
//! acknowledgement after each `expose` returns; the parent kills it with SIGKILL at random
//! moments, 200 times over one data directory, and after each kill reopens the medium and
//! checks that every acknowledged entry is there with its value.
//!
//! The child is this test binary re-executed with [`CHILD_ENV`] set to the directory and an
//! exact filter for [`TEST_NAME`]. `SEED` replays a run; `MEMBRANE_CRASH_CYCLES` changes the
//! number of kills.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use membrane_crdt::{Config, Draft, Medium};
use membrane_node::storage::SledStorage;
use membrane_protocol::cost::ApproxCounter;
use membrane_protocol::permeability::Reader;
use membrane_protocol::{Keypair, Space, Tier};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

const CHILD_ENV: &str = "MEMBRANE_MEDIUM_CRASH_CHILD";
const TEST_NAME: &str = "acknowledged_entries_survive_sigkill";
const MARKER: &str = "membrane-medium-crash: ack ";
const DEFAULT_CYCLES: u64 = 200;
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const NOW: u64 = 1_763_700_000_000;

fn open(dir: &Path) -> Medium<SledStorage> {
    Medium::open(
        Keypair::from_seed(&[5; 32]),
        SledStorage::open(dir).unwrap(),
        Config::default(),
        Arc::new(ApproxCounter),
    )
    .unwrap()
}

fn value(n: u64) -> String {
    format!("entry number {n}, acknowledged only once durable")
}

/// Every `crash.*` entry the medium holds, by number.
fn held(medium: &Medium<SledStorage>) -> BTreeMap<u64, String> {
    let reader = Reader::open(*medium.me());
    medium
        .query(
            &reader,
            &Space::default_space(),
            &"crash.*".parse().unwrap(),
            NOW,
            true,
        )
        .unwrap()
        .hits
        .into_iter()
        .map(|e| {
            let n = e.body().key.as_str()["crash.n".len()..].parse().unwrap();
            (n, e.body().value.clone())
        })
        .collect()
}

fn child(dir: &Path) {
    let mut medium = open(dir);
    let first = held(&medium).keys().next_back().map_or(0, |n| n + 1);
    let space = Space::default_space();
    let mut out = std::io::stdout();
    // Bounded, in case the parent dies: it never needs more than a few dozen.
    for next in first..first + 10_000 {
        // Every entry private or public by turns, so both the private store and the
        // documents are exercised.
        let tier = if next.is_multiple_of(2) {
            Tier::Public
        } else {
            Tier::Private
        };
        let draft = Draft::new(
            format!("crash.n{next}").parse().unwrap(),
            value(next),
            Some(tier),
        );
        medium.expose(&space, draft, NOW).unwrap();
        writeln!(out, "{MARKER}{next}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d656d62);
    let cycles = std::env::var("MEMBRANE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix(MARKER)
                    && tx.send(n.parse::<u64>().unwrap()).is_err()
                {
                    break;
                }
            }
        });
        // Kill after 0 to 8 acknowledgements: often mid-write, sometimes mid-open.
        let kill_after = rng.next_u32() % 9;
        for _ in 0..kill_after {
            match rx.recv_timeout(LINE_TIMEOUT) {
                Ok(n) => acked.push(n),
                Err(e) => panic!("cycle {cycle}: child silent ({e}); seed {seed}"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        // Acknowledgements already in the pipe when the child died count too.
        acked.extend(rx.try_iter());
        let medium = open(dir.path());
        let held = held(&medium);
        for n in &acked {
            assert_eq!(
                held.get(n).map(String::as_str),
                Some(value(*n).as_str()),
                "cycle {cycle}: acknowledged entry {n} lost; seed {seed}"
            );
        }
        drop(medium);
    }
    assert!(
        acked.len() as u64 >= cycles,
        "too few writes were acknowledged"
    );
    println!(
        "{cycles} kills, {} acknowledged entries, none lost",
        acked.len()
    );
}
