//! The worker process's loop: register with the coordinator, pull as many jobs as there are
//! free slots (and a few rounds more when jobs are short), run each on the rayon pool, and
//! upload finished results over Flight, gathered a few milliseconds into each upload; heartbeat
//! all along. On shutdown it takes no new jobs, finishes those it holds, and leaves. A
//! finished result is retried until the coordinator takes it.

mod connect;
mod flow;
mod jobs;
mod parts;
mod queue;
mod send;

use connect::{connect, register_with};
use flow::*;
use jobs::*;
pub use jobs::{JobOutput, run_leased};
use parts::*;
pub use parts::{Attempt, PartSum, PartTables, upload_attempts};
use queue::*;
use send::*;
pub use send::{Rerun, upload, upload_finished};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::stream;
use xt_shared::BarSource;
use xt_shared::job::JobSpec;
use xt_shared::spec::DataSpec;
use xt_wire::auth::{Channel, ClusterSecret};
use xt_wire::upload::{
    Upload, UploadReply, calendar_schema, part_sums_schema, sleeves_schema, upload_messages,
};
use xt_wire::workers_client::WorkersClient;
use xt_wire::*;

use crate::engine::strategy::{ParamSet, Strategy};
use crate::engine::{Halt, Never};
use crate::runner::{JobError, execute, strategy_combos};
use crate::stop::{JobBudget, Stops};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    /// Jobs run at once (rayon threads).
    pub slots: usize,
    pub name: String,
    /// How long a job may run before it fails.
    pub budget: JobBudget,
    /// After shutdown is asked, how long jobs in flight may still run before they stop
    /// (and go back to the coordinator's queue).
    pub drain_timeout: Duration,
    /// Tests only: jobs of this symbol never end by themselves.
    pub endless_symbol: Option<String>,
    /// Tests only: the worker leases this many jobs in all, then no more.
    pub lease_limit: Option<usize>,
    /// Sent on every call, when the coordinator asks for one.
    pub secret: Option<ClusterSecret>,
    /// The distributed mode: etcd's client URLs, where the leading coordinator is found
    /// (and found again when another takes over); `coordinator` is then unused.
    pub etcd: Vec<String>,
    /// How jobs read bars: objects in a store through a cache on disk.
    pub data: Arc<xt_objects::DataAccess>,
    /// The distributed mode: the TTL of the worker's membership lease in etcd.
    pub member_ttl: Duration,
}

impl WorkerConfig {
    /// A worker with the default budget and drain deadline.
    pub fn new(coordinator: impl Into<String>, slots: usize, name: impl Into<String>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            slots,
            name: name.into(),
            budget: JobBudget::default(),
            drain_timeout: DRAIN_TIMEOUT,
            endless_symbol: None,
            lease_limit: None,
            secret: None,
            etcd: Vec::new(),
            data: xt_objects::DataAccess::with_defaults(),
            member_ttl: MEMBER_TTL,
        }
    }
}

/// The default TTL of a worker's membership: a dead worker's jobs are queued again within
/// it.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);

