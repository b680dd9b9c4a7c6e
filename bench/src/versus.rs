//! The engine against backtrader and vectorbt: the same CSV files, strategy, parameters and
//! costs through all three; wall time, bar evaluations per second, our speed as a ratio to
//! each, and whether their fills agree with ours.
//!
//! A peer too slow to run a whole case in the time a bench has (backtrader takes minutes
//! per 100 symbol-years) runs a prefix of its symbols, and its rate is applied to the whole
//! case; the table says how much it ran. Every engine here reads the CSV files inside the
//! timing; Python start, imports and vectorbt's numba compilation are outside it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use serde_json::{Value, json};
use xt_shared::{BatchSpec, CsvDir, SyntheticMarket, Universe};

use crate::peers::{Peers, market_csv};
use crate::report::{Table, Target, Timing, count, secs, timed};

/// One comparison: a strategy with one parameter set or a grid, over `symbols` x `years`.
pub struct Case {
    pub name: &'static str,
    pub strategy: &'static str,
    pub grid: BTreeMap<&'static str, Vec<i64>>,
}

impl Case {
    /// Every parameter combination, in the order of the grid's product (first key slowest).
    fn combos(&self) -> Vec<Value> {
        let mut out = vec![serde_json::Map::new()];
        for (k, values) in &self.grid {
            out = out
                .into_iter()
                .flat_map(|m| {
                    values.iter().map(move |v| {
                        let mut m = m.clone();
                        m.insert(k.to_string(), json!(v));
                        m
                    })
                })
                .collect();
        }
        out.into_iter().map(Value::Object).collect()
    }

    /// The same grid cut to its first `keep` values per parameter (a peer's sample).
    fn cut(&self, keep: usize) -> Case {
        Case {
            name: self.name,
            strategy: self.strategy,
            grid: self
                .grid
                .iter()
                .map(|(k, v)| (*k, v[..keep.min(v.len())].to_vec()))
                .collect(),
        }
    }
}

pub fn cases() -> Vec<Case> {
    let ten = |from: i64, step: i64| (0..10).map(|i| from + i * step).collect::<Vec<_>>();
    vec![
        Case {
            name: "sma_cross(10,30)",
            strategy: "sma_cross",
            grid: BTreeMap::from([("fast", vec![10]), ("slow", vec![30])]),
        },
        Case {
            name: "macd(12,26,9)",
            strategy: "macd",
            grid: BTreeMap::from([("fast", vec![12]), ("slow", vec![26]), ("signal", vec![9])]),
        },
        Case {
            name: "sma_cross grid, 100 combinations",
            strategy: "sma_cross",
            grid: BTreeMap::from([("fast", ten(2, 2)), ("slow", ten(25, 5))]),
        },
    ]
}

/// Commission of the comparison: a rate, no minimum, no stamp duty (what both peers model
/// natively), on US rules (lots of 1, no price limits).
const COMMISSION: f64 = 0.001;
const CAPITAL_PER_SYMBOL: f64 = 1e6;

/// How much of a case a peer runs, by mode.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub backtrader_symbols: usize,
    pub backtrader_grid_symbols: usize,
    /// Values per parameter backtrader runs of the grid (10 runs the whole grid).
    pub backtrader_grid_values: usize,
    pub vectorbt_symbols: usize,
    pub peer_runs: usize,
    pub our_runs: usize,
    /// Untimed runs of ours before the timed ones.
    pub our_warmup: usize,
}

impl Sample {
    pub fn quick() -> Sample {
        Sample {
            backtrader_symbols: 3,
            backtrader_grid_symbols: 1,
            backtrader_grid_values: 2,
            vectorbt_symbols: 30,
            peer_runs: 1,
            our_runs: 3,
            our_warmup: 0,
        }
    }

    pub fn full() -> Sample {
        Sample {
            backtrader_symbols: 20,
            backtrader_grid_symbols: 1,
            backtrader_grid_values: 10,
            vectorbt_symbols: 300,
            peer_runs: 3,
            our_runs: 5,
            our_warmup: 1,
        }
    }
}

fn spec(case: &Case, dir: &std::path::Path, symbols: &[String]) -> anyhow::Result<BatchSpec> {
    let mut s = BatchSpec::new(format!("file://{}", dir.display()), case.strategy);
    s.grid = Some(
        case.grid
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|x| json!(x)).collect()))
            .collect(),
    );
    s.market = xt_shared::Market::Us;
    s.costs = Some(serde_json::from_value(json!({
        "commission_rate": COMMISSION, "min_commission": 0.0, "stamp_duty": 0.0, "slippage": 0.0
    }))?);
    s.capital = CAPITAL_PER_SYMBOL * symbols.len() as f64;
    s.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Trades,
    ]);
    Ok(s)
}

