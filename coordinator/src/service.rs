//! The coordinator's network face: the gRPC `Jobs` service (register, lease, heartbeat,
//! fail, drain, submit, status, cancel) and the Arrow Flight service that receives jobs'
//! results, both on one port. Job attempts end in Flight `DoPut`s, each carrying one or
//! more of them: the descriptor lists batch, job and attempt of each, and the stream carries
//! their result tables (see [`Upload`]). The first attempt whose upload is stored completes
//! its job; later ones are acknowledged and dropped, so every job appears exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::{Date32Type, Float64Type};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tonic::{Request, Response, Status, Streaming};
use xt_shared::job::{JobSpec, plan};
use xt_shared::open::{open_source, resolve_universe};
use xt_shared::portfolio::{FixedSum, PortfolioSum};
use xt_shared::spec::{DataSpec, Table};
use xt_shared::strategy::{ParamSet, strategy_combos};
use xt_shared::tables::{TableWriter, finish_portfolio};
use xt_shared::{BatchSpec, Date};
use xt_wire::jobs_server::Jobs;
use xt_wire::upload::{Upload, UploadReply, UploadTable, owners};
use xt_wire::*;

use crate::scheduler::{Completion, JobKey, JobStatus, Scheduler};
use crate::store::{
    BatchRecord, EmbeddedStore, JobRecord, JobResult, ResultGroup, StateStore, TABLE_ROW_GROUP,
    TableReader, TableSink, Tables,
};

/// What a batch is, fixed once accepted; shared with its aggregation, which runs outside
/// the state lock.
struct Planned {
    spec: BatchSpec,
    jobs: Vec<JobSpec>,
    combos: Vec<ParamSet>,
    /// The portfolio's calendar.
    dates: Vec<Date>,
}

struct BatchRun {
    plan: Arc<Planned>,
    bars: u64,
    started: Instant,
    /// Its tables are being written (every job has ended); `summary` follows.
    aggregating: bool,
    /// What its accepted results add up to so far.
    fold: Arc<Mutex<Fold>>,
    /// Accepted results being added to `fold` now, and added so far.
    folding: usize,
    folded: usize,
    summary: Option<Value>,
    tenant: String,
    owner: String,
    submitted_ms: u64,
}

struct State {
    scheduler: Scheduler,
    next_batch: u64,
    batches: HashMap<u64, BatchRun>,
    durations: Histogram,
}

/// Job durations on workers, cumulative per upper bound as Prometheus wants them.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Self {
        let bounds = vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];
        Histogram {
            counts: vec![0; bounds.len()],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if seconds <= *b {
                *c += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// What an operator decides about a coordinator.
#[derive(Debug, Clone)]
pub struct Config {
    /// A lease without a heartbeat for this long goes back to the queue.
    pub lease_ttl: Duration,
    /// Data directories and universe files resolve only inside these (canonical paths).
    /// `None` serves any path: `xt local`, where the user and the service are one.
    pub data_roots: Option<Vec<PathBuf>>,
    /// Per tenant: batches not yet finished.
    pub max_running_batches: usize,
    /// Per tenant: jobs waiting in the queue.
    pub max_queued_jobs: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_ttl: Duration::from_secs(30),
            data_roots: None,
            max_running_batches: 1_000,
            max_queued_jobs: 10_000_000,
        }
    }
}

