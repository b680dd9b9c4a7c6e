//! The worker process's loop: register with the coordinator, pull as many jobs as there are
//! free slots (and a few rounds more when jobs are short), run each on the rayon pool, and
//! deliver finished results over Flight, gathered a few milliseconds into each upload; heartbeat
//! all along. On shutdown it takes no new jobs, finishes those it holds, and leaves. A
//! finished result is retried until the coordinator takes it.

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
use tonic::transport::Channel;
use xt_shared::BarSource;
use xt_shared::job::JobSpec;
use xt_shared::open::open_source;
use xt_shared::spec::DataSpec;
use xt_wire::jobs_client::JobsClient;
use xt_wire::upload::{
    Upload, UploadReply, calendar_schema, part_sums_schema, sleeves_schema, upload_messages,
};
use xt_wire::*;

use crate::engine::strategy::{ParamSet, Strategy};
use crate::engine::{Halt, Never};
use crate::runner::{JobError, execute, strategy_combos};
use crate::stop::{JobBudget, Stops};

/// One finished job, ready to upload.
pub struct JobOutput {
    pub tables: Vec<(&'static str, RecordBatch)>,
    /// Its sleeve's capital, and its curves (parameter sets and the benchmark).
    pub capital: f64,
    pub curves: usize,
    pub bars: u64,
    /// Why the job's data failed, when its tables are error rows.
    pub error: Option<String>,
    /// Seconds it took, reading its bars included.
    pub seconds: f64,
}

/// Runs a leased job: reads its bars from its data source, runs every combination, with
/// nothing to stop it.
pub fn run_leased(spec: &JobSpec, source: &dyn BarSource) -> Result<JobOutput, String> {
    let started = std::time::Instant::now();
    let (strategy, combos) =
        strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
            .map_err(|e| e.to_string())?;
    let control = Control {
        stops: &Stops::default(),
        cancelled: &std::sync::atomic::AtomicBool::new(false),
        budget: JobBudget {
            base: Duration::MAX,
            per_bar: Duration::ZERO,
        },
        endless: false,
    };
    run_expanded(spec, strategy, &combos, source, started, &control)
}

/// What may stop one job attempt, and its budget.
struct Control<'a> {
    stops: &'a Stops,
    cancelled: &'a std::sync::atomic::AtomicBool,
    budget: JobBudget,
    /// A test's fault: the job runs its engine over and over until something stops it.
    endless: bool,
}

/// What a strategy's parameter sets are expanded from: the name, `params` and `grid`.
type StrategyKey = (
    String,
    Option<std::collections::BTreeMap<String, serde_json::Value>>,
    Option<std::collections::BTreeMap<String, Vec<serde_json::Value>>>,
);

