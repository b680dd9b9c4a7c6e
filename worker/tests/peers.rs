//! The engine against its peers, on real and synthetic data: every indicator against TA-Lib,
//! every fill of every built-in strategy against backtrader, metrics against empyrical.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};
use xt_shared::date::format_date;
use xt_shared::metrics::job_metrics;
use xt_shared::source::write_csv;
use xt_shared::{BarSource, Bars, Costs, Market, SyntheticMarket};
use xt_worker::engine::indicators as ind;

/// Series to check: real A-shares (with suspensions and limit moves), a long US history, and
/// synthetic bars.
fn series(dir: &Path) -> Vec<(String, PathBuf, Bars)> {
    let mut out = Vec::new();
    if let Some(data) = shared_data("real-data series") {
        for (set, symbol) in [
            ("cn-csi300", "600733.SH"),
            ("cn-csi300", "600519.SH"),
            ("cn-csi300", "601212.SH"),
            ("us-backtrader", "NVDA"),
        ] {
            let path = data.join(set);
            out.push((
                symbol.to_string(),
                path.join(format!("{symbol}.csv")),
                load_csv(&path, symbol),
            ));
        }
    }
    let synth = SyntheticMarket {
        symbols: 5,
        years: 10,
        seed: 7,
    };
    for symbol in ["SYN00001", "SYN00004"] {
        let bars = synth.load(symbol).unwrap();
        let path = dir.join(format!("{symbol}.csv"));
        write_csv(&bars, std::fs::File::create(&path).unwrap()).unwrap();
        out.push((symbol.to_string(), path, bars));
    }
    out
}

