//! The local batch runner: plans a batch (loads and validates every symbol's bars once,
//! decides which symbols get a job, funds their sleeves) and runs its jobs across every core
//! with rayon. One job's failure becomes that job's `error` rows; the others carry on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use xt_shared::metrics::{PortfolioMetrics, portfolio_metrics};
use xt_shared::portfolio::{PortfolioSum, union_dates};
use xt_shared::spec::Table;
use xt_shared::{BarSource, Bars, BatchSpec, Costs, Date, Market, SpecError, Universe};

use crate::engine::strategy::{self, ParamSet, Strategy};
use crate::engine::tables::{JobTables, TableWriter, portfolio_table};
use crate::engine::{Exchange, Job, run_job};

/// A symbol's job, ready to run: its validated bars in range, or why it has none.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub symbol: String,
    pub bars: Result<Bars, String>,
    pub member: Vec<bool>,
    pub capital: f64,
    pub price_limit: Option<f64>,
}

/// A batch expanded into jobs and parameter combinations.
pub struct Plan {
    pub strategy: &'static dyn Strategy,
    pub combos: Vec<ParamSet>,
    pub jobs: Vec<PlannedJob>,
    /// The union of every job's dates: the portfolio's calendar.
    pub dates: Vec<Date>,
    pub capital: f64,
    pub market: Market,
    pub costs: Costs,
    pub want_trades: bool,
    pub want_equity: bool,
}

/// Looks up the strategy and expands its parameters, or says which field is wrong.
pub fn strategy_combos(
    spec: &BatchSpec,
) -> Result<(&'static dyn Strategy, Vec<ParamSet>), SpecError> {
    let s = strategy::find(&spec.strategy).ok_or_else(|| {
        let names: Vec<_> = strategy::catalog().iter().map(|s| s.name()).collect();
        SpecError::new(
            "strategy",
            format!(
                "unknown strategy {:?}; built-ins are {}",
                spec.strategy,
                names.join(", ")
            ),
        )
    })?;
    let combos = strategy::expand(s, spec.params.as_ref(), spec.grid.as_ref())
        .map_err(|e| SpecError::new(e.field, e.message))?;
    Ok((s, combos))
}

impl Plan {
    /// Checks the spec, loads every member's bars in the batch range (in parallel), and
    /// funds a sleeve for each symbol that has a bar inside both the range and its
    /// membership, or whose data failed (its job reports the error). Weights are
    /// normalised over those symbols.
    pub fn new(
        spec: &BatchSpec,
        source: &dyn BarSource,
        universe: &Universe,
    ) -> Result<Plan, SpecError> {
        spec.check()?;
        let (strategy, combos) = strategy_combos(spec)?;
        let (start, end) = spec.range()?;
        let loaded: Vec<_> = universe
            .members
            .par_iter()
            .map(|m| {
                let bars = source
                    .load_range(&m.symbol, start, end)
                    .map_err(|e| e.to_string());
                let member = bars.as_ref().map(|b| m.mask(&b.dates)).unwrap_or_default();
                (m, bars, member)
            })
            .collect();
        let mut jobs = Vec::new();
        let mut weights = Vec::new();
        for (m, bars, member) in loaded {
            if bars.is_ok() && !member.iter().any(|&x| x) {
                continue;
            }
            weights.push(m.weight.unwrap_or(1.0));
            jobs.push(PlannedJob {
                symbol: m.symbol.clone(),
                bars,
                member,
                capital: 0.0,
                price_limit: m.price_limit,
            });
        }
        if jobs.is_empty() {
            return Err(SpecError::new(
                "universe",
                "no symbol has a bar inside the date range and its membership",
            ));
        }
        let total: f64 = weights.iter().sum();
        if total.is_nan() || total <= 0.0 {
            return Err(SpecError::new(
                "universe",
                "the weights of the symbols with jobs sum to 0",
            ));
        }
        for (job, w) in jobs.iter_mut().zip(&weights) {
            job.capital = spec.capital * w / total;
        }
        let dates = union_dates(
            jobs.iter()
                .filter_map(|j| j.bars.as_ref().ok())
                .map(|b| &b.dates[..]),
        );
        Ok(Plan {
            strategy,
            combos,
            jobs,
            dates,
            capital: spec.capital,
            market: spec.market,
            costs: spec.resolved_costs(),
            want_trades: spec.wants(Table::Trades),
            want_equity: spec.wants(Table::Equity),
        })
    }

