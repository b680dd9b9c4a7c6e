//! Cluster overhead: the same batch through the in-process rayon runner and through the
//! coordinator and worker services on loopback (`xt local`'s path) with 1, 2 and 4
//! workers; the jobs per second the coordinator sustains for near-empty jobs over its real
//! gRPC and Flight services; and Flight upload throughput. Prints a markdown table. Run it
//! in release:
//!
//! `cargo run --release -p bench --bin cluster -- [--symbols 300] [--years 10]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Date32Array, Float64Array, UInt32Array};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use clap::Parser;
use futures::{TryStreamExt, stream};
use tonic::transport::Channel;
use xt_coordinator::scheduler::Scheduler;
use xt_shared::job::Upload;
use xt_shared::wire::jobs_client::JobsClient;
use xt_shared::wire::{LeaseRequest, RegisterRequest, StatusRequest, SubmitRequest};
use xt_shared::{BatchSpec, SyntheticMarket};

#[derive(Debug, Parser)]
struct Args {
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
    /// Timed runs per row (the median is shown).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Internal: run only the thin clients of the scheduling measurement against this URL.
    #[arg(long, hide = true)]
    thin_clients: Option<String>,
    #[arg(long, hide = true, default_value_t = 4)]
    clients: usize,
    #[arg(long, hide = true, default_value_t = 64)]
    round: u32,
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the file (utime, stime), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Median and spread (min, max) of `runs` timings of `f`, and the mean CPU seconds of one.
fn timed(runs: usize, mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Timing> {
    let cpu = cpu_seconds();
    let mut t = (0..runs).map(|_| f()).collect::<anyhow::Result<Vec<_>>>()?;
    t.sort();
    Ok(Timing {
        median: t[t.len() / 2].as_secs_f64(),
        min: t[0].as_secs_f64(),
        max: t[t.len() - 1].as_secs_f64(),
        cpu: (cpu_seconds() - cpu) / runs as f64,
    })
}

struct Timing {
    median: f64,
    min: f64,
    max: f64,
    cpu: f64,
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn submit(client: &mut JobsClient<Channel>, spec: &BatchSpec) -> anyhow::Result<u64> {
    Ok(client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec)?,
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch)
}

async fn wait_finished(client: &mut JobsClient<Channel>, batch: u64) -> anyhow::Result<()> {
    while !client
        .status(StatusRequest { batch })
        .await?
        .into_inner()
        .finished
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Submission to finished (tables written), through `workers` workers on loopback.
async fn through_cluster(spec: &BatchSpec, workers: usize) -> anyhow::Result<Duration> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = state_dir(&format!("cluster-{workers}"));
    let cluster = xt_coordinator::local::LocalCluster::start(
        state.clone(),
        workers,
        (cores / workers).max(1),
        Default::default(),
    )
    .await?;
    let mut client = JobsClient::connect(cluster.url.clone()).await?;
    let started = Instant::now();
    let batch = submit(&mut client, spec).await?;
    wait_finished(&mut client, batch).await?;
    let elapsed = started.elapsed();
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(elapsed)
}

/// One job attempt's upload, as a worker sends it: the descriptor, then each table.
async fn upload_data(
    upload: &Upload,
    tables: &[(&str, RecordBatch)],
) -> anyhow::Result<Vec<FlightData>> {
    let mut data = Vec::new();
    for (name, batch) in tables {
        let mut encoded: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .build(stream::iter([Ok(batch.clone())]))
            .try_collect()
            .await?;
        encoded[0].app_metadata = name.as_bytes().to_vec().into();
        data.extend(encoded);
    }
    data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(serde_json::to_vec(upload)?));
    Ok(data)
}

/// A coordinator with no workers but `clients` thin ones that lease near-empty jobs in
/// rounds of `round` and upload an empty result for each at once: what the coordinator's
/// gRPC and Flight services sustain when jobs cost nothing. Returns jobs per second from
/// the first lease to the batch finished.
async fn scheduling_throughput(
    jobs: usize,
    clients: usize,
    round: u32,
) -> anyhow::Result<(f64, f64)> {
    let state = state_dir("empty");
    let cluster =
        xt_coordinator::local::LocalCluster::start(state.clone(), 0, 1, Default::default()).await?;
    let mut client = JobsClient::connect(cluster.url.clone()).await?;
    let mut spec = BatchSpec::new(
        format!("synthetic://?symbols={jobs}&years=1&seed=1"),
        "buy_and_hold",
    );
    spec.tables = Some(vec![xt_shared::spec::Table::Metrics]);
    let batch = submit(&mut client, &spec).await?;
    // The thin clients run in a process of their own, so this process's CPU time is the
    // coordinator's alone.
    let cpu = cpu_seconds();
    let started = Instant::now();
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--thin-clients",
            &cluster.url,
            "--clients",
            &clients.to_string(),
            "--round",
            &round.to_string(),
        ])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "the thin clients failed");
    wait_finished(&mut client, batch).await?;
    let seconds = started.elapsed().as_secs_f64();
    let per_cpu_second = jobs as f64 / (cpu_seconds() - cpu).max(0.01);
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((jobs as f64 / seconds, per_cpu_second))
}

