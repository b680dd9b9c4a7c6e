//! Walk-forward folds over a grid's portfolio curves (SEMANTICS section 10): each fold's
//! winner chosen in sample, scored out of sample, and the out-of-sample windows stitched.
//! Every set ran once over the whole range; a window only chooses which returns count.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::metrics::{PortfolioMetrics, curve_metrics};
use crate::spec::SpecError;

/// A batch's `walk_forward`: lengths in bars of the portfolio calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WalkForward {
    /// In-sample bars (>= 20).
    #[serde(rename = "is")]
    pub in_sample: usize,
    /// Out-of-sample bars (>= 2).
    pub oos: usize,
    /// Bars between folds' starts; `oos` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// Every in-sample window starts at the first bar.
    #[serde(default)]
    pub anchored: bool,
    /// Bars left out between a fold's in-sample and out-of-sample windows.
    #[serde(default)]
    pub purge: usize,
    #[serde(default)]
    pub metric: WindowMetric,
}

/// The metric a fold's winner maximises over its in-sample window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WindowMetric {
    #[default]
    Sharpe,
    Sortino,
    TotalReturn,
    Cagr,
    Calmar,
    /// The value nearest 0 wins (drawdowns are <= 0).
    MaxDrawdown,
}

impl WindowMetric {
    pub fn name(self) -> &'static str {
        match self {
            WindowMetric::Sharpe => "sharpe",
            WindowMetric::Sortino => "sortino",
            WindowMetric::TotalReturn => "total_return",
            WindowMetric::Cagr => "cagr",
            WindowMetric::Calmar => "calmar",
            WindowMetric::MaxDrawdown => "max_drawdown",
        }
    }

    fn of(self, m: &PortfolioMetrics) -> Option<f64> {
        match self {
            WindowMetric::Sharpe => m.sharpe,
            WindowMetric::Sortino => m.sortino,
            WindowMetric::TotalReturn => m.total_return,
            WindowMetric::Cagr => m.cagr,
            WindowMetric::Calmar => m.calmar,
            WindowMetric::MaxDrawdown => m.max_drawdown,
        }
    }
}

/// One fold's windows, as bar indices of the calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub in_sample: Range<usize>,
    pub oos: Range<usize>,
}

impl WalkForward {
    /// The rules that need no data.
    pub fn check(&self) -> Result<(), SpecError> {
        let bad = |field: &str, m: String| SpecError::new(format!("walk_forward.{field}"), m);
        if self.in_sample < 20 {
            return Err(bad(
                "is",
                format!("must be >= 20 bars, got {}", self.in_sample),
            ));
        }
        if self.oos < 2 {
            return Err(bad("oos", format!("must be >= 2 bars, got {}", self.oos)));
        }
        if self.step == Some(0) {
            return Err(bad("step", "must be >= 1 bar, got 0".into()));
        }
        Ok(())
    }

    /// The folds over a calendar of `len` bars: formed while the out-of-sample window holds
    /// at least 2 bars.
    pub fn folds(&self, len: usize) -> Vec<Fold> {
        let step = self.step.unwrap_or(self.oos);
        let mut folds = Vec::new();
        for k in 0.. {
            let end = self.in_sample + k * step;
            let start = if self.anchored { 0 } else { k * step };
            let oos_start = end + self.purge;
            let oos_end = (oos_start + self.oos).min(len);
            if oos_start >= len || oos_end - oos_start < 2 {
                break;
            }
            folds.push(Fold {
                in_sample: start..end,
                oos: oos_start..oos_end,
            });
        }
        folds
    }

    /// Checks that a calendar of `len` bars has a fold: before any job runs.
    pub fn check_calendar(&self, len: usize) -> Result<(), SpecError> {
        if self.folds(len).is_empty() {
            return Err(SpecError::new(
                "walk_forward",
                format!(
                    "no fold fits the {len} bars of the batch's calendar: is ({}) + purge ({}) \
                     + 2 out-of-sample bars are needed",
                    self.in_sample, self.purge
                ),
            ));
        }
        Ok(())
    }
}

