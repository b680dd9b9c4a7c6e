//! A job: one symbol, every parameter combination of its batch. The bars and the exchange's
//! fill rules are prepared once, indicator series are computed once and shared between the
//! combinations, and the per-combination buffers are reused, so a grid costs little more
//! than its signal and fill loops.

use xt_shared::Bars;
use xt_shared::metrics::{Metrics, job_metrics, trade_stats};

use super::exchange::Exchange;
use super::indicators::Indicators;
use super::interrupt::{Halt, Interrupt};
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

/// Runs every combination, handing each one's run and metrics to `sink` in order; stops
/// between combinations (or within a long one) when `interrupt` says so.
pub fn run_job(
    job: &Job<'_>,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    interrupt: &dyn Interrupt,
    mut sink: impl FnMut(usize, &SleeveRun, &Metrics),
) -> Result<(), Halt> {
    let mut indicators = Indicators::new(job.bars);
    let mut signals = Signals::default();
    let mut run = SleeveRun::default();
    let affordable = affordable(job);
    for (i, params) in combos.iter().enumerate() {
        interrupt.check()?;
        signals.reset(job.bars.len());
        strategy.signals(i, params, &mut indicators, &mut signals);
        simulate(
            job.bars,
            job.exchange,
            job.member,
            &signals,
            job.capital,
            interrupt,
            &mut run,
        )?;
        let closed = run
            .trades
            .iter()
            .filter(|t| t.exit.is_some())
            .map(|t| t.pnl);
        let mut metrics = job_metrics(job.capital, &run.equity, &run.qty, closed);
        metrics.trading = trade_stats(&run.trades, &run.equity);
        metrics.trading.affordable = affordable;
        sink(i, &run, &metrics);
    }
    Ok(())
}

/// The share of the sleeve's member bars on which one lot at the open costs no more than
/// its capital (fill costs aside): what tells a sleeve too small to trade its stock.
fn affordable(job: &Job<'_>) -> Option<f64> {
    let (mut member, mut can) = (0usize, 0usize);
    for (open, &m) in job.bars.open.iter().zip(job.member) {
        if m {
            member += 1;
            can += usize::from(open * job.exchange.lot <= job.capital);
        }
    }
    (member > 0).then(|| can as f64 / member as f64)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use xt_shared::{BarSource, Market, SyntheticMarket};

    use super::*;
    use crate::strategy;

    /// Halts at its `at`-th check.
    struct After {
        at: usize,
        checks: AtomicUsize,
    }

    impl Interrupt for After {
        fn check(&self) -> Result<(), Halt> {
            if self.checks.fetch_add(1, Ordering::Relaxed) + 1 >= self.at {
                Err(Halt::Cancelled)
            } else {
                Ok(())
            }
        }
    }

    fn run(years: usize, grid: serde_json::Value, at: usize) -> (Result<(), Halt>, usize, usize) {
        let synth = SyntheticMarket {
            symbols: 1,
            years,
            seed: 5,
        };
        let bars = synth.load(&synth.symbol(0)).unwrap();
        let member = vec![true; bars.len()];
        let exchange = Exchange::new(&bars, Market::Cn, Market::Cn.default_costs(), None);
        let job = Job {
            bars: &bars,
            member: &member,
            exchange: &exchange,
            capital: 1e6,
        };
        let s = strategy::find("sma_cross").unwrap();
        let grid = serde_json::from_value(grid).unwrap();
        let combos = strategy::expand(s.def(), None, Some(&grid)).unwrap();
        let interrupt = After {
            at,
            checks: AtomicUsize::new(0),
        };
        let mut sunk = 0;
        let result = run_job(&job, s, &combos, &interrupt, |_, _, _| sunk += 1);
        (result, sunk, interrupt.checks.into_inner())
    }

    #[test]
    fn an_interrupt_stops_a_job_between_parameter_sets() {
        let grid = serde_json::json!({"fast": [2, 3, 4, 5, 6], "slow": [20, 30]});
        let (result, sunk, checks) = run(2, grid.clone(), 4);
        assert_eq!(result, Err(Halt::Cancelled));
        // Two years are fewer bars than a check inside the series: one check a set.
        assert_eq!((sunk, checks), (3, 4));
        assert_eq!(run(2, grid, usize::MAX).0, Ok(()));
    }

    #[test]
    fn an_interrupt_stops_a_long_series_within_a_parameter_set() {
        // 40 years (10,080 bars): a check at the set's start and at bars 4095 and 8191.
        let (result, sunk, checks) = run(40, serde_json::json!({"fast": [5], "slow": [20]}), 2);
        assert_eq!((result, sunk, checks), (Err(Halt::Cancelled), 0, 2));
        let (result, sunk, checks) = run(40, serde_json::json!({"fast": [5], "slow": [20]}), 9);
        assert_eq!((result, sunk), (Ok(()), 1));
        assert_eq!(checks, 3);
    }
}
