//! Baseline (every agent messages every other) against membrane (expose once, search with a
//! budget), first from the design documents' cost model, then measured.
//!
//! `cargo run -p membrane-simulations --release --bin benchmark -- --model seed`
//! `cargo run -p membrane-simulations --release --bin benchmark -- --model measured
//!    [--corpus PATH] [--agents 3,5,8,12,20,50,100] [--budgets 256,512,1024]
//!    [--per-agent 10] [--seed 1] [--out docs] [--quick]`
//!
//! `--model seed` prints the published table from the published constants. `--model
//! measured` deals real HotpotQA paragraphs to N agents, counts the baseline's every message
//! and ack with tiktoken o200k, runs N real nodes in this process for the membrane side
//! (each agent exposes its paragraphs through its API, then searches for its questions),
//! and measures recall. It prints a table per budget and writes `benchmark-results.md` and
//! two SVG charts into `--out` (default: the workspace's `docs/`). `--quick`: N = 3, 5, 8.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use membrane_protocol::cost::{Tiktoken, TokenCounter};
use membrane_simulations::corpus;
use membrane_simulations::costmodel::{self, PUBLISHED, thousands};
use membrane_simulations::measured::{self, Baseline, Hops, Membrane};
use membrane_simulations::svg::{Chart, Series};

struct Args {
    model: String,
    corpus: PathBuf,
    agents: Vec<usize>,
    budgets: Vec<u32>,
    per_agent: usize,
    seed: u64,
    out: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: benchmark --model seed|measured [--corpus PATH] [--agents 3,5,...] \
         [--budgets 256,512,1024] [--per-agent 10] [--seed N] [--out DIR|-] [--quick]"
    );
    std::process::exit(2)
}

fn list<T: std::str::FromStr>(s: Option<String>) -> Vec<T> {
    let s = s.unwrap_or_else(|| usage());
    let v: Option<Vec<T>> = s.split(',').map(|x| x.trim().parse().ok()).collect();
    v.filter(|v| !v.is_empty()).unwrap_or_else(|| usage())
}

fn parse() -> Args {
    let mut a = Args {
        model: String::new(),
        corpus: corpus::default_path(),
        agents: vec![3, 5, 8, 12, 20, 50, 100],
        budgets: vec![256, 512, 1024],
        per_agent: 10,
        seed: 1,
        out: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => a.model = args.next().unwrap_or_else(|| usage()),
            "--corpus" => a.corpus = args.next().unwrap_or_else(|| usage()).into(),
            "--agents" => a.agents = list(args.next()),
            "--budgets" => a.budgets = list(args.next()),
            "--per-agent" => a.per_agent = list(args.next())[0],
            "--seed" => a.seed = list(args.next())[0],
            "--out" => {
                let out = args.next().unwrap_or_else(|| usage());
                a.out = (out != "-").then(|| out.into());
            }
            "--quick" => a.agents = vec![3, 5, 8],
            _ => usage(),
        }
    }
    a
}

fn seed_model() {
    println!(
        "Cost model of the design documents: envelope {} tokens, payload {}, ack {}, {} facts per agent.\n",
        PUBLISHED.envelope, PUBLISHED.payload, PUBLISHED.ack, PUBLISHED.facts
    );
    print!("{}", costmodel::markdown(&PUBLISHED, &[3, 5, 8, 12, 20]));
    println!(
        "\nBoth sides grow with N²: the reduction tends to {:.1}% and never passes it \
         (N = 100: {:.1}%, N = 1000: {:.1}%).",
        PUBLISHED.limit_pct(),
        PUBLISHED.row(100).reduction_pct(),
        PUBLISHED.row(1000).reduction_pct()
    );
}

struct Row {
    agents: usize,
    questions: usize,
    unassigned: usize,
    baseline: Baseline,
    membrane: Membrane,
    baseline_count_time: Duration,
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        return 0.0;
    }
    100.0 * (1.0 - a as f64 / b as f64)
}

