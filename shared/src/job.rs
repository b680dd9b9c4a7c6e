//! A job: one symbol of a batch with everything a worker needs to run it, and the planning
//! that turns a batch into its jobs (SEMANTICS section 5: which symbols get a job, and the
//! capital of each sleeve).
//!
//! Planning reads the bars once to decide (a symbol with no bar inside both the range and
//! its membership gets no job, and weights are normalised over the symbols that do), so it
//! hands them on with the plan: the local runner uses them as they are, the coordinator
//! drops them and the worker reads its symbol again.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::market::{Costs, Market};
use crate::portfolio::union_dates;
use crate::source::BarSource;
use crate::spec::{BatchSpec, SpecError, Table};
use crate::universe::{Member, Universe};
use rayon::prelude::*;

use crate::Bars;

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
    /// This sleeve's capital: the batch capital times the symbol's normalised weight.
    pub capital: f64,
    pub price_limit: Option<f64>,
    /// Point-in-time membership; empty means always a member.
    pub intervals: Vec<(Date, Date)>,
    pub market: Market,
    pub costs: Costs,
    pub trades: bool,
    pub equity: bool,
}

impl JobSpec {
    pub fn member(&self) -> Member {
        Member {
            symbol: self.symbol.clone(),
            weight: None,
            price_limit: self.price_limit,
            intervals: self.intervals.clone(),
        }
    }
}

/// A planned job and the bars planning read for it (or why they could not be read).
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub spec: JobSpec,
    pub bars: Result<Bars, String>,
}

/// A batch as jobs.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub jobs: Vec<PlannedJob>,
    /// The union of every job's dates: the portfolio's calendar.
    pub dates: Vec<Date>,
}

/// Splits a batch into jobs, reading the members' bars in parallel on the current rayon pool.
pub fn plan(
    spec: &BatchSpec,
    source: &dyn BarSource,
    universe: &Universe,
) -> Result<BatchPlan, SpecError> {
    let (start, end) = spec.range()?;
    let loaded: Vec<Result<Bars, String>> = universe
        .members
        .par_iter()
        .map(|m| {
            source
                .load_range(&m.symbol, start, end)
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut chosen = Vec::new();
    for (m, bars) in universe.members.iter().zip(loaded) {
        let has_bars = match &bars {
            Ok(b) => b.dates.iter().any(|&d| m.is_member(d)),
            // A job whose data fails still runs: it reports the error in its rows.
            Err(_) => true,
        };
        if has_bars {
            chosen.push((m, bars));
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
    let jobs: Vec<PlannedJob> = chosen
        .into_iter()
        .enumerate()
        .map(|(i, (m, bars))| PlannedJob {
            spec: JobSpec {
                job: i as u32,
                symbol: m.symbol.clone(),
                data: spec.data.clone(),
                start,
                end,
                strategy: spec.strategy.clone(),
                params: spec.params.clone(),
                grid: spec.grid.clone(),
                capital: spec.capital * m.weight.unwrap_or(1.0) / total,
                price_limit: m.price_limit,
                intervals: m.intervals.clone(),
                market: spec.market,
                costs,
                trades: spec.wants(Table::Trades),
                equity: spec.wants(Table::Equity),
            },
            bars,
        })
        .collect();
    let dates = union_dates(
        jobs.iter()
            .filter_map(|j| j.bars.as_ref().ok())
            .map(|b| &b.dates[..]),
    );
    Ok(BatchPlan { jobs, dates })
}
