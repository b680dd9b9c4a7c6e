//! `bench all [--quick]` measures everything and writes `bench/RESULTS.md`; each part also
//! runs alone (`bench engine`, `scaling`, `growth`, `research`, `data`, `cluster`, `api`). Run it in release:
//!
//! `cargo run --release -p bench -- all --quick`

use std::path::PathBuf;

use anyhow::Context;
use bench::peers::Peers;
use bench::report::{Table, Target, print, targets_table};
use bench::{api, cluster, data, growth, machine, research, scaling, versus};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the engine and the cluster, side by side with the peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything below, one markdown report, written to `--out`.
    All {
        /// Fewer runs and peer samples: under two minutes once the peers are installed.
        #[arg(long)]
        quick: bool,
        /// Skip backtrader and vectorbt (no Python needed).
        #[arg(long)]
        no_peers: bool,
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
        out: PathBuf,
    },
    /// The engine against backtrader and vectorbt.
    Engine {
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 300)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long)]
        no_peers: bool,
    },
    /// Rayon threads 1..all cores, worker processes 1, 2, 4.
    Scaling {
        #[arg(long, default_value_t = 300)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time and peak memory as symbols, years and grid grow 10x and 100x.
    Growth {
        #[arg(long, default_value_t = 100)]
        symbols: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time and peak memory of one cold batch over a big market read from each layout.
    GrowthData {
        #[arg(long, default_value_t = 3000)]
        symbols: usize,
        #[arg(long, default_value_t = 20)]
        years: usize,
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// One batch over files, cold (bar cache empty) and warm, in every layout, beside
    /// vectorbt reading the same files.
    Data {
        #[arg(long, default_value_t = 300)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        no_peers: bool,
    },
    /// Walk-forward and overfitting statistics over a big grid's portfolio curves.
    Research {
        #[arg(long, default_value_t = 1000)]
        sets: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// In-process against the cluster on loopback; coordinator and Flight throughput.
    Cluster {
        #[arg(long, default_value_t = 300)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long, default_value = "macd")]
        strategy: String,
        /// A parameter grid as JSON (`{"fast":[8,10,12]}`); the strategy's defaults otherwise.
        #[arg(long)]
        grid: Option<String>,
        /// Near-empty jobs for the scheduling throughput.
        #[arg(long, default_value_t = 20_000)]
        empty_jobs: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The etcd and object-store path against the embedded store, and failover times
    /// (needs etcd; release binaries: `cargo build --release --bins` first).
    Distributed {
        #[arg(long, default_value_t = 2000)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Each worker's slots (two workers: one per coordinator).
        #[arg(long, default_value_t = 1)]
        slots: usize,
    },
    /// The HTTP API under concurrent status polling.
    Api {
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// One path of the cluster-overhead batch, `--runs` times, for a profiler to watch
    /// (`perf record -g -- bench path --path process`).
    Path {
        #[arg(long, value_parser = ["in-process", "local", "process"])]
        path: String,
        #[arg(long, default_value_t = 300)]
        symbols: usize,
        #[arg(long, default_value_t = 10)]
        years: usize,
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Internal: thin clients of the scheduling measurement.
    #[command(hide = true)]
    ThinClients {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        round: u32,
    },
    /// Internal: a worker process of the scaling measurement.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        slots: usize,
    },
    /// Internal: one batch over a data directory in a process of its own.
    #[command(hide = true)]
    GrowthDataCase { dir: PathBuf },
    /// Internal: one growth case in a process of its own.
    #[command(hide = true)]
    GrowthCase {
        #[arg(long)]
        symbols: usize,
        #[arg(long)]
        years: usize,
        #[arg(long)]
        grid: Option<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn peers(skip: bool) -> anyhow::Result<Option<Peers>> {
    if skip {
        return Ok(None);
    }
    Peers::setup()
        .map(Some)
        .context("setting up the peers (pass --no-peers to run without them)")
}

/// Prints the table as soon as it is measured (with the time it took on stderr) and keeps
/// it for the report.
fn keep(tables: &mut Vec<Table>, table: Table, since: &mut std::time::Instant) {
    print(&table);
    eprintln!("({:.0} s)", since.elapsed().as_secs_f64());
    *since = std::time::Instant::now();
    tables.push(table);
}

fn all(quick: bool, no_peers: bool, out: PathBuf) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut lap = started;
    let rt = runtime()?;
    let peers = peers(no_peers)?;
    let runs = if quick { 3 } else { 5 };
    let (mut tables, mut targets): (Vec<Table>, Vec<Target>) = (Vec::new(), Vec::new());

    let sample = if quick {
        versus::Sample::quick()
    } else {
        versus::Sample::full()
    };
    let (t, x) = versus::run(peers.as_ref(), 300, 10, sample)?;
    keep(&mut tables, t, &mut lap);
    targets.extend(x);

    let s = scaling::run(&rt, 300, 10, runs)?;
    keep(&mut tables, s.table, &mut lap);
    targets.push(s.target);

    keep(
        &mut tables,
        growth::run(100, if quick { 1 } else { 3 })?,
        &mut lap,
    );
    if !quick {
        keep(&mut tables, growth::data(3000, 20, 1)?, &mut lap);
    }

    keep(&mut tables, research::run(1000, 10, runs)?, &mut lap);
    keep(
        &mut tables,
        data::run(&rt, peers.as_ref(), 300, 10, runs)?,
        &mut lap,
    );

    // Its rounds are cheap (about a second each) and this machine's speed drifts: many of
    // them. Single rounds range from 0.7x to 1.5x here, and the median of 40 moved by 3 to 6
    // points between runs of the same code; its 95% interval narrows as 1/sqrt(rounds), to
    // about +-2 points at 120.
    let rounds = if quick { 20 } else { 120 };
    let (t, x) = cluster::overhead(&rt, 300, 10, "macd", None, rounds)?;
    keep(&mut tables, t, &mut lap);
    targets.push(x);
    let (mut t, x, per_cpu) = cluster::overheads(&rt, 20_000, runs)?;
    t.note(format!(
        "Near-empty jobs cost the coordinator {:.0} µs of CPU each: scheduling and transport alone, the floor under what a job with results costs it (the cluster overhead table's model).",
        1e6 / per_cpu,
    ));
    keep(&mut tables, t, &mut lap);
    targets.push(x);

    let (t, x) = rt.block_on(api::run(200, if quick { 3.0 } else { 5.0 }))?;
    keep(&mut tables, t, &mut lap);
    targets.extend(x);

    let mut report = String::from("# Benchmark results\n\n");
    report += &format!(
        "`cargo run --release -p bench -- all{}`, {} mode, {:.0} s. Medians of {runs} runs with the spread (min-max) in brackets, \
         unless a table says otherwise.\n\n",
        if quick { " --quick" } else { "" },
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    report += &machine::describe().join("\n");
    report += "\n";
    if let Some(p) = &peers {
        let v = &p.versions;
        report += &format!(
            "- Peers: backtrader {}, vectorbt {} (numba {}, numpy {}, pandas {}), Python {}\n",
            v["backtrader"], v["vectorbt"], v["numba"], v["numpy"], v["pandas"], v["python"]
        )
        .replace('"', "");
    } else {
        report += "- Peers: not run (--no-peers)\n";
    }
    report += "\n";
    report += "The largest gap, the cluster's overhead, is profiled in `bench/PROFILE.md`.\n\n";
    report += &targets_table(&targets).markdown();
    for t in &tables {
        report += &t.markdown();
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    print(&targets_table(&targets));
    eprintln!("Written to {}", out.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::All {
            quick,
            no_peers,
            out,
        } => all(quick, no_peers, out),
        Command::Engine {
            quick,
            symbols,
            years,
            no_peers,
        } => {
            let sample = if quick {
                versus::Sample::quick()
            } else {
                versus::Sample::full()
            };
            let (t, x) = versus::run(peers(no_peers)?.as_ref(), symbols, years, sample)?;
            print(&t);
            print(&targets_table(&x));
            Ok(())
        }
        Command::Scaling {
            symbols,
            years,
            runs,
        } => {
            print(&scaling::run(&runtime()?, symbols, years, runs)?.table);
            Ok(())
        }
        Command::Growth { symbols, runs } => {
            print(&growth::run(symbols, runs)?);
            Ok(())
        }
        Command::GrowthData {
            symbols,
            years,
            runs,
        } => {
            print(&growth::data(symbols, years, runs)?);
            Ok(())
        }
        Command::Data {
            symbols,
            years,
            runs,
            no_peers,
        } => {
            let peers = peers(no_peers)?;
            print(&data::run(
                &runtime()?,
                peers.as_ref(),
                symbols,
                years,
                runs,
            )?);
            Ok(())
        }
        Command::Research { sets, years, runs } => {
            print(&research::run(sets, years, runs)?);
            Ok(())
        }
        Command::Cluster {
            symbols,
            years,
            strategy,
            grid,
            empty_jobs,
            runs,
        } => {
            let rt = runtime()?;
            let (t, x) = cluster::overhead(&rt, symbols, years, &strategy, grid.as_deref(), runs)?;
            print(&t);
            let (t, y, _) = cluster::overheads(&rt, empty_jobs, runs)?;
            print(&t);
            print(&targets_table(&[x, y]));
            Ok(())
        }
        Command::Distributed {
            symbols,
            runs,
            slots,
        } => runtime()?.block_on(bench::distributed::run(symbols, runs, slots)),
        Command::Api { clients, seconds } => {
            let (t, x) = runtime()?.block_on(api::run(clients, seconds))?;
            print(&t);
            print(&targets_table(&x));
            Ok(())
        }
        Command::Path {
            path,
            symbols,
            years,
            runs,
        } => {
            let t = cluster::one_path(&runtime()?, &path, symbols, years, runs)?;
            println!(
                "{path}: {} per batch, {:.3} CPU seconds of this process",
                t.show(),
                t.cpu
            );
            Ok(())
        }
        Command::ThinClients {
            url,
            clients,
            round,
        } => runtime()?.block_on(cluster::thin_clients(url, clients, round)),
        Command::Worker { coordinator, slots } => {
            runtime()?.block_on(xt_worker::client::run_worker(
                xt_worker::client::WorkerConfig::new(
                    coordinator,
                    slots,
                    format!("bench-{}", std::process::id()),
                ),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            ))
        }
        Command::GrowthCase {
            symbols,
            years,
            grid,
        } => growth::case(symbols, years, grid.as_deref()),
        Command::GrowthDataCase { dir } => growth::data_case(&dir),
    }
}