/// A strategy and its parameter sets, expanded once for the jobs that share them (a batch's
/// jobs all do): expanding them again for every job cost about 1.2 ms of a 300-job batch
/// in a profile.
#[derive(Default)]
struct Expanded {
    last: Option<(StrategyKey, &'static dyn Strategy, Arc<Vec<ParamSet>>)>,
}

impl Expanded {
    fn get(
        &mut self,
        spec: &JobSpec,
    ) -> Result<(&'static dyn Strategy, Arc<Vec<ParamSet>>), String> {
        if let Some(((name, params, grid), strategy, combos)) = &self.last
            && *name == spec.strategy
            && *params == spec.params
            && *grid == spec.grid
        {
            return Ok((*strategy, combos.clone()));
        }
        let (strategy, combos) =
            strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
                .map_err(|e| e.to_string())?;
        let combos = Arc::new(combos);
        let key = (
            spec.strategy.clone(),
            spec.params.clone(),
            spec.grid.clone(),
        );
        self.last = Some((key, strategy, combos.clone()));
        Ok((strategy, combos))
    }
}

/// What a worker's jobs share: each data source, opened once, and the strategy's parameter
/// sets, expanded once a batch.
#[derive(Default)]
struct JobRunner {
    sources: Mutex<HashMap<String, Arc<dyn BarSource>>>,
    expanded: Mutex<Expanded>,
    stops: Stops,
    budget: JobBudget,
    endless_symbol: Option<String>,
}

impl JobRunner {
    /// Runs a leased job on this thread; a panic is the job's error.
    fn run(
        &self,
        lease: &JobLease,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<JobOutput, String> {
        let started = std::time::Instant::now();
        let run = || {
            if let Some(h) = self.stops.halted(cancelled) {
                return Err(h.to_string());
            }
            let spec: JobSpec =
                serde_json::from_str(&lease.spec_json).map_err(|e| format!("job spec: {e}"))?;
            let source = {
                let mut cache = self.sources.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(&spec.data) {
                    Some(s) => s.clone(),
                    None => {
                        let data = DataSpec::parse(&spec.data).map_err(|e| e.to_string())?;
                        let s = open_source(&data).map_err(|e| e.to_string())?;
                        cache.insert(spec.data.clone(), s.clone());
                        s
                    }
                }
            };
            let (strategy, combos) = self
                .expanded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&spec)?;
            let control = Control {
                stops: &self.stops,
                cancelled,
                budget: self.budget,
                endless: self.endless_symbol.as_deref() == Some(spec.symbol.as_str()),
            };
            run_expanded(&spec, strategy, &combos, source.as_ref(), started, &control)
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|_| Err("the job panicked".to_string()))
    }
}

/// Where a deliverer sends results, and how it runs a job again whose sleeves the
/// coordinator asks for on their own.
struct Courier {
    channel: Channel,
    rerun: Rerun,
}

/// Runs a job again (on the worker's pool): its result, when it comes.
pub type Rerun = Arc<
    dyn Fn(JobLease) -> tokio::sync::oneshot::Receiver<Result<JobOutput, String>> + Send + Sync,
>;

/// [`run_leased`] with the strategy and its parameter sets expanded already; `started`: when
/// the job began. A job that overruns its budget gives error rows, as one whose data failed
/// (another attempt would overrun the same way); a cancelled or drained one gives no result.
fn run_expanded(
    spec: &JobSpec,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    source: &dyn BarSource,
    started: std::time::Instant,
    control: &Control<'_>,
) -> Result<JobOutput, String> {
    let mut bars = source
        .load_range(&spec.symbol, spec.start, spec.end)
        .map_err(|e| e.to_string());
    let n = bars.as_ref().map_or(0, |b| b.len());
    let curves = combos.len() + 1;
    let budget = control.budget.of(n, curves);
    let deadline = started.checked_add(budget);
    let watch = control.stops.watch(
        control.cancelled,
        // A budget past the clock's range never runs out.
        deadline.unwrap_or_else(|| started + Duration::from_secs(1 << 40)),
    );
    let mut equity: Vec<f64> = Vec::with_capacity(n * curves);
    let mut sink = |c: usize, dates: &[xt_shared::Date], eq: &[f64]| {
        // Curves come in order, all on the job's bars; an endless job starts over.
        if c == 0 {
            equity.clear();
        }
        debug_assert_eq!(equity.len(), c * dates.len());
        equity.extend_from_slice(eq);
    };
    let mut tables = execute(spec, strategy, combos, &bars, &watch, &mut sink);
    while control.endless && tables.is_ok() {
        tables = execute(spec, strategy, combos, &bars, &watch, &mut sink);
    }
    let tables = match tables {
        Ok(t) => t,
        Err(JobError::Halted(Halt::OverBudget)) => {
            let error = format!(
                "{}: {:.1} s for {n} bars x {curves} curves (its parameter sets and the \
                 benchmark), {:.1} s plus {} ns a bar of a curve",
                Halt::OverBudget,
                budget.as_secs_f64(),
                control.budget.base.as_secs_f64(),
                control.budget.per_bar.as_nanos(),
            );
            bars = Err(error);
            equity.clear();
            execute(spec, strategy, combos, &bars, &Never, &mut |_, _, _| {})
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let error = bars.as_ref().err().cloned();
    // The curves' calendar is the bars' dates (none when the data failed): moved, not
    // copied.
    let calendar = bars.map(|b| b.dates).unwrap_or_default();
    let column = |schema: SchemaRef, array: arrow::array::ArrayRef| {
        RecordBatch::try_new(schema, vec![array]).map_err(|e| e.to_string())
    };
    let calendar = column(
        calendar_schema(),
        Arc::new(arrow::array::Date32Array::from(calendar)),
    )?;
    let sleeves = column(
        sleeves_schema(),
        Arc::new(arrow::array::Float64Array::from(equity)),
    )?;
    let mut out = vec![
        ("metrics", tables.metrics),
        ("calendar", calendar),
        ("sleeves", sleeves),
    ];
    out.extend(tables.trades.map(|t| ("trades", t)));
    out.extend(tables.equity.map(|t| ("equity", t)));
    Ok(JobOutput {
        tables: out,
        capital: spec.capital,
        curves,
        bars: (n * combos.len()) as u64,
        error,
        seconds: started.elapsed().as_secs_f64(),
    })
}

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
        }
    }
}

/// The default drain deadline: within Kubernetes' default 30 s grace period, with time left
/// to report the stopped jobs.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

async fn connect(url: &str) -> Result<Channel> {
    let endpoint =
        xt_wire::transport::endpoint(url).with_context(|| format!("--coordinator {url}"))?;
    let mut delay = Duration::from_millis(50);
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if delay < Duration::from_secs(30) => {
                eprintln!("xt-worker: coordinator {url} unreachable ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
        }
    }
}

/// The values of `output`'s single-column table `name` (empty if it has none).
fn values<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    output: &'a JobOutput,
    name: &str,
) -> &'a [T::Native] {
    use arrow::array::AsArray;
    output
        .tables
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, b)| b.column(0).as_primitive_opt::<T>())
        .map_or(&[], |a| a.values().as_ref())
}

/// The sleeves of several of a batch's finished jobs summed into one portfolio part (see
/// [`Upload::part`]), a job at a time: a worker adds each job's sleeves as it finishes, on
/// the thread that ran it (as the in-process runner adds its sleeves to the portfolio), so
/// an upload's part is summed by the time the upload goes. The part's calendar grows to the
/// union of its jobs' dates. Each job adds exactly what it would to the batch's portfolio
/// (the same fixed-point sums, see [`xt_shared::portfolio::PortfolioSum::add_part`]), in
/// whatever order the jobs come.
pub struct PartSum {
    sums: xt_shared::portfolio::PortfolioSum,
    /// Each curve's value before the part's first date: its jobs' capital.
    before: xt_shared::portfolio::FixedSum,
    jobs: usize,
}

impl PartSum {
    /// An empty part of `curves` curves on `dates` (the calendar grows as jobs need).
    pub fn new(dates: Vec<xt_shared::Date>, curves: usize) -> Self {
        PartSum {
            sums: xt_shared::portfolio::PortfolioSum::new(dates, curves),
            before: Default::default(),
            jobs: 0,
        }
    }