/// The default drain deadline: within Kubernetes' default 30 s grace period, with time left
/// to report the stopped jobs.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Runs until `shutdown` resolves, then drains: no new jobs, in-flight ones finished and
/// uploaded.
pub async fn run_worker(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let channel = if config.etcd.is_empty() {
        connect(&config.coordinator, config.secret.clone()).await?
    } else {
        xt_wire::leader::follow(&config.etcd, config.secret.clone()).await?
    };
    let mut jobs = WorkersClient::new(channel.clone());
    // In the distributed mode a worker is a member while its etcd lease lives: should it
    // die, the coordinator queues its jobs again within the lease's TTL.
    let membership = if config.etcd.is_empty() {
        None
    } else {
        let name = xt_wire::members::unique_name();
        Some(xt_wire::members::join(&config.etcd, &name, config.member_ttl).await?)
    };
    let register = RegisterRequest {
        name: config.name.clone(),
        slots: config.slots as u32,
        member: membership
            .as_ref()
            .map(|m| m.key.clone())
            .unwrap_or_default(),
    };
    let reply = register_with(&mut jobs, &register).await?;
    // The id changes when a restarted coordinator no longer knows us and we register again.
    let id = Arc::new(std::sync::atomic::AtomicU64::new(reply.worker));
    let heartbeat = Duration::from_millis(reply.heartbeat_ms.max(10));
    let runner = Arc::new(JobRunner {
        data: config.data.clone(),
        budget: config.budget,
        endless_symbol: config.endless_symbol.clone(),
        ..JobRunner::default()
    });
    let beat = {
        let (mut jobs, id, runner) = (jobs.clone(), id.clone(), runner.clone());
        let register = register.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(heartbeat).await;
                let worker = id.load(Ordering::SeqCst);
                match jobs.heartbeat(HeartbeatRequest { worker }).await {
                    // The batch was cancelled: its jobs here stop at their next check.
                    Ok(reply) => {
                        for job in reply.into_inner().cancelled {
                            runner.stops.cancel(job.batch, job.job);
                        }
                    }
                    // A coordinator that does not know us (restarted, or newly elected):
                    // register with it, so that our leases there are ours.
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        if let Ok(r) = jobs.register(register.clone()).await {
                            id.store(r.into_inner().worker, Ordering::SeqCst);
                        }
                    }
                    Err(e) => eprintln!("xt-worker: heartbeat: {e}"),
                }
            }
        })
    };
    let slots = config.slots.max(1);
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(slots)
            .thread_name(|i| format!("xt-job-{i}"))
            .build()?,
    );
    // A job asked for again with its own sleeves, after they were summed and dropped, runs
    // again on the pool.
    let rerun: Rerun = {
        let (pool, runner) = (pool.clone(), runner.clone());
        Arc::new(move |lease: JobLease| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let runner = runner.clone();
            pool.spawn(move || {
                let cancelled = runner.stops.start(lease.batch, lease.job, lease.attempt);
                let _ = tx.send(runner.run(&lease, &cancelled));
                runner.stops.finish(lease.batch, lease.job, lease.attempt);
            });
            rx
        })
    };
    // Jobs leased and not yet computed: the slots' worth running and as many again queued
    // behind them, so the pool never waits on a lease round trip between jobs; up to 24
    // times as many queued when jobs are short (see `queued_rounds`), since then each
    // round trip and each pool thread going idle costs as much as a job.
    let computing = Arc::new(AtomicUsize::new(0));
    let job_nanos = Arc::new(AtomicU64::new(0));
    // Results computed and not yet taken by the coordinator. A slot is free again as soon
    // as its job is computed, while its upload runs; past this many unsent results
    // (an unreachable coordinator) the worker stops leasing.
    let unsent = Arc::new(AtomicUsize::new(0));
    // And their bytes.
    let unsent_bytes = Arc::new(AtomicUsize::new(0));
    // Room to lease again: a job computed (see `wake_at`) or an upload sent.
    let wake_leasing = Arc::new(tokio::sync::Notify::new());
    let queue: Arc<UploadQueue> = Arc::default();
    // Nothing left to compute: the uploader sends what it holds at once.
    let flush = Arc::new(tokio::sync::Notify::new());
    // A finished job wakes the lease loop only once the jobs left to compute are this few,
    // so that a round's room is free (and always when nothing is left).
    let wake_at = Arc::new(AtomicUsize::new(usize::MAX));
    let uploader = tokio::spawn(run_uploader(
        Uploader {
            channel: channel.clone(),
            rerun,
        },
        queue.clone(),
        unsent.clone(),
        unsent_bytes.clone(),
        wake_leasing.clone(),
        computing.clone(),
        flush.clone(),
    ));
    // In a pod: its deletion cost follows the jobs held, so a scale-down takes idle
    // workers first.
    let cost = crate::podcost::follow(computing.clone(), unsent.clone())?;
    tokio::pin!(shutdown);
    // The last lease call found nothing queued.
    let dried = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Per batch, its jobs computing here, and whether the coordinator had none of it left
    // queued at a lease (see `JobLease::last`).
    let batches: Arc<Mutex<HashMap<u64, (usize, bool)>>> = Arc::default();
    // Jobs leased so far (for `lease_limit`).
    let mut leased = 0;
    loop {
        // Leased in rounds of half the queue (at least `slots` jobs): every lease call is a
        // round trip and wake-ups on both sides, which for short jobs cost as much as a job
        // (measured in bench/PROFILE.md).
        let max_computing = slots * (1 + queued_rounds(job_nanos.load(Ordering::Relaxed)));
        let max_unsent = 2 * (max_computing + UNSENT);
        let lease_round = slots.max(max_computing / 2);
        wake_at.store(max_computing - lease_round, Ordering::SeqCst);
        let room = max_computing.saturating_sub(computing.load(Ordering::SeqCst));
        let free = if unsent.load(Ordering::SeqCst) < max_unsent
            && unsent_bytes.load(Ordering::SeqCst) < UNSENT_BYTES
            && room >= lease_round
        {
            room
        } else {
            0
        };
        let free = config
            .lease_limit
            .map_or(free, |limit| free.min(limit.saturating_sub(leased)));
        let worker = id.load(Ordering::SeqCst);
        // With nothing to compute, or nothing queued at the last call, the lease call itself
        // waits for work (the coordinator answers as soon as a batch comes in or a job is
        // queued again); otherwise it answers at once, and finished jobs wake the loop. At
        // a batch's end that is one waiting call, not an empty one for each job finished.
        let waited =
            free > 0 && (dried.load(Ordering::SeqCst) || computing.load(Ordering::SeqCst) == 0);
        let leases = if free > 0 {
            match jobs
                .lease(LeaseRequest {
                    worker,
                    slots: free as u32,
                    wait_ms: if waited { IDLE_WAIT_MS } else { 0 },
                })
                .await
            {
                Ok(r) => r.into_inner().jobs,
                Err(e) if e.code() == tonic::Code::NotFound => {
                    // A restarted coordinator: register again and carry on.
                    if let Ok(r) = jobs.register(register.clone()).await {
                        id.store(r.into_inner().worker, Ordering::SeqCst);
                    }
                    Vec::new()
                }
                Err(e) => {
                    eprintln!("xt-worker: lease: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let idle = leases.is_empty();
        leased += leases.len();
        if free > 0 {
            dried.store(idle, Ordering::SeqCst);
            // The coordinator had nothing more and nothing is left to compute: what the
            // uploader holds goes now (see the pool's side below).
            if idle && computing.load(Ordering::SeqCst) == 0 {
                flush.notify_one();
            }
        }
        if !leases.is_empty() {
            let mut b = batches.lock().unwrap_or_else(|e| e.into_inner());
            for lease in &leases {
                let (running, last) = b.entry(lease.batch).or_default();
                *running += 1;
                *last |= lease.last;
            }
        }
        for lease in leases {
            computing.fetch_add(1, Ordering::SeqCst);
            let (runner, queue) = (runner.clone(), queue.clone());
            let (computing, unsent, unsent_bytes, wake_leasing, job_nanos) = (
                computing.clone(),
                unsent.clone(),
                unsent_bytes.clone(),
                wake_leasing.clone(),
                job_nanos.clone(),
            );
            let (flush, wake_at) = (flush.clone(), wake_at.clone());
            let (dried, batches) = (dried.clone(), batches.clone());
            // Straight from the pool to the uploader: no task of its own per job.
            let batch = lease.batch;
            let cancelled = runner.stops.start(lease.batch, lease.job, lease.attempt);
            pool.spawn(move || {
                let started = std::time::Instant::now();
                let result = runner.run(&lease, &cancelled);
                runner.stops.finish(lease.batch, lease.job, lease.attempt);
                // A moving average of job time; races between threads lose an update at worst.
                let nanos = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                let mean = job_nanos.load(Ordering::Relaxed);
                job_nanos.store(
                    if mean == 0 {
                        nanos
                    } else {
                        mean - mean / 8 + nanos / 8
                    },
                    Ordering::Relaxed,
                );
                unsent.fetch_add(1, Ordering::SeqCst);
                let bytes = result.as_ref().map_or(0, JobOutput::bytes);
                unsent_bytes.fetch_add(bytes, Ordering::SeqCst);
                // Queued before it stops counting as computing: once `flush` says nothing is
                // left, the uploader finds every result in the queue.
                let finished = Finished {
                    worker,
                    lease,
                    result,
                };
                if queue.lock().push(finished, bytes) {
                    queue.pushed.notify_one();
                }
                // The last of a batch's jobs this worker holds, with none of it queued at
                // the coordinator: its results go now, not after a linger, though other
                // batches' jobs still run (a small batch beside a big one ends as soon as
                // its jobs do).
                let batch_done = {
                    let mut b = batches.lock().unwrap_or_else(|e| e.into_inner());
                    match b.get_mut(&batch) {
                        Some((running, last)) => {
                            *running -= 1;
                            let done = *running == 0 && *last;
                            if *running == 0 {
                                b.remove(&batch);
                            }
                            done
                        }
                        None => false,
                    }
                };
                if batch_done {
                    flush.notify_one();
                }
                let left = computing.fetch_sub(1, Ordering::SeqCst) - 1;
                if left <= wake_at.load(Ordering::SeqCst) {
                    wake_leasing.notify_one();
                }
                // Nothing left to compute, and the coordinator had nothing more at the last
                // lease call: the uploader sends what it holds at once. Not while more
                // jobs are on their way (a batch's first jobs may all finish before the next
                // lease comes), which would send an upload of a few results. The lease loop
                // sets `dried` before it reads `computing`, and this decrement comes before
                // the read of `dried`: one of the two sees the other.
                if left == 0 && dried.load(Ordering::SeqCst) {
                    flush.notify_one();
                }
                if left == 0 {
                    // A draining worker's uploader, waiting for results, ends now.
                    let mut o = queue.lock();
                    if o.closed && std::mem::take(&mut o.idle) {
                        queue.pushed.notify_one();
                    }
                }
            });
        }
        if idle && waited {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = std::future::ready(()) => {}
            }
        } else if idle {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = wake_leasing.notified() => {}
            }
        }
    }
    let _ = jobs
        .drain(DrainRequest {
            worker: id.load(Ordering::SeqCst),
        })
        .await;
    // Jobs still running at the deadline stop at their next check; the coordinator queues
    // them again when their failure is reported.
    let deadline = {
        let (runner, timeout) = (runner.clone(), config.drain_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            runner.stops.drain();
        })
    };
    // The uploader ends once every job in flight is computed and sent, each upload
    // going as soon as nothing is left to compute.
    dried.store(true, Ordering::SeqCst);
    if computing.load(Ordering::SeqCst) == 0 {
        flush.notify_one();
    }
    {
        let mut o = queue.lock();
        o.closed = true;
        if std::mem::take(&mut o.idle) {
            queue.pushed.notify_one();
        }
    }
    let _ = uploader.await;
    deadline.abort();
    beat.abort();
    if let Some(cost) = cost {
        cost.abort();
    }
    if let Some(m) = membership {
        m.leave().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
