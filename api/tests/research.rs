//! A sweep's research (SEMANTICS sections 10 and 11) from `xt local`: the `grid`, `folds`
//! and `oos_equity` tables and the summary's `overfitting` and `walk_forward`, checked
//! against `peers/research.py`, a second implementation written from the text and the
//! papers with numpy and scipy.

mod support;

use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use support::{out_dir, peers_python, xt};

fn table(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn summary(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Two numbers (or two nulls) agree to `tol`, relative.
fn close(ours: &Value, theirs: &Value, tol: f64, what: &str) {
    match (ours.as_f64(), theirs.as_f64()) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= tol * b.abs().max(1e-12),
            "{what}: ours {a}, reference {b}"
        ),
        _ => assert_eq!(ours, theirs, "{what}"),
    }
}

fn float(b: &RecordBatch, name: &str, i: usize) -> Value {
    let c = b
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>();
    if c.is_valid(i) {
        json!(c.value(i))
    } else {
        Value::Null
    }
}

fn text<'a>(b: &'a RecordBatch, name: &str, i: usize) -> &'a str {
    b.column_by_name(name).unwrap().as_string::<i32>().value(i)
}

fn date(b: &RecordBatch, name: &str, i: usize) -> String {
    let d = b.column_by_name(name).unwrap().as_primitive::<Date32Type>();
    xt_shared::date::format_date(d.value(i))
}