/// The coordinator: shared by the gRPC and Flight services and the lease reaper.
#[derive(Clone)]
pub struct Coordinator {
    state: Arc<Mutex<State>>,
    /// Woken when jobs are queued (a batch submitted, jobs requeued, a worker draining), for
    /// the lease calls waiting on work.
    work: Arc<tokio::sync::Notify>,
    /// Woken when a batch finishes: status calls waiting for one.
    finished: Arc<tokio::sync::Notify>,
    store: Arc<dyn StateStore>,
    heartbeat: Duration,
    config: Arc<Config>,
    /// Where submissions are planned (every member's dates read, in parallel): a pool of
    /// the coordinator's own rather than rayon's global one. On the 300-member overhead
    /// batch, planning on the global pool from a blocking thread read the dates in 2.1-2.8
    /// ms, on a pool of its own in 0.7-1.3 ms, as in the in-process runner (0.8-1.7 ms;
    /// paired rounds, one process); planning runs before any job can, so this is the
    /// batch's start.
    planner: Arc<rayon::ThreadPool>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Coordinator {
    /// A coordinator on the embedded store in `state` (see [`Coordinator::with_store`]).
    pub fn open(state: PathBuf, config: Config) -> anyhow::Result<Self> {
        Self::with_store(Arc::new(EmbeddedStore::open(state)?), config)
    }

    /// A coordinator on `store`, resuming every batch found there: finished jobs stay
    /// finished, the others are queued again.
    pub fn with_store(store: Arc<dyn StateStore>, mut config: Config) -> anyhow::Result<Self> {
        if let Some(roots) = &mut config.data_roots {
            for r in roots.iter_mut() {
                *r = r
                    .canonicalize()
                    .map_err(|e| anyhow::anyhow!("data root {}: {e}", r.display()))?;
            }
        }
        let lease_ttl = config.lease_ttl;
        let mut scheduler = Scheduler::new(lease_ttl, 3);
        let mut batches = HashMap::new();
        let mut next_batch = 1;
        for stored in store.load_all()? {
            let r = stored.record;
            let (_, combos) = strategy_combos(
                &r.spec.strategy,
                r.spec.params.as_ref(),
                r.spec.grid.as_ref(),
            )?;
            let done: Vec<bool> = stored.done.iter().map(|d| d.is_some()).collect();
            scheduler.restore(stored.id, &done)?;
            for (j, d) in stored.done.iter().enumerate() {
                if let Some(JobRecord { error: Some(e), .. }) = d {
                    scheduler.set_failed(
                        JobKey {
                            batch: stored.id,
                            job: j as u32,
                        },
                        e,
                    );
                }
            }
            let bars = stored.done.iter().flatten().map(|d| d.bars).sum();
            next_batch = next_batch.max(stored.id + 1);
            batches.insert(
                stored.id,
                BatchRun {
                    plan: Arc::new(Planned {
                        spec: r.spec,
                        jobs: r.jobs,
                        combos,
                        dates: r.dates,
                    }),
                    bars,
                    started: Instant::now(),
                    aggregating: false,
                    // Results accepted before the restart are read from the store.
                    fold: Arc::new(Mutex::new(Fold::restarted(done.len()))),
                    folding: 0,
                    folded: 0,
                    summary: stored.summary,
                    tenant: r.tenant,
                    owner: r.owner,
                    submitted_ms: r.submitted_ms,
                },
            );
        }
        let coordinator = Coordinator {
            state: Arc::new(Mutex::new(State {
                scheduler,
                next_batch,
                batches,
                durations: Histogram::new(),
            })),
            store,
            work: Arc::default(),
            finished: Arc::default(),
            heartbeat: lease_ttl / 4,
            config: Arc::new(config),
            planner: Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("xt-plan-{i}"))
                    .build()?,
            ),
        };
        // A batch whose last job finished just before a crash is aggregated now.
        coordinator.reap();
        Ok(coordinator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation below completes before the guard drops; a panic elsewhere cannot
        // leave the state half-written, so a poisoned lock still holds good data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requeues the jobs of workers that stopped sending heartbeats; run it periodically.
    pub fn reap(&self) {
        let mut s = self.lock();
        if !s.scheduler.expire(Instant::now()).is_empty() {
            self.work.notify_waiters();
        }
        let ids: Vec<u64> = s.batches.keys().copied().collect();
        for id in ids {
            self.finish_if_done(&mut s, id);
        }
    }

    /// Validates and plans a batch for `tenant`, queues its jobs, returns its id and job count.
    pub fn submit(&self, spec: BatchSpec, tenant: &str, owner: &str) -> Result<(u64, u32), Status> {
        let bad = |e: xt_shared::SpecError| Status::invalid_argument(e.to_string());
        spec.check().map_err(bad)?;
        let (_, combos) = strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
            .map_err(bad)?;
        let spec = match &self.config.data_roots {
            Some(roots) => xt_shared::open::confine(&spec, roots).map_err(bad)?,
            None => spec,
        };
        self.check_limits(tenant, 0)?;
        let data = DataSpec::parse(&spec.data).map_err(bad)?;
        let source = open_source(&data).map_err(bad)?;
        let universe = resolve_universe(&spec, &data, source.as_ref()).map_err(bad)?;
        let planned = self
            .planner
            .install(|| plan(&spec, source.as_ref(), &universe))
            .map_err(bad)?;
        let jobs: Vec<JobSpec> = planned.jobs.into_iter().map(|j| j.spec).collect();
        let n = jobs.len() as u32;
        self.check_limits(tenant, n as usize)?;
        let mut s = self.lock();
        let id = s.next_batch;
        s.next_batch += 1;
        // Durable before it is acknowledged: an accepted batch survives a crash.
        let record = BatchRecord {
            spec: spec.clone(),
            jobs: jobs.clone(),
            dates: planned.dates.clone(),
            tenant: tenant.to_string(),
            owner: owner.to_string(),
            submitted_ms: now_ms(),
        };
        self.store
            .save_batch(id, &record)
            .map_err(|e| Status::unavailable(format!("storing the batch: {e}")))?;
        s.scheduler.submit(id, n).map_err(internal)?;
        self.work.notify_waiters();
        s.batches.insert(
            id,
            BatchRun {
                fold: Arc::new(Mutex::new(Fold::new(
                    &planned.dates,
                    combos.len(),
                    n as usize,
                ))),
                plan: Arc::new(Planned {
                    spec,
                    jobs,
                    combos,
                    dates: planned.dates,
                }),
                bars: 0,
                started: Instant::now(),
                aggregating: false,
                folding: 0,
                folded: 0,
                summary: None,
                tenant: record.tenant,
                owner: record.owner,
                submitted_ms: record.submitted_ms,
            },
        );
        Ok((id, n))
    }

    /// Refuses a tenant's new batch of `jobs` jobs past its limits.
    fn check_limits(&self, tenant: &str, jobs: usize) -> Result<(), Status> {
        let s = self.lock();
        let mut running = 0;
        let mut queued = 0;
        for (id, run) in &s.batches {
            if run.tenant != tenant || run.summary.is_some() {
                continue;
            }
            running += 1;
            queued += s.scheduler.progress(*id).map_or(0, |p| p.queued);
        }
        if running >= self.config.max_running_batches {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} has {running} batches running, its limit; wait for one to finish or cancel one"
            )));
        }
        if queued + jobs > self.config.max_queued_jobs {
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant:?} has {queued} jobs queued; {jobs} more would pass its limit of {}",
                self.config.max_queued_jobs
            )));
        }
        Ok(())
    }

    /// The status of one batch.
    fn status_of(&self, s: &State, id: u64) -> Result<StatusReply, Status> {
        let p = s
            .scheduler
            .progress(id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let run = s
            .batches
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("unknown batch {id}")))?;
        // A finished batch's clock stopped when it was aggregated.
        let elapsed = run
            .summary
            .as_ref()
            .and_then(|v| v["elapsed_seconds"].as_f64())
            .unwrap_or_else(|| run.started.elapsed().as_secs_f64());
        let finished_jobs = p.done + p.failed + p.cancelled;
        let remaining = p.queued + p.running;
        let eta = if finished_jobs > 0 && run.summary.is_none() {
            elapsed / finished_jobs as f64 * remaining as f64
        } else {
            0.0
        };
        Ok(StatusReply {
            elapsed_seconds: elapsed,
            eta_seconds: eta,
            queued: p.queued as u32,
            running: p.running as u32,
            done: p.done as u32,
            failed: p.failed as u32,
            cancelled: p.cancelled as u32,
            bars: run.bars,
            finished: run.summary.is_some(),
            summary_json: run
                .summary
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            batch: id,
            tenant: run.tenant.clone(),
            owner: run.owner.clone(),
            name: run.plan.spec.name.clone().unwrap_or_default(),
            submitted_ms: run.submitted_ms,
            jobs: run.plan.jobs.len() as u32,
        })
    }

    /// An attempt of `worker`'s ended without a result: its job is queued again (waking the
    /// lease calls waiting for work) or, after its last attempt, failed with `error`.
    fn fail_attempt(&self, s: &mut State, key: JobKey, worker: u64, error: &str) -> bool {
        let requeued = s.scheduler.fail(key, worker, error);
        if requeued {
            self.work.notify_waiters();
        }
        self.finish_if_done(s, key.batch);
        requeued
    }

    /// Leases up to `slots` queued jobs to `worker`.
    fn lease_now(&self, worker: u64, slots: usize) -> Result<Vec<JobLease>, Status> {
        let mut s = self.lock();
        let leases = s
            .scheduler
            .lease(worker, slots, Instant::now())
            .map_err(|e| Status::not_found(e.to_string()))?;
        let mut jobs = Vec::with_capacity(leases.len());
        for l in leases {
            let run = s
                .batches
                .get(&l.key.batch)
                .ok_or_else(|| internal("lease of an unknown batch"))?;
            let spec_json =
                serde_json::to_string(&run.plan.jobs[l.key.job as usize]).map_err(internal)?;
            jobs.push(JobLease {
                batch: l.key.batch,
                job: l.key.job,
                attempt: l.attempt,
                spec_json,
                last: false,
            });
        }
        for lease in &mut jobs {
            lease.last = s
                .scheduler
                .progress(lease.batch)
                .is_ok_and(|p| p.queued == 0);
        }
        Ok(jobs)
    }

    /// The finished table a ticket (`batch_id/table`) names.
    fn finished_table(&self, ticket: &str) -> Result<(u64, Table), Status> {
        let (batch, table) = ticket.split_once('/').ok_or_else(|| {
            Status::invalid_argument(format!("ticket {ticket:?} is not batch_id/table"))
        })?;
        let batch: u64 = batch
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{batch:?} is not a batch id")))?;
        let table = Table::parse(table).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{table:?} is not a table (metrics, trades, equity, portfolio)"
            ))
        })?;
        let s = self.lock();
        let run = s
            .batches
            .get(&batch)
            .ok_or_else(|| Status::not_found(format!("unknown batch {batch}")))?;
        if run.summary.is_none() {
            return Err(Status::failed_precondition(format!(
                "batch {batch} has not finished"
            )));
        }
        if !run.plan.spec.wants(table) {
            return Err(Status::not_found(format!(
                "batch {batch} did not keep the {} table",
                table.name()
            )));
        }
        Ok((batch, table))
    }

    /// Completes job attempts with their uploaded tables. Each attempt whose job is still
    /// open is reserved for it (the attempts summed into one part all together, or none of
    /// them), stored durably (one append per batch), then counted and added to its batch's
    /// fold. Returns, for each, whether it completed its job, and whether it must be sent
    /// again on its own (its part could not be taken whole).
    async fn accept(
        &self,
        uploads: Vec<(Upload, Tables)>,
    ) -> Result<(Vec<bool>, Vec<bool>), Status> {
        let key = |u: &Upload| JobKey {
            batch: u.batch,
            job: u.job,
        };
        let n = uploads.len();
        let (mut reserved, mut resend) = (vec![false; n], vec![false; n]);
        {
            let mut s = self.lock();
            let mut parts: BTreeMap<(u64, u32), Vec<usize>> = BTreeMap::new();
            for (i, (u, _)) in uploads.iter().enumerate() {
                match u.part {
                    None => reserved[i] = s.scheduler.reserve(key(u)),
                    Some(k) => parts.entry((u.batch, k)).or_default().push(i),
                }
            }
            for members in parts.values() {
                let mut held = Vec::new();
                for &i in members {
                    if !s.scheduler.reserve(key(&uploads[i].0)) {
                        break;
                    }
                    held.push(i);
                }
                if held.len() == members.len() {
                    held.iter().for_each(|&i| reserved[i] = true);
                } else {
                    // One of its jobs was done (or is being stored) by another attempt: its
                    // sums cannot be split, so each is sent again with its own sleeves.
                    for &i in &held {
                        s.scheduler.release(key(&uploads[i].0));
                    }
                    members.iter().for_each(|&i| resend[i] = true);
                }
            }
        }
        // Whatever ends this call before its jobs complete (a failed store, a panic), no job
        // stays reserved.
        let mut unreserve = Unreserve {
            coordinator: self,
            keys: uploads
                .iter()
                .zip(&reserved)
                .filter(|(_, r)| **r)
                .map(|((u, _), _)| key(u))
                .collect(),
        };
        let uploads = Arc::new(uploads);
        let mut groups: Vec<(u64, ResultGroup)> = Vec::new();
        if reserved.iter().any(|&r| r) {
            // Durable before a job counts as done: a completed result survives a crash.
            // Written outside the lock; the reservations keep every other attempt of these
            // jobs out meanwhile. Each batch's results go as one group: one record, and kept
            // as one until the batch ends.
            let store_all = {
                let (store, uploads, reserved) =
                    (self.store.clone(), uploads.clone(), reserved.clone());
                move || {
                    let mut by_batch: BTreeMap<u64, Vec<JobResult<'_>>> = BTreeMap::new();
                    let records: Vec<JobRecord> = uploads
                        .iter()
                        .map(|(u, _)| JobRecord {
                            bars: u.bars,
                            error: u.error.clone(),
                            part: u.part.map(|k| uploads[k as usize].0.job),
                        })
                        .collect();
                    for (i, (u, tables)) in uploads.iter().enumerate() {
                        if reserved[i] {
                            by_batch
                                .entry(u.batch)
                                .or_default()
                                .push((u.job, tables, &records[i]));
                        }
                    }
                    let mut groups = Vec::with_capacity(by_batch.len());
                    for (batch, results) in by_batch {
                        let group = ResultGroup::new(&results).map_err(std::io::Error::other)?;
                        store.save_results(batch, &group)?;
                        groups.push((batch, group));
                    }
                    std::io::Result::Ok(groups)
                }
            };
            let bytes: usize = uploads
                .iter()
                .flat_map(|(_, t)| t.values().flatten())
                .map(crate::store::batch_bytes)
                .sum();
            // A small upload is stored on this thread: a hop to the blocking pool and back
            // costs more than its append.
            let stored = if bytes <= INLINE_STORE_BYTES {
                Ok(store_all())
            } else {
                tokio::task::spawn_blocking(store_all).await
            };
            match stored {
                Ok(Ok(g)) => groups = g,
                Ok(Err(e)) => {
                    return Err(Status::unavailable(format!("storing the results: {e}")));
                }
                Err(e) => return Err(internal(e)),
            }
        }
        let mut accepted = vec![false; n];
        let mut folds = Vec::new();
        let mut s = self.lock();
        for (i, (upload, _)) in uploads.iter().enumerate() {
            if !reserved[i] {
                continue;
            }
            let completion = match &upload.error {
                None => s
                    .scheduler
                    .complete(key(upload), upload.attempt, upload.worker),
                Some(error) => {
                    s.scheduler
                        .complete_failed(key(upload), upload.attempt, upload.worker, error)
                }
            };
            // Reserved, so it completes.
            debug_assert_eq!(completion, Completion::Accepted);
            let done = completion == Completion::Accepted;
            if done {
                s.durations.observe(upload.seconds);
                if let Some(run) = s.batches.get_mut(&upload.batch) {
                    run.bars += upload.bars;
                    // A job whose data failed has failed: error rows and cash, when the batch
                    // ends.
                    if upload.error.is_none() {
                        run.folding += 1;
                        folds.push((
                            i,
                            run.fold.clone(),
                            run.plan.jobs[upload.job as usize].capital,
                        ));
                    }
                }
            }
            accepted[i] = done;
        }
        unreserve.keys.clear();
        let kept: Vec<_> = groups
            .into_iter()
            .filter_map(|(batch, group)| Some((s.batches.get(&batch)?.fold.clone(), group)))
            .collect();
        drop(s);
        // Added outside the state lock (a grid's sleeves are many curves); the batch does
        // not finish while any is being added.
        for (i, fold, capital) in &folds {
            let (upload, tables) = &uploads[*i];
            let mut fold = fold.lock().unwrap_or_else(|e| e.into_inner());
            fold.add(*capital, tables, upload.part.is_some());
        }
        for (fold, group) in kept {
            fold.lock().unwrap_or_else(|e| e.into_inner()).keep(&group);
        }
        let mut s = self.lock();
        for (i, _, _) in &folds {
            if let Some(run) = s.batches.get_mut(&uploads[*i].0.batch) {
                run.folding -= 1;
                run.folded += 1;
            }
        }
        let batches: BTreeSet<u64> = uploads.iter().map(|(u, _)| u.batch).collect();
        for batch in batches {
            self.finish_if_done(&mut s, batch);
        }
        Ok((accepted, resend))
    }

    /// Once every job of `batch` has ended, writes its tables and summary on a thread of
    /// their own: a big batch's tables take seconds, and the state lock (every lease,
    /// upload and status call) must not wait on them. The batch counts as finished when
    /// its summary is in.
    fn finish_if_done(&self, s: &mut State, batch: u64) {
        // Finished batches stay in the map; skip them before counting their jobs.
        if s.batches
            .get(&batch)
            .is_none_or(|run| run.summary.is_some() || run.aggregating || run.folding > 0)
        {
            return;
        }
        let Ok(progress) = s.scheduler.progress(batch) else {
            return;
        };
        let Some(run) = s.batches.get_mut(&batch) else {
            return;
        };
        if !progress.finished() {
            return;
        }
        // Each job's rows follow its final status: a job cancelled while its result was
        // being stored is a cancelled job, whatever the store holds.
        let ends: Vec<JobEnd> = (0..run.plan.jobs.len() as u32)
            .map(|j| match s.scheduler.status(JobKey { batch, job: j }) {
                Some(JobStatus::Failed { error }) => JobEnd::Failed(error.clone()),
                Some(JobStatus::Cancelled) => JobEnd::Cancelled,
                _ => JobEnd::Done,
            })
            .collect();
        run.aggregating = true;
        // The sums hold every stored result only if each job done was added in this process.
        let done = ends.iter().filter(|e| matches!(e, JobEnd::Done)).count();
        let mut fold = std::mem::take(&mut *run.fold.lock().unwrap_or_else(|e| e.into_inner()));
        if run.folded != done {
            fold.sums = None;
        }
        let ended = Ended {
            plan: run.plan.clone(),
            bars: run.bars,
            started: run.started,
            ends,
            sums: fold.sums,
            kept: fold.kept,
        };
        let (store, state, finished) = (
            self.store.clone(),
            self.state.clone(),
            self.finished.clone(),
        );
        std::thread::spawn(move || {
            let summary = match aggregate(ended, batch, store.as_ref()) {
                Ok(v) => v,
                Err(e) => json!({"error": format!("aggregating results: {e:#}")}),
            };
            if let Err(e) = store.save_summary(batch, &summary) {
                eprintln!("xt-coordinator: storing the summary of batch {batch}: {e}");
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(run) = s.batches.get_mut(&batch) {
                run.summary = Some(summary);
                run.aggregating = false;
            }
            drop(s);
            finished.notify_waiters();
        });
    }
}

