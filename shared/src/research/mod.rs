//! What a sweep's portfolio curves say beyond each set's metrics (SEMANTICS sections 10 and
//! 11): walk-forward folds, the deflated Sharpe ratio, the probability of backtest
//! overfitting and each set's neighbours. Computed once per batch from the summed curves,
//! by the same code in `xt local` and on a cluster.

pub mod overfit;
pub mod stats;
pub mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::error::ArrowError;
use serde_json::{Value, json};

use crate::date::Date;
use crate::metrics::PortfolioMetrics;
use crate::schema;
use crate::strategy::ParamSet;
pub use walk::{WalkForward, WindowMetric};

/// CSCV's blocks when the batch does not say.
pub const DEFAULT_PBO_BLOCKS: usize = 16;

/// The permutation that puts `combos` in grid order (SEMANTICS section 9): values compared
/// numerically, parameter by parameter, parameters in the byte order of their names.
pub fn grid_order(combos: &[ParamSet]) -> Vec<usize> {
    fn key(p: &ParamSet) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = p.entries().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
    let keys: Vec<Vec<(&str, f64)>> = combos.iter().map(key).collect();
    let mut order: Vec<usize> = (0..combos.len()).collect();
    order.sort_by(|&a, &b| {
        keys[a]
            .iter()
            .zip(&keys[b])
            .map(|(x, y)| x.1.total_cmp(&y.1))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Each set's neighbours (SEMANTICS section 11): the sets that differ from it in exactly
/// one parameter, by one step along that parameter's values sorted ascending.
pub fn neighbours(combos: &[ParamSet]) -> Vec<Vec<usize>> {
    let rows = values(combos);
    let axes = axes(&rows);
    let bits = |r: &[f64]| r.iter().map(|v| v.to_bits()).collect::<Vec<u64>>();
    let index: HashMap<Vec<u64>, usize> = rows
        .iter()
        .enumerate()
        .rev()
        .map(|(i, r)| (bits(r), i))
        .collect();
    rows.iter()
        .map(|r| {
            let mut out = Vec::new();
            for (k, axis) in axes.iter().enumerate() {
                let at = axis.partition_point(|v| v.total_cmp(&r[k]).is_lt());
                for step in [at.checked_sub(1), Some(at + 1)].into_iter().flatten() {
                    if let Some(&v) = axis.get(step) {
                        let mut key = r.clone();
                        key[k] = v;
                        if let Some(&i) = index.get(&bits(&key)) {
                            out.push(i);
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// Each set's parameter values, in the strategy's order.
fn values(sets: &[ParamSet]) -> Vec<Vec<f64>> {
    sets.iter()
        .map(|p| p.entries().map(|(_, v)| v).collect())
        .collect()
}

/// Each parameter's distinct values over the grid, ascending.
fn axes(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let width = rows.first().map_or(0, Vec::len);
    (0..width)
        .map(|k| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        })
        .collect()
}

/// A finished sweep's research tables and summary fields.
#[derive(Debug, Default)]
pub struct Research {
    /// One row per parameter set (grid order), for a grid of two sets or more.
    pub grid: Option<RecordBatch>,
    pub folds: Option<RecordBatch>,
    pub oos_equity: Option<RecordBatch>,
    /// The summary's `overfitting`, for a grid of two sets or more.
    pub overfitting: Option<Value>,
    /// The summary's `walk_forward`, when the batch asked for folds.
    pub walk_forward: Option<Value>,
}

/// The research of a sweep from its portfolio `curves` and `metrics` (in the order of
/// `combos`, each curve over `dates`).
pub fn research(
    combos: &[ParamSet],
    dates: &[Date],
    curves: &[Vec<f64>],
    metrics: &[PortfolioMetrics],
    capital: f64,
    walk: Option<&WalkForward>,
    blocks: usize,
) -> Result<Research, ArrowError> {
    let order = grid_order(combos);
    let sets: Vec<ParamSet> = order.iter().map(|&i| combos[i].clone()).collect();
    let names: Vec<String> = sets.iter().map(|p| p.json().to_string()).collect();
    let ordered: Vec<&[f64]> = order.iter().map(|&i| curves[i].as_slice()).collect();
    let mut out = Research::default();
    if let Some(wf) = walk {
        let w = walk::walk_forward(wf, dates, &names, &ordered, capital);
        out.folds = Some(folds_table(&w.folds)?);
        out.oos_equity = Some(oos_table(&w.oos_equity)?);
        let mut v = json!({
            "metric": wf.metric.name(),
            "folds": w.folds,
            "efficiency": w.efficiency,
        });
        if let (Value::Object(map), Ok(Value::Object(m))) =
            (&mut v, serde_json::to_value(&w.metrics))
        {
            map.extend(m.into_iter().filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "alpha" | "beta" | "tracking_error" | "information_ratio"
                )
            }));
        }
        out.walk_forward = Some(v);
    }
    if combos.len() < 2 {
        return Ok(out);
    }
    let columns: Vec<Vec<f64>> = ordered
        .iter()
        .map(|c| crate::metrics::returns(capital, c))
        .collect();
    let moments: Vec<stats::Moments> = columns.iter().map(|c| stats::Moments::of(c)).collect();
    let sharpe: Vec<Option<f64>> = order.iter().map(|&i| metrics[i].sharpe).collect();
    let near = neighbours(&sets);
    let around = |i: usize| {
        let s: Vec<f64> = near[i].iter().filter_map(|&j| sharpe[j]).collect();
        let mean = (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64);
        (mean, s.into_iter().reduce(f64::min))
    };
    out.grid = Some(grid_table(&names, &moments, &around)?);
    let deflated = overfit::deflated(&columns, &moments);
    let cscv = overfit::cscv(&columns, blocks);
    let (mean, min) = deflated.best.map(around).unwrap_or_default();
    out.overfitting = Some(json!({
        "trials": deflated.trials,
        "effective_trials": deflated.effective_trials,
        "mean_correlation": deflated.mean_correlation,
        "best_params": deflated.best.map(|b| &names[b]),
        "best_sharpe_per_period": deflated.best_sharpe,
        "sr0": deflated.sr0,
        "dsr": deflated.dsr,
        "pbo": cscv.pbo,
        "blocks": cscv.blocks,
        "block_len": cscv.block_len,
        "splits": cscv.splits,
        "degradation_slope": cscv.degradation_slope,
        "prob_oos_loss": cscv.prob_oos_loss,
        "neighbour_sharpe_mean": mean,
        "neighbour_sharpe_min": min,
        "best_on_edge": deflated.best.map(|b| on_edge(&sets, b)).unwrap_or_default(),
    }));
    Ok(out)
}

/// The parameters (of three values or more) at whose smallest or largest value set `at`
/// sits: a best set there suggests the grid stops short of the optimum.
fn on_edge(sets: &[ParamSet], at: usize) -> Vec<String> {
    let axes = axes(&values(sets));
    sets[at]
        .entries()
        .zip(&axes)
        .filter(|((_, v), axis)| axis.len() >= 3 && (*v == axis[0] || *v == axis[axis.len() - 1]))
        .map(|((name, _), _)| name.to_string())
        .collect()
}

fn null_if_nan(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn grid_table(
    names: &[String],
    moments: &[stats::Moments],
    around: &dyn Fn(usize) -> (Option<f64>, Option<f64>),
) -> Result<RecordBatch, ArrowError> {
    let mut p = StringBuilder::new();
    let mut cols: [Float64Builder; 6] = Default::default();
    for (i, (name, m)) in names.iter().zip(moments).enumerate() {
        p.append_value(name);
        let (mean, min) = around(i);
        let values = [
            m.sharpe(),
            null_if_nan(m.skew),
            null_if_nan(m.kurtosis),
            m.psr(0.0),
            mean,
            min,
        ];
        for (b, v) in cols.iter_mut().zip(values) {
            b.append_option(v);
        }
    }
    let mut arrays: Vec<arrow::array::ArrayRef> = vec![Arc::new(p.finish())];
    arrays.extend(cols.iter_mut().map(|b| Arc::new(b.finish()) as _));
    RecordBatch::try_new(schema::GRID.clone(), arrays)
}

fn folds_table(rows: &[walk::FoldRow]) -> Result<RecordBatch, ArrowError> {
    let mut fold = Int64Builder::new();
    let mut d: [Date32Builder; 4] = Default::default();
    let mut p = StringBuilder::new();
    let mut f: [Float64Builder; 5] = Default::default();
    for r in rows {
        fold.append_value(r.fold as i64);
        for (b, v) in d
            .iter_mut()
            .zip([r.is_start, r.is_end, r.oos_start, r.oos_end])
        {
            b.append_value(v);
        }
        p.append_value(&r.params);
        let values = [
            r.is_metric,
            r.oos_metric,
            r.is_sharpe,
            r.oos_sharpe,
            r.oos_total_return,
        ];
        for (b, v) in f.iter_mut().zip(values) {
            b.append_option(v);
        }
    }
    let mut arrays: Vec<arrow::array::ArrayRef> = vec![Arc::new(fold.finish())];
    arrays.extend(d.iter_mut().map(|b| Arc::new(b.finish()) as _));
    arrays.push(Arc::new(p.finish()));
    arrays.extend(f.iter_mut().map(|b| Arc::new(b.finish()) as _));
    RecordBatch::try_new(schema::FOLDS.clone(), arrays)
}

fn oos_table(rows: &[(Date, usize, String, f64)]) -> Result<RecordBatch, ArrowError> {
    let mut d = Date32Builder::new();
    let mut k = Int64Builder::new();
    let mut p = StringBuilder::new();
    let mut e = Float64Builder::new();
    for (date, fold, params, equity) in rows {
        d.append_value(*date);
        k.append_value(*fold as i64);
        p.append_value(params);
        e.append_value(*equity);
    }
    RecordBatch::try_new(
        schema::OOS_EQUITY.clone(),
        vec![
            Arc::new(d.finish()),
            Arc::new(k.finish()),
            Arc::new(p.finish()),
            Arc::new(e.finish()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy;

    fn sets(strategy: &str, grid: &str) -> Vec<ParamSet> {
        let def = strategy::find(strategy).unwrap();
        let grid = serde_json::from_str(grid).unwrap();
        strategy::expand(def, None, Some(&grid)).unwrap()
    }

    #[test]
    fn grid_order_takes_names_in_byte_order_and_values_numerically() {
        // macd declares fast, slow, signal; byte order is fast, signal, slow.
        let s = sets(
            "macd",
            r#"{"fast": [12, 8], "slow": [26], "signal": [9, 5]}"#,
        );
        let names: Vec<&str> = grid_order(&s).into_iter().map(|i| s[i].json()).collect();
        assert_eq!(
            names,
            [
                r#"{"fast":8,"signal":5,"slow":26}"#,
                r#"{"fast":8,"signal":9,"slow":26}"#,
                r#"{"fast":12,"signal":5,"slow":26}"#,
                r#"{"fast":12,"signal":9,"slow":26}"#,
            ]
        );
    }

    #[test]
    fn neighbours_are_one_step_along_one_parameter() {
        let s = sets("sma_cross", r#"{"fast": [5, 10, 20], "slow": [50, 30]}"#);
        let near = neighbours(&s);
        let of = |fast: i64, slow: i64| {
            let want = format!(r#"{{"fast":{fast},"slow":{slow}}}"#);
            let i = s.iter().position(|p| p.json() == want).unwrap();
            let mut v: Vec<&str> = near[i].iter().map(|&j| s[j].json()).collect();
            v.sort();
            v
        };
        assert_eq!(
            of(10, 30),
            [
                r#"{"fast":10,"slow":50}"#,
                r#"{"fast":20,"slow":30}"#,
                r#"{"fast":5,"slow":30}"#
            ]
        );
        assert_eq!(
            of(5, 50),
            [r#"{"fast":10,"slow":50}"#, r#"{"fast":5,"slow":30}"#]
        );
    }
}
