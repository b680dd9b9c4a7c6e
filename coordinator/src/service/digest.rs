//! A finished batch's digest for people, in its summary: the parameter sets ranked by
//! portfolio Sharpe, the best and worst symbols of the best set, the benchmark, and the
//! jobs that failed, by reason. Gathered from the `metrics` rows as they are written, so
//! `xt local`, `xt status` and `xt submit --wait` all print the same thing.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use serde_json::{Map, Value, json};
use xt_shared::metrics::PortfolioMetrics;

/// Entries in each ranking.
const TOP: usize = 5;
/// Messages kept per reason of failure.
const EXAMPLES: usize = 3;

/// What the metrics rows of a batch's jobs add up to.
#[derive(Default)]
pub(super) struct Digest {
    params: HashMap<String, u32>,
    /// (symbol, parameter set, total return) of every row with one.
    returns: Vec<(String, u32, f64)>,
    /// (symbol, error) of each failed job.
    failed: Vec<(String, String)>,
    /// Per parameter set, its sleeves' trading summed.
    trading: Vec<Trading>,
    /// Each sleeve's share of bars on which it could buy one lot (`affordable`).
    pub(super) affordable: Vec<f64>,
}

/// The trading of a parameter set's sleeves, summed from their `metrics` rows.
#[derive(Default, Clone)]
struct Trading {
    costs: f64,
    traded: f64,
    closed: f64,
    wins: f64,
    won: f64,
    lost: f64,
    held: f64,
    exposure: f64,
    sleeves: f64,
}

/// A float column of `b` by name, if it has it.
fn floats<'a>(
    b: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Option<&'a arrow::array::Float64Array> {
    b.column_by_name(name)?
        .as_primitive_opt::<arrow::datatypes::Float64Type>()
}

impl Digest {
    /// A job that ended without a result.
    pub(super) fn fail(&mut self, symbol: &str, error: &str) {
        self.failed.push((symbol.to_string(), error.to_string()));
    }

    /// A job's `metrics` rows: its returns, or its failure when its rows are errors (a job
    /// whose data could not be read).
    pub(super) fn metrics(&mut self, symbol: &str, batches: &[arrow::record_batch::RecordBatch]) {
        let mut error = None;
        let affordable = batches.iter().find_map(|b| {
            let c = floats(b, "affordable")?;
            (0..b.num_rows())
                .find(|&i| c.is_valid(i))
                .map(|i| c.value(i))
        });
        self.affordable.extend(affordable);
        for b in batches {
            let (Some(params), Some(ret), Some(err)) = (
                b.column_by_name("params"),
                b.column_by_name("total_return"),
                b.column_by_name("error"),
            ) else {
                continue;
            };
            let (params, ret, err) = (
                params.as_string::<i32>(),
                ret.as_primitive::<arrow::datatypes::Float64Type>(),
                err.as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                if err.is_valid(i) {
                    error.get_or_insert_with(|| err.value(i).to_string());
                } else if ret.is_valid(i) {
                    let next = self.params.len() as u32;
                    let p = *self
                        .params
                        .entry(params.value(i).to_string())
                        .or_insert(next);
                    self.returns.push((symbol.to_string(), p, ret.value(i)));
                    if self.trading.len() <= p as usize {
                        self.trading.resize(p as usize + 1, Trading::default());
                    }
                    let at = |name: &str| {
                        floats(b, name)
                            .filter(|c| c.is_valid(i))
                            .map_or(0.0, |c| c.value(i))
                    };
                    let closed = b
                        .column_by_name("trades")
                        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                        .filter(|c| c.is_valid(i))
                        .map_or(0.0, |c| c.value(i) as f64);
                    let wins = (at("win_rate") * closed).round();
                    let t = &mut self.trading[p as usize];
                    t.costs += at("costs");
                    t.traded += at("traded");
                    t.closed += closed;
                    t.wins += wins;
                    t.won += at("avg_win") * wins;
                    t.lost += at("avg_loss") * (closed - wins);
                    t.held += at("avg_bars_held") * closed;
                    t.exposure += at("exposure");
                    t.sleeves += 1.0;
                }
            }
        }
        if let Some(e) = error {
            self.failed.push((symbol.to_string(), e));
        }
    }