#[test]
fn research_agrees_with_the_reference_on_the_sp500() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/us-sp500-2013-2018");
    if !data.is_dir() {
        eprintln!(
            "skipping: ../shared/data/us-sp500-2013-2018 (real data beside the checkout) is absent"
        );
        return;
    }
    let Some(python) = peers_python("scipy, pyarrow, pandas") else {
        return;
    };
    let out = out_dir("research-sp500");
    // Anchored, purged, scored by Sortino, a step shorter than the window (so windows
    // overlap and a later fold owns the shared dates), and 10 blocks over a T that is not
    // a multiple of 10.
    let walk = json!({"is": 300, "oos": 100, "step": 80, "anchored": true, "purge": 5, "metric": "sortino"});
    let o = xt(&[
        "local",
        "--data",
        data.to_str().unwrap(),
        "--market",
        "us",
        "--strategy",
        "bollinger",
        "--grid",
        r#"{"period":[10,20,40],"k":[1,2,3]}"#,
        "--walk-forward",
        &walk.to_string(),
        "--pbo-blocks",
        "10",
        "--tables",
        "metrics,portfolio,grid,folds,oos_equity",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let request = out.join("request.json");
    let req = json!({"portfolio": out.join("portfolio.parquet"), "capital": 1_000_000.0,
                     "blocks": 10, "walk_forward": walk});
    std::fs::write(&request, req.to_string()).unwrap();
    let r = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../peers/research.py"))
        .arg(&request)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let theirs: Value = serde_json::from_slice(&r.stdout).unwrap();
    let ours = summary(&out);

    let (o, t) = (&ours["overfitting"], &theirs["overfitting"]);
    assert_eq!(o["best_params"], t["best_params"]);
    assert_eq!((&o["trials"], &o["splits"]), (&t["trials"], &t["splits"]));
    assert!(
        o["effective_trials"].as_f64().unwrap() >= 2.0,
        "SR0 is exercised: {o}"
    );
    for k in [
        "mean_correlation",
        "effective_trials",
        "sr0",
        "dsr",
        "degradation_slope",
    ] {
        close(&o[k], &t[k], 1e-9, k);
    }
    // Shares of 252 splits: equal, not close.
    assert_eq!(
        (&o["pbo"], &o["prob_oos_loss"]),
        (&t["pbo"], &t["prob_oos_loss"])
    );

    let grid = table(&out.join("grid.parquet"));
    let rows = t_rows(&theirs["grid"]);
    assert_eq!(grid.num_rows(), rows.len());
    for (i, want) in rows.iter().enumerate() {
        assert_eq!(text(&grid, "params", i), want["params"], "grid order");
        for k in ["sharpe_per_period", "psr"] {
            close(&float(&grid, k, i), &want[k], 1e-9, k);
        }
    }

    let wf = &theirs["walk_forward"];
    close(
        &ours["walk_forward"]["efficiency"],
        &wf["efficiency"],
        1e-9,
        "efficiency",
    );
    let folds = table(&out.join("folds.parquet"));
    let rows = t_rows(&wf["folds"]);
    assert!(rows.len() >= 5, "{} folds", rows.len());
    assert_eq!(folds.num_rows(), rows.len());
    assert_eq!(
        ours["walk_forward"]["folds"].as_array().unwrap().len(),
        rows.len()
    );
    let fold = folds
        .column_by_name("fold")
        .unwrap()
        .as_primitive::<Int64Type>();
    for (i, want) in rows.iter().enumerate() {
        assert_eq!(fold.value(i), i as i64);
        for k in ["is_start", "is_end", "oos_start", "oos_end"] {
            assert_eq!(
                date(&folds, k, i),
                want[k].as_str().unwrap(),
                "fold {i} {k}"
            );
        }
        assert_eq!(text(&folds, "params", i), want["params"], "fold {i}");
        for k in [
            "is_metric",
            "oos_metric",
            "is_sharpe",
            "oos_sharpe",
            "oos_total_return",
        ] {
            close(
                &float(&folds, k, i),
                &want[k],
                1e-9,
                &format!("fold {i} {k}"),
            );
        }
    }
    let stitched = table(&out.join("oos_equity.parquet"));
    let rows = t_rows(&wf["oos_equity"]);
    assert_eq!(stitched.num_rows(), rows.len());
    for (i, want) in rows.iter().enumerate() {
        assert_eq!(date(&stitched, "date", i), want["date"].as_str().unwrap());
        assert_eq!(text(&stitched, "params", i), want["params"]);
        close(
            &float(&stitched, "equity", i),
            &want["equity"],
            1e-9,
            "stitched equity",
        );
    }
    let last = rows.last().unwrap()["equity"].as_f64().unwrap();
    close(
        &ours["walk_forward"]["final_equity"],
        &json!(last),
        1e-9,
        "final equity",
    );
}

fn t_rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

#[test]
fn one_set_has_folds_but_no_grid_and_bad_requests_name_the_field() {
    let out = out_dir("research-one-set");
    let o = xt(&[
        "local",
        "--synthetic",
        "4",
        "--years",
        "2",
        "--strategy",
        "sma_cross",
        "--walk-forward",
        r#"{"is":100,"oos":50}"#,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = summary(&out);
    assert!(s.get("overfitting").is_none(), "one set: no overfitting");
    assert!(!out.join("grid.parquet").exists());
    // With one set it is chosen in every fold: 504 bars, folds while 2 OOS bars remain (the last holds 4).
    let folds = table(&out.join("folds.parquet"));
    assert_eq!(folds.num_rows(), 9);
    assert_eq!(s["walk_forward"]["folds"].as_array().unwrap().len(), 9);

    for (args, message) in [
        (
            vec!["--walk-forward", r#"{"is":10,"oos":5}"#],
            "walk_forward.is: must be >= 20",
        ),
        (
            vec!["--walk-forward", r#"{"is":30,"oos":1}"#],
            "walk_forward.oos: must be >= 2",
        ),
        (
            vec!["--walk-forward", r#"{"is":30,"oos":5,"step":0}"#],
            "walk_forward.step",
        ),
        (
            vec!["--walk-forward", r#"{"is":30,"oos":5,"metric":"alpha"}"#],
            "--walk-forward",
        ),
        (
            vec!["--walk-forward", r#"{"is":600,"oos":5}"#],
            "walk_forward: no fold fits the 504 bars",
        ),
        (
            vec!["--pbo-blocks", "7"],
            "pbo_blocks: must be an even number from 2 to 20",
        ),
        (vec!["--pbo-blocks", "22"], "pbo_blocks"),
    ] {
        let mut all = vec![
            "local",
            "--synthetic",
            "2",
            "--years",
            "2",
            "--strategy",
            "rsi",
        ];
        all.extend(args.iter().copied());
        all.extend(["--quiet", "--out", out.to_str().unwrap()]);
        let r = xt(&all);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// The same spec on the same data gives the same bytes in every table, on one worker or
/// three, and the same summary but for how long it took; a changed bar changes the data's
/// identity in the provenance, and nothing else of it.
#[test]
fn same_spec_same_bytes_across_worker_counts() {
    let run = |workers: &str, data: Option<&Path>, name: &str| {
        let out = out_dir(name);
        let mut args = vec!["local", "--strategy", "sma_cross"];
        match data {
            Some(d) => args.extend(["--data", d.to_str().unwrap()]),
            None => args.extend(["--synthetic", "12", "--years", "3"]),
        }
        args.extend([
            "--grid",
            r#"{"fast":[5,10],"slow":[20,40]}"#,
            "--walk-forward",
            r#"{"is":200,"oos":100}"#,
            "--workers",
            workers,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let o = xt(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (one, three) = (run("1", None, "repro-1"), run("3", None, "repro-3"));
    for t in [
        "metrics",
        "trades",
        "equity",
        "portfolio",
        "grid",
        "folds",
        "oos_equity",
    ] {
        let file = format!("{t}.parquet");
        assert_eq!(
            std::fs::read(one.join(&file)).unwrap(),
            std::fs::read(three.join(&file)).unwrap(),
            "{file}"
        );
    }
    let strip = |mut s: Value| {
        for k in ["elapsed_seconds", "threads"] {
            s.as_object_mut().unwrap().remove(k);
        }
        s
    };
    let (a, b) = (strip(summary(&one)), strip(summary(&three)));
    assert_eq!(a, b);
    let p = &a["provenance"];
    assert_eq!(p["strategy"], "sma_cross");
    assert_eq!(p["rules"]["source"], "builtin");
    assert_eq!(p["data"]["symbols"].as_object().unwrap().len(), 12);

    // The same bars as CSV files, then one close changed: one symbol's hash and the
    // batch's change, the others' stay.
    let dir = out_dir("repro-data");
    std::fs::create_dir_all(&dir).unwrap();
    let market = xt_shared::SyntheticMarket {
        symbols: 3,
        years: 3,
        seed: 42,
    };
    use xt_shared::BarSource;
    let write = |bars: &xt_shared::Bars| {
        let file = std::fs::File::create(dir.join(format!("{}.csv", bars.symbol))).unwrap();
        xt_shared::source::write_csv(bars, file).unwrap();
    };
    let symbols = market.symbols().unwrap();
    for s in &symbols {
        write(&market.load(s).unwrap());
    }
    let before = summary(&run("1", Some(&dir), "repro-csv-a"))["provenance"]["data"].clone();
    let first = symbols[0].clone();
    let mut bars = market.load(&first).unwrap();
    // Still a valid bar: a close between its low and high.
    bars.close[100] = (bars.low[100] + bars.high[100]) / 2.0;
    write(&bars);
    let after = summary(&run("1", Some(&dir), "repro-csv-b"))["provenance"]["data"].clone();
    assert_ne!(before["hash"], after["hash"]);
    for s in &symbols {
        let (x, y) = (&before["symbols"][s], &after["symbols"][s]);
        assert!(x.is_string() && y.is_string());
        assert_eq!(x == y, *s != first, "{s}: {x} then {y}");
    }
}