/// Lets go of jobs reserved for storing when dropped (see `Scheduler::release`).
struct Unreserve<'a> {
    coordinator: &'a Coordinator,
    keys: Vec<JobKey>,
}

impl Drop for Unreserve<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut s = self.coordinator.lock();
        for &key in &self.keys {
            s.scheduler.release(key);
        }
    }
}

/// What the aggregation of a batch whose jobs have all ended reads.
struct Ended {
    plan: Arc<Planned>,
    bars: u64,
    started: Instant,
    ends: Vec<JobEnd>,
    /// The sleeves of every job done, summed as they were accepted.
    sums: Option<PortfolioSum>,
    /// The tables to write of the jobs done that were kept in memory.
    kept: Vec<Option<(Arc<ResultGroup>, usize)>>,
}

/// What a running batch's accepted results add up to as they come in, so that its end need
/// not read them back from the store: the portfolio, and each job's tables to write.
#[derive(Default)]
struct Fold {
    /// The portfolio's sums; `None` when they would take more memory than [`FOLD_CELLS`]
    /// (the end sums the sleeves from the store then, as after a restart).
    sums: Option<PortfolioSum>,
    /// Each job's tables to write (`metrics`, and `trades` and `equity` when asked for): the
    /// group it was stored in, and its place there. A job with none here (past
    /// [`KEPT_BYTES`], or accepted before a restart) is read from the store at the end.
    kept: Vec<Option<(Arc<ResultGroup>, usize)>>,
    kept_bytes: usize,
}