    /// Jobs that failed.
    pub(super) fn failed(&self) -> usize {
        self.failed.len()
    }

    /// The digest's fields of the summary, from the batch's portfolio metrics (in grid
    /// order) and its benchmark's.
    pub(super) fn fields(
        &self,
        portfolio: &[(String, PortfolioMetrics)],
        benchmark: &PortfolioMetrics,
        table: &arrow::record_batch::RecordBatch,
    ) -> Map<String, Value> {
        // Best first by Sharpe; a set without one last; ties by grid order (a stable sort).
        let mut ranked: Vec<&(String, PortfolioMetrics)> = portfolio.iter().collect();
        ranked.sort_by(|a, b| {
            let key = |m: &PortfolioMetrics| m.sharpe.unwrap_or(f64::NEG_INFINITY);
            key(&b.1).total_cmp(&key(&a.1))
        });
        let best = ranked.first().map(|(p, _)| p.clone()).unwrap_or_default();
        let mut symbols: Vec<(&str, f64)> = match self.params.get(&best) {
            Some(&b) => self
                .returns
                .iter()
                .filter(|(_, p, _)| *p == b)
                .map(|(s, _, r)| (s.as_str(), *r))
                .collect(),
            None => Vec::new(),
        };
        symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let list = |v: &mut dyn Iterator<Item = &(&str, f64)>| -> Vec<Value> {
            v.take(TOP)
                .map(|(s, r)| json!({"symbol": s, "total_return": r}))
                .collect()
        };
        let mut out = Map::new();
        out.insert("combinations".into(), json!(portfolio.len()));
        out.insert("best_params".into(), json!(best));
        out.insert(
            "best_parameter_sets".into(),
            ranked
                .iter()
                .take(TOP)
                .map(|(p, m)| {
                    json!({"params": p, "sharpe": m.sharpe, "total_return": m.total_return, "max_drawdown": m.max_drawdown})
                })
                .collect(),
        );
        out.insert("best_symbols".into(), list(&mut symbols.iter()).into());
        out.insert(
            "worst_symbols".into(),
            list(&mut symbols.iter().rev()).into(),
        );
        out.insert(
            "benchmark".into(),
            json!({
                "strategy": "buy_and_hold",
                "total_return": benchmark.total_return,
                "cagr": benchmark.cagr,
                "volatility": benchmark.volatility,
                "sharpe": benchmark.sharpe,
                "max_drawdown": benchmark.max_drawdown,
            }),
        );
        if let Some(&b) = self.params.get(&best) {
            out.insert(
                "trading".into(),
                self.trading(b as usize, mean_equity(table, &best)),
            );
        }
        out.insert("failures".into(), self.failures());
        out
    }

    /// The trading of parameter set `p`'s sleeves: in all, and per closed trade; its
    /// turnover against the portfolio's mean equity (and its dates).
    fn trading(&self, p: usize, mean_equity: Option<(f64, f64)>) -> Value {
        let Some(t) = self.trading.get(p) else {
            return Value::Null;
        };
        let per = |sum: f64, n: f64| (n > 0.0).then(|| sum / n);
        json!({
            "trades": t.closed as u64,
            "win_rate": per(t.wins, t.closed),
            "avg_win": per(t.won, t.wins),
            "avg_loss": per(t.lost, t.closed - t.wins),
            "expectancy": per(t.won + t.lost, t.closed),
            "avg_bars_held": per(t.held, t.closed),
            "costs": t.costs,
            "traded": t.traded,
            "turnover": mean_equity
                .filter(|(e, days)| *e > 0.0 && *days > 0.0)
                .map(|(e, days)| t.traded / e * xt_shared::metrics::YEAR / days),
            "mean_exposure": per(t.exposure, t.sleeves),
        })
    }