    /// Jobs added so far.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Adds a job's sleeves (a job with no bar adds its capital throughout, as cash).
    pub fn add(&mut self, output: &JobOutput) -> Result<()> {
        use arrow::datatypes::{Date32Type, Float64Type};
        use xt_shared::portfolio::{PortfolioSum, union_dates};
        let curves = self.sums.curves.len();
        anyhow::ensure!(
            output.curves == curves,
            "a part's jobs have the same curves"
        );
        let dates = values::<Date32Type>(output, "calendar");
        let equity = values::<Float64Type>(output, "sleeves");
        anyhow::ensure!(equity.len() == curves * dates.len(), "a sleeve per curve");
        if self.jobs == 0 && self.sums.dates.is_empty() {
            self.sums = PortfolioSum::new(dates.to_vec(), curves);
        } else if !within(dates, &self.sums.dates) {
            // The sums so far carried onto the grown calendar, as the coordinator adds a
            // part onto the batch's: exact.
            let union = union_dates([self.sums.dates.as_slice(), dates].into_iter());
            let mut grown = PortfolioSum::new(union, curves);
            grown.add_part(&self.sums, &vec![self.before; curves]);
            self.sums = grown;
        }
        self.before.add(output.capital);
        for c in 0..curves {
            let curve = &equity[c * dates.len()..(c + 1) * dates.len()];
            self.sums.add_sleeve(c, output.capital, dates, curve);
        }
        self.jobs += 1;
        Ok(())
    }

    /// The part's `part_calendar` and `part_sums` tables.
    pub fn tables(&self) -> Result<PartTables> {
        let cells = self.sums.curves.len() * (self.sums.dates.len() + 1);
        let (mut hi, mut lo) = (Vec::with_capacity(cells), Vec::with_capacity(cells));
        for row in &self.sums.curves {
            for v in std::iter::once(self.before).chain(row.iter().copied()) {
                hi.push((v.raw() >> 64) as i64);
                lo.push(v.raw() as u64);
            }
        }
        Ok([
            (
                "part_calendar",
                RecordBatch::try_new(
                    calendar_schema(),
                    vec![Arc::new(arrow::array::Date32Array::from(
                        self.sums.dates.clone(),
                    ))],
                )?,
            ),
            (
                "part_sums",
                RecordBatch::try_new(
                    part_sums_schema(),
                    vec![
                        Arc::new(arrow::array::Int64Array::from(hi)),
                        Arc::new(arrow::array::UInt64Array::from(lo)),
                    ],
                )?,
            ),
        ])
    }
}

/// Whether every date of `dates` is in `calendar` (both ascending).
fn within(dates: &[xt_shared::Date], calendar: &[xt_shared::Date]) -> bool {
    if dates == calendar {
        return true;
    }
    let mut rest = calendar.iter();
    dates.iter().all(|d| rest.any(|c| c == d))
}

/// A portfolio part's `part_calendar` and `part_sums` tables.
pub type PartTables = [(&'static str, RecordBatch); 2];

/// A part's members (indices of an upload's attempts, of one batch) and its tables.
type Part = (Vec<usize>, PartTables);

/// One attempt of an upload and its tables by name.
pub type Attempt = (Upload, Vec<(&'static str, RecordBatch)>);

/// The attempts of one upload of `outputs`: with `parts`, the sleeves of each batch's
/// results (those whose data was read) summed into one part, carried by the last of them;
/// without, each result with its own.
pub fn upload_attempts(outputs: &[(Upload, &JobOutput)], parts: bool) -> Result<Vec<Attempt>> {
    let mut summed = Parts::default();
    if parts {
        for (i, (u, o)) in outputs.iter().enumerate() {
            anyhow::ensure!(
                summed.add(i, u.batch, o),
                "job {}: its sleeves do not sum",
                u.job
            );
        }
    }
    Ok(attempts_with_parts(outputs, summed.tables(|i| i)?))
}

/// The parts of an upload's results: per batch, its results' sleeves summed (see
/// [`PartSum`]) and which results those are. A part may have one result: a worker's
/// results drop their sleeves once summed, so even a lone one goes as a part.
#[derive(Default)]
struct Parts(Vec<(u64, PartSum, Vec<usize>)>);

impl Parts {
    /// Adds result `index` of `batch` to its batch's part; a result whose data failed has
    /// no sleeves and joins none. False if its sleeves do not sum with the part's (it
    /// cannot happen with a worker's own results): it joins none either.
    fn add(&mut self, index: usize, batch: u64, output: &JobOutput) -> bool {
        if output.error.is_some() {
            return true;
        }
        let at = match self.0.iter().position(|(b, _, _)| *b == batch) {
            Some(at) => at,
            None => {
                let part = PartSum::new(Vec::new(), output.curves);
                self.0.push((batch, part, Vec::new()));
                self.0.len() - 1
            }
        };
        let (_, part, members) = &mut self.0[at];
        if part.add(output).is_ok() {
            members.push(index);
            return true;
        }
        if members.is_empty() {
            self.0.remove(at);
        }
        false
    }

    /// Every part's members, as indices in the bundle.
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .flat_map(|(_, _, members)| members.iter().copied())
    }

    /// Each part: its members, as indices in the upload (`at` of their indices here), and
    /// its tables.
    fn tables(&self, at: impl Fn(usize) -> usize) -> Result<Vec<Part>> {
        self.0
            .iter()
            .filter(|(_, _, members)| !members.is_empty())
            .map(|(_, part, members)| {
                Ok((members.iter().map(|&k| at(k)).collect(), part.tables()?))
            })
            .collect()
    }
}

/// The attempts of one upload of `outputs`, the sleeves of each of `parts`' members (indices
/// in `outputs`, of one batch) sent summed in its tables, carried by its last member.
fn attempts_with_parts(outputs: &[(Upload, &JobOutput)], parts: Vec<Part>) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = outputs
        .iter()
        .map(|(u, o)| (u.clone(), o.tables.clone()))
        .collect();
    for (members, tables) in parts {
        let Some(&lead) = members.last() else {
            continue;
        };
        for &i in &members {
            let (upload, tables) = &mut attempts[i];
            upload.part = Some(lead as u32);
            tables.retain(|(n, _)| !matches!(*n, "calendar" | "sleeves"));
        }
        attempts[lead].1.extend(tables);
    }
    attempts
}

/// Sends one upload; returns, for each attempt, whether it completed its job, and which to
/// send again on their own.
pub async fn upload(
    channel: &Channel,
    attempts: &[(Upload, &[(&str, RecordBatch)])],
) -> Result<UploadReply> {
    let data = upload_messages(attempts)?;
    let mut flight = FlightServiceClient::new(channel.clone()).max_encoding_message_size(256 << 20);
    let mut response = flight.do_put(stream::iter(data)).await?.into_inner();
    let mut reply = None;
    while let Some(r) = response.message().await? {
        reply = Some(serde_json::from_slice::<UploadReply>(&r.app_metadata)?);
    }
    reply.context("the coordinator did not answer the upload")
}

/// Whether an upload's error is the coordinator's answer about the upload itself (malformed:
/// the same bytes would be refused again) rather than a failure to get it there.
fn is_final(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>().is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition
        )
    })
}

