//! `xt local` as a user runs it: the real binary, real files out, clear errors in.

mod support;

use std::path::Path;

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::{out_dir, xt};

fn rows(
    path: &Path,
) -> (
    usize,
    arrow::datatypes::SchemaRef,
    Vec<arrow::record_batch::RecordBatch>,
) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    (batches.iter().map(|b| b.num_rows()).sum(), schema, batches)
}

#[test]
fn runs_a_grid_and_writes_every_table() {
    let out = out_dir("xt-local-grid");
    let o = xt(&[
        "local",
        "--synthetic",
        "20",
        "--years",
        "2",
        "--strategy",
        "sma_cross",
        "--grid",
        r#"{"fast":[5,10],"slow":[20,30]}"#,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("20 jobs (0 failed) x 4 parameter sets"),
        "{stdout}"
    );
    assert!(stdout.contains("best parameter sets"), "{stdout}");
    let (n, schema, _) = rows(&out.join("metrics.parquet"));
    assert_eq!(n, 80);
    assert_eq!(schema.fields(), xt_shared::schema::METRICS.fields());
    let (n, _, _) = rows(&out.join("equity.parquet"));
    assert_eq!(n, 20 * 4 * 504);
    let (n, _, batches) = rows(&out.join("portfolio.parquet"));
    assert_eq!(n, 4 * 504);
    let params = batches[0].column(0).as_string::<i32>().value(0).to_string();
    assert_eq!(params, r#"{"fast":5,"slow":20}"#);
    assert!(out.join("trades.parquet").is_file());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["jobs"], 20);
    assert_eq!(summary["best_symbols"].as_array().unwrap().len(), 5);
    assert!(summary["portfolio"][&params]["beta"].is_number());
    // The summary's trading adds up the best set's trades: their count and costs.
    let best = summary["best_params"].as_str().unwrap();
    let (_, _, trades) = rows(&out.join("trades.parquet"));
    let (mut closed, mut costs) = (0u64, 0.0);
    for b in &trades {
        let p = b.column_by_name("params").unwrap().as_string::<i32>();
        let exit = b.column_by_name("exit_date").unwrap();
        let c = b
            .column_by_name("costs")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        for i in (0..b.num_rows()).filter(|&i| p.value(i) == best) {
            closed += exit.is_valid(i) as u64;
            costs += c.value(i);
        }
    }
    let trading = &summary["trading"];
    assert_eq!(trading["trades"], closed, "{trading}");
    let theirs = trading["costs"].as_f64().unwrap();
    assert!(
        costs > 0.0 && (theirs - costs).abs() <= 1e-9 * costs,
        "{theirs} vs {costs}"
    );
    assert!(stdout.contains("costs paid"), "{stdout}");
}

#[test]
fn tables_flag_keeps_only_what_is_named() {
    let out = out_dir("xt-local-tables");
    let o = xt(&[
        "local",
        "--synthetic",
        "5",
        "--years",
        "1",
        "--strategy",
        "rsi",
        "--tables",
        "metrics,portfolio",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("metrics.parquet").is_file() && out.join("portfolio.parquet").is_file());
    assert!(!out.join("equity.parquet").exists() && !out.join("trades.parquet").exists());
}

#[test]
fn bad_input_exits_non_zero_naming_the_field() {
    let out = out_dir("xt-local-bad");
    let o = out.to_str().unwrap();
    for (args, message) in [
        (
            vec!["--strategy", "momentum"],
            "strategy: unknown strategy \"momentum\"",
        ),
        (
            vec![
                "--strategy",
                "sma_cross",
                "--params",
                r#"{"fast":50,"slow":10}"#,
            ],
            "fast must be < slow",
        ),
        (
            vec!["--strategy", "sma_cross", "--params", "{fast"],
            "--params: not valid JSON",
        ),
        (
            vec!["--strategy", "macd", "--start", "2030-01-01"],
            "no symbol has a bar",
        ),
        (
            vec!["--strategy", "macd", "--start", "2020-13-01"],
            "start: \"2020-13-01\" is not a date",
        ),
        (
            vec!["--strategy", "macd", "--tables", "metrics,pnl"],
            "unknown table \"pnl\"",
        ),
        (vec!["--strategy", "macd", "--market", "hk"], "--market"),
        (
            vec!["--strategy", "macd", "--capital=-5"],
            "capital: must be a finite number > 0",
        ),
        (
            vec!["--strategy", "macd", "--capital", "1e16"],
            "capital: must be a finite number > 0 and <= 1e12, got 10000000000000000",
        ),
        (
            vec!["--strategy", "macd", "--data", "/nonexistent/dir"],
            "data:",
        ),
        (
            vec![
                "--strategy",
                "macd",
                "--grid",
                r#"{"fast":[5]}"#,
                "--params",
                "{}",
            ],
            "cannot be used with",
        ),
    ] {
        let mut all = vec![
            "local",
            "--synthetic",
            "3",
            "--years",
            "1",
            "--quiet",
            "--out",
            o,
        ];
        all.extend(args.iter().copied());
        let r = xt(&all);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn runs_the_real_csi300_with_point_in_time_membership() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cn-csi300");
    if !data.is_dir() {
        eprintln!("skipping: ../shared/data/cn-csi300 (real data beside the checkout) is absent");
        return;
    }
    let out = out_dir("xt-local-csi300");
    let universe = data.join("universe_pit.csv");
    let o = xt(&[
        "local",
        "--data",
        data.to_str().unwrap(),
        "--universe",
        universe.to_str().unwrap(),
        "--strategy",
        "macd",
        "--start",
        "2020-01-01",
        "--end",
        "2024-12-31",
        "--tables",
        "metrics,portfolio",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let jobs = summary["jobs"].as_u64().unwrap();
    // Members at any time in 2020-2024 that have bars then: far more than 300 at one date.
    assert!((300..=590).contains(&jobs), "{jobs} jobs");
    assert_eq!(summary["failed"], 0);
    // A 1,000,000 portfolio over ~450 sleeves: some can never pay for 100 shares. The
    // warning counts exactly the sleeves whose `affordable` share is 0.
    let (_, _, metrics) = rows(&out.join("metrics.parquet"));
    let never = metrics
        .iter()
        .map(|b| {
            let a = b
                .column_by_name("affordable")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>();
            a.iter().filter(|v| *v == Some(0.0)).count()
        })
        .sum::<usize>();
    let warning = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "sleeves_cannot_buy_a_lot")
        .unwrap_or_else(|| panic!("{}", summary["warnings"]));
    assert!(never > 0);
    assert_eq!(warning["count"], never, "{warning}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("warning [sleeves_cannot_buy_a_lot]"),
        "{stdout}"
    );
}

#[test]
fn failed_jobs_are_reported_by_reason_and_fail_the_run_past_the_threshold() {
    // Three of five symbols' files cannot be read: 3 of 5 jobs fail.
    let dir = out_dir("xt-local-failures");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let synth = xt_shared::SyntheticMarket {
        symbols: 2,
        years: 2,
        seed: 4,
    };
    for s in ["SYN00000", "SYN00001"] {
        let bars = xt_shared::BarSource::load(&synth, s).unwrap();
        let file = std::fs::File::create(data.join(format!("{s}.csv"))).unwrap();
        xt_shared::source::write_csv(&bars, file).unwrap();
    }
    for (s, line) in [
        ("BAD1", "2020-01-02,1,x,1,1,1"),
        ("BAD2", "2020-01-02,1,y,1,1,1"),
        ("BAD3", "2020-01-02,1,z,1,1,1"),
    ] {
        std::fs::write(
            data.join(format!("{s}.csv")),
            format!("date,open,high,low,close,volume\n{line}\n"),
        )
        .unwrap();
    }
    let run = |max_failed: &str| {
        xt(&[
            "local",
            "--data",
            data.to_str().unwrap(),
            "--strategy",
            "sma_cross",
            "--quiet",
            "--max-failed",
            max_failed,
            "--out",
            dir.join("out").to_str().unwrap(),
        ])
    };
    let o = run("0.5");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "{stdout}");
    assert!(stdout.contains("5 jobs (3 failed)"), "{stdout}");
    assert!(
        stdout.contains("  3 x <symbol>: line N: column high: cannot read \"…\" as a number"),
        "{stdout}"
    );
    assert!(
        stdout.contains("e.g. BAD1: line 2: column high"),
        "{stdout}"
    );
    assert!(
        stderr.contains("3 of 5 jobs failed (60.0%), more than --max-failed allows (50.0%)"),
        "{stderr}"
    );
    // The tables and summary are written all the same, and a higher bar passes.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(
        (
            &summary["failed"],
            &summary["failures"]["by_reason"][0]["jobs"]
        ),
        (&serde_json::json!(3), &serde_json::json!(3))
    );
    assert!(run("0.6").status.success());
    let o = run("1.5");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a share between 0 and 1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A symbol without data is refused before anything runs, named the same way
    // whether a universe file or an inline list names it.
    std::fs::write(data.join("universe.csv"), "symbol\nSYN00000\nGONE\n").unwrap();
    let o = run("0.5");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("universe: unknown symbol \"GONE\": the data source has no such symbol"),
        "{stderr}"
    );
}

#[test]
fn a_strategy_file_runs_like_the_builtin_and_is_checked_offline() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/strategies/macd.xts");
    let example = example.to_str().unwrap();
    let grid = r#"{"fast":[8,12],"slow":[26]}"#;
    let run = |name: &str, strategy: &[&str]| {
        let out = out_dir(name);
        let mut args = vec!["local", "--synthetic", "12", "--years", "3", "--grid", grid];
        args.extend(strategy);
        args.extend(["--quiet", "--out", out.to_str().unwrap()]);
        let o = xt(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (out, String::from_utf8_lossy(&o.stdout).to_string())
    };
    let (builtin, _) = run("xt-local-builtin-macd", &["--strategy", "macd"]);
    let (written, stdout) = run("xt-local-written-macd", &["--strategy-file", example]);
    let hash = xt_shared::lang::source_hash(&std::fs::read_to_string(example).unwrap());
    assert!(
        stdout.contains(&format!("strategy macd version {hash}")),
        "{stdout}"
    );
    for table in ["metrics", "trades", "equity", "portfolio"] {
        let (n, _, a) = rows(&builtin.join(format!("{table}.parquet")));
        let (m, _, b) = rows(&written.join(format!("{table}.parquet")));
        assert!(n > 0, "{table}");
        assert_eq!(n, m, "{table}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.columns(), y.columns(), "{table}");
        }
    }

    let o = xt(&["strategy", "check", example, "--grid", grid]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("2 parameter sets"), "{report}");
    // MACD(., 26, 9) is defined from bar 33 (TA-Lib's lookback), its cross one bar later.
    assert!(
        report.contains(r#"      34  {"fast":8,"signal":9,"slow":26}"#),
        "{report}"
    );
    assert!(
        report.contains(r#"      34  {"fast":12,"signal":9,"slow":26}"#),
        "{report}"
    );

    // A set whose windows need more bars than the date range holds is refused by name.
    let out = out_dir("xt-local-long-window");
    let o = xt(&[
        "local",
        "--synthetic",
        "3",
        "--years",
        "2",
        "--strategy-file",
        example,
        "--grid",
        r#"{"slow":[26,600]}"#,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(r#"grid: {"fast":12,"signal":9,"slow":600}: its windows need 609 bars before the first signal; the date range holds 504"#),
        "{err}"
    );

    let o = xt(&[
        "strategy",
        "check",
        example,
        "--grid",
        r#"{"fast":[30],"slow":[26]}"#,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("this rule does not hold with fast = 30, slow = 26"),
        "{err}"
    );
    assert!(
        err.contains("rule fast < slow") && err.contains("^^^"),
        "{err}"
    );
}
