//! A finished batch's summary for people: what `xt local`, `xt status` and `xt submit
//! --wait` print, from the summary the coordinator writes (the same JSON the API serves).

use anyhow::{Result, bail};
use serde_json::Value;

/// The share of failed jobs `--max-failed` allows by default.
pub const MAX_FAILED: f64 = 0.10;

/// `text` safe to print on a terminal: control and bidirectional-override characters (which
/// could rewrite what a line seems to say) escaped as `\u{...}`.
pub fn plain(text: &str) -> String {
    text.chars()
        .map(|c| {
            if xt_shared::spec::misleading(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The summary as lines of text.
pub fn render(summary: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.4}"));
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("n/a".to_string(), |x| format!("{:.2}%", x * 100.0))
    };
    let text = |v: &Value| plain(v.as_str().unwrap_or(""));
    let mut out = String::new();
    let best = summary["best_params"].as_str().unwrap_or("");
    let p = &summary["portfolio"][best];
    let threads = summary["threads"]
        .as_u64()
        .map_or(String::new(), |t| format!(" on {t} threads"));
    let cancelled = match summary["cancelled"].as_u64() {
        Some(n) if n > 0 => format!(", {n} cancelled"),
        _ => String::new(),
    };
    out += &format!(
        "{} jobs ({} failed{cancelled}) x {} parameter sets, {} bar evaluations in {:.2}s{threads}\n",
        summary["jobs"],
        summary["failed"],
        summary["combinations"],
        summary["bar_evaluations"],
        summary["elapsed_seconds"].as_f64().unwrap_or(0.0),
    );
    out += &format!(
        "portfolio {}: return {}, cagr {}, sharpe {}, max drawdown {}\n",
        plain(best),
        pct(&p["total_return"]),
        pct(&p["cagr"]),
        f(&p["sharpe"]),
        pct(&p["max_drawdown"])
    );
    out += &format!(
        "  against buy_and_hold: alpha {}, beta {}, tracking error {}, information ratio {}\n",
        pct(&p["alpha"]),
        f(&p["beta"]),
        pct(&p["tracking_error"]),
        f(&p["information_ratio"])
    );
    let b = &summary["benchmark"];
    if b.is_object() {
        out += &format!(
            "benchmark (buy_and_hold): return {}, cagr {}, sharpe {}, max drawdown {}\n",
            pct(&b["total_return"]),
            pct(&b["cagr"]),
            f(&b["sharpe"]),
            pct(&b["max_drawdown"])
        );
    }
    let t = &summary["trading"];
    if t.is_object() {
        let money = |v: &Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.2}"));
        out += &format!(
            "  trading: {} closed trades, win rate {}, average win {}, average loss {}, expectancy {}, held {} bars on average\n",
            t["trades"],
            pct(&t["win_rate"]),
            money(&t["avg_win"]),
            money(&t["avg_loss"]),
            money(&t["expectancy"]),
            t["avg_bars_held"]
                .as_f64()
                .map_or("n/a".to_string(), |x| format!("{x:.1}")),
        );
        out += &format!(
            "  costs paid {}, turnover {} a year, mean exposure {}\n",
            money(&t["costs"]),
            t["turnover"]
                .as_f64()
                .map_or("n/a".to_string(), |x| format!("{x:.2}x")),
            pct(&t["mean_exposure"]),
        );
    }
    if summary["combinations"].as_u64().unwrap_or(1) > 1 {
        out += "best parameter sets (portfolio sharpe):\n";
        for s in summary["best_parameter_sets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out += &format!(
                "  {} sharpe {} return {}\n",
                text(&s["params"]),
                f(&s["sharpe"]),
                pct(&s["total_return"])
            );
        }
    }
    for (title, key) in [
        ("best symbols", "best_symbols"),
        ("worst symbols", "worst_symbols"),
    ] {
        let list: Vec<String> = summary[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {}", text(&s["symbol"]), pct(&s["total_return"])))
            .collect();
        if !list.is_empty() {
            out += &format!("{title}: {}\n", list.join(", "));
        }
    }
    let o = &summary["overfitting"];
    if o.is_object() {
        out += &format!(
            "overfitting over {} sets ({} effective): deflated sharpe {}, pbo {} ({} splits), out-of-sample loss {}, degradation slope {}\n",
            o["trials"],
            o["effective_trials"]
                .as_f64()
                .map_or("n/a".into(), |x| format!("{x:.1}")),
            f(&o["dsr"]),
            pct(&o["pbo"]),
            o["splits"],
            pct(&o["prob_oos_loss"]),
            f(&o["degradation_slope"]),
        );
    }
    let w = &summary["walk_forward"];
    if w.is_object() {
        out += &format!(
            "walk-forward ({} folds by {}): out-of-sample return {}, sharpe {}, max drawdown {}, efficiency {}\n",
            w["folds"].as_array().map_or(0, Vec::len),
            text(&w["metric"]),
            pct(&w["total_return"]),
            f(&w["sharpe"]),
            pct(&w["max_drawdown"]),
            f(&w["efficiency"]),
        );
    }
    let p = &summary["provenance"];
    if let Some(hash) = p["strategy_hash"].as_str() {
        out += &format!("strategy {} version {hash}\n", text(&p["strategy"]));
    }
    if p.is_object() {
        out += &format!(
            "made by {} from data {} ({} symbols), {} market rules ({})\n",
            text(&p["engine"]),
            text(&p["data"]["hash"]),
            p["data"]["symbols"].as_object().map_or(0, |m| m.len()),
            text(&p["market"]),
            text(&p["rules"]["source"]),
        );
    }
    for w in summary["warnings"].as_array().into_iter().flatten() {
        out += &format!("warning [{}]: {}\n", text(&w["code"]), text(&w["message"]));
    }
    let failures = &summary["failures"];
    if failures["jobs"].as_u64().unwrap_or(0) > 0 {
        out += &format!("failed jobs by reason ({}):\n", failures["jobs"]);
        for r in failures["by_reason"].as_array().into_iter().flatten() {
            out += &format!("  {} x {}\n", r["jobs"], text(&r["reason"]));
            for e in r["examples"].as_array().into_iter().flatten() {
                out += &format!("      e.g. {}\n", text(e));
            }
        }
    }
    out
}

/// An error when more than `max_failed` of the batch's jobs failed: a batch whose results
/// are mostly error rows is not a result to act on.
pub fn check_failures(summary: &Value, max_failed: f64) -> Result<()> {
    let jobs = summary["jobs"].as_u64().unwrap_or(0);
    let failed = summary["failed"].as_u64().unwrap_or(0);
    if jobs > 0 && failed as f64 > max_failed * jobs as f64 {
        bail!(
            "{failed} of {jobs} jobs failed ({:.1}%), more than --max-failed allows ({:.1}%); the reasons are listed above",
            100.0 * failed as f64 / jobs as f64,
            100.0 * max_failed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(plain("600519.SH"), "600519.SH");
        assert_eq!(plain("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(plain("x\u{202E}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(plain("line\nnext"), "line\\u{a}next");
    }

    #[test]
    fn failures_over_the_threshold_are_an_error() {
        let s = |failed: u64| json!({"jobs": 590, "failed": failed});
        assert!(check_failures(&s(59), MAX_FAILED).is_ok());
        let e = check_failures(&s(60), MAX_FAILED).unwrap_err().to_string();
        assert!(e.contains("60 of 590 jobs failed (10.2%)"), "{e}");
        assert!(check_failures(&s(589), 1.0).is_ok());
        assert!(check_failures(&s(1), 0.0).is_err());
    }

    #[test]
    fn the_summary_names_failures_and_the_benchmark() {
        let text = render(&json!({
            "jobs": 3, "failed": 2, "combinations": 1, "bar_evaluations": 10,
            "elapsed_seconds": 0.5, "best_params": "{}",
            "portfolio": {"{}": {"total_return": 0.1}},
            "benchmark": {"total_return": 0.2},
            "failures": {"jobs": 2, "by_reason": [{"reason": "<symbol>: no data", "jobs": 2, "examples": ["A: no data", "B: no data"]}]},
        }));
        assert!(
            text.contains("benchmark (buy_and_hold): return 20.00%"),
            "{text}"
        );
        assert!(
            text.contains("  2 x <symbol>: no data\n      e.g. A: no data\n"),
            "{text}"
        );
    }
}
