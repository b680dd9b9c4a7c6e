//! A job: one symbol of a batch with everything a worker needs to run it, and the planning
//! that turns a batch into its jobs (SEMANTICS section 5: which symbols get a job, and the
//! capital of each sleeve).
//!
//! Planning reads only each member's dates (a symbol with no bar inside both the range and
//! its membership gets no job, and weights are normalised over the symbols that do; the
//! union of the dates is the portfolio's calendar). Whoever runs a job reads its bars and
//! checks its prices: the local runner and a worker alike.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::funding::{Funding, Holding};
use crate::market::{Costs, Market};
use crate::portfolio::union_dates;
use crate::source::BarSource;
use crate::spec::{BatchSpec, SpecError, Table};
use crate::universe::{Member, Universe};
use rayon::prelude::*;

/// One symbol's job, as sent to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Index of the job in its batch.
    pub job: u32,
    pub symbol: String,
    /// The batch's data URL (`file://DIR` or `synthetic://...`).
    pub data: String,
    pub start: Option<Date>,
    pub end: Option<Date>,
    pub strategy: String,
    pub params: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    pub grid: Option<std::collections::BTreeMap<String, Vec<serde_json::Value>>>,
    /// This sleeve's capital (SEMANTICS section 5): the batch capital times the symbol's
    /// weight among the members on its first member date.
    pub capital: f64,
    /// The symbol's weight, normalised over the batch's jobs (absent from batches planned
    /// before it was kept: `capital` over the batch's capital then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The batch's universe has membership dates: its portfolio is rebalanced to the
    /// members at each change, so its sleeves are summed where the whole calendar is known
    /// (the coordinator), never into a worker's part.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub point_in_time: bool,
    pub price_limit: Option<f64>,
    /// Point-in-time membership; empty means always a member.
    pub intervals: Vec<(Date, Date)>,
    pub market: Market,
    pub costs: Costs,
    /// The price limit and stamp duty in force by date (SEMANTICS section 12), with the
    /// universe row's limit and the batch's explicit stamp duty already applied; they
    /// replace `price_limit` and `costs.stamp_duty` (absent from jobs planned before
    /// schedules: those two then hold on every date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::rules::SymbolRules>,
    pub trades: bool,
    pub equity: bool,
}

impl JobSpec {
    /// How the sleeves of a batch's `jobs` add up to its portfolio over `dates`.
    pub fn funding(jobs: &[JobSpec], dates: &[Date], initial: f64) -> Funding {
        let holdings: Vec<Holding> = jobs
            .iter()
            .map(|j| Holding {
                weight: j.weight.unwrap_or(j.capital / initial),
                intervals: &j.intervals,
            })
            .collect();
        Funding::new(dates, &holdings)
    }

    pub fn member(&self) -> Member {
        Member {
            symbol: self.symbol.clone(),
            weight: None,
            price_limit: self.price_limit,
            intervals: self.intervals.clone(),
        }
    }
}

/// A planned job and how many bars it has in range (0 when its dates could not be read: the
/// job still runs, and reports the error in its rows).
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub spec: JobSpec,
    pub bars: usize,
}

/// A batch as jobs.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub jobs: Vec<PlannedJob>,
    /// The union of every job's dates: the portfolio's calendar.
    pub dates: Vec<Date>,
    pub funding: Funding,
}

/// Splits a batch into jobs, reading the members' dates in parallel on the current rayon pool.
pub fn plan(
    spec: &BatchSpec,
    source: &dyn BarSource,
    universe: &Universe,
) -> Result<BatchPlan, SpecError> {
    let (start, end) = spec.range()?;
    let loaded: Vec<Result<Vec<Date>, String>> = universe
        .members
        .par_iter()
        .map(|m| {
            source
                .dates(&m.symbol, start, end)
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut chosen = Vec::new();
    for (m, dates) in universe.members.iter().zip(loaded) {
        let has_bars = match &dates {
            Ok(d) => d.iter().any(|&d| m.is_member(d)),
            // A job whose data fails still runs: it reports the error in its rows.
            Err(_) => true,
        };
        if has_bars {
            chosen.push((m, dates));
        }
    }
    if chosen.is_empty() {
        return Err(SpecError::new(
            "universe",
            "no symbol has a bar inside the date range and its membership",
        ));
    }
    let total: f64 = chosen.iter().map(|(m, _)| m.weight.unwrap_or(1.0)).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(SpecError::new(
            "universe",
            "the weights of the symbols with jobs sum to 0",
        ));
    }
    let costs = spec.resolved_costs();
    let schedule = spec.schedule();
    let explicit_stamp = spec.costs.and_then(|c| c.stamp_duty);
    let dates = union_dates(chosen.iter().filter_map(|(_, d)| d.as_deref().ok()));
    if let Some(wf) = &spec.walk_forward {
        wf.check_calendar(dates.len())?;
    }
    let holdings: Vec<Holding> = chosen
        .iter()
        .map(|(m, _)| Holding {
            weight: m.weight.unwrap_or(1.0) / total,
            intervals: &m.intervals,
        })
        .collect();
    let funding = Funding::new(&dates, &holdings);
    let jobs: Vec<PlannedJob> = chosen
        .iter()
        .enumerate()
        .map(|(i, (m, dates))| PlannedJob {
            spec: JobSpec {
                job: i as u32,
                symbol: m.symbol.clone(),
                data: spec.data.clone(),
                start,
                end,
                strategy: spec.strategy.clone(),
                params: spec.params.clone(),
                grid: spec.grid.clone(),
                capital: funding
                    .sleeve_capital(i, spec.capital)
                    .unwrap_or(spec.capital * m.weight.unwrap_or(1.0) / total),
                weight: Some(m.weight.unwrap_or(1.0) / total),
                point_in_time: funding.point_in_time(),
                price_limit: m.price_limit,
                intervals: m.intervals.clone(),
                market: spec.market,
                costs,
                rules: Some(crate::rules::for_symbol(
                    &schedule,
                    &m.symbol,
                    // US shares have no limits: a universe's column is for A-shares.
                    m.price_limit.filter(|_| spec.market == Market::Cn),
                    explicit_stamp,
                    costs.stamp_duty,
                )),
                trades: spec.wants(Table::Trades),
                equity: spec.wants(Table::Equity),
            },
            bars: dates.as_ref().map_or(0, |d| d.len()),
        })
        .collect();
    Ok(BatchPlan {
        jobs,
        dates,
        funding,
    })
}