fn tables(rows: &[Row], budgets: &[u32], modes: &[Hops]) -> String {
    let mut out = String::new();
    for &mode in modes {
        for &budget in budgets {
            let _ = writeln!(
                out,
                "\n### Budget {budget} tokens per question, {} search\n",
                mode.name()
            );
            out.push_str(
                "| N | baseline tokens | membrane tokens | reduction | recall | per-agent intake (baseline → membrane) | messages (baseline → membrane sync + gossip) | baseline bytes | membrane wall time |\n|---|---|---|---|---|---|---|---|---|\n",
            );
            for r in rows {
                let Some((_, s)) = r
                    .membrane
                    .searches
                    .iter()
                    .find(|(m, s)| *m == mode && s.budget == budget)
                else {
                    continue;
                };
                let membrane = r.membrane.expose_tokens + s.search_tokens;
                let n = r.agents as u64;
                let wall = r.membrane.replication + s.wall;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1}% | {:.3} ({} questions) | {} → {} | {} → {} + {} | {} | {:.2} s (replication {:.2} s + searches {:.2} s) |",
                    r.agents,
                    thousands(r.baseline.tokens),
                    thousands(membrane),
                    pct(membrane, r.baseline.tokens),
                    s.recall,
                    s.questions,
                    thousands(r.baseline.tokens / n),
                    thousands(membrane / n),
                    thousands(r.baseline.messages),
                    thousands(r.membrane.sync_messages),
                    thousands(r.membrane.gossip_messages),
                    thousands(r.baseline.bytes),
                    wall.as_secs_f64(),
                    r.membrane.replication.as_secs_f64(),
                    s.wall.as_secs_f64(),
                );
            }
        }
    }
    out
}

