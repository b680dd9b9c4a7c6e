//! `xt strategy check FILE`: a written strategy compiled and every parameter set of its
//! grid checked, offline, exactly as a submission checks them; prints each set's longest
//! lookback (the bars before its first defined signal).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use xt_shared::lang::Script;
use xt_shared::strategy::script_combos;

/// Checks the strategy in `path` with `params` or `grid` (JSON, as `xt local` takes them)
/// and returns the report to print.
pub fn check(path: &Path, params: Option<&str>, grid: Option<&str>) -> Result<String> {
    let source = crate::local::read_strategy(path)?;
    let script = Script::compile(&source).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let params = params
        .map(|p| {
            serde_json::from_str(p)
                .with_context(|| format!("--params: not a JSON object of values: {p}"))
        })
        .transpose()?;
    let grid = grid
        .map(|g| {
            serde_json::from_str(g)
                .with_context(|| format!("--grid: not a JSON object of lists: {g}"))
        })
        .transpose()?;
    let (script, combos, plans) = script_combos(script.into(), params.as_ref(), grid.as_ref())
        .map_err(|e| anyhow!("{}: {}: {}", path.display(), e.field, e.message))?;
    let mut out = format!(
        "{}: strategy {} ({}), {} parameter set{}\n",
        path.display(),
        script.name,
        script.hash(),
        combos.len(),
        if combos.len() == 1 { "" } else { "s" }
    );
    let rules = script.rules();
    if !rules.is_empty() {
        out.push_str(&format!("rules: {rules}\n"));
    }
    out.push_str("lookback  parameters\n");
    for (set, plan) in combos.iter().zip(plans.iter()) {
        out.push_str(&format!("{:>8}  {}\n", plan.lookback, set.json()));
    }
    Ok(out)
}