    /// The failed jobs grouped by reason, most common first, a few messages each.
    fn failures(&self) -> Value {
        let mut groups: Vec<(String, Vec<String>, usize)> = Vec::new();
        for (symbol, error) in &self.failed {
            let r = reason(symbol, error);
            let message = if error.contains(symbol.as_str()) {
                error.clone()
            } else {
                format!("{symbol}: {error}")
            };
            match groups.iter_mut().find(|(g, _, _)| *g == r) {
                Some((_, examples, n)) => {
                    *n += 1;
                    if examples.len() < EXAMPLES {
                        examples.push(message);
                    }
                }
                None => groups.push((r, vec![message], 1)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.2));
        json!({
            "jobs": self.failed.len(),
            "by_reason": groups
                .into_iter()
                .map(|(reason, examples, jobs)| json!({"reason": reason, "jobs": jobs, "examples": examples}))
                .collect::<Vec<_>>(),
        })
    }
}

/// The mean of parameter set `params`' portfolio equity, and its dates.
fn mean_equity(table: &arrow::record_batch::RecordBatch, params: &str) -> Option<(f64, f64)> {
    let p = table.column_by_name("params")?.as_string_opt::<i32>()?;
    let e = floats(table, "equity")?;
    let (mut sum, mut n) = (0.0, 0.0);
    for i in (0..table.num_rows()).filter(|&i| p.value(i) == params) {
        sum += e.value(i);
        n += 1.0;
    }
    (n > 0.0).then(|| (sum / n, n))
}

/// What a failure's message says with its particulars taken out (the symbol, numbers and
/// quoted values), so the same failure of many symbols groups as one reason.
pub(super) fn reason(symbol: &str, error: &str) -> String {
    let text = replace_word(error, symbol, "<symbol>");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            // A quoted value: its content goes.
            for q in chars.by_ref() {
                if q == '"' {
                    break;
                }
            }
            out.push_str("\"…\"");
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || *d == '.')
            {
                chars.next();
            }
            out.push('N');
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with each occurrence of `word` that stands alone (not inside a longer name) as
/// `with`: a symbol `A` is replaced, the `A` of `AAPL` or of a word is not.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    if word.is_empty() {
        return text.to_string();
    }
    let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        // The character before: in what is left, else the last one already written.
        let before = match at {
            0 => out.chars().last(),
            _ => rest[..at].chars().last(),
        };
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if part(before) || part(after) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_of_many_symbols_is_one_reason() {
        let a = reason(
            "600000.SH",
            "600000.SH: line 12: column close: cannot read \"abc\" as a number",
        );
        let b = reason(
            "000001.SZ",
            "000001.SZ: line 7: column close: cannot read \"\" as a number",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "<symbol>: line N: column close: cannot read \"…\" as a number"
        );
        assert_eq!(
            reason("A", "A: no data for this symbol (looked for data/A.csv)"),
            "<symbol>: no data for this symbol (looked for data/<symbol>.csv)"
        );
    }

    #[test]
    fn failures_are_counted_by_reason_with_examples() {
        let mut d = Digest::default();
        for s in ["A", "B", "C", "D", "E"] {
            d.fail(
                s,
                &format!("{s}: no data for this symbol (looked for {s}.csv)"),
            );
        }
        d.fail("F", "over its time budget of 12.5 s");
        let f = d.failures();
        assert_eq!(f["jobs"], 6);
        assert_eq!(f["by_reason"][0]["jobs"], 5);
        assert_eq!(
            f["by_reason"][0]["examples"],
            json!([
                "A: no data for this symbol (looked for A.csv)",
                "B: no data for this symbol (looked for B.csv)",
                "C: no data for this symbol (looked for C.csv)"
            ])
        );
        assert_eq!(
            f["by_reason"][1],
            json!({"reason": "over its time budget of N s", "jobs": 1, "examples": ["F: over its time budget of 12.5 s"]})
        );
    }
}