#[test]
fn indicators_equal_ta_lib() {
    let Some(python) = peer_python("TA-Lib golden test") else {
        return;
    };
    let dir = xt_testkit::scratch("talib");
    let requests = json!([
        {"name": "SMA", "params": [2]}, {"name": "SMA", "params": [10]}, {"name": "SMA", "params": [200]},
        {"name": "EMA", "params": [2]}, {"name": "EMA", "params": [12]}, {"name": "EMA", "params": [50]},
        {"name": "MACD", "params": [12, 26, 9]}, {"name": "MACD", "params": [5, 35, 5]}, {"name": "MACD", "params": [3, 4, 1]},
        {"name": "BBANDS", "params": [20, 2.0]}, {"name": "BBANDS", "params": [5, 1.0]}, {"name": "BBANDS", "params": [10, 1.5]},
        {"name": "RSI", "params": [2]}, {"name": "RSI", "params": [14]}, {"name": "RSI", "params": [30]},
        {"name": "ATR", "params": [1]}, {"name": "ATR", "params": [14]}, {"name": "ATR", "params": [20]},
        {"name": "MAX", "params": [2]}, {"name": "MAX", "params": [20]}, {"name": "MAX", "params": [55]},
        {"name": "MIN", "params": [2]}, {"name": "MIN", "params": [10]}, {"name": "MIN", "params": [20]}
    ]);
    let req_path = dir.join("requests.json");
    std::fs::write(&req_path, requests.to_string()).unwrap();
    let mut checked = 0;
    let mut inexact = std::collections::BTreeMap::<String, usize>::new();
    for (symbol, csv, bars) in series(&dir) {
        let reference = run_peer(&python, "talib_golden.py", &[&csv, &req_path]);
        for (req, expected) in requests
            .as_array()
            .unwrap()
            .iter()
            .zip(reference.as_array().unwrap())
        {
            let p: Vec<f64> = req["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let n = |i: usize| p[i] as usize;
            let (c, h, l) = (&bars.close, &bars.high, &bars.low);
            let ours: Vec<Vec<f64>> = match req["name"].as_str().unwrap() {
                "SMA" => vec![ind::sma(c, n(0))],
                "EMA" => vec![ind::ema(c, n(0))],
                "MACD" => {
                    let (m, s) = ind::macd(c, n(0), n(1), n(2));
                    vec![m, s]
                }
                "BBANDS" => {
                    let (u, m, lo) = ind::bbands(c, n(0), p[1]);
                    vec![u, m, lo]
                }
                "RSI" => vec![ind::rsi(c, n(0))],
                "ATR" => vec![ind::atr(h, l, c, n(0))],
                "MAX" => vec![ind::max(h, n(0))],
                "MIN" => vec![ind::min(l, n(0))],
                other => panic!("unknown {other}"),
            };
            for (k, (ours, theirs)) in ours.iter().zip(expected.as_array().unwrap()).enumerate() {
                let theirs = theirs.as_array().unwrap();
                assert_eq!(ours.len(), theirs.len());
                for (t, (a, b)) in ours.iter().zip(theirs).enumerate() {
                    let what = format!("{symbol} {req} output {k} bar {t}");
                    match b.as_f64() {
                        None => assert!(a.is_nan(), "{what}: TA-Lib undefined, ours {a}"),
                        Some(b) => {
                            assert!(rel_diff(*a, b) <= 1e-9, "{what}: ours {a}, TA-Lib {b}");
                            if *a != b {
                                *inexact
                                    .entry(req["name"].as_str().unwrap().to_string())
                                    .or_default() += 1;
                            }
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100_000, "only {checked} values compared");
    eprintln!("{checked} values compared; not bit-identical: {inexact:?}");
    // These kernels follow TA-Lib's arithmetic exactly; any difference is a bug.
    for exact in ["SMA", "EMA", "MACD", "MAX", "MIN"] {
        assert_eq!(
            inexact.get(exact),
            None,
            "{exact} is not bit-identical to TA-Lib"
        );
    }
}

/// One backtest to run in both engines.
struct Case {
    name: String,
    csv: PathBuf,
    bars: Bars,
    member: Vec<bool>,
    venue: Venue,
    strategy: &'static str,
    params: Value,
}

fn strategies() -> Vec<(&'static str, Value)> {
    vec![
        ("buy_and_hold", json!({})),
        ("sma_cross", json!({})),
        ("sma_cross", json!({"fast": 5, "slow": 20})),
        ("macd", json!({})),
        ("macd", json!({"fast": 8, "slow": 17, "signal": 5})),
        ("bollinger", json!({})),
        ("bollinger", json!({"period": 10, "k": 1.5})),
        ("rsi", json!({})),
        ("rsi", json!({"period": 7, "lower": 25, "upper": 60})),
        ("turtle", json!({})),
        (
            "turtle",
            json!({"entry": 55, "exit": 20, "atr": 14, "risk": 0.02, "stop_atr": 1.5}),
        ),
    ]
}

fn cases(dir: &Path) -> Vec<Case> {
    let cn = Market::Cn.default_costs();
    let us_costs = Costs {
        commission_rate: 0.001,
        min_commission: 1.0,
        stamp_duty: 0.0,
        slippage: 0.001,
    };
    // (label, csv, bars, member, venue)
    let mut data: Vec<(String, PathBuf, Bars, Vec<bool>, Venue)> = Vec::new();
    if let Some(root) = shared_data("backtrader conformance on real data") {
        let cn_dir = root.join("cn-csi300");
        let pit = cn_dir.join("universe_pit.csv");
        // Limit-up opens, limit-down opens, long suspensions, three membership spells,
        // a 20% ChiNext limit, and a share priced in the thousands (lot rounding).
        for (symbol, capital) in [
            ("601212.SH", 100_000.0),
            ("000793.SZ", 50_000.0),
            ("600733.SH", 33_333.33),
            ("000723.SZ", 1_000_000.0),
            ("300750.SZ", 200_000.0),
            ("600519.SH", 400_000.0),
        ] {
            let bars = load_csv(&cn_dir, symbol);
            let m = member_of(&pit, symbol);
            let member = m.mask(&bars.dates);
            let venue = Venue {
                market: Market::Cn,
                costs: cn,
                price_limit: m.price_limit,
                capital,
            };
            data.push((
                symbol.into(),
                cn_dir.join(format!("{symbol}.csv")),
                bars,
                member,
                venue,
            ));
        }
        let us_dir = root.join("us-backtrader");
        for (symbol, costs) in [
            ("NVDA", us_costs),
            ("ORCL", Costs::default()),
            ("YHOO", us_costs),
        ] {
            let bars = load_csv(&us_dir, symbol);
            let n = bars.len();
            let venue = Venue {
                market: Market::Us,
                costs,
                price_limit: None,
                capital: 100_000.0,
            };
            data.push((
                symbol.into(),
                us_dir.join(format!("{symbol}.csv")),
                bars,
                vec![true; n],
                venue,
            ));
        }
    }
    let synth = SyntheticMarket {
        symbols: 5,
        years: 10,
        seed: 11,
    };
    let universe = synth.universe();
    for (symbol, market, costs) in [
        ("SYN00001", Market::Cn, cn),
        (
            "SYN00003",
            Market::Cn,
            Costs {
                slippage: 0.002,
                ..cn
            },
        ),
        ("SYN00004", Market::Cn, cn),
        ("SYN00002", Market::Us, us_costs),
    ] {
        let bars = synth.load(symbol).unwrap();
        let csv = dir.join(format!("{symbol}.csv"));
        write_csv(&bars, std::fs::File::create(&csv).unwrap()).unwrap();
        let limit = universe
            .members
            .iter()
            .find(|m| m.symbol == symbol)
            .unwrap()
            .price_limit;
        let n = bars.len();
        let venue = Venue {
            market,
            costs,
            price_limit: limit,
            capital: 250_000.0,
        };
        data.push((
            format!("{symbol} {}", market.name()),
            csv,
            bars,
            vec![true; n],
            venue,
        ));
    }
    let mut out = Vec::new();
    for (label, csv, bars, member, venue) in data {
        for (strategy, params) in strategies() {
            out.push(Case {
                name: format!("{label} {strategy} {params}"),
                csv: csv.clone(),
                bars: bars.clone(),
                member: member.clone(),
                venue,
                strategy,
                params,
            });
        }
    }
    out
}

#[test]
fn every_fill_equals_backtrader() {
    let Some(python) = peer_python("backtrader conformance") else {
        return;
    };
    let dir = xt_testkit::scratch("backtrader");
    let cases = cases(&dir);
    let request: Vec<Value> = cases
        .iter()
        .map(|c| {
            let full = xt_worker::engine::strategy::expand(
                xt_worker::engine::strategy::find(c.strategy).unwrap().def(),
                Some(&serde_json::from_value(c.params.clone()).unwrap()),
                None,
            )
            .unwrap();
            json!({
                "data": c.csv, "strategy": c.strategy,
                "params": serde_json::from_str::<Value>(full[0].json()).unwrap(),
                "market": c.venue.market.name(), "capital": c.venue.capital,
                "costs": {"commission_rate": c.venue.costs.commission_rate, "min_commission": c.venue.costs.min_commission,
                          "stamp_duty": c.venue.costs.stamp_duty, "slippage": c.venue.costs.slippage},
                "price_limit": c.venue.price_limit, "member": c.member,
            })
        })
        .collect();
    let path = dir.join("cases.json");
    std::fs::write(&path, Value::from(request).to_string()).unwrap();
    let results = run_peer(&python, "bt_harness.py", &[&path]);
    let mut fills_by_strategy = std::collections::BTreeMap::<&str, usize>::new();
    for (case, theirs) in cases.iter().zip(results.as_array().unwrap()) {
        let run = run_one(
            &case.bars,
            &case.member,
            case.venue,
            case.strategy,
            &case.params,
        );
        let mut ours = Vec::new();
        for t in &run.trades {
            ours.push((
                format_date(case.bars.dates[t.entry]),
                "buy",
                t.entry_price,
                t.qty,
                t.entry_costs,
            ));
            if let (Some(i), Some(p)) = (t.exit, t.exit_price) {
                ours.push((
                    format_date(case.bars.dates[i]),
                    "sell",
                    p,
                    t.qty,
                    t.exit_costs,
                ));
            }
        }
        let theirs_fills = theirs["fills"].as_array().unwrap();
        for (k, (o, t)) in ours.iter().zip(theirs_fills).enumerate() {
            let t = (
                t[0].as_str().unwrap(),
                t[1].as_str().unwrap(),
                t[2].as_f64().unwrap(),
                t[3].as_f64().unwrap(),
                // Commission and stamp duty of the fill: the trades table's `costs`.
                t[4].as_f64().unwrap(),
            );
            assert!(
                o.0 == t.0
                    && o.1 == t.1
                    && rel_diff(o.2, t.2) <= 1e-12
                    && o.3 == t.3
                    && rel_diff(o.4, t.4) <= 1e-9,
                "{}: fill {k} differs: ours {o:?}, backtrader {t:?}",
                case.name
            );
        }
        assert_eq!(
            ours.len(),
            theirs_fills.len(),
            "{}: {} fills, backtrader {}",
            case.name,
            ours.len(),
            theirs_fills.len()
        );
        let (a, b) = (
            *run.equity.last().unwrap(),
            theirs["final_equity"].as_f64().unwrap(),
        );
        assert!(
            rel_diff(a, b) <= 1e-6,
            "{}: final equity {a}, backtrader {b}",
            case.name
        );
        *fills_by_strategy.entry(case.strategy).or_default() += ours.len();
    }
    // Every strategy trades on every data set (buy_and_hold at least enters).
    let sets = cases.len() / strategies().len();
    for (strategy, fills) in &fills_by_strategy {
        assert!(
            *fills >= sets,
            "{strategy}: only {fills} fills compared over {sets} data sets"
        );
    }
    eprintln!("fills compared per strategy: {fills_by_strategy:?}");
}

#[test]
fn metrics_equal_empyrical() {
    let Some(python) = peer_python("empyrical comparison") else {
        return;
    };
    let dir = xt_testkit::scratch("empyrical");
    let synth = SyntheticMarket {
        symbols: 3,
        years: 8,
        seed: 3,
    };
    let mut curves = Vec::new();
    for symbol in ["SYN00000", "SYN00001", "SYN00002"] {
        let bars = synth.load(symbol).unwrap();
        let member = vec![true; bars.len()];
        for (strategy, params) in [
            ("buy_and_hold", json!({})),
            ("sma_cross", json!({})),
            ("rsi", json!({})),
        ] {
            let venue = Venue {
                market: Market::Cn,
                costs: Market::Cn.default_costs(),
                price_limit: None,
                capital: 1e6,
            };
            let run = run_one(&bars, &member, venue, strategy, &params);
            curves.push(run);
        }
    }
    let request: Vec<Value> = curves
        .iter()
        .map(|r| json!({"initial": 1e6, "equity": r.equity}))
        .collect();
    let path = dir.join("curves.json");
    std::fs::write(&path, Value::from(request).to_string()).unwrap();
    let reference = run_peer(&python, "empyrical_check.py", &[&path]);
    for (run, theirs) in curves.iter().zip(reference.as_array().unwrap()) {
        let closed = run
            .trades
            .iter()
            .filter(|t| t.exit.is_some())
            .map(|t| t.pnl);
        let m = job_metrics(1e6, &run.equity, &run.qty, closed);
        for (name, ours) in [
            ("sharpe", m.sharpe),
            ("sortino", m.sortino),
            ("max_drawdown", m.max_drawdown),
            ("volatility", m.volatility),
            ("cagr", m.cagr),
            ("calmar", m.calmar),
        ] {
            match (ours, theirs[name].as_f64()) {
                (Some(a), Some(b)) => {
                    assert!(rel_diff(a, b) <= 1e-9, "{name}: ours {a}, empyrical {b}")
                }
                (a, b) => assert_eq!(a, b, "{name}"),
            }
        }
    }
}

/// Runs `strategy` over `universe` (with membership dates) in-process and checks its
/// portfolio, and each sleeve's capital, against `peers/pit_portfolio.py`, a second
/// implementation of SEMANTICS section 5's funding. Returns the portfolio's equity and
/// benchmark curves.
fn check_pit_portfolio(
    python: &Path,
    scratch: &Path,
    data: &Path,
    universe: &Path,
    (start, end): (&str, &str),
    strategy: &str,
) -> (Vec<f64>, Vec<f64>) {
    use arrow::array::AsArray;
    use arrow::datatypes::{Date32Type, Float64Type};
    use std::fmt::Write;
    let mut spec = xt_shared::BatchSpec::new(format!("file://{}", data.display()), strategy);
    spec.start = Some(start.into());
    spec.end = Some(end.into());
    spec.tables = Some(vec![
        xt_shared::spec::Table::Metrics,
        xt_shared::spec::Table::Equity,
        xt_shared::spec::Table::Portfolio,
    ]);
    let source = xt_shared::CsvDir::open(data).unwrap();
    let u = xt_shared::Universe::load(universe).unwrap();
    let r = xt_worker::runner::run_batch(&spec, &source, &u).unwrap();
    assert_eq!(r.outcome.failed, 0);

    let eq = r.equity.unwrap();
    let col = |name: &str| eq.column_by_name(name).unwrap().clone();
    let (symbol, params, date) = (col("symbol"), col("params"), col("date"));
    let (symbol, params) = (symbol.as_string::<i32>(), params.as_string::<i32>());
    let date = date.as_primitive::<Date32Type>();
    let (cash, equity) = (col("cash"), col("equity"));
    let (cash, equity) = (
        cash.as_primitive::<Float64Type>(),
        equity.as_primitive::<Float64Type>(),
    );
    let mut csv = String::from("symbol,params,date,cash,equity\n");
    let mut first_cash = std::collections::BTreeMap::new();
    for i in 0..eq.num_rows() {
        first_cash
            .entry(symbol.value(i).to_string())
            .or_insert(cash.value(i));
        writeln!(
            csv,
            "{},\"{}\",{},{:?},{:?}",
            symbol.value(i),
            params.value(i).replace('"', "\"\""),
            format_date(date.value(i)),
            cash.value(i),
            equity.value(i)
        )
        .unwrap();
    }
    let csv_path = scratch.join(format!("{strategy}-equity.csv"));
    std::fs::write(&csv_path, csv).unwrap();
    let request = scratch.join(format!("{strategy}-request.json"));
    std::fs::write(
        &request,
        json!({"universe": universe, "initial": spec.capital, "equity": csv_path}).to_string(),
    )
    .unwrap();
    let theirs = run_peer(python, "pit_portfolio.py", &[&request]);

    // Each sleeve's capital: its cash on its first bar, before any fill.
    let capital = theirs["capital"].as_object().unwrap();
    assert_eq!(capital.len(), first_cash.len(), "the jobs");
    for (s, ours) in &first_cash {
        let want = capital[s].as_f64().unwrap();
        assert!(
            rel_diff(*ours, want) <= 1e-12,
            "{s}: capital {ours}, reference {want}"
        );
    }

    let p = &r.outcome.portfolio;
    let pcol = |name: &str| p.column_by_name(name).unwrap().clone();
    let (pparams, pdate, pequity, pbench) = (
        pcol("params"),
        pcol("date"),
        pcol("equity"),
        pcol("benchmark_equity"),
    );
    let pparams = pparams.as_string::<i32>();
    let pdate = pdate.as_primitive::<Date32Type>();
    let pequity = pequity.as_primitive::<Float64Type>();
    let pbench = pbench.as_primitive::<Float64Type>();
    let reference = &theirs["portfolio"][pparams.value(0)];
    let dates = reference["dates"].as_array().unwrap();
    let want = reference["equity"].as_array().unwrap();
    assert_eq!(p.num_rows(), dates.len(), "{strategy}: the calendar");
    for i in 0..p.num_rows() {
        assert_eq!(format_date(pdate.value(i)), dates[i].as_str().unwrap());
        let (ours, want) = (pequity.value(i), want[i].as_f64().unwrap());
        assert!(
            rel_diff(ours, want) <= 1e-9,
            "{strategy} on {}: portfolio {ours}, reference {want}",
            dates[i]
        );
    }
    (pequity.values().to_vec(), pbench.values().to_vec())
}

#[test]
fn a_point_in_time_portfolio_equals_a_second_implementation() {
    let Some(python) = peer_python("point-in-time funding against pit_portfolio.py") else {
        return;
    };
    let scratch = xt_testkit::scratch("pit-portfolio");
    // Synthetic: weights, a symbol joining late, one leaving and coming back, one always in.
    let data = scratch.join("data");
    let (first, last) = xt_testkit::pit_market(&data);
    let universe = data.join("universe.csv");
    let mut cases = vec![(data.clone(), universe.clone(), (first, last))];
    if let Some(root) = shared_data("point-in-time funding on the CSI 300") {
        let cn = root.join("cn-csi300");
        cases.push((
            cn.clone(),
            cn.join("universe_pit.csv"),
            ("2019-01-01".into(), "2021-12-31".into()),
        ));
    }
    for (data, universe, (start, end)) in &cases {
        let range = (start.as_str(), end.as_str());
        let (_, bench) = check_pit_portfolio(&python, &scratch, data, universe, range, "macd");
        // The benchmark is the same funding of buy-and-hold sleeves.
        let (held, _) =
            check_pit_portfolio(&python, &scratch, data, universe, range, "buy_and_hold");
        assert_eq!(bench, held, "the benchmark is buy_and_hold funded alike");
    }
}
