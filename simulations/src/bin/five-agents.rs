//! The five-agent scenario (`shared/scenarios/five-agents.md`) over five real nodes.
//!
//! `cargo run -p membrane-simulations --release --bin five-agents [-- --seed N] [--quick]`
//!
//! Five nodes in this process (libp2p memory transport, in-memory storage), each with its
//! own HTTP API on loopback; every step goes through the agent's API client, every wait
//! follows the node's event stream. Prints the transcript, the final state table and the
//! counts beside the design documents' own figures; exits non-zero naming the first step
//! whose outcome differs. `--quick` waits at most 20 s for any one outcome (default 60 s).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use membrane_protocol::cost::Tiktoken;
use membrane_simulations::five_agents::{self, DESIGN_FIGURES, Options};

fn usage() -> ! {
    eprintln!("usage: five-agents [--seed N] [--quick]");
    std::process::exit(2)
}

fn shorten(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let cut: String = value.chars().take(max - 1).collect();
    format!("{cut}…")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => {
                options.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--quick" => options.deadline = Duration::from_secs(20),
            _ => usage(),
        }
    }
    let tokens = match Tiktoken::o200k() {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("cannot load the o200k tokenizer: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "five-agents: 5 real nodes (libp2p memory transport, full mesh), each with its HTTP \
         API; seed {}\n",
        options.seed
    );
    match five_agents::run(options, tokens).await {
        Ok(outcome) => {
            println!("## Transcript\n");
            for line in &outcome.transcript {
                println!("{line}");
            }
            println!("\n## Final state\n");
            println!("| key | owner | tier | value |");
            println!("|---|---|---|---|");
            for row in &outcome.state {
                let tier = if row.retracted {
                    format!("{} (retracted)", row.tier)
                } else {
                    row.tier.clone()
                };
                println!(
                    "| {} | {} | {} | {} |",
                    row.key,
                    row.owner,
                    tier,
                    shorten(&row.value, 70)
                );
            }
            println!("\nswarm: {}", outcome.swarm);
            let c = &outcome.counts;
            println!("\n## Figures\n");
            println!("| | this run (5 real nodes) | design documents (one process) |");
            println!("|---|---|---|");
            println!(
                "| wall clock of the script | {:.0} ms (+ {:.0} ms to start and mesh the nodes) | 22 ms |",
                outcome.wall.as_secs_f64() * 1e3,
                outcome.setup.as_secs_f64() * 1e3
            );
            println!(
                "| agent actions (state-changing calls) | {} (+ {} reads) | |",
                c.actions, c.reads
            );
            let total: u64 = c.events_per_node.iter().map(|e| e.1).sum();
            let per_node: Vec<String> = c
                .events_per_node
                .iter()
                .map(|(n, e)| format!("{n} {e}"))
                .collect();
            println!(
                "| events logged | {total} over 5 nodes ({}) | 32 |",
                per_node.join(", ")
            );
            let by_type: Vec<String> = c
                .events_by_type
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("| events by type (all nodes) | {} | |", by_type.join(", "));
            println!(
                "| visible entries | {} live shared (+ {} private, {} retracted) | 8 |",
                c.visible_entries, c.private_entries, c.retracted_entries
            );
            println!("| subscriptions | {} | 4 |", c.subscriptions);
            println!(
                "| broadcasts | {} (delivered to {} agents) | 1 |",
                c.broadcasts, c.deliveries
            );
            println!("| swarms | {} | 1 |", c.swarms);
            println!("| trust edges | {} | |", c.trust_edges);
            println!("\n(design documents: {DESIGN_FIGURES})");
            println!(
                "\nall {} checked outcomes as the scenario states them",
                outcome.checks
            );
            std::process::ExitCode::SUCCESS
        }
        Err(failure) => {
            for line in &failure.transcript {
                println!("{line}");
            }
            eprintln!("\nFAILED at step {}: {}", failure.step, failure.detail);
            std::process::ExitCode::FAILURE
        }
    }
}
