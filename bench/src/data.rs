//! Reading data, cold and warm: one batch over files in each layout, through the coordinator and a worker
//! on loopback (`xt local`'s path), first with the bar cache empty (every file read and
//! decoded; the files themselves are in the OS page cache, as on a machine that just wrote
//! or read them), then again over the same files (the cache serves every symbol).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use xt_shared::cache::BarCache;
use xt_shared::{BarSource, BatchSpec, SyntheticMarket};
use xt_wire::batches_client::BatchesClient;

use crate::cluster::{state_dir, submit, wait_finished};
use crate::peers::Peers;
use crate::report::Table;

/// The layouts the bench reads, by name and directory under the bench's state.
pub(crate) const LAYOUTS: [(&str, &str); 5] = [
    ("CSV, a file per symbol", "csv"),
    ("Parquet, a file per symbol", "parquet"),
    ("Arrow IPC, a file per symbol", "arrow"),
    ("Parquet, one long file", "long"),
    ("Arrow IPC, one long file", "long-arrow"),
];

/// Writes the synthetic market in every layout of [`LAYOUTS`] (long Parquet in row groups
/// of 10,000 rows, long Arrow a record batch per symbol), last modified a minute ago (older
/// than the cache's racy window). Returns the root and the layouts' directories.
pub fn write_market(
    name: &str,
    symbols: usize,
    years: usize,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let root = state_dir(name);
    let dirs: Vec<PathBuf> = LAYOUTS.iter().map(|(_, d)| root.join(d)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    let market = SyntheticMarket::new(symbols, years, 42);
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    let old = |path: &Path| -> std::io::Result<()> {
        std::fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(past)
    };
    let mut all = Vec::new();
    for s in market.symbols()? {
        let bars = market.load(&s)?;
        let files = [
            dirs[0].join(format!("{s}.csv")),
            dirs[1].join(format!("{s}.parquet")),
            dirs[2].join(format!("{s}.arrow")),
        ];
        xt_shared::source::write_csv(&bars, std::fs::File::create(&files[0])?)?;
        xt_shared::source::write_parquet(&bars, std::fs::File::create(&files[1])?)?;
        xt_shared::source::write_ipc(&bars, std::fs::File::create(&files[2])?)?;
        for f in &files {
            old(f)?;
        }
        all.push(bars);
    }
    let long = dirs[3].join("bars.parquet");
    xt_shared::dataset::write_long(&all, &long, 10_000)?;
    let long_arrow = dirs[4].join("bars.arrow");
    xt_shared::dataset::write_long_ipc(&all, &long_arrow)?;
    old(&long)?;
    old(&long_arrow)?;
    Ok((root, dirs))
}

pub fn spec(dir: &Path, strategy: &str) -> BatchSpec {
    let mut spec = BatchSpec::new(format!("file://{}", dir.display()), strategy);
    spec.market = xt_shared::Market::Us;
    spec.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Portfolio,
    ]);
    spec
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Cold and warm medians of `runs` batches of `spec` through `client`.
async fn cold_warm(
    client: &mut BatchesClient<tonic::transport::Channel>,
    spec: &BatchSpec,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let cache = BarCache::global();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (times, clear) in [(&mut cold, true), (&mut warm, false)] {
            if clear {
                cache.clear();
            }
            let started = Instant::now();
            let batch = submit(client, spec).await?;
            wait_finished(client, batch).await?;
            times.push(started.elapsed().as_secs_f64());
        }
    }
    Ok((median(cold), median(warm)))
}

/// vectorbt's seconds for one run of `strategy` over `symbols` of `dir` in `format`
/// (reading included), median of `runs`.
fn vectorbt(
    peers: &Peers,
    dir: &Path,
    format: &str,
    symbols: &[String],
    strategy: &str,
    runs: usize,
) -> anyhow::Result<f64> {
    let combo = match strategy {
        "sma_cross" => json!({"fast": 10, "slow": 30}),
        _ => json!({"fast": 12, "slow": 26, "signal": 9}),
    };
    let request = json!({
        "engine": "vectorbt", "dir": dir, "format": format, "symbols": symbols,
        "strategy": strategy, "combos": [combo], "capital": 1e6,
        "commission_rate": 0.001, "fills_of_first_combo": false,
    });
    let mut seconds = Vec::new();
    for _ in 0..runs {
        let answer = peers.run(&request)?;
        seconds.push(answer["seconds"].as_f64().context("seconds")?);
    }
    Ok(median(seconds))
}

