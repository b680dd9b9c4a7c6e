//! The coordinator under load: the jobs per second it sustains for near-empty jobs over its
//! real gRPC and Flight services, thin clients polling it, the latency of a 1-job batch, and
//! Flight upload throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Date32Array, Float64Array};
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::stream;
use xt_coordinator::scheduler::Scheduler;
use xt_shared::BatchSpec;
use xt_wire::batches_client::BatchesClient;
use xt_wire::upload::Upload;
use xt_wire::{LeaseRequest, RegisterRequest};

use crate::report::{Table, Target, Timing, count, cpu_seconds, secs};

use crate::cluster::{state_dir, submit, wait_finished};

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
        xt_api::cluster::LocalCluster::start(state.clone(), 0, 1, Default::default()).await?;
    let mut client = BatchesClient::connect(cluster.url.clone()).await?;
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
            "thin-clients",
            "--url",
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
/// empty result for each round at once, until the queue is empty.
pub async fn thin_clients(url: String, clients: usize, round: u32) -> anyhow::Result<()> {
    let empty = RecordBatch::new_empty(xt_shared::schema::METRICS.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, empty) = (url.clone(), empty.clone());
        tasks.spawn(async move {
            let channel = xt_wire::transport::connect(&url, None).await?;
            let mut jobs = xt_wire::workers_client::WorkersClient::new(channel.clone());
            let worker = jobs
                .register(RegisterRequest {
                    name: "bench".into(),
                    slots: round,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .worker;
            loop {
                let leases = jobs
                    .lease(LeaseRequest {
                        worker,
                        slots: round,
                        wait_ms: 0,
                    })
                    .await?
                    .into_inner()
                    .jobs;
                if leases.is_empty() {
                    return anyhow::Ok(());
                }
                // One upload for the round, as a worker sends what it has finished.
                let tables = [("metrics", empty.clone())];
                let attempts: Vec<(Upload, &[(&str, RecordBatch)])> = leases
                    .iter()
                    .map(|l| {
                        let upload = Upload {
                            worker,
                            batch: l.batch,
                            job: l.job,
                            attempt: l.attempt,
                            bar_evaluations: 0,
                            seconds: 0.0,
                            error: None,
                            part: None,
                            data_hash: None,
                        };
                        (upload, &tables[..])
                    })
                    .collect();
                xt_worker::client::upload(&channel, &attempts).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Uploads one job's `calendar` and `sleeves` tables (`rows` equity values) over Flight and returns megabytes (of
/// Arrow IPC) per second, the coordinator storing it before it answers.
async fn flight_throughput(rows: usize) -> anyhow::Result<(f64, f64)> {
    let state = state_dir("flight");
    let cluster =
        xt_api::cluster::LocalCluster::start(state.clone(), 0, 1, Default::default()).await?;
    let channel = xt_wire::transport::endpoint(&cluster.url)?
        .connect()
        .await?;
    let mut batches = BatchesClient::new(channel.clone());
    let mut jobs = xt_wire::workers_client::WorkersClient::new(channel.clone());
    // Two jobs, one uploaded: the batch stays open, so the time is the upload and its
    // storing, not the aggregation.
    let spec = BatchSpec::new("synthetic://?symbols=2&years=1&seed=1", "buy_and_hold");
    let batch = submit(&mut batches, &spec).await?;
    let worker = jobs
        .register(RegisterRequest {
            name: "bench".into(),
            slots: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .worker;
    let lease = jobs
        .lease(LeaseRequest {
            worker,
            slots: 1,
            wait_ms: 0,
        })
        .await?
        .into_inner()
        .jobs
        .pop()
        .context("no job leased")?;
    // A job of `rows / 2` dates and two curves (buy_and_hold's and the benchmark).
    let calendar = RecordBatch::try_new(
        xt_wire::upload::calendar_schema(),
        vec![Arc::new(Date32Array::from_iter_values(
            (0..(rows / 2) as i32).map(|d| d + 10_000),
        ))],
    )?;
    let sleeves = RecordBatch::try_new(
        xt_wire::upload::sleeves_schema(),
        vec![Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| 1e6 + i as f64),
        ))],
    )?;
    let upload = Upload {
        worker,
        batch,
        job: lease.job,
        attempt: lease.attempt,
        bar_evaluations: 0,
        seconds: 0.0,
        error: None,
        part: None,
        data_hash: None,
    };
    let tables = [("calendar", calendar), ("sleeves", sleeves)];
    let data = xt_wire::upload::upload_messages(&[(upload, &tables)])?;
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

/// Submission to finished of a 1-job batch (one symbol, one year) on an idle cluster with a
/// worker waiting: median and spread of `runs`.
async fn one_job_latency(runs: usize) -> anyhow::Result<Timing> {
    let state = state_dir("one-job");
    let cluster = xt_api::cluster::LocalCluster::start(
        state.clone(),
        1,
        crate::machine::cores(),
        Default::default(),
    )
    .await?;
    let mut client = BatchesClient::connect(cluster.url.clone()).await?;
    let mut t = Vec::new();
    for i in 0..runs + 1 {
        let spec = BatchSpec::new(format!("synthetic://?symbols=1&years=1&seed={i}"), "macd");
        let started = Instant::now();
        let batch = submit(&mut client, &spec).await?;
        wait_finished(&mut client, batch).await?;
        if i > 0 {
            t.push(started.elapsed().as_secs_f64());
        }
    }
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(Timing::from_seconds(t, 0.0))
}

/// Scheduling throughput, 1-job latency and Flight throughput; and the coordinator's jobs
/// per CPU-second.
pub fn overheads(
    runtime: &tokio::runtime::Runtime,
    empty_jobs: usize,
    runs: usize,
) -> anyhow::Result<(Table, Target, f64)> {
    let mut table = Table::new(
        "Coordinator and transport",
        &["measurement", "value (median, spread)"],
    );
    // Scheduling alone: lease and complete near-empty jobs as fast as the core allows.
    let jobs = 200_000u32;
    let mut rates = Vec::new();
    for _ in 0..runs {
        let mut s = Scheduler::new(Duration::from_secs(30), 3, 1);
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
        rates.push(jobs as f64 / t.elapsed().as_secs_f64());
    }
    let r = Timing::from_seconds(rates, 0.0);
    table.row(vec![
        "scheduler core: lease + complete in memory".into(),
        format!(
            "{} jobs/s ({}-{})",
            count(r.median),
            count(r.min),
            count(r.max)
        ),
    ]);
    let (mut rates, mut per_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (rate, per_core) = runtime.block_on(scheduling_throughput(empty_jobs, 4, 64))?;
        rates.push(rate);
        per_cpu.push(per_core);
    }
    let (r, c) = (
        Timing::from_seconds(rates, 0.0),
        Timing::from_seconds(per_cpu, 0.0),
    );
    let target = Target::new(
        "scheduling throughput, near-empty jobs end to end",
        ">= 20,000 jobs/s",
        format!("{} jobs/s", count(r.median)),
        r.median >= 20_000.0,
    );
    table.row(vec![
        format!("near-empty jobs through gRPC lease + Flight DoPut, stored ({empty_jobs} jobs, 4 clients in another process)"),
        format!("{} jobs/s ({}-{})", count(r.median), count(r.min), count(r.max)),
    ]);
    table.row(vec![
        "the same per CPU-second of the coordinator".into(),
        format!(
            "{} jobs/s ({}-{})",
            count(c.median),
            count(c.min),
            count(c.max)
        ),
    ]);
    let l = runtime.block_on(one_job_latency(runs.max(5)))?;
    table.row(vec![
        "1-job batch (1 symbol x 1 year, macd), submission to finished".into(),
        format!("{} ({}-{})", secs(l.median), secs(l.min), secs(l.max)),
    ]);
    let mut rates = Vec::new();
    let mut size = 0.0;
    for _ in 0..runs {
        let (mb, rate) = runtime.block_on(flight_throughput(2_500_000))?;
        size = mb;
        rates.push(rate);
    }
    let r = Timing::from_seconds(rates, 0.0);
    table.row(vec![
        format!("Flight DoPut on loopback, one {size:.0} MB result table, stored"),
        format!("{:.0} MB/s ({:.0}-{:.0})", r.median, r.min, r.max),
    ]);
    Ok((table, target, c.median))
}
