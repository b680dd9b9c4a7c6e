//! Cluster overheads: the same batch through the in-process rayon runner and through the
//! coordinator and worker services on loopback (`xt local`'s path) with 1, 2 and 4 workers,
//! and with 1, 2 and 4 worker processes. The coordinator's own throughput is `load.rs`.

pub use crate::load::{overheads, thin_clients};

use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use tonic::transport::Channel;
use xt_shared::{BatchSpec, SyntheticMarket};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatsRequest, StatusRequest, SubmitRequest};

use crate::report::{Table, Target, Timing, count, cpu_seconds, process_cpu_seconds, timed};

pub(crate) fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) async fn submit(
    client: &mut BatchesClient<Channel>,
    spec: &BatchSpec,
) -> anyhow::Result<u64> {
    Ok(client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec)?,
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch)
}

pub(crate) async fn wait_finished(
    client: &mut BatchesClient<Channel>,
    batch: u64,
) -> anyhow::Result<()> {
    // Each call answers as soon as the batch has finished (or after a second).
    while !client
        .status(StatusRequest {
            batch,
            wait_ms: 1_000,
        })
        .await?
        .into_inner()
        .finished
    {}
    Ok(())
}

/// Submission to finished (tables written), through `workers` workers on loopback.
async fn through_cluster(spec: &BatchSpec, workers: usize) -> anyhow::Result<Duration> {
    Ok(through_cluster_cpu(spec, workers).await?.0)
}

/// [`through_cluster`], with the CPU seconds this process spent from the submission to the
/// batch finished (the cluster's start and stop are outside both).
async fn through_cluster_cpu(spec: &BatchSpec, workers: usize) -> anyhow::Result<(Duration, f64)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = state_dir(&format!("cluster-{workers}"));
    let cluster = xt_api::cluster::LocalCluster::start(
        state.clone(),
        workers,
        (cores / workers).max(1),
        Default::default(),
    )
    .await?;
    let mut client = BatchesClient::connect(cluster.url.clone()).await?;
    let cpu = cpu_seconds();
    let started = Instant::now();
    let batch = submit(&mut client, spec).await?;
    wait_finished(&mut client, batch).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((elapsed, cpu))
}

/// Submission to finished through `processes` worker processes (this binary's `worker`
/// command) of `slots` slots each, registered before the batch goes in.
pub async fn through_processes(
    spec: &BatchSpec,
    processes: usize,
    slots: usize,
) -> anyhow::Result<Duration> {
    Ok(through_processes_cpu(spec, processes, slots).await?.0)
}