/// Bytes of a batch's job tables held in memory until it ends; the rest are read back from
/// the store (an equity table of a big grid runs to gigabytes).
pub const KEPT_BYTES: usize = 64 << 20;

/// Bytes of tables up to which an upload is stored on the runtime thread that received it
/// (above, on the blocking pool: a grid's equity takes milliseconds to write).
const INLINE_STORE_BYTES: usize = 1 << 20;

/// The tables a batch's end writes for each job.
const JOB_TABLES: [&str; 3] = ["metrics", "trades", "equity"];

/// Every table an upload may carry: the job tables and the sleeves, alone or in a part.
const UPLOAD_TABLES: [&str; 7] = [
    "metrics",
    "trades",
    "equity",
    "calendar",
    "sleeves",
    "part_calendar",
    "part_sums",
];

impl Fold {
    fn new(dates: &[Date], combos: usize, jobs: usize) -> Self {
        let curves = combos + 1;
        Fold {
            sums: (dates.len().saturating_mul(curves) <= FOLD_CELLS)
                .then(|| PortfolioSum::new(dates.to_vec(), curves)),
            kept: vec![None; jobs],
            kept_bytes: 0,
        }
    }

    /// A batch resumed after a restart: what was accepted before is in the store only.
    fn restarted(jobs: usize) -> Self {
        Fold {
            sums: None,
            kept: vec![None; jobs],
            kept_bytes: 0,
        }
    }

    /// Adds an accepted job's result to the sums (`summed`: its sleeves are in a part).
    fn add(&mut self, capital: f64, tables: &Tables, summed: bool) {
        if let Some(sums) = &mut self.sums {
            add_result(sums, capital, tables, summed);
        }
    }

    /// Keeps the tables to write of a group of accepted results, while they fit. Without
    /// sums the end reads every result back from the store anyway, so nothing is kept.
    fn keep(&mut self, group: &ResultGroup) {
        if self.sums.is_none() {
            return;
        }
        let Ok(group) = group.owned(&JOB_TABLES) else {
            return;
        };
        let group = Arc::new(group);
        let bytes = group.bytes();
        if self.kept_bytes + bytes > KEPT_BYTES {
            return;
        }
        self.kept_bytes += bytes;
        for (k, (job, _)) in group.jobs.iter().enumerate() {
            if let Some(slot) = self.kept.get_mut(*job as usize) {
                *slot = Some((group.clone(), k));
            }
        }
    }
}

/// Cells (dates x curves) of a portfolio summed as results come in; a bigger one (a grid of
/// thousands of parameter sets over decades) is summed when the batch ends instead, so a
/// running batch never holds more than this in sums (16 bytes a cell).
pub const FOLD_CELLS: usize = 1 << 23;

