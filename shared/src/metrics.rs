//! Performance metrics of an equity curve (SEMANTICS section 8), for one job or a whole
//! portfolio. A metric without a defined value (no trades, zero variance) is `None`, which
//! the result tables write as null: never NaN, never a made-up 0.

use serde::{Deserialize, Serialize};

/// Trading days per year, the annualisation factor of every metric.
pub const YEAR: f64 = 252.0;

/// The metric columns of the `metrics` table, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub final_equity: Option<f64>,
    pub total_return: Option<f64>,
    pub cagr: Option<f64>,
    pub volatility: Option<f64>,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub calmar: Option<f64>,
    pub trades: Option<i64>,
    pub win_rate: Option<f64>,
    pub profit_factor: Option<f64>,
    pub exposure: Option<f64>,
    /// The trading beyond SEMANTICS section 8, from [`trade_stats`].
    pub trading: TradeStats,
}

/// What a sleeve's trades cost and how they went: the `metrics` table's columns after
/// `error` (see the README's "Trading statistics").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TradeStats {
    /// Commissions and stamp duty paid, entries and exits (slippage is in the fill prices).
    pub costs: Option<f64>,
    /// Value bought and sold: `price * qty` of every fill.
    pub traded: Option<f64>,
    /// `traded / mean(equity) * 252 / bars`: times the sleeve's value traded a year.
    pub turnover: Option<f64>,
    /// Mean pnl of the closed trades with `pnl > 0`.
    pub avg_win: Option<f64>,
    /// Mean pnl of the other closed trades (<= 0).
    pub avg_loss: Option<f64>,
    /// Mean pnl of the closed trades.
    pub expectancy: Option<f64>,
    /// Mean bars from entry fill to exit fill of the closed trades.
    pub avg_bars_held: Option<f64>,
    /// Share of the sleeve's member bars whose open prices one lot at no more than the
    /// sleeve's capital: 0 is a sleeve that can never buy (its money stays in cash).
    /// The same for every parameter set; set by the engine, not by [`trade_stats`].
    pub affordable: Option<f64>,
}

/// The names of [`TradeStats`]' columns, in order.
pub const TRADE_STAT_COLUMNS: [&str; 8] = [
    "costs",
    "traded",
    "turnover",
    "avg_win",
    "avg_loss",
    "expectancy",
    "avg_bars_held",
    "affordable",
];

impl TradeStats {
    pub fn values(&self) -> [Option<f64>; 8] {
        [
            self.costs,
            self.traded,
            self.turnover,
            self.avg_win,
            self.avg_loss,
            self.expectancy,
            self.avg_bars_held,
            self.affordable,
        ]
    }
}

/// A sleeve's [`TradeStats`] from its trades and its equity curve.
pub fn trade_stats(trades: &[crate::sleeve::Trade], equity: &[f64]) -> TradeStats {
    let (mut costs, mut traded) = (0.0, 0.0);
    let (mut closed, mut wins, mut won, mut lost, mut held) = (0usize, 0usize, 0.0, 0.0, 0usize);
    for t in trades {
        costs += t.entry_costs + t.exit_costs;
        traded += t.entry_price * t.qty;
        if let (Some(exit), Some(price)) = (t.exit, t.exit_price) {
            traded += price * t.qty;
            closed += 1;
            held += exit - t.entry;
            if t.pnl > 0.0 {
                wins += 1;
                won += t.pnl;
            } else {
                lost += t.pnl;
            }
        }
    }
    let mean_equity = mean(equity);
    let per = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
    TradeStats {
        costs: finite(costs),
        traded: finite(traded),
        turnover: (!equity.is_empty() && mean_equity > 0.0)
            .then(|| traded / mean_equity * YEAR / equity.len() as f64)
            .and_then(finite),
        avg_win: per(won, wins),
        avg_loss: per(lost, closed - wins),
        expectancy: per(won + lost, closed),
        avg_bars_held: per(held as f64, closed),
        affordable: None,
    }
}

/// Portfolio-level metrics: the curve's own plus the comparison with its benchmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortfolioMetrics {
    pub final_equity: Option<f64>,
    pub total_return: Option<f64>,
    pub cagr: Option<f64>,
    pub volatility: Option<f64>,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub calmar: Option<f64>,
    /// `252 * intercept` of the regression of daily returns on the benchmark's.
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub tracking_error: Option<f64>,
    pub information_ratio: Option<f64>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Daily returns with `equity[-1] = initial`.
