//! Running jobs: one `JobSpec` on its bars (what a worker does with a lease), and the local
//! batch runner that plans a batch and runs all its jobs across every core with rayon. One
//! job's failure becomes that job's `error` rows; the others carry on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use xt_shared::job::{BatchPlan, JobSpec, plan};
use xt_shared::metrics::PortfolioMetrics;
use xt_shared::portfolio::PortfolioSum;
use xt_shared::{BarSource, Bars, BatchSpec, Date, SpecError, Universe};

use crate::engine::strategy::{self, ParamSet, Strategy};
use crate::engine::{Exchange, Halt, Interrupt, Job, Never, run_job};
use xt_shared::tables::{JobTables, TableWriter};

pub use crate::engine::strategy::strategy_combos;

/// Receives each sleeve's equity curve: `(curve, dates, equity)`.
pub type CurveSink<'a> = dyn FnMut(usize, &[Date], &[f64]) + 'a;

/// Runs one job on its bars (or reports why there are none): its result tables, and each
/// sleeve's equity curve handed to `curve(i, dates, equity)`, where `i` is the combination
/// and `combos.len()` the benchmark (the same sleeve as `buy_and_hold`). A failed job hands
/// no curves: its sleeve stays in cash. A halted job hands some curves and no tables.
pub fn execute(
    job: &JobSpec,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    bars: &Result<Bars, String>,
    interrupt: &dyn Interrupt,
    curve: &mut CurveSink<'_>,
) -> Result<JobTables, JobError> {
    let mut writer = TableWriter::new(&job.symbol, job.trades, job.equity);
    let bars = match bars {
        Ok(b) => b,
        Err(error) => {
            for p in combos {
                writer.push_error(p.json(), error);
            }
            return Ok(writer.finish()?);
        }
    };
    let member = job.member().mask(&bars.dates);
    let exchange = match &job.rules {
        Some(rules) => Exchange::with_rules(bars, job.market, job.costs, rules),
        None => Exchange::new(bars, job.market, job.costs, job.price_limit),
    };
    let sleeve = Job {
        bars,
        member: &member,
        exchange: &exchange,
        capital: job.capital,
    };
    run_job(&sleeve, strategy, combos, interrupt, |i, run, metrics| {
        writer.push(combos[i].json(), &bars.dates, run, metrics);
        curve(i, &bars.dates, &run.equity);
    })?;
    let benchmark = [ParamSet::empty()];
    run_job(
        &sleeve,
        strategy::buy_and_hold(),
        &benchmark,
        interrupt,
        |_, run, _| curve(combos.len(), &bars.dates, &run.equity),
    )?;
    Ok(writer.finish()?)
}

/// Why `execute` gave no tables.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Halted(#[from] Halt),
    #[error("building result tables: {0}")]
    Arrow(#[from] ArrowError),
}

/// What the batch produced besides the per-job tables handed to the sink.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub portfolio: RecordBatch,
    /// Per parameter set (canonical JSON), the portfolio's metrics against the benchmark.
    pub portfolio_metrics: Vec<(String, PortfolioMetrics)>,
    pub jobs: usize,
    pub failed: usize,
}

/// The portfolio sums hold no invariant a panicking job could break halfway (each value is
/// added whole), so a poisoned lock is still good data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use xt_shared::tables::finish_portfolio;

/// Runs every job of `plan` with `strategy` on the current rayon pool, each reading its
/// bars from `source`, handing each job's tables to `sink` as it finishes (in completion
/// order, with the job's index) and calling `progress(done, total)`.
fn run_plan(
    spec: &BatchSpec,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    plan: &BatchPlan,
    source: &dyn BarSource,
    sink: &(dyn Fn(usize, JobTables) + Sync),
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BatchOutcome, ArrowError> {
    let portfolio = Mutex::new(PortfolioSum::new(plan.dates.clone(), combos.len() + 1));
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let total = plan.jobs.len();
    // One job a task: rayon's default splitting hands each thread a run of jobs it cannot
    // share, so a batch used to end with one core idle for the last tens of milliseconds.
    plan.jobs
        .par_iter()
        .with_max_len(1)
        .enumerate()
        .try_for_each(|(i, job)| {
            let bars = source
                .load_range(&job.spec.symbol, job.spec.start, job.spec.end)
                .map_err(|e| e.to_string());
            if bars.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
                plan.funding
                    .add_cash(&mut lock(&portfolio), i, job.spec.capital);
            }
            let tables = execute(
                &job.spec,
                strategy,
                combos,
                &bars,
                &Never,
                &mut |c, dates, equity| {
                    let sums = &mut lock(&portfolio);
                    plan.funding
                        .add_sleeve(sums, i, c, job.spec.capital, dates, equity)
                },
            )
            .map_err(|e| match e {
                JobError::Arrow(e) => e,
                // `Never` halts nothing; kept as an error rather than a panic all the same.
                JobError::Halted(h) => ArrowError::ExternalError(Box::new(h)),
            })?;
            sink(i, tables);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok::<_, ArrowError>(())
        })?;
    let sums = portfolio.into_inner().unwrap_or_else(|e| e.into_inner());
    let finished = finish_portfolio(combos, spec.capital, &sums, &plan.funding)?;
    Ok(BatchOutcome {
        portfolio: finished.table,
        portfolio_metrics: finished.metrics,
        jobs: total,
        failed: failed.into_inner(),
    })
}

/// A whole batch in memory: every requested table, jobs in universe order.
#[derive(Debug, Clone)]
pub struct BatchResult {
    pub metrics: RecordBatch,
    pub trades: Option<RecordBatch>,
    pub equity: Option<RecordBatch>,
    pub outcome: BatchOutcome,
}

/// Plans and runs a batch, collecting the tables in memory.
pub fn run_batch(
    spec: &BatchSpec,
    source: &dyn BarSource,
    universe: &Universe,
) -> Result<BatchResult, RunError> {
    spec.check()?;
    let (strategy, combos) =
        strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())?;
    let plan = plan(spec, source, universe)?;
    let collected = Mutex::new(Vec::with_capacity(plan.jobs.len()));
    let outcome = run_plan(
        spec,
        strategy.as_ref(),
        &combos,
        &plan,
        source,
        &|i, t| lock(&collected).push((i, t)),
        &|_, _| {},
    )?;
    let mut jobs = collected.into_inner().unwrap_or_else(|e| e.into_inner());
    jobs.sort_by_key(|(i, _)| *i);
    let (metrics, trades, equity) = concat_tables(jobs.into_iter().map(|(_, t)| t))?;
    let trades = spec.wants(xt_shared::spec::Table::Trades).then_some(trades);
    let equity = spec.wants(xt_shared::spec::Table::Equity).then_some(equity);
    Ok(BatchResult {
        metrics,
        trades,
        equity,
        outcome,
    })
}

/// Concatenates jobs' tables into one `metrics`, `trades` and `equity` table each.
pub fn concat_tables(
    jobs: impl Iterator<Item = JobTables>,
) -> Result<(RecordBatch, RecordBatch, RecordBatch), ArrowError> {
    let (mut m, mut t, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for j in jobs {
        m.push(j.metrics);
        t.extend(j.trades);
        e.extend(j.equity);
    }
    use arrow::compute::concat_batches;
    use xt_shared::schema::{EQUITY, METRICS, TRADES};
    Ok((
        concat_batches(&METRICS, &m)?,
        concat_batches(&TRADES, &t)?,
        concat_batches(&EQUITY, &e)?,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("building result tables: {0}")]
    Arrow(#[from] ArrowError),
}
