//! Cluster overhead: the same batch through the in-process rayon runner and through the
//! coordinator and worker services on loopback (`xt local`'s path) with 1, 2 and 4
//! workers, and the scheduling throughput of the coordinator for near-empty jobs.
//! Prints a markdown table. Run it in release:
//!
//! `cargo run --release -p bench --bin cluster -- [--symbols 300] [--years 10]`

use std::time::{Duration, Instant};

use clap::Parser;
use xt_coordinator::scheduler::Scheduler;
use xt_shared::wire::jobs_client::JobsClient;
use xt_shared::wire::{StatusRequest, SubmitRequest};
use xt_shared::{BatchSpec, SyntheticMarket};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 300)]
    symbols: usize,
    #[arg(long, default_value_t = 10)]
    years: usize,
    #[arg(long, default_value = "macd")]
    strategy: String,
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[t.len() / 2]
}

async fn through_cluster(spec: &BatchSpec, workers: usize) -> anyhow::Result<Duration> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = std::env::temp_dir().join(format!("xt-bench-{}-{workers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let cluster = xt_coordinator::local::LocalCluster::start(
        state.clone(),
        workers,
        (cores / workers).max(1),
    )
    .await?;
    let mut client = JobsClient::connect(cluster.url.clone()).await?;
    let started = Instant::now();
    let batch = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec)?,
        })
        .await?
        .into_inner()
        .batch;
    while !client
        .status(StatusRequest { batch })
        .await?
        .into_inner()
        .finished
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(elapsed)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = format!(
        "synthetic://?symbols={}&years={}&seed=42",
        args.symbols, args.years
    );
    let mut spec = BatchSpec::new(data, &args.strategy);
    spec.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Portfolio,
    ]);
    let synth = SyntheticMarket {
        symbols: args.symbols,
        years: args.years,
        seed: 42,
    };
    let universe = synth.universe();
    let local = median(3, || {
        let t = Instant::now();
        let r = xt_worker::runner::run_batch(&spec, &synth, &universe);
        assert!(r.is_ok());
        t.elapsed()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "| {} symbols x {} years, {} | seconds | overhead |",
        args.symbols, args.years, args.strategy
    );
    println!("|---|---|---|");
    println!(
        "| in-process rayon runner | {:.3} | 1.00x |",
        local.as_secs_f64()
    );
    for workers in [1, 2, 4] {
        let t = median(3, || {
            runtime
                .block_on(through_cluster(&spec, workers))
                .unwrap_or(Duration::MAX)
        });
        println!(
            "| cluster on loopback, {workers} worker(s) | {:.3} | {:.2}x |",
            t.as_secs_f64(),
            t.as_secs_f64() / local.as_secs_f64()
        );
    }
    // Scheduling alone: lease and complete near-empty jobs as fast as the core allows.
    let jobs = 200_000u32;
    let mut s = Scheduler::new(Duration::from_secs(30), 3);
    s.submit(1, jobs)?;
    let now = Instant::now();
    let w = s.register(now);
    let t = Instant::now();
    loop {
        let leases = s.lease(w, 64, now)?;
        if leases.is_empty() {
            break;
        }
        for l in leases {
            s.complete(l.key, l.attempt, w);
        }
    }
    let rate = jobs as f64 / t.elapsed().as_secs_f64();
    println!("| scheduler core: lease + complete | {rate:.0} jobs/s | |");
    Ok(())
}