/// [`through_processes`], with the CPU seconds this process (the coordinator) and the
/// worker processes spent from the submission to the batch finished.
pub async fn through_processes_cpu(
    spec: &BatchSpec,
    processes: usize,
    slots: usize,
) -> anyhow::Result<(Duration, f64, f64)> {
    let state = state_dir(&format!("processes-{processes}"));
    let cluster =
        xt_api::cluster::LocalCluster::start(state.clone(), 0, 1, Default::default()).await?;
    let mut children = Vec::new();
    for _ in 0..processes {
        children.push(
            tokio::process::Command::new(std::env::current_exe()?)
                .args(["worker", "--coordinator", &cluster.url, "--slots"])
                .arg(slots.to_string())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let mut client = BatchesClient::connect(cluster.url.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.stats(StatsRequest {}).await?.into_inner().workers < processes as u32 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker processes did not register"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pids: Vec<String> = children
        .iter()
        .filter_map(|c| c.id())
        .map(|p| p.to_string())
        .collect();
    let workers_cpu = || -> f64 { pids.iter().map(|p| process_cpu_seconds(p)).sum() };
    let (own, workers) = (cpu_seconds(), workers_cpu());
    let started = Instant::now();
    let batch = submit(&mut client, spec).await?;
    wait_finished(&mut client, batch).await?;
    let elapsed = started.elapsed();
    let (own, workers) = (cpu_seconds() - own, workers_cpu() - workers);
    for mut c in children {
        c.kill().await?;
    }
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((elapsed, own, workers))
}

/// The batch of the overhead and scaling measurements.
pub fn batch_spec(
    symbols: usize,
    years: usize,
    strategy: &str,
    grid: Option<&str>,
) -> anyhow::Result<BatchSpec> {
    let data = format!("synthetic://?symbols={symbols}&years={years}&seed=42");
    let mut spec = BatchSpec::new(data, strategy);
    if let Some(grid) = grid {
        spec.grid = Some(serde_json::from_str(grid).context("--grid")?);
    }
    spec.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Portfolio,
    ]);
    Ok(spec)
}

/// The synthetic market a bench batch runs on.
fn synthetic_market(spec: &BatchSpec) -> anyhow::Result<SyntheticMarket> {
    match xt_shared::spec::DataSpec::parse(&spec.data)? {
        xt_shared::spec::DataSpec::Synthetic {
            symbols,
            years,
            seed,
        } => Ok(SyntheticMarket::new(symbols, years, seed)),
        other => anyhow::bail!("a synthetic batch, not {other:?}"),
    }
}

/// One batch through the in-process runner on `pool`, its tables written to `dir` by the
/// coordinator's own writer (the tables the spec keeps, Parquet, the same settings) and a
/// summary of its portfolio metrics: like for like with the cluster paths, whose time ends
/// with those files.
fn in_process_written(
    pool: &rayon::ThreadPool,
    spec: &BatchSpec,
    synth: &SyntheticMarket,
    universe: &xt_shared::Universe,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let r = pool.install(|| xt_worker::runner::run_batch(spec, synth, universe))?;
    std::fs::create_dir_all(dir)?;
    let mut tables: Vec<(&str, &[RecordBatch])> =
        vec![("metrics", std::slice::from_ref(&r.metrics))];
    tables.extend(
        r.trades
            .as_ref()
            .map(|t| ("trades", std::slice::from_ref(t))),
    );
    tables.extend(
        r.equity
            .as_ref()
            .map(|t| ("equity", std::slice::from_ref(t))),
    );
    // As batch 1 of an embedded store in `dir`.
    let store = xt_coordinator::store::EmbeddedStore::open(dir)?;
    xt_coordinator::service::write_tables(&store, 1, spec, &tables, &r.outcome.portfolio)?;
    let dir = &xt_coordinator::store::batch_dir(dir, 1);
    let portfolio = xt_coordinator::service::portfolio_summary(&r.outcome.portfolio_metrics);
    let summary = serde_json::json!({ "jobs": r.outcome.jobs, "portfolio": portfolio });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(())
}

/// The in-process runner's time for `spec` on a rayon pool of `threads`: with `written`,
/// its tables written as the cluster paths' are (see [`in_process_written`]); without, the
/// engine alone.
pub fn in_process(
    spec: &BatchSpec,
    threads: usize,
    runs: usize,
    written: bool,
) -> anyhow::Result<Timing> {
    let synth = synthetic_market(spec)?;
    let universe = synth.universe();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let out = state_dir("in-process");
    let timing = timed(runs, 1, || {
        let t = Instant::now();
        if written {
            in_process_written(&pool, spec, &synth, &universe, &out)?;
        } else {
            pool.install(|| xt_worker::runner::run_batch(spec, &synth, &universe))?;
        }
        Ok(t.elapsed())
    });
    let _ = std::fs::remove_dir_all(&out);
    timing
}

/// The same batch in process and through the cluster on loopback: in-process workers
/// (`xt local`) and worker processes.
pub fn overhead(
    runtime: &tokio::runtime::Runtime,
    symbols: usize,
    years: usize,
    strategy: &str,
    grid: Option<&str>,
    runs: usize,
) -> anyhow::Result<(Table, Target)> {
    let spec = batch_spec(symbols, years, strategy, grid)?;
    let cores = crate::machine::cores();
    let mut table = Table::new(
        format!(
            "Cluster overhead: {symbols} symbols x {years} years, {strategy}{} ({} bar evaluations), submission to tables written",
            grid.map(|g| format!(" grid {g}")).unwrap_or_default(),
            count(spec_evaluations(&spec, symbols, years)?),
        ),
        &[
            "path",
            "seconds (median, spread)",
            "CPU seconds",
            "time vs in-process (median of rounds)",
            "CPU vs in-process",
        ],
    );
    // The paths take turns, one batch each a round (the first round a warm-up, each round
    // starting at the next path), and each is compared with the in-process run of its own
    // round: on a machine whose speed drifts over minutes, measuring one path's runs after
    // another's would compare the drift.
    let synth = synthetic_market(&spec)?;
    let universe = synth.universe();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    // `xt local`'s runtime, not this bench's.
    let local_runtime = xt_api::cluster::runtime()?;
    let out = state_dir("in-process");
    const PATHS: usize = 5;
    // Per path and round: seconds, this process's CPU seconds, the worker process's.
    let mut runs_of: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); PATHS];
    for round in 0..=runs.max(1) {
        let mut this_round = [(0.0, 0.0, 0.0); PATHS];
        for k in 0..PATHS {
            let path = (round + k) % PATHS;
            // Each path's CPU is counted over its timed window alone: a cluster's start and
            // stop are outside it.
            let (t, cpu, worker_cpu) = match path {
                0 => {
                    let (t, cpu) = (Instant::now(), cpu_seconds());
                    in_process_written(&pool, &spec, &synth, &universe, &out)?;
                    (t.elapsed(), cpu_seconds() - cpu, 0.0)
                }
                1..=3 => {
                    let workers = [1, 2, 4][path - 1];
                    let (t, cpu) = local_runtime.block_on(through_cluster_cpu(&spec, workers))?;
                    (t, cpu, 0.0)
                }
                _ => runtime.block_on(through_processes_cpu(&spec, 1, cores))?,
            };
            this_round[path] = (t.as_secs_f64(), cpu, worker_cpu);
        }
        if round > 0 {
            for (path, r) in this_round.into_iter().enumerate() {
                runs_of[path].push(r);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let mean = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len() as f64
    };
    let timing = |path: usize| {
        Timing::from_seconds(
            runs_of[path].iter().map(|r| r.0).collect(),
            mean(&runs_of[path], |r| r.1),
        )
    };
    // Per round, a path's time and CPU (the coordinator's and every worker's, wherever
    // they ran) over the in-process runner's.
    let per_round = |path: usize, of: fn(&(f64, f64, f64)) -> f64| -> Vec<f64> {
        runs_of[path]
            .iter()
            .zip(&runs_of[0])
            .map(|(r, base)| of(r) / of(base).max(1e-9))
            .collect()
    };
    let time_of: fn(&(f64, f64, f64)) -> f64 = |r| r.0;
    let cpu_of: fn(&(f64, f64, f64)) -> f64 = |r| r.1 + r.2;
    let local = timing(0);
    let names = [
        format!("in-process rayon runner, {cores} threads, the same tables written"),
        "xt local: coordinator + 1 in-process worker(s) on loopback gRPC/Flight".to_string(),
        "xt local: coordinator + 2 in-process worker(s) on loopback gRPC/Flight".to_string(),
        "xt local: coordinator + 4 in-process worker(s) on loopback gRPC/Flight".to_string(),
        format!("coordinator + 1 worker process of {cores} slots"),
    ];
    for (path, name) in names.into_iter().enumerate() {
        let t = timing(path);
        let cpu = mean(&runs_of[path], cpu_of);
        if path == 0 {
            table.row(vec![
                name,
                t.show(),
                format!("{cpu:.3}"),
                "1.00x".to_string(),
                "1.00x".to_string(),
            ]);
            continue;
        }
        let ratios = per_round(path, time_of);
        let interval = Timing::median_interval(&ratios);
        let r = Timing::from_seconds(ratios, 0.0);
        table.row(vec![
            name,
            t.show(),
            format!("{cpu:.3}"),
            format!(
                "{:.3}x (95% CI {:.3}-{:.3}; rounds {:.2}-{:.2})",
                r.median, interval.0, interval.1, r.min, r.max
            ),
            format!(
                "{:.3}x",
                Timing::from_seconds(per_round(path, cpu_of), 0.0).median
            ),
        ]);
    }
    let coordinator_cpu = mean(&runs_of[PATHS - 1], |r| r.1);
    // The worker process's CPU comes in ticks of 10 ms: its mean over the rounds.
    let worker_cpu = mean(&runs_of[PATHS - 1], |r| r.2);
    table.note(format!(
        "The paths took turns, one batch each a round ({} rounds after a warm-up, each round starting at the next path); each ratio is to the in-process run of the same round: the median over the rounds, its 95% confidence interval (distribution-free, from the rounds' order statistics) and the rounds' spread. The target is judged on `xt local` with its default one worker, and counts as met only when that path's whole interval is under 1.10.",
        runs.max(1)
    ));
    table.note(
        "CPU seconds: the mean per batch from the submission to the tables written (a cluster's start and stop are outside it), the coordinator's and every worker's, in this process or the worker process; CPU vs in-process is the median over the rounds of that CPU over the in-process runner's.",
    );
    table.note(format!(
        "The worker process spent {worker_cpu:.3} CPU seconds on the batch against the in-process runner's {:.3}: {:+.0}%. Here the coordinator and the workers share {cores} cores, so every cycle of transport on either side is wall time; on a cluster whose coordinator has cores of its own, the batch's time is the workers' CPU over their cores, and the overhead is that {:+.0}%.",
        local.cpu,
        (worker_cpu / local.cpu - 1.0) * 100.0,
        (worker_cpu / local.cpu - 1.0) * 100.0,
    ));
    let jobs = symbols as f64;
    table.note(format!(
        "Model beyond this machine: on these jobs the coordinator process spent {:.0} µs of CPU per job ({coordinator_cpu:.3} s a batch, this bench's status call waiting for the end included), spread over receiving, decoding, storing and summing its results (`bench/PROFILE.md` has the breakdown), against {:.0} µs of the worker's: one coordinator core keeps about {:.1} worker cores busy on jobs of this size ({:.2} ms of engine work each in process). The results a job sends grow with its curves and bars, and so does the engine's work on it (`bench cluster --grid ...` measures a grid).",
        coordinator_cpu / jobs * 1e6,
        worker_cpu / jobs * 1e6,
        worker_cpu / coordinator_cpu.max(1e-9),
        local.cpu / jobs * 1e3,
    ));
    // The target is judged on `xt local` as a user runs it (one worker, the default), named
    // before the rounds: the least of four noisy medians would be biased low.
    let ratios = per_round(1, time_of);
    let (median, (lo, hi)) = (
        Timing::from_seconds(ratios.clone(), 0.0).median,
        Timing::median_interval(&ratios),
    );
    let target = Target::new(
        format!("cluster overhead, {symbols} x {years} y {strategy}"),
        "< 10% over in-process",
        format!(
            "{:+.1}% (`xt local`, 1 worker; 95% CI {:+.1}% to {:+.1}%)",
            (median - 1.0) * 100.0,
            (lo - 1.0) * 100.0,
            (hi - 1.0) * 100.0
        ),
        hi < 1.10,
    );
    Ok((table, target))
}

/// `runs` batches through one path: `in-process`, `local` (in-process workers on loopback)
/// or `process` (one worker process with every core).
pub fn one_path(
    runtime: &tokio::runtime::Runtime,
    path: &str,
    symbols: usize,
    years: usize,
    runs: usize,
) -> anyhow::Result<Timing> {
    let spec = batch_spec(symbols, years, "macd", None)?;
    let cores = crate::machine::cores();
    match path {
        "in-process" => in_process(&spec, cores, runs, true),
        "local" => {
            let local_runtime = xt_api::cluster::runtime()?;
            timed(runs, 1, || {
                local_runtime.block_on(through_cluster(&spec, 1))
            })
        }
        _ => timed(runs, 1, || {
            runtime.block_on(through_processes(&spec, 1, cores))
        }),
    }
}

fn spec_evaluations(spec: &BatchSpec, symbols: usize, years: usize) -> anyhow::Result<f64> {
    let (_, combos) = xt_worker::runner::strategy_combos(
        &spec.strategy,
        spec.params.as_ref(),
        spec.grid.as_ref(),
    )?;
    Ok((symbols * years * xt_shared::synthetic::DAYS_PER_YEAR * combos.len()) as f64)
}