pub fn returns(initial: f64, equity: &[f64]) -> Vec<f64> {
    let mut prev = initial;
    equity
        .iter()
        .map(|&e| {
            let r = e / prev - 1.0;
            prev = e;
            r
        })
        .collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (ddof = 1); needs two values.
fn std(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let m = mean(x);
    finite((x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt())
}

/// The metrics every curve has, from `final_equity` to `calmar`.
struct CurveMetrics {
    final_equity: Option<f64>,
    total_return: Option<f64>,
    cagr: Option<f64>,
    volatility: Option<f64>,
    sharpe: Option<f64>,
    sortino: Option<f64>,
    max_drawdown: Option<f64>,
    calmar: Option<f64>,
}

/// The curve metrics in two passes over the equity, without materialising the returns
/// (this runs once per parameter combination, so it is part of the hot loop of a grid).
fn curve(initial: f64, equity: &[f64]) -> CurveMetrics {
    let Some(&last) = equity.last() else {
        return CurveMetrics {
            final_equity: None,
            total_return: None,
            cagr: None,
            volatility: None,
            sharpe: None,
            sortino: None,
            max_drawdown: None,
            calmar: None,
        };
    };
    let n = equity.len() as f64;
    let (mut sum, mut down2, mut peak, mut max_drawdown, mut prev) =
        (0.0, 0.0, initial, 0.0f64, initial);
    for &e in equity {
        let r = e / prev - 1.0;
        prev = e;
        sum += r;
        if r < 0.0 {
            down2 += r * r;
        }
        peak = f64::max(peak, e);
        max_drawdown = max_drawdown.min(e / peak - 1.0);
    }
    let m = sum / n;
    let sd = if equity.len() < 2 {
        None
    } else {
        let mut prev = initial;
        let mut ss = 0.0;
        for &e in equity {
            let d = (e / prev - 1.0) - m;
            prev = e;
            ss += d * d;
        }
        finite((ss / (n - 1.0)).sqrt())
    };
    let downside = (down2 / n).sqrt();
    let growth = last / initial;
    let cagr = finite(growth.powf(YEAR / n) - 1.0);
    CurveMetrics {
        final_equity: finite(last),
        total_return: finite(growth - 1.0),
        cagr,
        volatility: sd.map(|s| s * YEAR.sqrt()),
        sharpe: sd
            .filter(|&s| s > 0.0)
            .and_then(|s| finite(m / s * YEAR.sqrt())),
        sortino: (downside > 0.0)
            .then(|| m / downside * YEAR.sqrt())
            .and_then(finite),
        max_drawdown: finite(max_drawdown),
        calmar: cagr
            .filter(|_| max_drawdown < 0.0)
            .and_then(|c| finite(c / max_drawdown.abs())),
    }
}

/// A job's metrics from its equity curve, its position per bar (for `exposure`) and the
/// pnl of its closed trades (for `trades`, `win_rate` and `profit_factor`).
pub fn job_metrics(
    initial: f64,
    equity: &[f64],
    qty: &[f64],
    closed_pnl: impl Iterator<Item = f64>,
) -> Metrics {
    let c = curve(initial, equity);
    let (mut count, mut wins, mut gains, mut losses) = (0i64, 0i64, 0.0, 0.0);
    for pnl in closed_pnl {
        count += 1;
        if pnl > 0.0 {
            wins += 1;
            gains += pnl;
        } else {
            losses -= pnl;
        }
    }
    let exposure = (!qty.is_empty())
        .then(|| qty.iter().filter(|&&q| q > 0.0).count() as f64 / qty.len() as f64);
    Metrics {
        final_equity: c.final_equity,
        total_return: c.total_return,
        cagr: c.cagr,
        volatility: c.volatility,
        sharpe: c.sharpe,
        sortino: c.sortino,
        max_drawdown: c.max_drawdown,
        calmar: c.calmar,
        trades: Some(count),
        win_rate: (count > 0).then(|| wins as f64 / count as f64),
        profit_factor: (losses > 0.0).then(|| gains / losses),
        exposure,
        trading: TradeStats::default(),
    }
}

/// Section 8's metrics of a curve alone: no benchmark, so no alpha, beta or tracking.
pub fn curve_metrics(initial: f64, equity: &[f64]) -> PortfolioMetrics {
    let c = curve(initial, equity);
    PortfolioMetrics {
        final_equity: c.final_equity,
        total_return: c.total_return,
        cagr: c.cagr,
        volatility: c.volatility,
        sharpe: c.sharpe,
        sortino: c.sortino,
        max_drawdown: c.max_drawdown,
        calmar: c.calmar,
        ..PortfolioMetrics::default()
    }
}

/// Metrics of a portfolio curve against its benchmark curve (same dates, same initial).
pub fn portfolio_metrics(initial: f64, equity: &[f64], benchmark: &[f64]) -> PortfolioMetrics {
    let r = returns(initial, equity);
    let b = returns(initial, benchmark);
    let mut out = curve_metrics(initial, equity);
    if r.len() >= 2 && r.len() == b.len() {
        let (mr, mb) = (mean(&r), mean(&b));
        let n1 = (r.len() - 1) as f64;
        let cov = r
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - mr) * (y - mb))
            .sum::<f64>()
            / n1;
        let var = b.iter().map(|y| (y - mb) * (y - mb)).sum::<f64>() / n1;
        if var > 0.0 {
            let beta = cov / var;
            out.beta = finite(beta);
            out.alpha = finite(YEAR * (mr - beta * mb));
        }
        let active: Vec<f64> = r.iter().zip(&b).map(|(x, y)| x - y).collect();
        if let Some(sd) = std(&active) {
            out.tracking_error = finite(sd * YEAR.sqrt());
            if sd > 0.0 {
                out.information_ratio = finite(mean(&active) / sd * YEAR.sqrt());
            }
        }
    }
    out
}

