//! The six built-ins written in the strategy language (`examples/strategies/`) against the
//! built-ins themselves, whole batches at a time on the real CSI 300 data with its
//! point-in-time membership: every table equal, value for value.

mod common;

use common::*;
use serde_json::json;
use xt_shared::spec::UniverseSpec;
use xt_shared::{BatchSpec, CsvDir, Universe};
use xt_worker::runner::run_batch;

fn example(name: &str) -> String {
    let path = workspace().join(format!("examples/strategies/{name}.xts"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn written_builtins_give_the_builtins_tables_on_the_csi_300() {
    let Some(data) = shared_data("written built-ins on the CSI 300") else {
        return;
    };
    let dir = data.join("cn-csi300");
    let source = CsvDir::open(&dir).unwrap();
    let universe_file = dir.join("universe_pit.csv");
    let universe = Universe::read_csv(std::fs::File::open(&universe_file).unwrap()).unwrap();
    let cases = [
        ("sma_cross", json!({"fast": [5, 10], "slow": [30]})),
        ("macd", json!({"fast": [12], "slow": [26], "signal": [9]})),
        ("bollinger", json!({"period": [20], "k": [1.5, 2.0]})),
        ("rsi", json!({"period": [14], "lower": [30], "upper": [70]})),
        (
            "turtle",
            json!({"entry": [20], "exit": [10], "stop_atr": [2.0]}),
        ),
        ("buy_and_hold", json!({})),
    ];
    for (name, grid) in cases {
        let run = |strategy: String| {
            let mut spec = BatchSpec::new(format!("file://{}", dir.display()), strategy);
            spec.universe = Some(UniverseSpec::File(universe_file.display().to_string()));
            spec.start = Some("2018-01-01".into());
            spec.end = Some("2021-12-31".into());
            spec.grid = serde_json::from_value(grid.clone()).unwrap();
            run_batch(&spec, &source, &universe).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let builtin = run(name.to_string());
        let written = run(example(name));
        assert!(builtin.metrics.num_rows() > 300, "{name}");
        assert_eq!(written.metrics, builtin.metrics, "{name}: metrics");
        assert_eq!(written.trades, builtin.trades, "{name}: trades");
        assert_eq!(written.equity, builtin.equity, "{name}: equity");
        assert_eq!(
            written.outcome.portfolio, builtin.outcome.portfolio,
            "{name}: portfolio"
        );
        let trades = builtin.trades.as_ref().map_or(0, |t| t.num_rows());
        assert!(trades > 100, "{name}: only {trades} trades");
    }
}