/// A row of the `folds` table (dates inclusive; `YYYY-MM-DD` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldRow {
    pub fold: usize,
    #[serde(serialize_with = "iso")]
    pub is_start: Date,
    #[serde(serialize_with = "iso")]
    pub is_end: Date,
    #[serde(serialize_with = "iso")]
    pub oos_start: Date,
    #[serde(serialize_with = "iso")]
    pub oos_end: Date,
    pub params: String,
    pub is_metric: Option<f64>,
    pub oos_metric: Option<f64>,
    pub is_sharpe: Option<f64>,
    pub oos_sharpe: Option<f64>,
    pub oos_total_return: Option<f64>,
}

fn iso<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::date::format_date(*d))
}

/// A walk-forward's results.
#[derive(Debug, Clone, PartialEq)]
pub struct WalkOutcome {
    pub folds: Vec<FoldRow>,
    /// The stitched out-of-sample curve: (date, fold, params, equity).
    pub oos_equity: Vec<(Date, usize, String, f64)>,
    pub efficiency: Option<f64>,
    /// Section 8's metrics of the stitched curve, from the initial capital.
    pub metrics: PortfolioMetrics,
}

/// Section 8's metrics of the window `[a, b)` of `curve`: its returns, from `curve[a - 1]`
/// (the initial capital when `a` is 0).
pub fn window_metrics(initial: f64, curve: &[f64], w: &Range<usize>) -> PortfolioMetrics {
    let start = if w.start == 0 {
        initial
    } else {
        curve[w.start - 1]
    };
    curve_metrics(start, &curve[w.clone()])
}

