//! Crash test for [`SledStorage`]: a child process writes batches to a store and reports each
//! one that [`Storage::write`] returned from; the test kills it with `SIGKILL` at random
//! moments, hundreds of times over the same directory, and after each kill reopens the store
//! and checks that every acknowledged batch is there and that no batch is half-applied.
//!
//! The child is this same test binary, re-executed with [`CHILD_ENV`] naming the store's
//! directory and a filter selecting only [`TEST_NAME`]: the test function, seeing the
//! variable, plays the child. `SEED=<u64>` replays a run; `MEMBRANE_CRASH_CYCLES=<n>` changes
//! the number of kills. On failure the store's directory is left in place for inspection, and
//! its path is in the message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use membrane_crdt::storage::{Batch, Storage};
use membrane_node::storage::SledStorage;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Set in the child's environment to the store's directory; its presence makes the test the
/// child.
const CHILD_ENV: &str = "MEMBRANE_CRASH_CHILD";
/// The test function's name, for the child's `--exact` filter. Keep it in step with the
/// function below.
const TEST_NAME: &str = "acknowledged_batches_survive_sigkill";
/// Starts every message from the child, to tell it from the test harness's output.
const MARKER: &str = "membrane-crash: ";
/// Kill-and-reopen cycles, unless `MEMBRANE_CRASH_CYCLES` says otherwise.
const DEFAULT_CYCLES: u64 = 300;
/// The most acknowledgements a child gets to send before the parent kills it.
const MAX_ACKS_BEFORE_KILL: u64 = 24;
/// How long the parent waits for any one line from the child before declaring it hung.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Data keys in each batch (besides the `last` and `pending/` bookkeeping).
const KEYS_PER_BATCH: u64 = 8;
/// Every this many batches, one value is large enough for sled to store it apart, as a blob
/// file (anything over about a quarter of its 512 KiB segments).
const BLOB_EVERY: u64 = 128;
/// The size of those large values.
const BLOB_LEN: usize = 200_000;

// Each batch `n` (from 1) puts `batch/<n>/<j>` for every `j`, sets `last` to `n`, puts
// `pending/<n>` and deletes `pending/<n - 1>`. So a whole store holds batches `1..=last`, each
// complete, and exactly one `pending/` key; a batch applied in part would break one of these.

fn data_key(n: u64, j: u64) -> Vec<u8> {
    format!("batch/{n:010}/{j}").into_bytes()
}

fn pending_key(n: u64) -> Vec<u8> {
    format!("pending/{n:010}").into_bytes()
}

/// The value of `batch/<n>/<j>`: names its batch and key, then padding of varied length (and
/// now and then a blob-sized one) so the log crosses segment boundaries at varied offsets.
fn data_value(n: u64, j: u64) -> Vec<u8> {
    let padding = if j == 0 && n.is_multiple_of(BLOB_EVERY) {
        BLOB_LEN
    } else {
        ((n * 7919 + j * 104_729) % 400) as usize
    };
    let mut value = format!("{n}/{j}/").into_bytes();
    // `vec![byte; len]` becomes a memset even unoptimized; a byte-wise `extend` would make
    // checking the whole store each cycle the slowest part of the test.
    value.extend_from_slice(&vec![(n ^ j) as u8; padding]);
    value
}

fn batch_for(n: u64) -> Batch {
    let mut batch = Batch::new();
    for j in 0..KEYS_PER_BATCH {
        batch.put(data_key(n, j), data_value(n, j));
    }
    batch.put(b"last".to_vec(), n.to_string().into_bytes());
    batch.put(pending_key(n), n.to_be_bytes().to_vec());
    if n > 1 {
        batch.delete(pending_key(n - 1));
    }
    batch
}

/// The number of the last batch in the store (0 if none).
fn read_last(store: &SledStorage) -> u64 {
    match store.get(b"last").unwrap() {
        None => 0,
        Some(raw) => String::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("`last` holds a batch number"),
    }
}

