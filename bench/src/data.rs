//! Reading data, cold and warm: one batch over files, through the coordinator and a worker
//! on loopback (`xt local`'s path), first with the bar cache empty (every file read and
//! decoded; the files themselves are in the OS page cache, as on a machine that just wrote
//! or read them), then again over the same files (the cache serves every symbol).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xt_shared::cache::BarCache;
use xt_shared::{BarSource, BatchSpec, SyntheticMarket};
use xt_wire::batches_client::BatchesClient;

use crate::cluster::{state_dir, submit, wait_finished};
use crate::report::Table;

/// Writes the synthetic market as one CSV and one Parquet file per symbol, and as one long
/// Parquet file (row groups of 10,000 rows), last modified a minute ago (older than the
/// cache's racy window).
fn write_market(symbols: usize, years: usize) -> anyhow::Result<[PathBuf; 3]> {
    let root = state_dir("data-files");
    let (csv, parquet, long) = (root.join("csv"), root.join("parquet"), root.join("long"));
    for d in [&csv, &parquet, &long] {
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
        let (c, p) = (
            csv.join(format!("{s}.csv")),
            parquet.join(format!("{s}.parquet")),
        );
        xt_shared::source::write_csv(&bars, std::fs::File::create(&c)?)?;
        xt_shared::source::write_parquet(&bars, std::fs::File::create(&p)?)?;
        old(&c)?;
        old(&p)?;
        all.push(bars);
    }
    let file = long.join("bars.parquet");
    xt_shared::dataset::write_long(&all, &file, 10_000)?;
    old(&file)?;
    Ok([csv, parquet, long])
}

fn spec(dir: &Path, strategy: &str) -> BatchSpec {
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

/// Cold and warm batches over `symbols` x `years` of files, `runs` of each.
pub fn run(
    rt: &tokio::runtime::Runtime,
    symbols: usize,
    years: usize,
    runs: usize,
) -> anyhow::Result<Table> {
    let [csv, parquet, long] = write_market(symbols, years)?;
    let bars = (symbols * years * 252) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = Table::new(
        format!(
            "Reading data: one batch over {symbols} symbols x {years} years of files, submission to tables written, cold (bar cache empty) and warm (the same files again); median of {runs}, seconds"
        ),
        &[
            "layout",
            "strategy",
            "cold",
            "warm",
            "cold / warm",
            "warm bars/s per core",
        ],
    );
    rt.block_on(async {
        let state = state_dir("data-cluster");
        let cluster =
            xt_api::cluster::LocalCluster::start(state.clone(), 1, cores, Default::default())
                .await?;
        let mut client = BatchesClient::connect(cluster.url.clone()).await?;
        let cache = BarCache::global();
        let layouts = [
            ("CSV, a file per symbol", &csv),
            ("Parquet, a file per symbol", &parquet),
            ("Parquet, one long file", &long),
        ];
        for (layout, dir) in layouts {
            for strategy in ["sma_cross", "macd"] {
                let spec = spec(dir, strategy);
                let (mut cold, mut warm) = (Vec::new(), Vec::new());
                for _ in 0..runs {
                    for (times, clear) in [(&mut cold, true), (&mut warm, false)] {
                        if clear {
                            cache.clear();
                        }
                        let started = Instant::now();
                        let batch = submit(&mut client, &spec).await?;
                        wait_finished(&mut client, batch).await?;
                        times.push(started.elapsed().as_secs_f64());
                    }
                }
                let (c, w) = (median(cold), median(warm));
                table.row(vec![
                    layout.into(),
                    strategy.into(),
                    format!("{c:.3}"),
                    format!("{w:.3}"),
                    format!("{:.1}x", c / w),
                    format!("{:.1}M", bars / w / cores as f64 / 1e6),
                ]);
            }
        }
        cluster.stop().await?;
        let _ = std::fs::remove_dir_all(&state);
        anyhow::Ok(())
    })?;
    let s = BarCache::global().stats();
    table.note(format!(
        "Bar cache over the run: {} hits, {} misses, {} evictions, {:.0} MB held at the end. Cold includes planning, which reads each file whole into the cache (the worker then reads nothing); warm reads nothing at all.",
        s.hits,
        s.misses,
        s.evictions,
        s.bytes as f64 / 1e6
    ));
    let _ = std::fs::remove_dir_all(csv.parent().unwrap_or(&csv));
    Ok(table)
}
