//! The coordinator: its state (batches, the scheduler, the store) and the services on its
//! one port. Job attempts end in Flight `DoPut`s, each carrying one or more of them (see
//! [`Upload`]); the first attempt whose upload is stored completes its job, later ones are
//! acknowledged and dropped, so every job appears exactly once.
//!
//! One concept a file: `admission` (submit, limits, status), `leasing`, `intake` (an
//! upload's attempts checked, reserved, stored, completed), `totals` (a running batch's
//! sums and kept tables), `finish` (a batch's end: tables and summary), `digest` (the
//! summary for people: rankings, benchmark, trading, failures by reason), `result_files`,
//! `retention` (a finished batch deleted, by request or by age); `grpc` and `flight` are
//! the adapters from the wire to these.

mod admission;
mod digest;
mod error;
mod finish;
mod flight;
mod grpc;
mod intake;
mod leasing;
mod library;
mod result_files;
mod retention;
mod totals;
mod warnings;

pub use admission::BatchView;
use digest::Digest;
pub use error::CoordinatorError;
pub use finish::portfolio_summary;
pub use flight::MAX_UPLOADS;
use intake::*;
pub use leasing::MAX_WAIT_MS;
use leasing::*;
pub use result_files::write_tables;
use result_files::*;
use totals::*;
pub use totals::{FOLD_CELLS, KEPT_BYTES};

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
use serde::Serialize;
use serde_json::{Value, json};
use tonic::{Request, Response, Status, Streaming};
use xt_objects::DataAccess;
use xt_shared::funding::Funding;
use xt_shared::job::{JobSpec, plan};
use xt_shared::open::{DataRoots, resolve_universe};
use xt_shared::portfolio::{FixedSum, PortfolioSum};
use xt_shared::spec::{DataSpec, Table};
use xt_shared::strategy::{Chosen, ParamSet, strategy_combos};
use xt_shared::tables::{TableWriter, finish_portfolio};
use xt_shared::{BatchSpec, Date};
use xt_wire::auth::ClusterSecret;
use xt_wire::batches_server::Batches;
use xt_wire::upload::{Upload, UploadReply, UploadTable, owners};
use xt_wire::workers_server::Workers;
use xt_wire::*;

use crate::scheduler::{Completion, JobKey, JobStatus, Scheduler};
use crate::store::{
    AcceptedBatch, EmbeddedStore, JobRecord, JobResult, ResultGroup, StateStore, TABLE_ROW_GROUP,
    TableReader, TableSink, Tables,
};

/// A batch in the coordinator: what was accepted (fixed; shared with its leases and its
/// aggregation, which run outside the state lock) and where it is now.
struct BatchRun {
    batch: Arc<AcceptedBatch>,
    combos: Arc<[ParamSet]>,
    bar_evaluations: u64,
    started: Instant,
    /// What its accepted results add up to so far.
    fold: Arc<Mutex<Fold>>,
    phase: Phase,
}

/// Where a batch is in its life; every change of phase is a method below.
///
/// ```text
/// Running { folding, folded } --every job ended, nothing folding--> Finishing
/// Finishing --tables and summary written--> Finished(summary)
/// ```
/// A batch restored with its summary is `Finished`; without, `Running` (its results are
/// read back from the store when it finishes).
#[derive(Debug)]
enum Phase {
    /// Accepted results being added to its totals now (`folding`), and added so far in
    /// this process (`folded`).
    Running { folding: usize, folded: usize },
    /// Every job has ended: its tables are being written on a thread of their own.
    Finishing,
    /// Its tables and summary are stored. Shared: every status and list call hands it out.
    Finished(Arc<Value>),
}

impl Phase {
    fn new(summary: Option<Value>) -> Self {
        summary.map_or(
            Phase::Running {
                folding: 0,
                folded: 0,
            },
            |v| Phase::Finished(Arc::new(v)),
        )
    }

    /// An accepted result starts being added to the totals.
    fn fold_started(&mut self) {
        if let Phase::Running { folding, .. } = self {
            *folding += 1;
        }
    }