/// Our fills per symbol for the first parameter set, in the peers' form.
fn our_fills(trades: &RecordBatch) -> BTreeMap<String, Vec<(String, &'static str, f64, f64)>> {
    let col = |n: &str| trades.column_by_name(n).expect("trades schema");
    let (sym, params) = (
        col("symbol").as_string::<i32>(),
        col("params").as_string::<i32>(),
    );
    let (ed, ep) = (
        col("entry_date").as_primitive::<Date32Type>(),
        col("entry_price").as_primitive::<Float64Type>(),
    );
    let (xd, xp) = (
        col("exit_date").as_primitive::<Date32Type>(),
        col("exit_price").as_primitive::<Float64Type>(),
    );
    let qty = col("qty").as_primitive::<Int64Type>();
    let first = (trades.num_rows() > 0).then(|| params.value(0).to_string());
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for i in 0..trades.num_rows() {
        if Some(params.value(i)) != first.as_deref() {
            continue;
        }
        let f = out.entry(sym.value(i).to_string()).or_default();
        let q = qty.value(i) as f64;
        f.push((
            xt_shared::date::format_date(ed.value(i)),
            "buy",
            ep.value(i),
            q,
        ));
        if xd.is_valid(i) {
            f.push((
                xt_shared::date::format_date(xd.value(i)),
                "sell",
                xp.value(i),
                q,
            ));
        }
    }
    out
}

type Fill = (String, String, f64, f64);

/// Bars of the EMA warm-up: a difference in how an EMA is seeded decays by `(1 - 2/(n+1))`
/// a bar, below 1e-8 of the price for n = 26 after 250 bars.
const WARM_UP: usize = 250;

/// Whether fast and slow SMA of the closes are equal in exact arithmetic at bar `i` (the
/// prices are on a 0.01 tick, so sums of cents are exact).
fn sma_tie(cents: &[i64], i: usize, fast: usize, slow: usize) -> bool {
    if i + 1 < slow {
        return false;
    }
    let sum = |n: usize| cents[i + 1 - n..=i].iter().sum::<i64>();
    sum(fast) * slow as i64 == sum(slow) * fast as i64
}