fn charts(rows: &[Row], budgets: &[u32], modes: &[Hops]) -> (String, String) {
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut series = vec![Series {
        name: "baseline".into(),
        colour: "#444",
        points: rows
            .iter()
            .map(|r| (r.agents as f64, r.baseline.tokens as f64))
            .collect(),
    }];
    let best = modes.last().copied().unwrap_or(Hops::One);
    for (i, &b) in budgets.iter().enumerate() {
        series.push(Series {
            name: format!("membrane {b} ({})", best.name()),
            colour: colours[i % colours.len()],
            points: rows
                .iter()
                .filter_map(|r| {
                    let (_, s) = r
                        .membrane
                        .searches
                        .iter()
                        .find(|(m, s)| *m == best && s.budget == b)?;
                    Some((
                        r.agents as f64,
                        (r.membrane.expose_tokens + s.search_tokens) as f64,
                    ))
                })
                .collect(),
        });
    }
    let tokens = Chart {
        title: "Tokens into all agents' contexts vs N (HotpotQA, o200k)".into(),
        x_label: "agents (N)".into(),
        y_label: "tokens".into(),
        log_x: true,
        log_y: true,
        y_range: None,
        series,
    };
    let mut series = Vec::new();
    let mut i = 0;
    for &mode in modes {
        for r in rows {
            series.push(Series {
                name: format!("N={} {}", r.agents, mode.name()),
                colour: colours[i % colours.len()],
                points: budgets
                    .iter()
                    .filter_map(|&b| {
                        let (_, s) = r
                            .membrane
                            .searches
                            .iter()
                            .find(|(m, s)| *m == mode && s.budget == b)?;
                        Some((f64::from(b), s.recall))
                    })
                    .collect(),
            });
            i += 1;
        }
    }
    // Keep the recall chart readable: at most 6 lines (the largest N of each mode first).
    if series.len() > 6 {
        let per_mode = 6 / modes.len().max(1);
        let per = rows.len();
        series = modes
            .iter()
            .enumerate()
            .flat_map(|(m, _)| {
                let chunk = &series[m * per..(m + 1) * per];
                let step = (per / per_mode).max(1);
                chunk
                    .iter()
                    .rev()
                    .step_by(step)
                    .take(per_mode)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        for (i, s) in series.iter_mut().enumerate() {
            s.colour = colours[i % colours.len()];
        }
    }
    let recall = Chart {
        title: "Recall of supporting paragraphs vs search budget".into(),
        x_label: "max_tokens per question".into(),
        y_label: "recall".into(),
        log_x: true,
        log_y: false,
        y_range: Some((0.0, 1.0)),
        series,
    };
    (tokens.render(), recall.render())
}

async fn measured_model(args: &Args) -> anyhow::Result<()> {
    let questions = corpus::load(&args.corpus)?;
    let tokens: Arc<dyn TokenCounter> = Arc::new(Tiktoken::o200k()?);
    let frame = measured::envelope_tokens(tokens.as_ref());
    let modes = [Hops::One, Hops::Two];
    println!(
        "Measured: {} ({} questions), {} paragraphs per agent, envelope {frame} tokens (o200k), \
         budgets {:?}, seed {}",
        args.corpus.display(),
        questions.len(),
        args.per_agent,
        args.budgets,
        args.seed
    );
    let mut rows = Vec::new();
    for &n in &args.agents {
        let deal = measured::deal(&questions, n, args.per_agent, args.seed)?;
        let t = Instant::now();
        let baseline = measured::baseline(&deal, tokens.as_ref());
        let baseline_count_time = t.elapsed();
        let deadline = Duration::from_secs(120 + 3 * n as u64);
        let membrane = measured::membrane(
            &deal,
            &questions,
            &args.budgets,
            &modes,
            args.seed,
            Arc::clone(&tokens),
            deadline,
        )
        .await?;
        let questions_asked: usize = deal.asks.iter().map(Vec::len).sum();
        println!(
            "N = {n}: baseline {} tokens ({} messages, counted in {:.1} s); membrane setup {:.2} s, exposes {} tokens, replication {:.2} s; {} questions asked, {} unassignable",
            thousands(baseline.tokens),
            thousands(baseline.messages),
            baseline_count_time.as_secs_f64(),
            membrane.setup.as_secs_f64(),
            thousands(membrane.expose_tokens),
            membrane.replication.as_secs_f64(),
            questions_asked,
            deal.unassigned
        );
        rows.push(Row {
            agents: n,
            questions: questions_asked,
            unassigned: deal.unassigned,
            baseline,
            membrane,
            baseline_count_time,
        });
    }
    let body = tables(&rows, &args.budgets, &modes);
    println!("{body}");
    if let Some(out) = &args.out {
        let (tokens_svg, recall_svg) = charts(&rows, &args.budgets, &modes);
        std::fs::write(out.join("benchmark-tokens.svg"), tokens_svg)?;
        std::fs::write(out.join("benchmark-recall.svg"), recall_svg)?;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        let mut doc = String::new();
        let _ = writeln!(doc, "# Benchmark results: baseline messaging vs membrane\n");
        let _ = writeln!(
            doc,
            "<!-- Written by `cargo run -p membrane-simulations --release --bin benchmark -- {command}`; rerun it to refresh. -->\n"
        );
        let _ = writeln!(
            doc,
            "Corpus: `{}` ({} HotpotQA questions, CC BY-SA 4.0), {} paragraphs per agent, seed {}. Tokens: tiktoken o200k; every message, request and answer is wrapped in the same envelope of {frame} tokens. Machine: {cores} cores. Method and caveats: [simulations.md](simulations.md).\n",
            args.corpus
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
            questions.len(),
            args.per_agent,
            args.seed
        );
        let _ = writeln!(
            doc,
            "![tokens vs N](benchmark-tokens.svg)\n\n![recall vs budget](benchmark-recall.svg)"
        );
        doc.push_str(&body);
        let _ = writeln!(
            doc,
            "\n### Per N\n\n| N | questions asked | unassignable | membrane expose answers (intake) | expose requests (agents' output, not counted) | node setup | baseline counting time |\n|---|---|---|---|---|---|---|"
        );
        for r in &rows {
            let _ = writeln!(
                doc,
                "| {} | {} | {} | {} | {} | {:.2} s | {:.1} s |",
                r.agents,
                r.questions,
                r.unassigned,
                thousands(r.membrane.expose_tokens),
                thousands(r.membrane.expose_output_tokens),
                r.membrane.setup.as_secs_f64(),
                r.baseline_count_time.as_secs_f64()
            );
        }
        std::fs::write(out.join("benchmark-results.md"), doc)?;
        println!(
            "wrote {}/benchmark-results.md, benchmark-tokens.svg, benchmark-recall.svg",
            out.display()
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let args = parse();
    match args.model.as_str() {
        "seed" => {
            seed_model();
            std::process::ExitCode::SUCCESS
        }
        "measured" => match measured_model(&args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("benchmark failed: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}