    /// An accepted result has been added to the totals.
    fn fold_ended(&mut self) {
        if let Phase::Running { folding, folded } = self {
            *folding -= 1;
            *folded += 1;
        }
    }

    /// Running, with nothing being added to the totals.
    fn may_finish(&self) -> bool {
        matches!(self, Phase::Running { folding: 0, .. })
    }

    /// Starts finishing; returns how many results were added to the totals in this process.
    fn finish_started(&mut self) -> usize {
        match std::mem::replace(self, Phase::Finishing) {
            Phase::Running { folded, .. } => folded,
            other => {
                *self = other;
                0
            }
        }
    }

    fn finished(&mut self, summary: Value) {
        *self = Phase::Finished(Arc::new(summary));
    }

    fn summary(&self) -> Option<&Arc<Value>> {
        match self {
            Phase::Finished(v) => Some(v),
            _ => None,
        }
    }
}

struct State {
    scheduler: Scheduler,
    /// In the distributed mode, each registered worker's member key (see
    /// `xt_wire::members`) and when it registered.
    members: HashMap<String, (u64, Instant)>,
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
    /// Data directories, object prefixes and universe files resolve only inside these.
    /// `None` serves any path: `xt local`, where the user and the service are one.
    pub data_roots: Option<DataRoots>,
    /// How planning reads bars: objects in a store through a cache on disk.
    pub data: Arc<DataAccess>,
    /// Per tenant: batches not yet finished.
    pub max_running_batches: usize,
    /// Per tenant: jobs waiting in the queue.
    pub max_queued_jobs: usize,
    /// Every gRPC and Flight call must carry it, when there is one.
    pub secret: Option<ClusterSecret>,
    /// Finished batches submitted longer ago than this are deleted (`None`: kept).
    pub retain: Option<Duration>,
    /// Tables streamed out at once; more wait their turn (up to [`DOWNLOAD_WAIT`]).
    pub max_downloads: usize,
}

/// How long a download waits for its turn before it is refused (and told to retry).
pub const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_ttl: Duration::from_secs(30),
            data_roots: None,
            data: DataAccess::with_defaults(),
            max_running_batches: 1_000,
            max_queued_jobs: 10_000_000,
            secret: None,
            retain: None,
            max_downloads: 4,
        }
    }
}

/// See [`Coordinator::queue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub queued: usize,
    pub running: usize,
    pub workers: usize,
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
    /// the coordinator's own rather than rayon's global one, which from a blocking thread
    /// planned about half as fast (bench/PROFILE.md); planning is a batch's start.
    planner: Arc<rayon::ThreadPool>,
    /// The threads finishing batches (see `finish_if_done`), joined when the service stops.
    finishing: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    /// Tables being streamed out at once: each holds a row group read and its encoding,
    /// so fifty at a time once took the process from 0.7 to 2.3 GB.
    downloads: Arc<tokio::sync::Semaphore>,
    /// Each tenant's saved strategies.
    library: Arc<Mutex<library::Library>>,
}