/// Adds one job's sleeves (its `calendar` and `sleeves` tables, see
/// [`xt_wire::upload::calendar_schema`]) to the portfolio; a job with none (no bar in
/// range) stays in cash.
fn add_sleeves(sums: &mut PortfolioSum, capital: f64, tables: &Tables) {
    let dates = column::<Date32Type>(tables, "calendar");
    let equity = column::<Float64Type>(tables, "sleeves");
    if dates.is_empty() {
        sums.add_cash(capital);
        return;
    }
    // Checked on upload: curves x dates values.
    for (curve, values) in equity.chunks_exact(dates.len()).enumerate() {
        sums.add_sleeve(curve, capital, &dates, values);
    }
}

/// Adds one job's result to the portfolio: its own sleeves or, when they were `summed` into
/// a part, the part if it carries it (the part's other attempts add nothing of their own).
fn add_result(sums: &mut PortfolioSum, capital: f64, tables: &Tables, summed: bool) {
    if !summed {
        add_sleeves(sums, capital, tables);
        return;
    }
    if !tables.contains_key("part_sums") {
        return;
    }
    let dates = column::<Date32Type>(tables, "part_calendar");
    let hi = column::<arrow::datatypes::Int64Type>(tables, "part_sums");
    let lo = column_at::<arrow::datatypes::UInt64Type>(tables, "part_sums", 1);
    let fixed = |k: usize| FixedSum::from_raw(((hi[k] as i128) << 64) | lo[k] as i128);
    // Checked on upload: curves x (1 + dates) sums.
    let curves = sums.curves.len();
    let mut part = PortfolioSum::new(dates.to_vec(), curves);
    let mut before = Vec::with_capacity(curves);
    for (c, row) in part.curves.iter_mut().enumerate() {
        let at = c * (dates.len() + 1);
        before.push(fixed(at));
        for (d, v) in row.iter_mut().enumerate() {
            *v = fixed(at + 1 + d);
        }
    }
    sums.add_part(&part, &before);
}

/// Rejects an upload that could not have come from running its job: a job the batch does
/// not have, a table with the wrong columns, a sleeve for a curve that does not exist.
/// Checked before anything is stored, so a broken client cannot spoil a batch's results.
fn check_upload(run: &BatchRun, upload: &Upload, tables: &Tables) -> Result<(), String> {
    if upload.job as usize >= run.plan.jobs.len() {
        return Err(format!(
            "batch {} has {} jobs; there is no job {}",
            upload.batch,
            run.plan.jobs.len(),
            upload.job
        ));
    }
    for (name, batches) in tables {
        let Some(table) = UploadTable::from_name(name) else {
            return Err(format!("table {name}: an upload has no such table"));
        };
        let expected = table.schema();
        for b in batches {
            if b.schema().fields() != expected.fields() {
                return Err(format!(
                    "table {name}: columns {:?} are not the {name} schema",
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    let curves = run.plan.combos.len() + 1;
    let dates = column::<Date32Type>(tables, "calendar");
    let equity = column::<Float64Type>(tables, "sleeves");
    if equity.len() != curves * dates.len() {
        return Err(format!(
            "table sleeves: {} equity values for {} dates; the batch has {curves} curves (its parameter sets and the benchmark)",
            equity.len(),
            dates.len()
        ));
    }
    ascending("calendar", &dates)?;
    if let Some(v) = equity
        .iter()
        .find(|v| !v.is_finite() || v.abs() > xt_shared::spec::MAX_EQUITY)
    {
        return Err(format!("table sleeves: equity {v} is not a finite amount"));
    }
    if upload.part.is_some() && (tables.contains_key("calendar") || tables.contains_key("sleeves"))
    {
        return Err("an attempt summed into a part sends no calendar or sleeves of its own".into());
    }
    if tables.contains_key("part_calendar") || tables.contains_key("part_sums") {
        let dates = column::<Date32Type>(tables, "part_calendar");
        let hi = column::<arrow::datatypes::Int64Type>(tables, "part_sums");
        if hi.len() != curves * (dates.len() + 1) {
            return Err(format!(
                "table part_sums: {} sums for {} dates; the batch has {curves} curves, each a sum before the first date and one a date",
                hi.len(),
                dates.len()
            ));
        }
        ascending("part_calendar", &dates)?;
    }
    Ok(())
}

fn ascending(table: &str, dates: &[Date]) -> Result<(), String> {
    match dates.windows(2).find(|w| w[0] >= w[1]) {
        Some(w) => Err(format!(
            "table {table}: dates must ascend, {} then {}",
            w[0], w[1]
        )),
        None => Ok(()),
    }
}

/// An attempt summed into a part (see [`Upload::part`]): the part's attempt, of the same
/// batch, names itself and carries the part's tables, which no other attempt does; an
/// attempt whose data failed has no sleeves to sum.
fn check_part(uploads: &[Upload], i: usize, tables: &Tables) -> Result<(), String> {
    let upload = &uploads[i];
    let carries = tables.contains_key("part_calendar") && tables.contains_key("part_sums");
    let Some(k) = upload.part else {
        return if tables.contains_key("part_calendar") || tables.contains_key("part_sums") {
            Err("tables part_calendar and part_sums come with the attempt a part names".into())
        } else {
            Ok(())
        };
    };
    if upload.error.is_some() {
        return Err("an attempt whose data failed has no sleeves to sum into a part".into());
    }
    if uploads
        .get(k as usize)
        .is_none_or(|lead| lead.part != Some(k) || lead.batch != upload.batch)
    {
        return Err(format!(
            "part {k}: no attempt of batch {} at that index names itself as the part",
            upload.batch
        ));
    }
    if (k as usize == i) != carries {
        return Err(format!(
            "part {k}: the attempt at index {k} carries tables part_calendar and part_sums, and only it"
        ));
    }
    Ok(())
}

/// The values of a table's only column, its record batches joined (borrowed when it has
/// one, as a worker sends it).
fn column<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    tables: &'a Tables,
    name: &str,
) -> std::borrow::Cow<'a, [T::Native]> {
    column_at::<T>(tables, name, 0)
}

/// The values of column `index` of a table (checked against its schema on upload).
fn column_at<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    tables: &'a Tables,
    name: &str,
    index: usize,
) -> std::borrow::Cow<'a, [T::Native]> {
    use arrow::array::AsArray;
    match tables.get(name).map(Vec::as_slice) {
        None | Some([]) => std::borrow::Cow::Borrowed(&[]),
        Some([b]) => std::borrow::Cow::Borrowed(b.column(index).as_primitive::<T>().values()),
        Some(parts) => parts
            .iter()
            .flat_map(|b| b.column(index).as_primitive::<T>().values().iter().copied())
            .collect(),
    }
}

/// How a job of a finished batch ended.
enum JobEnd {
    /// Its result is stored (its rows may still be errors, if its data failed).
    Done,
    /// Given up after its attempts, with the last error.
    Failed(String),
    Cancelled,
}

/// Writes a finished batch's four tables and returns its summary.
fn aggregate(mut run: Ended, batch: u64, store: &dyn StateStore) -> anyhow::Result<Value> {
    let folded = run.sums.is_some();
    let kept = std::mem::take(&mut run.kept);
    let mut sums = run
        .sums
        .take()
        .unwrap_or_else(|| PortfolioSum::new(run.plan.dates.to_vec(), run.plan.combos.len() + 1));
    let ends = &run.ends;
    // With the sleeves summed already, only the tables to write are decoded.
    let wanted: &[&str] = if folded { &JOB_TABLES } else { &UPLOAD_TABLES };
    // Each job's rows go to the files in job order, gathered a row group at a time: memory
    // holds what was kept and one row group of each table, not the batch's tables read
    // back (an equity table runs to millions of rows).
    let mut files = TableFiles::create(store, batch, &run.plan.spec)?;
    for (j, (job, end)) in run.plan.jobs.iter().zip(ends.iter()).enumerate() {
        let capital = job.capital;
        let result = match end {
            JobEnd::Done => match kept.get(j).and_then(Option::as_ref).filter(|_| folded) {
                Some((group, k)) => {
                    files.write_kept(group, *k)?;
                    continue;
                }
                None => store.load_result(batch, j as u32, wanted)?.ok_or_else(|| {
                    anyhow::anyhow!("job {j} is done but the store has no result for it")
                }),
            },
            JobEnd::Failed(error) => Err(anyhow::anyhow!("{error}")),
            JobEnd::Cancelled => Err(anyhow::anyhow!("cancelled")),
        };
        let (record, result) = match result {
            Ok(r) => r,
            Err(error) => {
                // No result: error rows, a sleeve in cash.
                let mut w = TableWriter::new(&job.symbol, false, false);
                for p in run.plan.combos.iter() {
                    w.push_error(p.json(), &error.to_string());
                }
                files.write("metrics", &[w.finish()?.metrics])?;
                sums.add_cash(capital);
                continue;
            }
        };
        if !folded {
            add_result(&mut sums, capital, &result, record.part.is_some());
        }
        for (name, batches) in &result {
            files.write(name, batches)?;
        }
    }
    let (portfolio, portfolio_metrics) =
        finish_portfolio(&run.plan.combos, run.plan.spec.capital, &sums)?;
    files.finish(&portfolio)?;
    let summary = json!({
        "jobs": run.plan.jobs.len(),
        "failed": ends.iter().filter(|e| matches!(e, JobEnd::Failed(_))).count(),
        "cancelled": ends.iter().filter(|e| matches!(e, JobEnd::Cancelled)).count(),
        "elapsed_seconds": run.started.elapsed().as_secs_f64(),
        "bars": run.bars,
        "portfolio": portfolio_summary(&portfolio_metrics),
    });
    Ok(summary)
}

/// A summary's `portfolio`: each parameter set's portfolio metrics against the benchmark.
pub fn portfolio_summary(
    metrics: &[(String, xt_shared::metrics::PortfolioMetrics)],
) -> serde_json::Map<String, Value> {
    metrics
        .iter()
        .map(|(p, m)| (p.clone(), serde_json::to_value(m).unwrap_or(Value::Null)))
        .collect()
}

/// Writes a batch's tables to `store` as a finished batch's are: each of `tables`
/// (`metrics`, `trades`, `equity`: its rows in job order) that the spec keeps, and the
/// portfolio, with the same writer settings, each committed when whole. For a batch run
/// elsewhere (the bench's in-process runner) to end where the cluster's batches end.
pub fn write_tables(
    store: &dyn StateStore,
    batch: u64,
    spec: &BatchSpec,
    tables: &[(&str, &[RecordBatch])],
    portfolio: &RecordBatch,
) -> anyhow::Result<()> {
    let mut files = TableFiles::create(store, batch, spec)?;
    for (name, batches) in tables {
        files.write(name, batches)?;
    }
    files.finish(portfolio)
}

/// A finished batch's Parquet files, written job by job. Each is written under a temporary
/// name and renamed when whole, so a reader never sees half a table. Rows are gathered and
/// handed to the writer a row group at a time: a write per job costs more than its rows.
struct TableFiles {
    writers: Vec<TableFile>,
    portfolio: Option<Box<dyn TableSink>>,
}

struct TableFile {
    table: Table,
    schema: arrow::datatypes::SchemaRef,
    sink: Box<dyn TableSink>,
    pending: Vec<RecordBatch>,
    rows: usize,
}

impl TableFile {
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows > 0 {
            let rows = arrow::compute::concat_batches(&self.schema, &self.pending)?;
            self.sink.write(&rows)?;
        }
        self.pending.clear();
        self.rows = 0;
        Ok(())
    }
}

