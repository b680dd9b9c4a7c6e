//! Growth: time and peak memory as the work grows 10x and 100x along each axis (symbols,
//! years, grid size). Each case runs in a process of its own (this binary's `growth-case`
//! command), so its peak resident memory is its own.

use serde_json::{Value, json};

use crate::cluster::{batch_spec, in_process};
use crate::report::{Table, Timing, count};

/// One case in this process: prints `{"seconds": s, "peak_mb": m}` (peak resident memory).
pub fn case(symbols: usize, years: usize, grid: Option<&str>) -> anyhow::Result<()> {
    let spec = batch_spec(symbols, years, "sma_cross", grid)?;
    let timing = in_process(&spec, crate::machine::cores(), 1, false)?;
    let peak = crate::report::status_kb("VmHWM:") as f64 / 1024.0;
    println!("{}", json!({"seconds": timing.median, "peak_mb": peak}));
    Ok(())
}

fn child(symbols: usize, years: usize, grid: Option<&str>) -> anyhow::Result<(f64, f64)> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["growth-case", "--symbols"])
        .arg(symbols.to_string())
        .arg("--years")
        .arg(years.to_string());
    if let Some(g) = grid {
        cmd.args(["--grid", g]);
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "growth-case failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["seconds"].as_f64().unwrap_or(f64::NAN),
        v["peak_mb"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Grids of 1, 10 and 100 sma_cross combinations.
fn grid(combos: usize) -> Option<String> {
    match combos {
        1 => None,
        10 => Some(r#"{"fast":[2,4,6,8,10,12,14,16,18,20],"slow":[30]}"#.into()),
        _ => Some(
            r#"{"fast":[2,4,6,8,10,12,14,16,18,20],"slow":[25,30,35,40,45,50,55,60,65,70]}"#.into(),
        ),
    }
}

pub fn run(base_symbols: usize, runs: usize) -> anyhow::Result<Table> {
    let mut table = Table::new(
        format!(
            "Growth: sma_cross from {base_symbols} symbols x 1 year x 1 combination, each axis grown 10x and 100x (all cores, metrics and portfolio kept)"
        ),
        &[
            "axis",
            "size",
            "bar evaluations",
            "seconds (median, spread)",
            "time per bar evaluation vs 1x",
            "peak memory",
        ],
    );
    for axis in ["symbols", "years", "grid"] {
        let mut base_cost = None;
        for factor in [1usize, 10, 100] {
            let (symbols, years, combos) = match axis {
                "symbols" => (base_symbols * factor, 1, 1),
                "years" => (base_symbols, factor, 1),
                _ => (base_symbols, 1, factor),
            };
            let g = grid(combos);
            let mut seconds = Vec::new();
            let mut peak: f64 = 0.0;
            for _ in 0..runs {
                let (s, m) = child(symbols, years, g.as_deref())?;
                seconds.push(s);
                peak = peak.max(m);
            }
            let t = Timing::from_seconds(seconds, 0.0);
            let evaluations =
                (symbols * years * combos * xt_shared::synthetic::DAYS_PER_YEAR) as f64;
            let cost = t.median / evaluations;
            let base = *base_cost.get_or_insert(cost);
            table.row(vec![
                axis.into(),
                format!("{factor}x: {symbols} symbols x {years} y x {combos}"),
                count(evaluations),
                t.show(),
                format!("{:.2}", cost / base),
                format!("{peak:.0} MB"),
            ]);
        }
    }
    table.note(format!(
        "Cost per bar evaluation should stay flat as work grows; below 1 means fixed costs (pool start, planning) are being amortised. \
         Memory holds what is kept (one metrics row per symbol and combination, the portfolio curve per combination over the dates) and \
         each job's bars while it runs, never the whole market: the 100x years case computes {} bars in one job each.",
        count((base_symbols * 100 * xt_shared::synthetic::DAYS_PER_YEAR) as f64)
    ));
    Ok(table)
}

/// One batch over the files in `dir` in this process, `xt local`'s path (the coordinator
/// and a worker on loopback, all cores), the bar cache cold: prints `{"seconds": s,
/// "peak_mb": m}`.
pub fn data_case(dir: &std::path::Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let spec = crate::data::spec(dir, "sma_cross");
    let seconds = rt.block_on(async {
        let state = crate::cluster::state_dir("growth-data");
        let cores = crate::machine::cores();
        let cluster =
            xt_api::cluster::LocalCluster::start(state.clone(), 1, cores, Default::default())
                .await?;
        let mut client =
            xt_wire::batches_client::BatchesClient::connect(cluster.url.clone()).await?;
        let started = std::time::Instant::now();
        let batch = crate::cluster::submit(&mut client, &spec).await?;
        crate::cluster::wait_finished(&mut client, batch).await?;
        let seconds = started.elapsed().as_secs_f64();
        cluster.stop().await?;
        let _ = std::fs::remove_dir_all(&state);
        anyhow::Ok(seconds)
    })?;
    let peak = crate::report::status_kb("VmHWM:") as f64 / 1024.0;
    println!("{}", json!({"seconds": seconds, "peak_mb": peak}));
    Ok(())
}

/// The data-size axis: `symbols` x `years` read from each layout, each batch in a process
/// of its own (so cold, and its peak memory its own).
pub fn data(symbols: usize, years: usize, runs: usize) -> anyhow::Result<Table> {
    let (root, dirs) = crate::data::write_market("growth-files", symbols, years)?;
    let bars = (symbols * years * xt_shared::synthetic::DAYS_PER_YEAR) as f64;
    let mut table = Table::new(
        format!(
            "Growth in data: one sma_cross batch over {symbols} symbols x {years} years ({} bars) read from each layout, cold, in a process of its own (all cores)",
            count(bars)
        ),
        &[
            "layout",
            "on disk",
            "seconds (median, spread)",
            "bars/s",
            "peak memory",
        ],
    );
    for ((layout, _), dir) in crate::data::LAYOUTS.iter().zip(&dirs) {
        let mut seconds = Vec::new();
        let mut peak: f64 = 0.0;
        for _ in 0..runs {
            let out = std::process::Command::new(std::env::current_exe()?)
                .arg("growth-data-case")
                .arg(dir)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "growth-data-case failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout)?;
            seconds.push(v["seconds"].as_f64().unwrap_or(f64::NAN));
            peak = peak.max(v["peak_mb"].as_f64().unwrap_or(f64::NAN));
        }
        let t = Timing::from_seconds(seconds, 0.0);
        let disk: u64 = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        table.row(vec![
            (*layout).into(),
            format!("{:.0} MB", disk as f64 / 1e6),
            t.show(),
            count(bars / t.median),
            format!("{peak:.0} MB"),
        ]);
    }
    table.note(format!(
        "Peak memory is the whole process (coordinator, worker, bar cache). Planning reads every symbol into the bar cache (bounded at {:.1} GB by default, 1/8 of this machine's memory): the market's {:.0} MB of decoded bars fit, so they are held once, and jobs read them from there.",
        xt_shared::cache::default_capacity() as f64 / 1e9,
        bars * 44.0 / 1e6
    ));
    let _ = std::fs::remove_dir_all(&root);
    Ok(table)
}