#[cfg(test)]
mod trade_stats_tests {
    use super::*;
    use crate::sleeve::Trade;

    #[test]
    fn trade_statistics_by_hand() {
        let trade = |entry, exit: Option<usize>, price: f64, out: f64, pnl| Trade {
            entry,
            entry_price: price,
            exit,
            exit_price: exit.map(|_| out),
            qty: 100.0,
            entry_costs: 5.0,
            exit_costs: if exit.is_some() { 6.0 } else { 0.0 },
            pnl,
        };
        let trades = [
            trade(1, Some(4), 10.0, 12.0, 189.0),
            trade(5, Some(7), 12.0, 11.0, -111.0),
            trade(8, Some(9), 11.0, 13.0, 189.0),
            trade(9, None, 13.0, 0.0, 40.0),
        ];
        let equity = [1000.0, 1100.0, 1200.0, 1100.0];
        let s = trade_stats(&trades, &equity);
        assert_eq!(s.costs, Some(5.0 * 4.0 + 6.0 * 3.0));
        let traded = 100.0 * (10.0 + 12.0 + 12.0 + 11.0 + 11.0 + 13.0 + 13.0);
        assert_eq!(s.traded, Some(traded));
        assert_eq!(s.turnover, Some(traded / 1100.0 * 252.0 / 4.0));
        assert_eq!(s.avg_win, Some(189.0));
        assert_eq!(s.avg_loss, Some(-111.0));
        assert_eq!(s.expectancy, Some((189.0 * 2.0 - 111.0) / 3.0));
        assert_eq!(s.avg_bars_held, Some((3.0 + 2.0 + 1.0) / 3.0));
        let none = trade_stats(&[], &equity);
        assert_eq!(
            (none.costs, none.avg_win, none.expectancy),
            (Some(0.0), None, None)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_curve() {
        // Returns: +10%, -10%, +10%.
        let eq = [110.0, 99.0, 108.9];
        let m = job_metrics(100.0, &eq, &[1.0, 1.0, 0.0], [5.0, -2.0, 1.0].into_iter());
        assert_eq!(m.final_equity, Some(108.9));
        assert!((m.total_return.unwrap() - 0.089).abs() < 1e-12);
        assert!((m.max_drawdown.unwrap() - (99.0 / 110.0 - 1.0)).abs() < 1e-12);
        let r: [f64; 3] = [0.1, -0.1, 0.1];
        let mean = 0.1 / 3.0;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((m.sharpe.unwrap() - mean / sd * 252f64.sqrt()).abs() < 1e-9);
        assert!((m.sortino.unwrap() - mean / (0.01f64 / 3.0).sqrt() * 252f64.sqrt()).abs() < 1e-6);
        assert_eq!((m.trades, m.win_rate), (Some(3), Some(2.0 / 3.0)));
        assert_eq!(m.profit_factor, Some(3.0));
        assert_eq!(m.exposure, Some(2.0 / 3.0));
        assert!((m.cagr.unwrap() - (1.089f64.powf(84.0) - 1.0)).abs() < 1e-9);
    }

    #[test]
    fn undefined_metrics_are_none() {
        let m = job_metrics(100.0, &[100.0, 100.0], &[0.0, 0.0], std::iter::empty());
        assert_eq!(
            (m.sharpe, m.sortino, m.calmar, m.win_rate, m.profit_factor),
            (None, None, None, None, None)
        );
        assert_eq!(
            (m.volatility, m.max_drawdown, m.trades),
            (Some(0.0), Some(0.0), Some(0))
        );
        let one = job_metrics(100.0, &[101.0], &[1.0], std::iter::empty());
        assert_eq!(one.volatility, None);
    }

    #[test]
    fn benchmark_regression() {
        let bench = [101.0, 100.0, 102.0, 101.5];
        let p = portfolio_metrics(100.0, &bench, &bench);
        assert!((p.beta.unwrap() - 1.0).abs() < 1e-12);
        assert!(p.alpha.unwrap().abs() < 1e-12);
        assert_eq!(p.tracking_error, Some(0.0));
        assert_eq!(p.information_ratio, None);
    }
}