/// A job computed on this worker, waiting to be delivered: its tables, or why the attempt
/// could not produce any (reported with `Fail`, so the job is tried again).
struct Finished {
    worker: u64,
    lease: JobLease,
    result: Result<JobOutput, String>,
}

impl JobOutput {
    /// Drops its `calendar` and `sleeves` tables, once summed into a part: a worker holds
    /// a part's sums per upload, not every job's curves until the upload is taken (a grid's
    /// job has a curve per combination). Should the coordinator ask for the job's sleeves
    /// on their own after all, the job runs again (see [`deliver_bundle`]).
    fn drop_sleeves(&mut self) {
        self.tables
            .retain(|(n, _)| !matches!(*n, "calendar" | "sleeves"));
    }

    /// Bytes of its tables in memory.
    pub fn bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}

/// Rounds of `slots` jobs a worker keeps queued behind its running ones, for a mean job
/// time of `nanos` (0: none finished yet): 1 for jobs of 20 ms and more, up to 24 for short
/// ones (20 ms of work a slot at most). Deeper queues let the worker lease in larger rounds
/// (see [`run_worker`]): on the 300-job overhead batch 28 lease calls instead of 44 with up
/// to 6 rounds, and 4-9% less time with one worker, 11% with two. What a worker may hold at
/// a batch's end is bounded by the 20 ms, and by the coordinator, which leases no worker
/// more than its share of the jobs queued.
fn queued_rounds(nanos: u64) -> usize {
    const SHORT: u64 = 20_000_000;
    SHORT
        .checked_div(nanos)
        .map_or(1, |r| r.clamp(1, 24) as usize)
}

/// How long an idle worker's lease call waits for work: also how long it takes to notice a
/// shutdown while idle.
const IDLE_WAIT_MS: u32 = 250;

/// How long the deliverer waits, after a result is ready, for others to go with it. Every
/// upload costs a round trip, a decode, a log record, wake-ups on both sides and, for the
/// sleeves summed into a part, a part's worth of bytes (a curve per date, whatever the
/// number of jobs in it): fewer, fuller uploads cost less per job. A worker with nothing
/// left to compute does not wait, so a batch's last results and a short batch's only ones
/// go at once, as do a batch's last results once the coordinator has none of it queued.
/// Measured on the overhead batch with one worker, sleeves summed as jobs finish: 60 ms
/// took 2.2% and 0.6% less time than 30 ms in two paired runs, 100 ms no less than 60.
const LINGER: Duration = Duration::from_millis(60);

/// A worker stops leasing once it holds more computed and undelivered results (an
/// unreachable coordinator) than twice its queue and this many, or this many bytes of them.
/// Short jobs' results come hundreds to a [`LINGER`].
const UNDELIVERED: usize = 256;
const UNDELIVERED_BYTES: usize = 512 << 20;

/// Most attempts, and about the most bytes of tables, one upload carries.
const UPLOAD_ATTEMPTS: usize = 256;
const UPLOAD_BYTES: usize = 16 << 20;

