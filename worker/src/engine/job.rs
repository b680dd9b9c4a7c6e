//! A job: one symbol, every parameter combination of its batch. The bars and the exchange's
//! fill rules are prepared once, indicator series are computed once and shared between the
//! combinations, and the per-combination buffers are reused, so a grid costs little more
//! than its signal and fill loops.

use xt_shared::Bars;
use xt_shared::metrics::{Metrics, job_metrics};

use super::exchange::Exchange;
use super::indicators::Indicators;
use super::sleeve::{SleeveRun, simulate};
use super::strategy::{ParamSet, Signals, Strategy};

/// Everything one symbol's sleeve needs, already in the batch's date range.
pub struct Job<'a> {
    pub bars: &'a Bars,
    /// Point-in-time membership per bar.
    pub member: &'a [bool],
    pub exchange: &'a Exchange,
    /// The sleeve's capital: batch capital times the symbol's normalised weight.
    pub capital: f64,
}

/// Runs every combination, handing each one's run and metrics to `sink` in order.
pub fn run_job(
    job: &Job<'_>,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    mut sink: impl FnMut(usize, &SleeveRun, &Metrics),
) {
    let mut indicators = Indicators::new(job.bars);
    let mut signals = Signals::default();
    let mut run = SleeveRun::default();
    for (i, params) in combos.iter().enumerate() {
        signals.reset(job.bars.len());
        strategy.signals(params, &mut indicators, &mut signals);
        simulate(
            job.bars,
            job.exchange,
            job.member,
            &signals,
            job.capital,
            &mut run,
        );
        let closed = run
            .trades
            .iter()
            .filter(|t| t.exit.is_some())
            .map(|t| t.pnl);
        let metrics = job_metrics(job.capital, &run.equity, &run.qty, closed);
        sink(i, &run, &metrics);
    }
}