impl TableFiles {
    fn create(store: &dyn StateStore, batch: u64, spec: &BatchSpec) -> anyhow::Result<Self> {
        let mut writers = Vec::new();
        for (table, schema) in [
            (Table::Metrics, &*xt_shared::schema::METRICS),
            (Table::Trades, &*xt_shared::schema::TRADES),
            (Table::Equity, &*xt_shared::schema::EQUITY),
        ] {
            if spec.wants(table) {
                writers.push(TableFile {
                    table,
                    schema: schema.clone(),
                    sink: store.create_table(batch, table.name(), schema.clone())?,
                    pending: Vec::new(),
                    rows: 0,
                });
            }
        }
        let portfolio = spec
            .wants(Table::Portfolio)
            .then(|| {
                store.create_table(
                    batch,
                    Table::Portfolio.name(),
                    xt_shared::schema::PORTFOLIO.clone(),
                )
            })
            .transpose()?;
        Ok(TableFiles { writers, portfolio })
    }

    /// Adds one job's rows of table `name` (if the batch writes it).
    fn write(&mut self, name: &str, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let Some(f) = self.writers.iter_mut().find(|f| f.table.name() == name) else {
            return Ok(());
        };
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            f.rows += b.num_rows();
            f.pending.push(b.clone());
        }
        if f.rows >= TABLE_ROW_GROUP {
            f.flush()?;
        }
        Ok(())
    }

    /// Adds the rows of the `k`th job of a kept group.
    fn write_kept(&mut self, group: &ResultGroup, k: usize) -> anyhow::Result<()> {
        for t in &group.tables {
            if let Some(Some((start, rows))) = t.spans.get(k) {
                self.write(&t.name, &t.slice(*start, *rows))?;
            }
        }
        Ok(())
    }

    /// Writes what is left and commits every table: the job tables first, the portfolio
    /// last.
    fn finish(self, portfolio: &RecordBatch) -> anyhow::Result<()> {
        let mut sinks = Vec::new();
        for mut f in self.writers {
            f.flush()?;
            sinks.push(f.sink);
        }
        if let Some(mut sink) = self.portfolio {
            sink.write(portfolio)?;
            sinks.push(sink);
        }
        for sink in sinks {
            sink.commit()?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Jobs for Coordinator {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let _ = r;
        let worker = self.lock().scheduler.register(Instant::now());
        Ok(Response::new(RegisterReply {
            worker,
            heartbeat_ms: self.heartbeat.as_millis() as u64,
        }))
    }

    async fn lease(&self, r: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let r = r.into_inner();
        let jobs = waited(
            &self.work,
            r.wait_ms,
            || self.lease_now(r.worker, r.slots as usize),
            |jobs| !jobs.is_empty(),
        )
        .await?;
        Ok(Response::new(LeaseReply { jobs }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let cancelled = self
            .lock()
            .scheduler
            .heartbeat(r.into_inner().worker, Instant::now())
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(HeartbeatReply {
            cancelled: cancelled
                .into_iter()
                .map(|k| JobRef {
                    batch: k.batch,
                    job: k.job,
                })
                .collect(),
        }))
    }

    async fn fail(&self, r: Request<FailRequest>) -> Result<Response<FailReply>, Status> {
        let r = r.into_inner();
        let key = JobKey {
            batch: r.batch,
            job: r.job,
        };
        let requeued = self.fail_attempt(&mut self.lock(), key, r.worker, &r.error);
        Ok(Response::new(FailReply { requeued }))
    }

    async fn drain(&self, r: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        self.lock().scheduler.drain(r.into_inner().worker);
        // A lease call of this worker still waiting answers now, with nothing.
        self.work.notify_waiters();
        Ok(Response::new(DrainReply {}))
    }

    async fn submit(&self, r: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let r = r.into_inner();
        let spec: BatchSpec = serde_json::from_str(&r.spec_json)
            .map_err(|e| Status::invalid_argument(format!("batch spec: {e}")))?;
        let this = self.clone();
        // Planning reads every member's dates: off the async threads.
        let (batch, jobs) =
            tokio::task::spawn_blocking(move || this.submit(spec, &r.tenant, &r.owner))
                .await
                .map_err(internal)??;
        Ok(Response::new(SubmitReply { batch, jobs }))
    }

    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let r = r.into_inner();
        let status = waited(
            &self.finished,
            r.wait_ms,
            || self.status_of(&self.lock(), r.batch),
            |s| s.finished,
        )
        .await?;
        Ok(Response::new(status))
    }

    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let r = r.into_inner();
        let s = self.lock();
        let mut ids: Vec<u64> = s
            .batches
            .iter()
            .filter(|(_, run)| r.tenant.is_empty() || run.tenant == r.tenant)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let total = ids.len() as u32;
        let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) } as usize;
        let batches = ids
            .into_iter()
            .skip(r.offset as usize)
            .take(limit)
            .map(|id| self.status_of(&s, id))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListReply { batches, total }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let s = self.lock();
        let mut reply = StatsReply {
            workers: s.scheduler.workers() as u32,
            batches: s.batches.len() as u32,
            duration_bounds: s.durations.bounds.clone(),
            duration_counts: s.durations.counts.clone(),
            duration_sum: s.durations.sum,
            duration_count: s.durations.count,
            ..StatsReply::default()
        };
        for (id, run) in &s.batches {
            if let Ok(p) = s.scheduler.progress(*id) {
                reply.queued += p.queued as u64;
                reply.running += p.running as u64;
                reply.done += p.done as u64;
                reply.failed += p.failed as u64;
                reply.cancelled += p.cancelled as u64;
            }
            reply.bars += run.bars;
            if run.summary.is_none() {
                reply.batches_running += 1;
            }
        }
        Ok(Response::new(reply))
    }

    async fn universes(
        &self,
        _: Request<UniversesRequest>,
    ) -> Result<Response<UniversesReply>, Status> {
        let roots = self.config.data_roots.clone().unwrap_or_default();
        let files = tokio::task::spawn_blocking(move || xt_shared::open::universe_files(&roots))
            .await
            .map_err(internal)?;
        Ok(Response::new(UniversesReply { files }))
    }

    async fn cancel(&self, r: Request<CancelRequest>) -> Result<Response<CancelReply>, Status> {
        let id = r.into_inner().batch;
        let mut s = self.lock();
        s.scheduler
            .cancel(id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        self.finish_if_done(&mut s, id);
        Ok(Response::new(CancelReply {}))
    }
}

type FlightStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Coordinator {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    /// Receives the tables of one or more job attempts (see [`Upload`] for the layout): the
    /// descriptor's `cmd` lists the attempts, each table's schema message names it, each
    /// record batch names its attempt.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let descriptor: FlightDescriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first message must carry a descriptor"))?;
        let uploads: Vec<Upload> = serde_json::from_slice(&descriptor.cmd)
            .map_err(|e| Status::invalid_argument(format!("descriptor: {e}")))?;
        if uploads.is_empty() || uploads.len() > MAX_UPLOADS {
            return Err(Status::invalid_argument(format!(
                "an upload carries 1 to {MAX_UPLOADS} job attempts, not {}",
                uploads.len()
            )));
        }
        let all: BoxStream<'static, Result<FlightData, arrow_flight::error::FlightError>> =
            stream::once(async move { Ok(first) })
                .chain(input.map_err(arrow_flight::error::FlightError::from))
                .boxed();
        let mut decoder = FlightDataDecoder::new(all);
        let mut tables: Vec<Tables> = vec![Tables::new(); uploads.len()];
        let mut table: Option<String> = None;
        while let Some(message) = decoder
            .try_next()
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            match message.payload {
                DecodedPayload::Schema(_) => {
                    let name = std::str::from_utf8(&message.inner.app_metadata)
                        .ok()
                        .filter(|n| UPLOAD_TABLES.contains(n))
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "each table's schema must name it in app_metadata: one of {}",
                                UPLOAD_TABLES.join(", ")
                            ))
                        })?;
                    table = Some(name.to_string());
                }
                DecodedPayload::RecordBatch(b) => {
                    let name = table.clone().ok_or_else(|| {
                        Status::invalid_argument("a record batch before its schema")
                    })?;
                    let owners = owners(&message.inner.app_metadata, b.num_rows(), uploads.len())
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "each record batch must name in app_metadata whose rows it carries: an attempt's index below {}, or `i:n,j:m,...` (n rows of attempt i, then m of j) adding up to its {} rows",
                                uploads.len(),
                                b.num_rows()
                            ))
                        })?;
                    let mut offset = 0;
                    for (i, rows) in owners {
                        let part = if rows == b.num_rows() {
                            b.clone()
                        } else {
                            b.slice(offset, rows)
                        };
                        offset += rows;
                        tables[i].entry(name.clone()).or_default().push(part);
                    }
                }
                DecodedPayload::None => {}
            }
        }
        // Each attempt is judged on its own: one that could not have come from running its
        // job (or names a batch this coordinator does not have) is refused and its job tried
        // again, as if its worker had failed it; the others go on.
        let verdicts: Vec<Result<(), String>> = {
            let s = self.lock();
            uploads
                .iter()
                .zip(&tables)
                .enumerate()
                .map(|(i, (upload, tables))| match s.batches.get(&upload.batch) {
                    None => Err(format!("unknown batch {}", upload.batch)),
                    Some(run) => check_upload(run, upload, tables)
                        .and_then(|()| check_part(&uploads, i, tables)),
                })
                .collect()
        };
        // A part's attempts stand or fall together: its sums hold all their sleeves.
        let mut broken: HashMap<u32, u32> = HashMap::new();
        for (u, v) in uploads.iter().zip(&verdicts) {
            if let (Some(k), Err(_)) = (u.part, v) {
                broken.entry(k).or_insert(u.job);
            }
        }
        let verdicts: Vec<Result<(), String>> = verdicts
            .into_iter()
            .zip(&uploads)
            .map(
                |(verdict, upload)| match (verdict, upload.part.and_then(|k| broken.get(&k))) {
                    (Ok(()), Some(job)) => Err(format!(
                        "its sleeves are summed with those of job {job}, whose result was refused"
                    )),
                    (verdict, _) => verdict,
                },
            )
            .collect();
        let mut accepted = vec![false; uploads.len()];
        let (mut valid, mut positions) = (Vec::new(), Vec::new());
        for (i, ((upload, tables), verdict)) in
            uploads.into_iter().zip(tables).zip(verdicts).enumerate()
        {
            match verdict {
                Ok(()) => {
                    positions.push(i);
                    valid.push((upload, tables));
                }
                Err(e) => {
                    eprintln!(
                        "xt-coordinator: refused batch {} job {} attempt {} from worker {}: {e}",
                        upload.batch, upload.job, upload.attempt, upload.worker
                    );
                    let key = JobKey {
                        batch: upload.batch,
                        job: upload.job,
                    };
                    let error = format!("its result was refused: {e}");
                    self.fail_attempt(&mut self.lock(), key, upload.worker, &error);
                }
            }
        }
        // On a task of its own: a worker that goes away mid-upload drops this call, and
        // the jobs reserved for storing must still be completed or let go.
        let this = self.clone();
        let (done, again) = tokio::spawn(async move { this.accept(valid).await })
            .await
            .map_err(internal)??;
        let mut resend = Vec::new();
        for ((i, a), r) in positions.into_iter().zip(done).zip(again) {
            accepted[i] = a;
            if r {
                resend.push(i as u32);
            }
        }
        let reply = serde_json::to_vec(&UploadReply { accepted, resend }).map_err(internal)?;
        Ok(Response::new(
            stream::once(async move {
                Ok(PutResult {
                    app_metadata: reply.into(),
                })
            })
            .boxed(),
        ))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }
    /// The tables of finished batches; `criteria.expression` may be `{"tenant": "..."}`.
    async fn list_flights(
        &self,
        r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let expression = r.into_inner().expression;
        let tenant = if expression.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_slice(&expression)
                .map_err(|e| Status::invalid_argument(format!("criteria: {e}")))?;
            v.get("tenant").and_then(|t| t.as_str()).map(str::to_string)
        };
        let finished: Vec<(u64, Vec<Table>)> = {
            let s = self.lock();
            let mut v: Vec<_> = s
                .batches
                .iter()
                .filter(|(_, run)| run.summary.is_some())
                .filter(|(_, run)| tenant.as_ref().is_none_or(|t| &run.tenant == t))
                .map(|(id, run)| {
                    let tables = Table::ALL
                        .into_iter()
                        .filter(|t| run.plan.spec.wants(*t))
                        .collect();
                    (*id, tables)
                })
                .collect();
            v.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
            v
        };
        let mut infos = Vec::new();
        for (batch, tables) in finished {
            for table in tables {
                let ticket = format!("{batch}/{}", table.name());
                let Ok(Some(reader)) = self.store.open_table(batch, table.name()) else {
                    continue;
                };
                let rows = reader.rows as i64;
                let info = FlightInfo::new()
                    .try_with_schema(&reader.schema)
                    .map_err(internal)?
                    .with_descriptor(FlightDescriptor::new_path(vec![
                        batch.to_string(),
                        table.name().to_string(),
                    ]))
                    .with_endpoint(
                        arrow_flight::FlightEndpoint::new().with_ticket(Ticket::new(ticket)),
                    )
                    .with_total_records(rows);
                infos.push(Ok(info));
            }
        }
        Ok(Response::new(stream::iter(infos).boxed()))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    /// Streams a finished batch's table; the ticket is `batch_id/table`. Read from the store
    /// a part at a time, so a table of any size streams in bounded memory.
    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = String::from_utf8(r.into_inner().ticket.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8"))?;
        let (batch, table) = self.finished_table(&ticket)?;
        let TableReader {
            schema, batches, ..
        } = self
            .store
            .open_table(batch, table.name())
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("{ticket}: the store has no such table")))?;
        // The store's reader blocks: it runs on a blocking thread, handing batches over a
        // small channel (back-pressure: a slow client holds at most a few batches here).
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            for batch in batches {
                let item = batch.map_err(arrow_flight::error::FlightError::from);
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
        let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(data.boxed()))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

