//! `membrane` processes as a user runs them: start a node in a data dir, wait until it is
//! ready (its log says so and `node.json` names its API), and run CLI verbs against it.
//! Waits read log lines with a deadline; nothing sleeps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use serde_json::Value;

use super::DEADLINE;

/// The `membrane` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_membrane")
}

/// A running `membrane node`, killed on drop.
pub struct NodeProcess {
    pub child: Child,
    pub dir: PathBuf,
    lines: Receiver<String>,
    /// The most peers any log line read so far reported (lines are consumed by waits).
    peers_seen: std::cell::Cell<u64>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    /// Starts a node in `dir` on loopback (Kademlia server, API on a free port unless `extra`
    /// names one, JSON logs) with `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> NodeProcess {
        let mut child = Command::new(bin())
            .arg("node")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--kad-server",
                "--log-format",
                "json",
            ])
            .args(if extra.contains(&"--api") {
                &[][..]
            } else {
                &["--api", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("MEMBRANE_API")
            .env_remove("MEMBRANE_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProcess {
            child,
            dir: dir.to_owned(),
            lines,
            peers_seen: std::cell::Cell::new(0),
        }
    }

    /// Reads log lines until one satisfies `want`; returns it.
    pub fn wait_line(
        &self,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message(&json) == "peer connected"
                && let Some(n) = json["fields"]["peers"].as_u64()
            {
                self.peers_seen.set(self.peers_seen.get().max(n));
            }
            if want(&json) {
                return json;
            }
        }
    }

    /// Waits for "membrane node ready" and returns `node.json`.
    pub fn wait_ready(&self) -> serde_json::Value {
        self.wait_line("node ready", |j| message(j) == "membrane node ready");
        self.info()
    }

    /// Waits until the log reports `n` connected peers.
    pub fn wait_peers(&self, n: u64) {
        // The line may have gone by already, read by an earlier wait (a node can connect
        // before it logs that it is ready).
        if self.peers_seen.get() >= n {
            return;
        }
        self.wait_line(&format!("{n} peers"), |j| {
            message(j) == "peer connected" && j["fields"]["peers"].as_u64() >= Some(n)
        });
    }

    /// The node's `node.json`.
    pub fn info(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("node.json")).unwrap()).unwrap()
    }

    /// Its first listen address, with `/p2p/<peer id>`, for others to bootstrap from.
    pub fn boot_addr(&self) -> String {
        self.info()["listen"][0].as_str().unwrap().to_owned()
    }

    /// Its peer id.
    pub fn peer_id(&self) -> String {
        self.info()["peer_id"].as_str().unwrap().to_owned()
    }

    /// Its API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Its API address, e.g. `127.0.0.1:40123`.
    pub fn api(&self) -> String {
        self.info()["api"].as_str().unwrap().to_owned()
    }

    /// Runs `membrane <args> --data-dir <dir>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .env_remove("MEMBRANE_API")
            .env_remove("MEMBRANE_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs a CLI verb that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "membrane {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI verb with `--json` that must succeed; returns its answer.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli_ok(&args)).unwrap()
    }
}

/// A JSON log line's message.
pub fn message(json: &serde_json::Value) -> &str {
    json["fields"]["message"].as_str().unwrap_or("")
}

/// A `membrane events` follower whose JSON lines arrive on a channel.
pub struct Follower {
    child: Child,
    pub lines: mpsc::Receiver<Value>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Follower {
    pub fn start(node: &NodeProcess, args: &[&str]) -> Follower {
        let mut child = Command::new(bin())
            .arg("events")
            .args(args)
            .args(["--json", "--data-dir"])
            .arg(&node.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(json) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(json).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event that satisfies `want`.
    pub fn wait(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            if want(&event) {
                return event;
            }
        }
    }
}

/// Re-checks `check` on `node` after each new event in its log until it holds.
pub fn eventually(node: &NodeProcess, what: &str, check: impl Fn() -> bool) {
    let follower = Follower::start(node, &["--since", "0"]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        follower
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    }
}