/// Cold and warm batches over `symbols` x `years` of files in every layout, `runs` of each,
/// on one worker thread and on all cores; vectorbt over the same CSV and Parquet files.
pub fn run(
    rt: &tokio::runtime::Runtime,
    peers: Option<&Peers>,
    symbols: usize,
    years: usize,
    runs: usize,
) -> anyhow::Result<Table> {
    let (root, dirs) = write_market("data-files", symbols, years)?;
    let bars = (symbols * years * 252) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = Table::new(
        format!(
            "Reading data: one single-parameter batch over {symbols} symbols x {years} years of files, submission to tables written, cold (bar cache empty) and warm (the same files again), on one worker thread and on {cores}; vectorbt reading the same files and computing the same strategy on one core; median of {runs}, seconds"
        ),
        &[
            "layout",
            "strategy",
            "worker threads",
            "cold",
            "warm",
            "warm bars/s per thread",
            "vectorbt",
            "cold vs vectorbt",
            "warm vs vectorbt",
        ],
    );
    let names = SyntheticMarket::new(symbols, years, 42).symbols()?;
    let mut peer_seconds = std::collections::HashMap::new();
    if let Some(peers) = peers {
        for (format, dir) in [("csv", &dirs[0]), ("parquet", &dirs[1])] {
            for strategy in ["sma_cross", "macd"] {
                let s = vectorbt(peers, dir, format, &names, strategy, runs)?;
                peer_seconds.insert((format, strategy), s);
            }
        }
    }
    rt.block_on(async {
        for threads in [1, cores] {
            let state = state_dir("data-cluster");
            let cluster =
                xt_api::cluster::LocalCluster::start(state.clone(), 1, threads, Default::default())
                    .await?;
            let mut client = BatchesClient::connect(cluster.url.clone()).await?;
            for ((layout, _), dir) in LAYOUTS.iter().zip(&dirs) {
                for strategy in ["sma_cross", "macd"] {
                    let (c, w) = cold_warm(&mut client, &spec(dir, strategy), runs).await?;
                    let format = match *layout {
                        l if l.starts_with("CSV") => Some("csv"),
                        "Parquet, a file per symbol" => Some("parquet"),
                        _ => None,
                    };
                    let peer = format
                        .and_then(|f| peer_seconds.get(&(f, strategy)))
                        .filter(|_| threads == 1);
                    let (v, vc, vw) = match peer {
                        Some(p) => (
                            format!("{p:.3}"),
                            format!("{:.1}x faster", p / c),
                            format!("{:.1}x faster", p / w),
                        ),
                        None => Default::default(),
                    };
                    table.row(vec![
                        (*layout).into(),
                        strategy.into(),
                        threads.to_string(),
                        format!("{c:.3}"),
                        format!("{w:.3}"),
                        format!("{:.1}M", bars / w / threads as f64 / 1e6),
                        v,
                        vc,
                        vw,
                    ]);
                }
            }
            cluster.stop().await?;
            let _ = std::fs::remove_dir_all(&state);
        }
        anyhow::Ok(())
    })?;
    // Where a warm batch's time goes: the same batch in process on one thread, its bars
    // already decoded in the cache, no coordinator, no transport, no files written.
    let source: std::sync::Arc<dyn xt_shared::BarSource> =
        std::sync::Arc::new(xt_shared::cache::Cached::new(
            xt_shared::open::open_source(&xt_shared::spec::DataSpec::Dir(dirs[1].clone()))?,
            BarCache::global(),
        ));
    let universe = xt_shared::Universe::from_symbols(&names)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut compute = Vec::new();
    for strategy in ["sma_cross", "macd"] {
        let spec = spec(&dirs[1], strategy);
        let mut times = Vec::new();
        for _ in 0..runs.max(3) {
            let started = Instant::now();
            pool.install(|| xt_worker::runner::run_batch(&spec, source.as_ref(), &universe))?;
            times.push(started.elapsed().as_secs_f64());
        }
        compute.push(format!("{strategy} {:.3} s", median(times)));
    }
    table.note(format!(
        "The same batches in process on one thread, bars already decoded in the cache (no coordinator, no transport, no files written): {}. The rest of a warm row's time is the cluster's path (planning, leasing, results over Flight, tables written).",
        compute.join(", ")
    ));
    let s = BarCache::global().stats();
    table.note(format!(
        "Bar cache over the run: {} hits, {} misses, {} evictions, {:.0} MB held at the end. Cold includes planning, which reads each file whole into the cache (the worker then reads nothing); warm reads nothing at all. \
         On one worker thread the coordinator's planning still runs beside it. vectorbt reads with pandas (`read_csv`, `read_parquet` through pyarrow) and computes the same single parameter set; its numba kernels are compiled before the timing, and it has no cache: each of its runs reads the files again.",
        s.hits,
        s.misses,
        s.evictions,
        s.bytes as f64 / 1e6
    ));
    let _ = std::fs::remove_dir_all(&root);
    Ok(table)
}