/// Longest a lease call waits for work, or a status call for its batch to finish.
pub const MAX_WAIT_MS: u32 = 1_000;

/// Calls `look` until its answer is `ready` or `wait_ms` (at most [`MAX_WAIT_MS`]) have
/// passed, looking again whenever `wake` is notified. Registered for the wake-up before each
/// look, so one in between is not missed.
async fn waited<T>(
    wake: &tokio::sync::Notify,
    wait_ms: u32,
    look: impl Fn() -> Result<T, Status>,
    ready: impl Fn(&T) -> bool,
) -> Result<T, Status> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(MAX_WAIT_MS).into());
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let answer = look()?;
        if ready(&answer) || tokio::time::Instant::now() >= deadline {
            return Ok(answer);
        }
        let _ = tokio::time::timeout_at(deadline, woken).await;
    }
}

/// Most job attempts one upload may carry.
pub const MAX_UPLOADS: usize = 4096;

/// Serves both services on `listener` until `shutdown` resolves, reaping expired leases.
pub async fn serve(
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let reaper = coordinator.clone();
    let period = coordinator.heartbeat;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            reaper.reap();
        }
    });
    xt_wire::transport::server()
        .add_service(
            xt_wire::jobs_server::JobsServer::new(coordinator.clone())
                .max_decoding_message_size(xt_wire::transport::MAX_JOBS_MESSAGE),
        )
        .add_service(
            arrow_flight::flight_service_server::FlightServiceServer::new(coordinator)
                .max_decoding_message_size(xt_wire::transport::MAX_FLIGHT_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|s| {
                let _ = s.set_nodelay(true);
                s
            }),
            shutdown,
        )
        .await?;
    Ok(())
}