/// `clients` thin workers that lease near-empty jobs in rounds of `round` and upload an
/// empty result for each at once, until the queue is empty.
async fn thin_clients(url: String, clients: usize, round: u32) -> anyhow::Result<()> {
    let empty = RecordBatch::new_empty(xt_shared::schema::METRICS.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, empty) = (url.clone(), empty.clone());
        tasks.spawn(async move {
            let channel = Channel::from_shared(url)?.connect().await?;
            let mut jobs = JobsClient::new(channel.clone());
            let worker = jobs
                .register(RegisterRequest {
                    name: "bench".into(),
                    slots: round,
                })
                .await?
                .into_inner()
                .worker;
            loop {
                let leases = jobs
                    .lease(LeaseRequest {
                        worker,
                        slots: round,
                    })
                    .await?
                    .into_inner()
                    .jobs;
                if leases.is_empty() {
                    return anyhow::Ok(());
                }
                let uploads = leases.into_iter().map(|l| {
                    let (channel, empty) = (channel.clone(), empty.clone());
                    async move {
                        let upload = Upload {
                            worker,
                            batch: l.batch,
                            job: l.job,
                            attempt: l.attempt,
                            bars: 0,
                            seconds: 0.0,
                            error: None,
                        };
                        let data = upload_data(&upload, &[("metrics", empty)]).await?;
                        let mut flight = FlightServiceClient::new(channel);
                        let mut r = flight.do_put(stream::iter(data)).await?.into_inner();
                        while r.message().await?.is_some() {}
                        anyhow::Ok(())
                    }
                });
                futures::future::try_join_all(uploads).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Uploads one job's `sleeves` table of `rows` rows over Flight and returns megabytes (of
/// Arrow IPC) per second, the coordinator storing it before it answers.
async fn flight_throughput(rows: usize) -> anyhow::Result<(f64, f64)> {
    let state = state_dir("flight");
    let cluster =
        xt_coordinator::local::LocalCluster::start(state.clone(), 0, 1, Default::default()).await?;
    let channel = Channel::from_shared(cluster.url.clone())?
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .connect()
        .await?;
    let mut jobs = JobsClient::new(channel.clone());
    // Two jobs, one uploaded: the batch stays open, so the time is the upload and its
    // storing, not the aggregation.
    let spec = BatchSpec::new("synthetic://?symbols=2&years=1&seed=1", "buy_and_hold");
    let batch = submit(&mut jobs, &spec).await?;
    let worker = jobs
        .register(RegisterRequest {
            name: "bench".into(),
            slots: 1,
        })
        .await?
        .into_inner()
        .worker;
    let lease = jobs
        .lease(LeaseRequest { worker, slots: 1 })
        .await?
        .into_inner()
        .jobs
        .pop()
        .context("no job leased")?;
    let table = RecordBatch::try_new(
        xt_worker::client::sleeves_schema(),
        vec![
            Arc::new(UInt32Array::from_iter_values(
                (0..rows).map(|i| u32::from(i >= rows / 2)),
            )),
            Arc::new(Date32Array::from_iter_values(
                (0..rows).map(|i| (i % 2500) as i32),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| 1e6 + i as f64),
            )),
        ],
    )?;
    let upload = Upload {
        worker,
        batch,
        job: lease.job,
        attempt: lease.attempt,
        bars: 0,
        seconds: 0.0,
        error: None,
    };
    let data = upload_data(&upload, &[("sleeves", table)]).await?;
    let bytes: usize = data
        .iter()
        .map(|d| d.data_body.len() + d.data_header.len())
        .sum();
    let mut flight = FlightServiceClient::new(channel).max_encoding_message_size(256 << 20);
    let started = Instant::now();
    let mut r = flight.do_put(stream::iter(data)).await?.into_inner();
    while r.message().await?.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((bytes as f64 / 1e6, bytes as f64 / 1e6 / seconds))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(url) = args.thin_clients {
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(thin_clients(url, args.clients, args.round));
    }
    let data = format!(
        "synthetic://?symbols={}&years={}&seed=42",
        args.symbols, args.years
    );
    let mut spec = BatchSpec::new(data, &args.strategy);
    if let Some(grid) = &args.grid {
        spec.grid = Some(serde_json::from_str(grid).context("--grid")?);
    }
    spec.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Portfolio,
    ]);
    let synth = SyntheticMarket::new(args.symbols, args.years, 42);
    let universe = synth.universe();
    let local = timed(args.runs, || {
        let t = Instant::now();
        xt_worker::runner::run_batch(&spec, &synth, &universe)?;
        Ok(t.elapsed())
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "| {} symbols x {} years, {} {} | seconds (median of {}) | spread | CPU seconds | vs in-process |",
        args.symbols,
        args.years,
        args.strategy,
        args.grid.as_deref().unwrap_or(""),
        args.runs
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, t: &Timing| {
        println!(
            "| {name} | {:.3} | {:.3}-{:.3} | {:.2} | {:.2}x |",
            t.median,
            t.min,
            t.max,
            t.cpu,
            t.median / local.median
        );
    };
    row("in-process rayon runner", &local);
    for workers in [1, 2, 4] {
        let t = timed(args.runs, || {
            runtime.block_on(through_cluster(&spec, workers))
        })?;
        row(&format!("cluster on loopback, {workers} worker(s)"), &t);
    }
    println!();
    println!("| coordinator | throughput |");
    println!("|---|---|");
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
    println!("| scheduler core (lease + complete, in memory) | {rate:.0} jobs/s |");
    let (rate, per_core) = runtime.block_on(scheduling_throughput(args.empty_jobs, 4, 64))?;
    println!(
        "| near-empty jobs over gRPC lease + Flight upload, stored ({} jobs, 4 clients in another process, sharing the cores) | {rate:.0} jobs/s |",
        args.empty_jobs
    );
    println!("| the same, per CPU-second of the coordinator | {per_core:.0} jobs/s |");
    let (mb, rate) = runtime.block_on(flight_throughput(2_500_000))?;
    println!("| Flight DoPut on loopback, one {mb:.0} MB table, stored | {rate:.0} MB/s |");
    Ok(())
}
