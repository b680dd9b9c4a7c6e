//! The research over a big sweep (SEMANTICS sections 10 and 11) at scale: a 1,000-set grid
//! over 10 years of portfolio curves, each part timed on all cores and on one. The curves
//! are synthetic (a common market factor plus each set's own noise), so the sets correlate
//! as a real grid's do; the figures' cost depends only on their shape.

use std::time::Instant;

use xt_shared::research::{self, WalkForward, WindowMetric, overfit, stats::Moments};

use crate::report::Table;

/// Portfolio curves: `sets` of `days` daily bars from `capital`.
fn curves(sets: usize, days: usize, capital: f64) -> Vec<Vec<f64>> {
    let mut x: u64 = 7;
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let market: Vec<f64> = (0..days).map(|_| 0.02 * noise()).collect();
    (0..sets)
        .map(|n| {
            let beta = 0.3 + 0.7 * (n as f64 / sets as f64);
            let mut e = capital;
            market
                .iter()
                .map(|m| {
                    e *= 1.0 + beta * m + 0.01 * noise() + 0.0002;
                    e
                })
                .collect()
        })
        .collect()
}

/// Seconds `f` takes, the best of `runs`.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = None;
    let mut fastest = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        fastest = fastest.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (fastest, out.expect("one run at least"))
}

/// Times each part of the research of a `sets`-set grid over `years` years.
pub fn run(sets: usize, years: usize, runs: usize) -> anyhow::Result<Table> {
    let days = 252 * years;
    let capital = 1_000_000.0;
    let curves = curves(sets, days, capital);
    // A grid of `sets` parameter sets for the names and neighbours: bollinger's period x k.
    let periods: Vec<serde_json::Value> = (0..sets.div_ceil(25)).map(|p| (p + 2).into()).collect();
    let ks: Vec<serde_json::Value> = (0..25).map(|k| (0.5 + 0.1 * k as f64).into()).collect();
    let grid = [("period".to_string(), periods), ("k".to_string(), ks)].into();
    let def = xt_shared::strategy::find("bollinger").expect("bollinger is built in");
    let mut combos = xt_shared::strategy::expand(def, None, Some(&grid))?;
    combos.truncate(sets);
    let names: Vec<String> = combos.iter().map(|p| p.json().to_string()).collect();
    let columns: Vec<Vec<f64>> = curves
        .iter()
        .map(|c| xt_shared::metrics::returns(capital, c))
        .collect();
    let moments: Vec<Moments> = columns.iter().map(|c| Moments::of(c)).collect();
    let metrics: Vec<_> = curves
        .iter()
        .map(|c| xt_shared::metrics::curve_metrics(capital, c))
        .collect();
    let walk = WalkForward {
        in_sample: 504,
        oos: 126,
        step: None,
        anchored: false,
        purge: 0,
        metric: WindowMetric::Sharpe,
    };
    let refs: Vec<&[f64]> = curves.iter().map(Vec::as_slice).collect();
    let dates: Vec<i32> = (0..days as i32).collect();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut table = Table::new(
        format!(
            "Research over a sweep: {sets} parameter sets x {years} years ({days} daily returns), seconds (best of {runs})"
        ),
        &["part", "all cores", "1 thread"],
    );
    let mut time = |part: &str, f: &(dyn Fn() + Sync)| {
        let (all, _) = best(runs, f);
        let (single, _) = one.install(|| best(runs, f));
        table.row(vec![
            part.into(),
            format!("{all:.3}"),
            format!("{single:.3}"),
        ]);
    };
    time(
        "moments, PSR and deflated Sharpe (mean correlation in O(N x T))",
        &|| {
            let _ = overfit::deflated(&columns, &moments);
        },
    );
    time(
        "PBO by CSCV, 16 blocks (12,870 splits, from per-block sums)",
        &|| {
            let _ = overfit::cscv(&columns, 16);
        },
    );
    time("walk-forward, 504 in / 126 out, rolling", &|| {
        let _ = research::walk::walk_forward(&walk, &dates, &names, &refs, capital);
    });
    time("neighbours (parameter stability)", &|| {
        let _ = research::neighbours(&combos);
    });
    time("all of it, tables included (`research::research`)", &|| {
        let _ = research::research(
            &combos,
            &dates,
            &curves,
            &metrics,
            capital,
            Some(&walk),
            research::DEFAULT_PBO_BLOCKS,
        );
    });
    table.note(
        "Computed once per batch on the coordinator, after its jobs: the CSCV splits run on rayon's global pool, the rest on one thread.",
    );
    Ok(table)
}