    /// Bar evaluations the batch will perform: bars times combinations, summed over jobs.
    pub fn bar_evaluations(&self) -> u64 {
        let bars: usize = self
            .jobs
            .iter()
            .filter_map(|j| j.bars.as_ref().ok())
            .map(|b| b.len())
            .sum();
        (bars * self.combos.len()) as u64
    }
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

/// Runs one planned job: its tables, and its sleeves added to the portfolio sums
/// (curve `i` for combination `i`, the last curve for the benchmark).
pub fn execute_job(
    plan: &Plan,
    job: &PlannedJob,
    benchmark: &[ParamSet],
    portfolio: &Mutex<PortfolioSum>,
) -> Result<JobTables, ArrowError> {
    let mut writer = TableWriter::new(&job.symbol, plan.want_trades, plan.want_equity);
    let bars = match &job.bars {
        Ok(b) => b,
        Err(error) => {
            for p in &plan.combos {
                writer.push_error(p.json(), error);
            }
            lock(portfolio).add_cash(job.capital);
            return writer.finish();
        }
    };
    let exchange = Exchange::new(bars, plan.market, plan.costs, job.price_limit);
    let spec = Job {
        bars,
        member: &job.member,
        exchange: &exchange,
        capital: job.capital,
    };
    run_job(&spec, plan.strategy, &plan.combos, |i, run, metrics| {
        writer.push(plan.combos[i].json(), &bars.dates, run, metrics);
        lock(portfolio).add_sleeve(i, job.capital, &bars.dates, &run.equity);
    });
    // The benchmark: the same sleeve run as buy_and_hold (SEMANTICS section 8).
    let bench_curve = plan.combos.len();
    run_job(&spec, strategy::buy_and_hold(), benchmark, |_, run, _| {
        lock(portfolio).add_sleeve(bench_curve, job.capital, &bars.dates, &run.equity)
    });
    writer.finish()
}

/// The portfolio sums hold no invariant a panicking job could break halfway (each sleeve
/// is added whole or the batch fails), so a poisoned lock is still good data.
fn lock(m: &Mutex<PortfolioSum>) -> std::sync::MutexGuard<'_, PortfolioSum> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs every job on the current rayon pool, handing each job's tables to `sink` as it
/// finishes (in completion order, with the job's index) and calling `progress(done, total)`.
pub fn run_plan(
    plan: &Plan,
    sink: &(dyn Fn(usize, JobTables) + Sync),
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BatchOutcome, ArrowError> {
    let benchmark = [ParamSet::new(&[], Vec::new())];
    let portfolio = Mutex::new(PortfolioSum::new(plan.dates.clone(), plan.combos.len() + 1));
    let done = AtomicUsize::new(0);
    let total = plan.jobs.len();
    plan.jobs.par_iter().enumerate().try_for_each(|(i, job)| {
        let tables = execute_job(plan, job, &benchmark, &portfolio)?;
        sink(i, tables);
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
        Ok::<_, ArrowError>(())
    })?;
    let sums = portfolio.into_inner().unwrap_or_else(|e| e.into_inner());
    let curves: Vec<Vec<f64>> = (0..plan.combos.len()).map(|i| sums.curve(i)).collect();
    let bench = sums.curve(plan.combos.len());
    let names: Vec<String> = plan.combos.iter().map(|p| p.json().to_string()).collect();
    let portfolio = portfolio_table(&names, &plan.dates, &curves, &bench)?;
    let portfolio_metrics = names
        .iter()
        .cloned()
        .zip(
            curves
                .iter()
                .map(|c| portfolio_metrics(plan.capital, c, &bench)),
        )
        .collect();
    Ok(BatchOutcome {
        portfolio,
        portfolio_metrics,
        jobs: total,
        failed: plan.jobs.iter().filter(|j| j.bars.is_err()).count(),
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
    let plan = Plan::new(spec, source, universe)?;
    let collected = Mutex::new(Vec::with_capacity(plan.jobs.len()));
    let outcome = run_plan(
        &plan,
        &|i, t| {
            collected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((i, t))
        },
        &|_, _| {},
    )?;
    let mut jobs = collected.into_inner().unwrap_or_else(|e| e.into_inner());
    jobs.sort_by_key(|(i, _)| *i);
    let concat = |schema, parts: Vec<RecordBatch>| arrow::compute::concat_batches(&schema, &parts);
    let metrics = concat(
        xt_shared::schema::METRICS.clone(),
        jobs.iter().map(|(_, t)| t.metrics.clone()).collect(),
    )?;
    let trades = plan
        .want_trades
        .then(|| {
            concat(
                xt_shared::schema::TRADES.clone(),
                jobs.iter().filter_map(|(_, t)| t.trades.clone()).collect(),
            )
        })
        .transpose()?;
    let equity = plan
        .want_equity
        .then(|| {
            concat(
                xt_shared::schema::EQUITY.clone(),
                jobs.iter().filter_map(|(_, t)| t.equity.clone()).collect(),
            )
        })
        .transpose()?;
    Ok(BatchResult {
        metrics,
        trades,
        equity,
        outcome,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("building result tables: {0}")]
    Arrow(#[from] ArrowError),
}