/// The scheduler's clock: tokio's, so a test with a paused runtime clock moves lease
/// deadlines by hand (outside a runtime it is the system's monotonic clock).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
    pub fn with_store(store: Arc<dyn StateStore>, config: Config) -> anyhow::Result<Self> {
        let lease_ttl = config.lease_ttl;
        // Worker ids from this start's clock: above any a predecessor (restarted, or another
        // coordinator before an election) handed out, unless it registered more than 4,096
        // workers a millisecond. A reused id's heartbeats would keep another's leases alive.
        let mut scheduler = Scheduler::new(lease_ttl, 3, now_ms() << 12);
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
            if stored.cancelled {
                scheduler.cancel(stored.id)?;
            }
            let bar_evaluations = stored
                .done
                .iter()
                .flatten()
                .map(|d| d.bar_evaluations)
                .sum();
            next_batch = next_batch.max(stored.id + 1);
            batches.insert(
                stored.id,
                BatchRun {
                    batch: Arc::new(r),
                    combos: combos.into(),
                    bar_evaluations,
                    started: Instant::now(),
                    // Results accepted before the restart are read from the store.
                    fold: Arc::new(Mutex::new(Fold::restarted(done.len()))),
                    phase: Phase::new(stored.summary),
                },
            );
        }
        let saved = store.load_strategies()?;
        let config_downloads = config.max_downloads.max(1);
        let coordinator = Coordinator {
            state: Arc::new(Mutex::new(State {
                scheduler,
                members: HashMap::new(),
                next_batch,
                batches,
                durations: Histogram::new(),
            })),
            store,
            work: Arc::default(),
            finished: Arc::default(),
            heartbeat: lease_ttl / 4,
            config: Arc::new(config),
            finishing: Arc::default(),
            downloads: Arc::new(tokio::sync::Semaphore::new(config_downloads)),
            library: Arc::new(Mutex::new(library::Library::restore(saved))),
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
    /// Jobs queued and leased over every batch, and the workers registered: what the
    /// workers' autoscaler reads.
    pub fn queue(&self) -> Queue {
        let s = self.lock();
        let mut q = Queue {
            workers: s.scheduler.workers(),
            ..Queue::default()
        };
        for id in s.batches.keys() {
            if let Ok(p) = s.scheduler.progress(*id) {
                q.queued += p.queued;
                q.running += p.running;
            }
        }
        q
    }

    /// Workers whose member key is not in `present` (read at `read_at`) have left: each is
    /// forgotten and its jobs are queued again at once. A worker that registered after the
    /// read is kept (its key may postdate it). Returns the members gone and the jobs queued
    /// again.
    pub fn members_left(
        &self,
        present: &std::collections::HashSet<String>,
        read_at: Instant,
    ) -> Vec<(String, usize)> {
        let mut s = self.lock();
        let gone: Vec<(String, u64)> = s
            .members
            .iter()
            .filter(|(key, (_, at))| *at <= read_at && !present.contains(*key))
            .map(|(key, (id, _))| (key.clone(), *id))
            .collect();
        let mut left = Vec::new();
        for (key, id) in gone {
            s.members.remove(&key);
            left.push((key, s.scheduler.deregister(id).len()));
        }
        if left.iter().any(|(_, n)| *n > 0) {
            self.work.notify_waiters();
        }
        left
    }

    pub fn reap(&self) {
        let mut s = self.lock();
        if !s.scheduler.expire(now()).is_empty() {
            self.work.notify_waiters();
        }
        let ids: Vec<u64> = s.batches.keys().copied().collect();
        for id in ids {
            self.finish_if_done(&mut s, id);
        }
    }
}

/// Serves both services on `listener` until `shutdown` resolves, reaping expired leases.
pub async fn serve(
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let reaper = coordinator.clone();
    let period = coordinator.heartbeat;
    // Owned by this call: stopped when it returns, however it returns.
    let mut reaper = AbortOnDrop(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            reaper.reap();
        }
    })));
    let mut retention = AbortOnDrop(coordinator.config.retain.map(|age| {
        let sweeper = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_SWEEP);
            loop {
                tick.tick().await;
                let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
                let this = sweeper.clone();
                let _ =
                    tokio::task::spawn_blocking(move || this.delete_submitted_before(cutoff)).await;
            }
        })
    }));
    let finishing = coordinator.clone();
    let served = xt_wire::transport::server(coordinator.config.secret.clone())?
        .add_service(
            xt_wire::workers_server::WorkersServer::new(coordinator.clone())
                .max_decoding_message_size(xt_wire::transport::MAX_JOBS_MESSAGE),
        )
        .add_service(
            xt_wire::batches_server::BatchesServer::new(coordinator.clone())
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
        .await;
    reaper.stop().await;
    retention.stop().await;
    // A batch's finish writes its tables and summary whole: waited for, not cut short.
    tokio::task::spawn_blocking(move || finishing.join_finishing()).await?;
    served?;
    Ok(())
}

/// How often finished batches are checked against the retention age.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// A background task that must not outlive its owner: aborted when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Aborts the task and waits until it is gone.
    async fn stop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