/// Sends one upload of `outputs` (`parts`: the sleeves summed, see [`attempts_with_parts`]),
/// retrying with backoff until the coordinator answers; returns the attempts it asks to be
/// sent again on their own.
async fn deliver(
    channel: &Channel,
    outputs: &[(Upload, &JobOutput)],
    parts: Vec<Part>,
) -> Vec<u32> {
    let attempts = attempts_with_parts(outputs, parts);
    let attempts: Vec<(Upload, &[(&str, RecordBatch)])> = attempts
        .iter()
        .map(|(u, t)| (u.clone(), t.as_slice()))
        .collect();
    let mut delay = Duration::from_millis(50);
    loop {
        match upload(channel, &attempts).await {
            Ok(reply) => return reply.resend,
            Err(e) if is_final(&e) => {
                // The coordinator read the upload and refused it whole: sending it again
                // would get the same answer. Its jobs' leases expire and they run again.
                eprintln!(
                    "xt-worker: the coordinator refused {} job result(s): {e:#}",
                    attempts.len()
                );
                return Vec::new();
            }
            Err(e) => {
                eprintln!(
                    "xt-worker: delivering {} job result(s): {e:#}; retrying in {delay:?}",
                    attempts.len()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Reports an attempt that produced no result, so the job is tried again. A lost report
/// costs nothing: the lease expires and the job runs again.
async fn fail(channel: &Channel, worker: u64, lease: &JobLease, error: String) {
    let request = FailRequest {
        worker,
        batch: lease.batch,
        job: lease.job,
        attempt: lease.attempt,
        error,
    };
    let _ = JobsClient::new(channel.clone()).fail(request).await;
}

/// Computed results waiting for the deliverer, an upload's worth to a bundle. The pool
/// threads file each job's result as it finishes, its sleeves added to its batch's part in
/// the bundle it joins.
#[derive(Default)]
struct Outbox {
    bundles: std::collections::VecDeque<Bundle>,
    /// The deliverer waits for a result: the next one filed wakes it.
    idle: bool,
    /// No more jobs come: the deliverer ends once nothing is left to compute or deliver.
    closed: bool,
}

#[derive(Default)]
struct Bundle {
    finished: Vec<Finished>,
    bytes: usize,
    /// Its results' sleeves, summed so far.
    parts: Parts,
}

impl Outbox {
    /// Files a finished job in the last bundle, or a new one when it is full (a job that
    /// fills an upload on its own goes alone, with its own sleeves); returns whether the
    /// deliverer is to be woken.
    fn file(&mut self, mut finished: Finished, bytes: usize) -> bool {
        let fits = |b: &Bundle| {
            b.finished.is_empty()
                || (b.finished.len() < UPLOAD_ATTEMPTS && b.bytes + bytes <= UPLOAD_BYTES)
        };
        if !self.bundles.back().is_some_and(fits) {
            self.bundles.push_back(Bundle::default());
        }
        let bundle = self.bundles.back_mut().expect("a bundle was just made");
        if let Ok(output) = &mut finished.result
            && bytes < UPLOAD_BYTES
            && output.error.is_none()
        {
            // Summed, its sleeves are dropped here, on the thread that made them; a result
            // that does not sum goes with its own.
            if bundle
                .parts
                .add(bundle.finished.len(), finished.lease.batch, output)
            {
                output.drop_sleeves();
            }
        }
        bundle.finished.push(finished);
        bundle.bytes += bytes;
        std::mem::take(&mut self.idle)
    }
}

/// The outbox, and the notice to its deliverer of a result filed.
#[derive(Default)]
struct Handover {
    outbox: Mutex<Outbox>,
    filed: tokio::sync::Notify,
}

impl Handover {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Every change to the outbox completes under the lock: a poisoned one is still
        // whole.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Delivers computed jobs as they come: each upload takes what finished while the previous
/// one was on its way and what finishes within [`LINGER`] after, so a busy worker sends many
/// per round trip and one with nothing left to compute sends at once. The wait is a timer
/// (cut short when the last job running finishes), not a wake-up per finished job: on
/// shared cores every wake-up of this task preempts a job. An upload's sleeves are summed
/// by the pool threads as its jobs finish (see [`Outbox::file`]), so its part is ready when
/// it goes, a batch's last included. An upload is retried with backoff until the
/// coordinator answers: a finished result is never dropped while the worker runs.
async fn deliver_results(
    to: Courier,
    handover: Arc<Handover>,
    delivering: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    delivered: Arc<tokio::sync::Notify>,
    computing: Arc<AtomicUsize>,
    settled: Arc<tokio::sync::Notify>,
) {
    loop {
        let lone = loop {
            {
                let mut o = handover.outbox();
                if !o.bundles.is_empty() {
                    o.idle = false;
                    break o.bundles.len() == 1;
                }
                if o.closed && computing.load(Ordering::SeqCst) == 0 {
                    return;
                }
                o.idle = true;
            }
            handover.filed.notified().await;
        };
        if lone && computing.load(Ordering::SeqCst) > 0 {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = settled.notified() => {}
            }
        }
        let bundle = handover
            .outbox()
            .bundles
            .pop_front()
            .expect("only the deliverer takes bundles");
        deliver_bundle(&to, &bundle).await;
        delivering.fetch_sub(bundle.finished.len(), Ordering::SeqCst);
        held.fetch_sub(bundle.bytes, Ordering::SeqCst);
        delivered.notify_one();
    }
}

/// Delivers one bundle of results: those that failed reported apart, the others in one
/// upload, each batch's summed into its part; then whatever the coordinator asks for again
/// on its own (see [`deliver_results`]).
async fn deliver_bundle(to: &Courier, bundle: &Bundle) {
    let (channel, rerun) = (&to.channel, &to.rerun);
    // Indices of the bundle's results in the upload: the failed ones are reported
    // apart.
    let mut at = vec![usize::MAX; bundle.finished.len()];
    let mut outputs: Vec<(Upload, &JobOutput)> = Vec::new();
    let mut leases: Vec<&JobLease> = Vec::new();
    for (k, f) in bundle.finished.iter().enumerate() {
        match &f.result {
            Ok(output) => {
                at[k] = outputs.len();
                leases.push(&f.lease);
                outputs.push((
                    Upload {
                        worker: f.worker,
                        batch: f.lease.batch,
                        job: f.lease.job,
                        attempt: f.lease.attempt,
                        bars: output.bars,
                        seconds: output.seconds,
                        error: output.error.clone(),
                        part: None,
                    },
                    output,
                ))
            }
            Err(error) => fail(channel, f.worker, &f.lease, error.clone()).await,
        }
    }
    // Should a part's tables fail, its members (their sleeves dropped once summed) are
    // held back, to go again with their own below.
    let (parts, mut pending) = match bundle.parts.tables(|k| at[k]) {
        Ok(parts) => (parts, Vec::new()),
        Err(e) => {
            eprintln!("xt-worker: a part's tables: {e:#}");
            (Vec::new(), bundle.parts.members().map(|k| at[k]).collect())
        }
    };
    let first: Vec<usize> = (0..outputs.len())
        .filter(|i| !pending.contains(i))
        .collect();
    let sent: Vec<(Upload, &JobOutput)> = first.iter().map(|&i| outputs[i].clone()).collect();
    // The attempts of a part the coordinator could not take whole (one of its jobs done
    // meanwhile by another attempt: the sums cannot be split) go again, each with its
    // own sleeves. Only a part's members are asked for, and their sleeves were dropped
    // once summed, so each of these jobs runs again first: the same spec on the same bars
    // gives the same sleeves, bit for bit.
    if !sent.is_empty() {
        let resend = deliver(channel, &sent, parts).await;
        pending.extend(
            resend
                .into_iter()
                .filter_map(|i| first.get(i as usize).copied()),
        );
    }
    let reruns: Vec<_> = pending
        .into_iter()
        .filter_map(|i| Some((&outputs.get(i)?.0, *leases.get(i)?)))
        .map(|(upload, lease)| (upload, lease, rerun(lease.clone())))
        .collect();
    let mut again: Vec<(Upload, JobOutput)> = Vec::new();
    for (upload, lease, result) in reruns {
        match result.await {
            Ok(Ok(output)) => again.push((upload.clone(), output)),
            Ok(Err(error)) => fail(channel, upload.worker, lease, error).await,
            Err(_) => {
                let error = "the job's second run was lost".to_string();
                fail(channel, upload.worker, lease, error).await
            }
        }
    }
    let mut again: Vec<(Upload, &JobOutput)> = again.iter().map(|(u, o)| (u.clone(), o)).collect();
    while !again.is_empty() {
        // No parts now: nothing is asked for again.
        let resend = deliver(channel, &again, Vec::new()).await;
        let resend: std::collections::HashSet<usize> =
            resend.into_iter().map(|i| i as usize).collect();
        again = again
            .into_iter()
            .enumerate()
            .filter(|(i, _)| resend.contains(i))
            .map(|(_, o)| o)
            .collect();
    }
}

/// Delivers `results` as the worker does a bundle of them (each of a batch summed into its
/// part, the sleeves dropped once summed; any the coordinator asks for again run again
/// with `rerun` and go on their own), in uploads of up to [`UPLOAD_ATTEMPTS`]: what a
/// worker's deliverer does, for a caller that computed the results itself.
pub async fn deliver_finished(
    channel: &Channel,
    rerun: Rerun,
    results: Vec<(u64, JobLease, Result<JobOutput, String>)>,
) {
    let mut outbox = Outbox::default();
    for (worker, lease, result) in results {
        let bytes = result.as_ref().map_or(0, JobOutput::bytes);
        outbox.file(
            Finished {
                worker,
                lease,
                result,
            },
            bytes,
        );
    }
    let to = Courier {
        channel: channel.clone(),
        rerun,
    };
    for bundle in outbox.bundles {
        deliver_bundle(&to, &bundle).await;
    }
}

/// Runs until `shutdown` resolves, then drains: no new jobs, in-flight ones finished and
/// delivered.
pub async fn run_worker(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let channel = connect(&config.coordinator).await?;
    let mut jobs = JobsClient::new(channel.clone());
    let reply = jobs
        .register(RegisterRequest {
            name: config.name.clone(),
            slots: config.slots as u32,
        })
        .await?
        .into_inner();
    // The id changes when a restarted coordinator no longer knows us and we register again.
    let id = Arc::new(std::sync::atomic::AtomicU64::new(reply.worker));
    let heartbeat = Duration::from_millis(reply.heartbeat_ms.max(10));
    let runner = Arc::new(JobRunner {
        budget: config.budget,
        endless_symbol: config.endless_symbol.clone(),
        ..JobRunner::default()
    });
    let beat = {
        let (mut jobs, id, runner) = (jobs.clone(), id.clone(), runner.clone());
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
    // as its job is computed, while its upload runs; past this many undelivered results
    // (an unreachable coordinator) the worker stops leasing.
    let delivering = Arc::new(AtomicUsize::new(0));
    // And their bytes.
    let held = Arc::new(AtomicUsize::new(0));
    let computed = Arc::new(tokio::sync::Notify::new());
    let handover: Arc<Handover> = Arc::default();
    // Nothing left to compute: the deliverer sends what it holds at once.
    let settled = Arc::new(tokio::sync::Notify::new());
    // A finished job wakes the lease loop only once the jobs left to compute are this few,
    // so that a round's room is free (and always when nothing is left).
    let wake_at = Arc::new(AtomicUsize::new(usize::MAX));
    let deliverer = tokio::spawn(deliver_results(
        Courier {
            channel: channel.clone(),
            rerun,
        },
        handover.clone(),
        delivering.clone(),
        held.clone(),
        computed.clone(),
        computing.clone(),
        settled.clone(),
    ));
    tokio::pin!(shutdown);
    // The last lease call found nothing queued.
    let dried = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Per batch, its jobs computing here, and whether the coordinator had none of it left
    // queued at a lease (see `JobLease::last`).
    let batches: Arc<Mutex<HashMap<u64, (usize, bool)>>> = Arc::default();
    loop {
        // Leased in rounds of half the queue (at least `slots` jobs): every lease call is a
        // round trip and wake-ups on both sides, which for short jobs cost as much as a job.
        // Measured on the overhead batch: rounds of `slots` took 105 calls a batch, half the
        // queue 44 (up to 6 rounds queued) and 8% less time, and 28 with up to 24 rounds.
        let max_computing = slots * (1 + queued_rounds(job_nanos.load(Ordering::Relaxed)));
        let max_delivering = 2 * (max_computing + UNDELIVERED);
        let lease_round = slots.max(max_computing / 2);
        wake_at.store(max_computing - lease_round, Ordering::SeqCst);
        let room = max_computing.saturating_sub(computing.load(Ordering::SeqCst));
        let free = if delivering.load(Ordering::SeqCst) < max_delivering
            && held.load(Ordering::SeqCst) < UNDELIVERED_BYTES
            && room >= lease_round
        {
            room
        } else {
            0
        };
        let worker = id.load(Ordering::SeqCst);
        // With nothing to compute, or nothing queued at the last call, the lease call itself
        // waits for work (the coordinator answers as soon as a batch comes in or a job is
        // queued again); otherwise it answers at once, and finished jobs wake the loop. At
        // a batch's end that is one waiting call, not an empty one for each job finished:
        // 28 lease calls a batch on the overhead batch before, 15 after.
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
                    if let Ok(r) = jobs
                        .register(RegisterRequest {
                            name: config.name.clone(),
                            slots: config.slots as u32,
                        })
                        .await
                    {
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
        if free > 0 {
            dried.store(idle, Ordering::SeqCst);
            // The coordinator had nothing more and nothing is left to compute: what the
            // deliverer holds goes now (see the pool's side below).
            if idle && computing.load(Ordering::SeqCst) == 0 {
                settled.notify_one();
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
            let (runner, handover) = (runner.clone(), handover.clone());
            let (computing, delivering, held, computed, job_nanos) = (
                computing.clone(),
                delivering.clone(),
                held.clone(),
                computed.clone(),
                job_nanos.clone(),
            );
            let (settled, wake_at) = (settled.clone(), wake_at.clone());
            let (dried, batches) = (dried.clone(), batches.clone());
            // Straight from the pool to the deliverer: no task of its own per job.
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
                delivering.fetch_add(1, Ordering::SeqCst);
                let bytes = result.as_ref().map_or(0, JobOutput::bytes);
                held.fetch_add(bytes, Ordering::SeqCst);
                // Filed before it stops counting as computing: once `settled` says nothing is
                // left, the deliverer finds every result in the outbox.
                let finished = Finished {
                    worker,
                    lease,
                    result,
                };
                if handover.outbox().file(finished, bytes) {
                    handover.filed.notify_one();
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
                    settled.notify_one();
                }
                let left = computing.fetch_sub(1, Ordering::SeqCst) - 1;
                if left <= wake_at.load(Ordering::SeqCst) {
                    computed.notify_one();
                }
                // Nothing left to compute, and the coordinator had nothing more at the last
                // lease call: the deliverer sends what it holds at once. Not while more
                // jobs are on their way (a batch's first jobs may all finish before the next
                // lease comes), which would send an upload of a few results. The lease loop
                // sets `dried` before it reads `computing`, and this decrement comes before
                // the read of `dried`: one of the two sees the other.
                if left == 0 && dried.load(Ordering::SeqCst) {
                    settled.notify_one();
                }
                if left == 0 {
                    // A draining worker's deliverer, waiting for results, ends now.
                    let mut o = handover.outbox();
                    if o.closed && std::mem::take(&mut o.idle) {
                        handover.filed.notify_one();
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
                _ = computed.notified() => {}
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
    // The deliverer ends once every job in flight is computed and delivered, each upload
    // going as soon as nothing is left to compute.
    dried.store(true, Ordering::SeqCst);
    if computing.load(Ordering::SeqCst) == 0 {
        settled.notify_one();
    }
    {
        let mut o = handover.outbox();
        o.closed = true;
        if std::mem::take(&mut o.idle) {
            handover.filed.notify_one();
        }
    }
    let _ = deliverer.await;
    deadline.abort();
    beat.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `part_calendar` and `part_sums` tables of `outputs`' sleeves summed at once, on
    /// their dates' union: what a part summed job by job must equal.
    fn portfolio_part(outputs: &[&JobOutput]) -> Result<PartTables> {
        use arrow::datatypes::Date32Type;
        let curves = outputs.first().map_or(0, |o| o.curves);
        let dates = xt_shared::portfolio::union_dates(
            outputs.iter().map(|o| values::<Date32Type>(o, "calendar")),
        );
        let mut part = PartSum::new(dates, curves);
        for o in outputs {
            part.add(o)?;
        }
        part.tables()
    }

    /// A job's output with its sleeves: `curves` curves on `dates`, curve `c`'s equity on the
    /// `k`th date `capital + 10 * c + k + 0.125`.
    fn output(capital: f64, dates: &[i32], curves: usize) -> JobOutput {
        let equity: Vec<f64> = (0..curves)
            .flat_map(|c| (0..dates.len()).map(move |k| capital + (10 * c + k) as f64 + 0.125))
            .collect();
        JobOutput {
            tables: vec![
                (
                    "calendar",
                    RecordBatch::try_new(
                        calendar_schema(),
                        vec![Arc::new(arrow::array::Date32Array::from(dates.to_vec()))],
                    )
                    .unwrap(),
                ),
                (
                    "sleeves",
                    RecordBatch::try_new(
                        sleeves_schema(),
                        vec![Arc::new(arrow::array::Float64Array::from(equity))],
                    )
                    .unwrap(),
                ),
            ],
            capital,
            curves,
            bars: dates.len() as u64,
            error: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn a_part_summed_job_by_job_in_any_order_is_the_part_summed_at_once() {
        // Calendars that differ (gaps, a late start, one job with no bar at all), so the
        // part's calendar grows as jobs come.
        let outputs = [
            output(1000.0, &[2, 3, 5, 9], 3),
            output(250.5, &[5, 6, 12], 3),
            output(333.3, &[], 3),
            output(10.0, &[1, 12], 3),
            output(77.0, &[2, 3, 5, 9], 3),
        ];
        let all: Vec<&JobOutput> = outputs.iter().collect();
        let at_once = portfolio_part(&all).unwrap();
        assert_eq!(at_once[0].1.num_rows(), 7, "the union of the calendars");
        let orders: [[usize; 5]; 4] = [
            [0, 1, 2, 3, 4],
            [4, 3, 2, 1, 0],
            [2, 0, 3, 1, 4],
            [1, 4, 0, 2, 3],
        ];
        for order in orders {
            let mut part = PartSum::new(Vec::new(), 3);
            for &i in &order {
                part.add(&outputs[i]).unwrap();
            }
            assert_eq!(part.jobs(), 5);
            let tables = part.tables().unwrap();
            assert_eq!(tables[0], at_once[0], "calendar, order {order:?}");
            assert_eq!(tables[1], at_once[1], "sums, order {order:?}");
        }
        // A job of other curves is refused and leaves the part as it was.
        let mut part = PartSum::new(Vec::new(), 3);
        part.add(&outputs[0]).unwrap();
        let before = part.tables().unwrap();
        assert!(part.add(&output(5.0, &[1, 2], 2)).is_err());
        assert_eq!((part.jobs(), part.tables().unwrap()), (1, before));
    }

    fn finished(batch: u64, job: u32, result: Result<JobOutput, String>) -> Finished {
        Finished {
            worker: 1,
            lease: JobLease {
                batch,
                job,
                attempt: 1,
                spec_json: String::new(),
                last: false,
            },
            result,
        }
    }

    #[test]
    fn the_outbox_sums_each_batch_part_and_starts_a_bundle_when_one_is_full() {
        let mut outbox = Outbox::default();
        let mut file = |f: Finished| {
            let bytes = f.result.as_ref().map_or(0, JobOutput::bytes);
            outbox.file(f, bytes)
        };
        assert!(!file(finished(1, 0, Ok(output(100.0, &[1, 2, 3], 2)))));
        file(finished(2, 0, Ok(output(50.0, &[1, 2], 2))));
        file(finished(1, 1, Err("the job panicked".into())));
        let mut failed_data = output(20.0, &[], 2);
        failed_data.error = Some("no such symbol".into());
        file(finished(1, 2, Ok(failed_data)));
        file(finished(1, 3, Ok(output(100.0, &[2, 4], 2))));
        assert_eq!(outbox.bundles.len(), 1);
        let bundle = &outbox.bundles[0];
        assert_eq!(bundle.finished.len(), 5);
        // Batch 1's part holds jobs 0 and 3 (not the failed attempt, nor the job whose data
        // failed: it has no sleeves), batch 2's its one job.
        let parts: Vec<(u64, usize, Vec<usize>)> = bundle
            .parts
            .0
            .iter()
            .map(|(b, p, m)| (*b, p.jobs(), m.clone()))
            .collect();
        assert_eq!(parts, [(1, 2, vec![0, 4]), (2, 1, vec![1])]);
        // Summed, a result keeps no sleeves of its own; one whose data failed joined no part
        // and keeps its tables.
        let sleeves = |k: usize| {
            let output = bundle.finished[k].result.as_ref().unwrap();
            output
                .tables
                .iter()
                .any(|(n, _)| matches!(*n, "calendar" | "sleeves"))
        };
        assert_eq!([0, 1, 3, 4].map(sleeves), [false, false, true, false]);
        let one = [&output(100.0, &[1, 2, 3], 2), &output(100.0, &[2, 4], 2)];
        assert_eq!(
            bundle.parts.0[0].1.tables().unwrap(),
            portfolio_part(&one).unwrap()
        );
        // An idle deliverer is woken by the next result, once.
        outbox.idle = true;
        let mut file = |f: Finished| {
            let bytes = f.result.as_ref().map_or(0, JobOutput::bytes);
            outbox.file(f, bytes)
        };
        assert!(file(finished(1, 4, Ok(output(1.0, &[1], 2)))));
        assert!(!file(finished(1, 5, Ok(output(1.0, &[1], 2)))));
        // A full bundle: the next result starts another, with a part of its own.
        for job in 6..UPLOAD_ATTEMPTS as u32 + 1 {
            file(finished(1, job, Ok(output(1.0, &[1], 2))));
        }
        assert_eq!(outbox.bundles.len(), 2);
        assert_eq!(outbox.bundles[0].finished.len(), UPLOAD_ATTEMPTS);
        assert_eq!(outbox.bundles[1].finished.len(), 2);
        assert_eq!(outbox.bundles[1].parts.0[0].2, [0, 1]);
    }
}