/// Runs the folds of `wf` over the portfolio `curves` of the sets `names` (both in grid
/// order, each curve over `dates`).
pub fn walk_forward(
    wf: &WalkForward,
    dates: &[Date],
    names: &[String],
    curves: &[&[f64]],
    initial: f64,
) -> WalkOutcome {
    let ret = |c: &[f64], t: usize| c[t] / if t == 0 { initial } else { c[t - 1] } - 1.0;
    let folds = wf.folds(dates.len());
    let mut rows = Vec::with_capacity(folds.len());
    let mut chosen = Vec::with_capacity(folds.len());
    let (mut is_sum, mut is_count) = (0.0, 0usize);
    for (k, f) in folds.iter().enumerate() {
        let mut best: Option<(usize, PortfolioMetrics, f64)> = None;
        let mut first = None;
        for (n, c) in curves.iter().enumerate() {
            let m = window_metrics(initial, c, &f.in_sample);
            let v = wf.metric.of(&m);
            first.get_or_insert((n, m.clone()));
            if let Some(v) = v
                && best.as_ref().is_none_or(|(_, _, b)| v > *b)
            {
                best = Some((n, m, v));
            }
        }
        // With every set's metric null, the first in grid order stands.
        let (n, is_m) = match best {
            Some((n, m, _)) => (n, m),
            None => first.unwrap_or_default(),
        };
        let oos_m = window_metrics(initial, curves[n], &f.oos);
        for t in f.in_sample.clone() {
            is_sum += ret(curves[n], t);
        }
        is_count += f.in_sample.len();
        chosen.push(n);
        rows.push(FoldRow {
            fold: k,
            is_start: dates[f.in_sample.start],
            is_end: dates[f.in_sample.end - 1],
            oos_start: dates[f.oos.start],
            oos_end: dates[f.oos.end - 1],
            params: names[n].clone(),
            is_metric: wf.metric.of(&is_m),
            oos_metric: wf.metric.of(&oos_m),
            is_sharpe: is_m.sharpe,
            oos_sharpe: oos_m.sharpe,
            oos_total_return: oos_m.total_return,
        });
    }
    // Each date's owner: the last fold whose out-of-sample window holds it.
    let mut owner: Vec<Option<usize>> = vec![None; dates.len()];
    for (k, f) in folds.iter().enumerate() {
        for o in &mut owner[f.oos.clone()] {
            *o = Some(k);
        }
    }
    let mut equity = initial;
    let mut stitched = Vec::new();
    let mut oos_equity = Vec::new();
    for (t, k) in owner.iter().enumerate() {
        let Some(k) = *k else { continue };
        let n = chosen[k];
        equity *= 1.0 + ret(curves[n], t);
        stitched.push(equity);
        oos_equity.push((dates[t], k, names[n].clone(), equity));
    }
    let is_mean = is_sum / is_count as f64;
    let oos_mean = crate::metrics::returns(initial, &stitched)
        .iter()
        .sum::<f64>()
        / stitched.len() as f64;
    WalkOutcome {
        folds: rows,
        efficiency: (is_count > 0 && is_mean > 0.0 && !stitched.is_empty())
            .then(|| oos_mean / is_mean)
            .filter(|e| e.is_finite()),
        metrics: curve_metrics(initial, &stitched),
        oos_equity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(is: usize, oos: usize, step: Option<usize>, anchored: bool, purge: usize) -> WalkForward {
        WalkForward {
            in_sample: is,
            oos,
            step,
            anchored,
            purge,
            metric: WindowMetric::Sharpe,
        }
    }

    #[test]
    fn folds_follow_the_definition() {
        let f = wf(20, 5, None, false, 0).folds(32);
        assert_eq!(
            f,
            vec![
                Fold {
                    in_sample: 0..20,
                    oos: 20..25
                },
                Fold {
                    in_sample: 5..25,
                    oos: 25..30
                },
                // The last out-of-sample window is cut at the calendar's end: 2 bars.
                Fold {
                    in_sample: 10..30,
                    oos: 30..32
                },
            ]
        );
        let f = wf(20, 5, Some(3), true, 2).folds(30);
        assert_eq!(
            f[1],
            Fold {
                in_sample: 0..23,
                oos: 25..30
            }
        );
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(wf(20, 5, None, false, 0).folds(21).is_empty());
        assert!(wf(20, 5, None, false, 0).check_calendar(21).is_err());
    }

    /// Two sets that trade places halfway: the fold winners switch, and the stitched curve
    /// chains the winners' own returns.
    #[test]
    fn winners_switch_and_the_curve_stitches() {
        let n = 60;
        let dates: Vec<Date> = (0..n as i32).collect();
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        let (mut ea, mut eb) = (100.0, 100.0);
        for t in 0..n {
            let wiggle = if t % 2 == 0 { 0.002 } else { -0.001 };
            let (ra, rb) = if t < 25 {
                (0.01 + wiggle, wiggle)
            } else {
                (wiggle, 0.01 + wiggle)
            };
            ea *= 1.0 + ra;
            eb *= 1.0 + rb;
            a[t] = ea;
            b[t] = eb;
        }
        let names = vec!["a".to_string(), "b".to_string()];
        let out = walk_forward(
            &wf(20, 10, None, false, 0),
            &dates,
            &names,
            &[&a, &b],
            100.0,
        );
        let picks: Vec<&str> = out.folds.iter().map(|f| f.params.as_str()).collect();
        assert_eq!(picks, ["a", "a", "b", "b"]);
        assert_eq!(out.oos_equity.len(), 40);
        // Dates 20..30 from a, 30..40 from a (fold 1 picked a on 10..30), 40..60 from b.
        let mut e = 100.0;
        for t in 20..60 {
            let c = if t < 40 { &a } else { &b };
            e *= c[t] / c[t - 1];
        }
        assert!((out.oos_equity.last().unwrap().3 - e).abs() < 1e-9);
        assert!(out.efficiency.is_some());
    }
}