/// The child: opens the store and writes batches after the last one until killed, printing
/// `ack <n>` (after [`MARKER`]) once `write` has returned for batch `n`.
fn run_child(dir: &Path) {
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{MARKER}{line}")
            .and_then(|()| out.flush())
            .is_ok()
    };
    if !say("opening".to_owned()) {
        return;
    }
    let mut store = SledStorage::open(dir).expect("the child opens the store");
    let last = read_last(&store);
    // Each batch is built before the previous one is acknowledged: the parent's kill follows
    // an acknowledgement closely, and should land in `write` (sled applying or flushing the
    // batch), not in the test's own code building it. Bounded only so that a child whose
    // parent stopped reading without closing the pipe stops too; the parent kills it long
    // before.
    let mut next = batch_for(last + 1);
    if !say(format!("ready {last}")) {
        return;
    }
    for n in last + 1..=last + 10_000 {
        store.write(next).expect("the child writes a batch");
        next = batch_for(n + 1);
        if !say(format!("ack {n}")) {
            // The parent is gone.
            return;
        }
    }
}

/// What a line from the child says.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Opening,
    Ready(u64),
    Ack(u64),
    /// The test harness's own output.
    Other,
}

/// Reads a line from the child. The harness writes on the same stdout (`--nocapture`), and
/// may leave its own text at the start of the line our first message lands on, so messages
/// carry [`MARKER`] and anything before it is ignored.
fn parse(line: &str) -> Said {
    let Some(at) = line.find(MARKER) else {
        return Said::Other;
    };
    let message = line[at + MARKER.len()..].trim();
    let number = |rest: &str| rest.parse::<u64>().ok();
    if message == "opening" {
        Said::Opening
    } else if let Some(n) = message.strip_prefix("ready ").and_then(number) {
        Said::Ready(n)
    } else if let Some(n) = message.strip_prefix("ack ").and_then(number) {
        Said::Ack(n)
    } else {
        Said::Other
    }
}

/// When the parent pulls the trigger.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the child says it is about to open the store: the kill lands while sled
    /// opens (and recovers) it.
    Opening,
    /// After this many acknowledgements (0: as soon as the store is open).
    Acks(u64),
}

/// A running child, its stdout read line by line on a helper thread.
struct Running {
    child: Child,
    lines: Receiver<String>,
    reader: JoinHandle<()>,
}

fn spawn_child(dir: &Path) -> Running {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        reader,
    }
}

/// What one child did before and after its death.
#[derive(Debug, Default)]
struct Observed {
    ready: Option<u64>,
    acks: Vec<u64>,
}

impl Observed {
    fn record(&mut self, said: Said) {
        match said {
            Said::Ready(n) => self.ready = Some(n),
            Said::Ack(n) => self.acks.push(n),
            Said::Opening | Said::Other => {}
        }
    }
}

/// Runs one child until `kill_at`, kills it, and collects everything it acknowledged
/// (including acknowledgements still in the pipe when it died).
fn run_and_kill(dir: &Path, kill_at: KillAt, context: &str) -> Observed {
    let Running {
        mut child,
        lines,
        reader,
    } = spawn_child(dir);
    let mut seen = Observed::default();
    loop {
        let line = match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{context}: the child said nothing for {LINE_TIMEOUT:?}; seen {seen:?}");
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("{context}: the child exited on its own ({status}) before {kill_at:?}");
            }
        };
        let said = parse(&line);
        let fire = match (kill_at, &said) {
            (KillAt::Opening, Said::Opening) => true,
            (KillAt::Acks(0), Said::Ready(_)) => true,
            (KillAt::Acks(k), Said::Ack(_)) => seen.acks.len() as u64 + 1 >= k,
            _ => false,
        };
        seen.record(said);
        if fire {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{context}: the child ended by {status}, not by SIGKILL"
        );
    }
    #[cfg(not(unix))]
    assert!(!status.success(), "{context}: the child exited cleanly");
    // The pipe's writer is dead, so the reader reaches its end promptly.
    loop {
        match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => seen.record(parse(&line)),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("{context}: the child's stdout stays open"),
        }
    }
    reader.join().unwrap();
    seen
}