/// Agreement of a peer's fills with ours: symbols identical fill for fill, the cause of the
/// first difference of the others, and the share of fills equal in date, side and price.
fn agreement(
    dir: &std::path::Path,
    case: &Case,
    ours: &BTreeMap<String, Vec<(String, &'static str, f64, f64)>>,
    peer: &Value,
) -> anyhow::Result<String> {
    let Some(peer) = peer.as_object() else {
        return Ok("no fills".into());
    };
    let (mut same, mut suspended, mut tie, mut warm_up, mut other) = (0, 0, 0, 0, Vec::new());
    let (mut matched, mut fills) = (0usize, 0usize);
    for (symbol, list) in peer {
        let theirs: Vec<Fill> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                (
                    f[0].as_str().unwrap_or("").to_string(),
                    f[1].as_str().unwrap_or("").to_string(),
                    f[2].as_f64().unwrap_or(f64::NAN),
                    f[3].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        let mine: Vec<Fill> = ours
            .get(symbol)
            .into_iter()
            .flatten()
            .map(|f| (f.0.clone(), f.1.to_string(), f.2, f.3))
            .collect();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs();
        let key_equal = |a: &Fill, b: &Fill| a.0 == b.0 && a.1 == b.1 && close(a.2, b.2);
        matched += mine
            .iter()
            .filter(|m| theirs.iter().any(|t| key_equal(m, t)))
            .count();
        fills += mine.len().max(theirs.len());
        let n = mine.len().min(theirs.len());
        let Some(k) = (0..n)
            .find(|&i| !(key_equal(&mine[i], &theirs[i]) && mine[i].3 == theirs[i].3))
            .or((mine.len() != theirs.len()).then_some(n))
        else {
            same += 1;
            continue;
        };
        // The cause of the first difference, from the bars between the two fills.
        let bars = crate::peers::bars(dir, symbol)?;
        let dates: Vec<String> = bars
            .dates
            .iter()
            .map(|d| xt_shared::date::format_date(*d))
            .collect();
        let at = |f: Option<&Fill>| f.and_then(|f| dates.iter().position(|d| *d == f.0));
        let idx: Vec<usize> = [at(mine.get(k)), at(theirs.get(k))]
            .into_iter()
            .flatten()
            .collect();
        let (lo, hi) = (
            idx.iter().min().copied().unwrap_or(0),
            idx.iter().max().copied().unwrap_or(0),
        );
        let cents: Vec<i64> = bars
            .close
            .iter()
            .map(|c| (c * 100.0).round() as i64)
            .collect();
        let param = |k: &str| case.grid.get(k).map_or(0, |v| v[0] as usize);
        if (lo..=hi).any(|i| bars.volume[i] == 0.0) {
            suspended += 1;
        } else if case.strategy == "sma_cross"
            && idx.iter().any(|&i| {
                (i.saturating_sub(3)..i).any(|j| sma_tie(&cents, j, param("fast"), param("slow")))
            })
        {
            tie += 1;
        } else if case.strategy == "macd" && lo < WARM_UP {
            warm_up += 1;
        } else {
            other.push(format!(
                "{symbol} fill {k}: ours {:?}, theirs {:?}",
                mine.get(k),
                theirs.get(k)
            ));
        }
    }
    let mut s = format!("{same} of {} symbols identical fill for fill", peer.len());
    let causes = [
        (suspended, "at a suspended day"),
        (
            tie,
            "at a crossing where the two averages are equal in exact arithmetic",
        ),
        (warm_up, "within the first 250 bars (EMA seeding)"),
    ];
    for (n, why) in causes {
        if n > 0 {
            s += &format!("; {n} differ first {why}");
        }
    }
    if !other.is_empty() {
        s += &format!("; {} otherwise: {}", other.len(), other.join("; "));
    }
    s += &format!(
        "; {:.1}% of all fills equal in date, side and price",
        100.0 * matched as f64 / fills.max(1) as f64
    );
    Ok(s)
}

/// The comparison table, and the agreement notes under it.
pub fn run(
    peers: Option<&Peers>,
    symbols: usize,
    years: usize,
    sample: Sample,
) -> anyhow::Result<(Table, Vec<Target>)> {
    let market = SyntheticMarket::new(symbols, years, 42);
    let mut targets = Vec::new();
    let dir = market_csv(&market)?;
    let names: Vec<String> = (0..symbols).map(|i| market.symbol(i)).collect();
    let universe = Universe::from_symbols(&names)?;
    let source = CsvDir::open(&dir)?;
    let cores = crate::machine::cores();
    let mut table = Table::new(
        format!(
            "Engine against backtrader and vectorbt: {symbols} symbols x {years} years of daily bars (CSV), US rules, commission 0.1%"
        ),
        &[
            "case",
            "engine",
            "ran",
            "seconds (median, spread)",
            "bar evaluations/s",
            "xtrading (1 core) is",
            &format!("xtrading ({cores} cores) is"),
        ],
    );
    for case in cases() {
        let combos = case.combos();
        let evaluations_per_symbol = (years * xt_shared::synthetic::DAYS_PER_YEAR) as f64;
        let whole = evaluations_per_symbol * (symbols * combos.len()) as f64;
        let spec = spec(&case, &dir, &names)?;
        let ours = |threads: usize, spec: &BatchSpec| -> anyhow::Result<(Timing, RecordBatch)> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            let mut trades = None;
            let t = timed(sample.our_runs, sample.our_warmup, || {
                let started = Instant::now();
                let r = pool.install(|| xt_worker::runner::run_batch(spec, &source, &universe))?;
                let elapsed = started.elapsed();
                trades = r.trades;
                Ok(elapsed)
            })?;
            Ok((t, trades.context("trades kept")?))
        };
        let (one, builtin_trades) = ours(1, &spec)?;
        let (all, trades) = ours(cores, &spec)?;
        let rate_one = whole / one.median;
        let rate_all = whole / all.median;
        let ran = format!("{symbols} symbols x {} combinations", combos.len());
        table.row(vec![
            case.name.into(),
            "xtrading, 1 core".into(),
            ran.clone(),
            one.show(),
            count(rate_one),
            "1".into(),
            String::new(),
        ]);
        // The same strategy written in the strategy language (examples/strategies/).
        let mut written = spec.clone();
        written.strategy = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../examples/strategies/{}.xts", case.strategy)),
        )?;
        let (one_written, written_trades) = ours(1, &written)?;
        anyhow::ensure!(
            written_trades == builtin_trades,
            "{}: the written strategy's trades differ from the built-in's",
            case.name
        );
        let speed = one.median / one_written.median;
        table.row(vec![
            case.name.into(),
            "xtrading, written in the language, 1 core".into(),
            ran.clone(),
            one_written.show(),
            count(whole / one_written.median),
            format!("{speed:.2}x the built-in's speed"),
            String::new(),
        ]);
        targets.push(Target::new(
            format!("written strategy vs built-in, {}", case.name),
            ">= 0.5x the built-in's speed (1 core)".to_string(),
            format!("{speed:.2}x"),
            speed >= 0.5,
        ));
        table.row(vec![
            case.name.into(),
            format!("xtrading, {cores} cores"),
            ran,
            all.show(),
            count(rate_all),
            String::new(),
            "1".into(),
        ]);
        let Some(peers) = peers else { continue };
        let fills = our_fills(&trades);
        for engine in ["backtrader", "vectorbt"] {
            let grid = combos.len() > 1;
            let (n, sub) = match (engine, grid) {
                ("backtrader", false) => (sample.backtrader_symbols, case.cut(10)),
                ("backtrader", true) => (
                    sample.backtrader_grid_symbols,
                    case.cut(sample.backtrader_grid_values),
                ),
                _ => (sample.vectorbt_symbols, case.cut(10)),
            };
            let n = n.min(symbols);
            let sub_combos = sub.combos();
            let request = json!({
                "engine": engine, "dir": dir, "symbols": &names[..n], "strategy": case.strategy,
                "combos": sub_combos, "capital": CAPITAL_PER_SYMBOL,
                "commission_rate": COMMISSION, "fills_of_first_combo": !grid,
            });
            let mut seconds = Vec::new();
            let mut answer = Value::Null;
            for _ in 0..sample.peer_runs {
                answer = peers.run(&request)?;
                seconds.push(answer["seconds"].as_f64().context("seconds")?);
            }
            let t = Timing::from_seconds(seconds, 0.0);
            let done = answer["bar_evaluations"]
                .as_f64()
                .context("bar_evaluations")?;
            let rate = done / t.median;
            let whole_part = done / whole;
            let ran = if whole_part >= 0.999 {
                format!("{n} symbols x {} combinations", sub_combos.len())
            } else {
                format!(
                    "{n} symbols x {} combinations ({:.1}% of the case; whole case ≈ {})",
                    sub_combos.len(),
                    whole_part * 100.0,
                    secs(whole / rate)
                )
            };
            if case.strategy == "sma_cross" && grid {
                let want = if engine == "backtrader" { 1000.0 } else { 10.0 };
                let got = rate_all / rate;
                targets.push(Target::new(
                    format!("engine vs {engine}, {}", case.name),
                    format!(">= {want:.0}x"),
                    format!(
                        "{got:.0}x ({cores} cores), {:.0}x (1 core)",
                        rate_one / rate
                    ),
                    got >= want,
                ));
            }
            table.row(vec![
                case.name.into(),
                engine.into(),
                ran,
                t.show(),
                count(rate),
                format!("{:.0}x faster", rate_one / rate),
                format!("{:.0}x faster", rate_all / rate),
            ]);
            if !grid {
                table.note(format!(
                    "{} fills against ours ({engine}): {}.",
                    case.name,
                    agreement(&dir, &case, &fills, &answer["fills"])?
                ));
            }
        }
    }
    table.note(
        "Fills are compared on the symbols each peer ran, for the single-parameter cases: date, side, price and quantity of every fill; \
         where a symbol differs, the cause of its first difference is found in the bars. *Suspended day*: the contract fills nothing on \
         a bar with volume 0 (an entry is cancelled, an exit retried at the next open); backtrader and vectorbt fill at that bar's open. \
         *Equal averages*: the fast and slow SMA are equal in exact arithmetic on the signal bar (prices are on a 0.01 tick, so this \
         happens), and each library's rounding puts them on its own side; our SMA is TA-Lib's (pinned by the golden tests), vectorbt \
         keeps a running sum whose error grows along the series. *EMA seeding*: TA-Lib (the contract) starts MACD's fast EMA at the \
         bar the slow one starts, seeded with an SMA; backtrader seeds each EMA with its own SMA, vectorbt with the first close \
         (pandas ewm); the difference decays, so the first crossings can differ and the later ones agree. After a first difference \
         the position and cash paths differ, so later fills may differ in size while agreeing in date, side and price.",
    );
    table.note(
        "Ratios are of bar evaluations per second (bars x parameter combinations), so a peer that ran part of a case is compared at its \
         measured rate. The peers run on one core (backtrader's optimiser with maxcpus=1; vectorbt's numba kernels are single-threaded); \
         the \"1 core\" column is the like-for-like ratio.",
    );
    Ok((table, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_expands_to_its_product_first_key_slowest() {
        let grid = &cases()[2];
        let combos = grid.combos();
        assert_eq!(combos.len(), 100);
        assert_eq!(combos[0], json!({"fast": 2, "slow": 25}));
        assert_eq!(combos[1], json!({"fast": 2, "slow": 30}));
        assert_eq!(combos[99], json!({"fast": 20, "slow": 70}));
        let cut = grid.cut(2).combos();
        assert_eq!(cut.len(), 4);
        assert_eq!(cut[3], json!({"fast": 4, "slow": 30}));
    }

    #[test]
    fn an_exact_tie_of_the_averages_is_found_in_cents() {
        // SMA(2) and SMA(4) of 7.30, 7.32, 7.31, 7.31: both 7.31 exactly at the last bar.
        let cents = [730, 732, 731, 731];
        assert!(sma_tie(&cents, 3, 2, 4));
        assert!(!sma_tie(&cents, 2, 2, 4), "too early for the slow average");
        assert!(!sma_tie(&[730, 732, 731, 733], 3, 2, 4));
    }
}
