use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::strategy::script_combos;

const SMA_CROSS: &str = "strategy sma_cross
# long while the fast average is above the slow one
param fast: int = 10 in 1..500
param slow: int = 30 in 2..1000
rule fast < slow
let f = sma(close, fast)
let s = sma(close, slow)
entry when cross_above(f, s)
exit when cross_below(f, s)
";

fn err(src: &str) -> LangError {
    Script::compile(src).expect_err("the source is wrong")
}

fn grid(v: serde_json::Value) -> BTreeMap<String, Vec<serde_json::Value>> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn errors_name_line_column_and_draw_a_caret() {
    let e = err(&SMA_CROSS.replace("sma(close, fast)", "sma(clsoe, fast)"));
    assert_eq!((e.line, e.column), (6, 13));
    assert!(
        e.message
            .contains("unknown name `clsoe`; did you mean `close`?"),
        "{e}"
    );
    assert_eq!(
        e.to_string().lines().skip(1).collect::<Vec<_>>(),
        ["6 | let f = sma(clsoe, fast)", "  |             ^^^^^"]
    );
    let e = err(&SMA_CROSS.replace("sma(close, fast)", "smaa(close, fast)"));
    assert!(e.message.contains("did you mean `sma(x, n)`?"), "{e}");
    let e = err(&SMA_CROSS.replace("sma(close, fast)", "sma(close)"));
    assert!(e.message.contains("`sma` takes 2 arguments"), "{e}");
    let e = err(&SMA_CROSS.replace("sma(close, fast)", "sma(close, close)"));
    assert!(e.message.contains("is a window fixed for the run"), "{e}");
    let e = err(&SMA_CROSS.replace("cross_above(f, s)", "f - s"));
    assert!(e.message.contains("takes a condition, got a series"), "{e}");
    let e = err(&SMA_CROSS.replace("let s = sma(close, slow)", "let s = sma(close, 30)"));
    assert!(
        e.message
            .contains("parameter `slow` is declared but no entry"),
        "{e}"
    );
    assert_eq!(e.line, 4);
    let e = err(&SMA_CROSS.replace("exit when cross_below(f, s)\n", ""));
    assert!(e.message.contains("no `exit when"), "{e}");
    let e = err(&SMA_CROSS.replace("cross_above(f, s)", "close > entry_price"));
    assert!(e.message.contains("only `exit when` may"), "{e}");
    let e = err(&SMA_CROSS.replace("rule fast < slow", "rule fast < close"));
    assert!(e.message.contains("a rule compares parameters only"), "{e}");
}

#[test]
fn grid_points_are_checked_against_rules_ranges_and_windows() {
    let script = Arc::new(Script::compile(SMA_CROSS).unwrap());
    let (_, combos, plans) = script_combos(
        script.clone(),
        None,
        Some(&grid(
            serde_json::json!({"fast": [5, 10], "slow": [20, 30]}),
        )),
    )
    .unwrap();
    assert_eq!(combos.len(), 4);
    assert_eq!(plans[0].lookback, 20);
    assert_eq!(combos[0].json(), r#"{"fast":5,"slow":20}"#);
    let e = script_combos(
        script.clone(),
        None,
        Some(&grid(serde_json::json!({"fast": [40], "slow": [30]}))),
    )
    .unwrap_err();
    assert_eq!(e.field, "grid");
    assert!(
        e.message
            .contains("this rule does not hold with fast = 40, slow = 30"),
        "{e}"
    );
    assert!(e.message.contains("line 5, column 6"), "{e}");
    let e = script_combos(
        script,
        None,
        Some(&grid(serde_json::json!({"fast": [0], "slow": [30]}))),
    )
    .unwrap_err();
    assert!(
        e.message.contains("fast = 0 is outside its range 1..500"),
        "{e}"
    );
    let s = SMA_CROSS.replace("fast: int = 10 in 1..500", "fast: float = 10");
    let script = Arc::new(Script::compile(&s).unwrap());
    let e = script_combos(
        script,
        Some(&serde_json::from_value(serde_json::json!({"fast": 2.5})).unwrap()),
        None,
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("the window of `sma(x, n)` must be an integer"),
        "{e}"
    );
}

#[test]
fn plans_share_equal_operations_and_fold_parameters() {
    let src = "strategy t
param n: int = 10
let a = sma(close, n) + sma(close, 5 + 5)
entry when a > sma(close, 2 * 5)
exit when close < entry_price - 2 * n
";
    let script = Script::compile(src).unwrap();
    let (_, combos, plans) = script_combos(Arc::new(script), None, None).unwrap();
    assert_eq!(combos.len(), 1);
    let plan = &plans[0];
    let smas = plan.nodes.iter().filter(|n| n.op == Op::Sma(10)).count();
    assert_eq!(smas, 1, "{plan:?}");
    // `2 * n` folds to one constant; the exit reads the position, the entry does not.
    assert!(plan.nodes.iter().any(|n| n.op == Op::Number(Real(20.0))));
    assert!(plan.nodes[plan.exit as usize].stateful);
    assert!(!plan.nodes[plan.entry as usize].stateful);
    assert_eq!(plan.lookback, 9);
}

#[test]
fn lookbacks_follow_ta_lib() {
    let lookback = |expr: &str| {
        let src = format!("strategy t\nentry when {expr} > 0\nexit when false\n");
        let script = Script::compile(&src).unwrap_or_else(|e| panic!("{e}"));
        script_combos(Arc::new(script), None, None).unwrap().2[0].lookback
    };
    assert_eq!(lookback("macd(close, 12, 26, 9)"), 33);
    assert_eq!(lookback("rsi(close, 14)"), 14);
    assert_eq!(lookback("atr(high, low, close, 14)"), 14);
    assert_eq!(lookback("ema(delta(close, 1), 10)"), 10);
    assert_eq!(lookback("corr(close, delay(volume, 3), 20)"), 22);
    assert_eq!(lookback("close - delay(close, 0)"), 0);
}

#[test]
fn bounds_are_enforced() {
    let big = format!("strategy t\n{}", "# padding\n".repeat(MAX_SOURCE / 10 + 1));
    assert!(err(&big).message.contains("at most"));
    let src = "strategy t\nentry when sum(close, 20000) > 0\nexit when false\n";
    let script = Script::compile(src).unwrap();
    let e = script_combos(Arc::new(script), None, None).unwrap_err();
    assert!(e.message.contains("from 1 to 10000, got 20000"), "{e}");
}

#[test]
fn inline_source_is_told_from_names() {
    assert!(is_source(SMA_CROSS));
    assert!(!is_source("sma_cross"));
    assert!(!is_source("sha256:00ff"));
    assert!(source_hash("a").starts_with("sha256:ca978112"));
}