/// Reopens the store after a kill and checks it against what the child said. Returns the
/// number of the last batch present.
fn verify(dir: &Path, previous_last: u64, seen: &Observed, context: &str) -> u64 {
    let store = SledStorage::open(dir).unwrap_or_else(|e| panic!("{context}: reopen: {e:?}"));
    let last = read_last(&store);

    // What the child said is consistent: it resumed where the store was, acked in order.
    if let Some(ready) = seen.ready {
        assert_eq!(
            ready, previous_last,
            "{context}: the child found a different last batch than the last check"
        );
    }
    for (i, &n) in seen.acks.iter().enumerate() {
        assert_eq!(
            n,
            previous_last + 1 + i as u64,
            "{context}: acks out of sequence"
        );
    }

    // Durability: every acknowledged batch is there, and nothing seen before vanished.
    let highest_acked = seen.acks.last().copied().unwrap_or(previous_last);
    assert!(
        last >= highest_acked,
        "{context}: batch {highest_acked} was acknowledged but the store ends at batch {last}"
    );
    // Only the batch in flight when the child died may be there without an ack.
    assert!(
        last <= highest_acked + 1,
        "{context}: the store ends at batch {last}, but only {highest_acked} were acknowledged"
    );

    // Atomicity: batches 1..=last each whole, nothing else.
    let scanned = store.scan_prefix(b"batch/").unwrap();
    let expected_len = last * KEYS_PER_BATCH;
    let mut expected = (1..=last).flat_map(|n| (0..KEYS_PER_BATCH).map(move |j| (n, j)));
    for (i, (key, value)) in scanned.iter().enumerate() {
        let Some((n, j)) = expected.next() else {
            panic!(
                "{context}: {} keys under batch/ where batches 1..={last} make {expected_len}; \
                 first extra: {}",
                scanned.len(),
                String::from_utf8_lossy(key)
            );
        };
        assert!(
            *key == data_key(n, j) && *value == data_value(n, j),
            "{context}: entry {i} is {} ({} bytes), expected batch {n} key {j}: \
             a batch is missing or partial",
            String::from_utf8_lossy(key),
            value.len()
        );
    }
    assert_eq!(
        scanned.len() as u64,
        expected_len,
        "{context}: batches up to {last} are not all there"
    );
    let pending = store.scan_prefix(b"pending/").unwrap();
    let expected_pending: Vec<(Vec<u8>, Vec<u8>)> = if last == 0 {
        Vec::new()
    } else {
        vec![(pending_key(last), last.to_be_bytes().to_vec())]
    };
    assert_eq!(
        pending, expected_pending,
        "{context}: the pending/ keys are off"
    );
    last
}

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.parse()
            .unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")),
    )
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
        return;
    }

    let seed = env_u64("SEED").unwrap_or(0x6d656d62);
    let cycles = env_u64("MEMBRANE_CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Kept on failure, for inspection; removed at the end on success.
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("membrane-storage-crash-")
        .tempdir()
        .unwrap()
        .keep();

    let started = Instant::now();
    let mut last = 0;
    let mut acked = 0;
    let mut unacked_survivors = 0;
    for cycle in 0..cycles {
        let kill_at = if rng.next_u64().is_multiple_of(8) {
            KillAt::Opening
        } else {
            KillAt::Acks(rng.next_u64() % (MAX_ACKS_BEFORE_KILL + 1))
        };
        let context = format!(
            "SEED={seed} cycle {cycle} ({kill_at:?}, store at {})",
            dir.display()
        );
        let seen = run_and_kill(&dir, kill_at, &context);
        let now_last = verify(&dir, last, &seen, &context);
        acked += seen.acks.len();
        if now_last > seen.acks.last().copied().unwrap_or(last) {
            unacked_survivors += 1;
        }
        last = now_last;
    }
    let size = SledStorage::open(&dir).unwrap().size_on_disk().unwrap();
    eprintln!(
        "storage crash test: SEED={seed}, {cycles} kills in {:?}, {acked} acknowledged batches, \
         {last} batches in the store ({unacked_survivors} kills left an unacknowledged batch \
         applied), {size} bytes on disk",
        started.elapsed()
    );
    assert!(last > 0, "no batch was ever written");
    std::fs::remove_dir_all(&dir).unwrap();
}
