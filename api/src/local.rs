//! `xt local`: one batch on this machine, start to finish: builds the batch spec from flags,
//! runs it on every core, shows progress, writes the tables and a summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use clap::Args;
use serde_json::{Value, json};
use xt_shared::open::{open_source, resolve_universe};
use xt_shared::spec::{CostsSpec, DataSpec, Table, UniverseSpec};
use xt_shared::{BatchSpec, Market};
use xt_worker::runner::{Plan, concat_tables, run_plan};

use crate::output::write_parquet;

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Directory of SYMBOL.csv or SYMBOL.parquet files (default: a synthetic market).
    #[arg(long, env = "XT_DATA")]
    pub data: Option<PathBuf>,
    /// Universe CSV (symbol, weight, price_limit, start_date, end_date); default: the data
    /// directory's universe.csv, else every symbol in it.
    #[arg(long, env = "XT_UNIVERSE")]
    pub universe: Option<PathBuf>,
    /// Synthetic market: number of symbols (used when --data is not given).
    #[arg(long, env = "XT_SYNTHETIC", default_value_t = 300)]
    pub synthetic: usize,
    /// Synthetic market: years of daily bars.
    #[arg(long, env = "XT_YEARS", default_value_t = 10)]
    pub years: usize,
    /// Synthetic market: seed (same seed, same bars).
    #[arg(long, env = "XT_SEED", default_value_t = 42)]
    pub seed: u64,
    /// buy_and_hold, sma_cross, macd, bollinger, rsi or turtle.
    #[arg(long, env = "XT_STRATEGY")]
    pub strategy: String,
    /// One parameter set as JSON, e.g. '{"fast":12,"slow":26,"signal":9}'.
    #[arg(long, env = "XT_PARAMS", conflicts_with = "grid")]
    pub params: Option<String>,
    /// A grid as JSON, a list of values per parameter, e.g. '{"fast":[8,10,12]}'.
    #[arg(long, env = "XT_GRID")]
    pub grid: Option<String>,
    /// First date, YYYY-MM-DD (inclusive).
    #[arg(long, env = "XT_START")]
    pub start: Option<String>,
    /// Last date, YYYY-MM-DD (inclusive).
    #[arg(long, env = "XT_END")]
    pub end: Option<String>,
    #[arg(long, env = "XT_CAPITAL", default_value_t = 1_000_000.0)]
    pub capital: f64,
    /// cn (A-shares: lots of 100, price limits, stamp duty) or us.
    #[arg(long, env = "XT_MARKET", default_value = "cn")]
    pub market: String,
    /// Costs as JSON: commission_rate, min_commission, stamp_duty, slippage.
    #[arg(long, env = "XT_COSTS")]
    pub costs: Option<String>,
    /// Worker threads (default: every core).
    #[arg(long, env = "XT_WORKERS")]
    pub workers: Option<usize>,
    /// Tables to write, comma separated (default: metrics,trades,equity,portfolio).
    #[arg(long, env = "XT_TABLES", value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Output directory.
    #[arg(long, env = "XT_OUT")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, env = "XT_QUIET")]
    pub quiet: bool,
}

fn json_arg<T: serde::de::DeserializeOwned>(
    flag: &str,
    text: &Option<String>,
) -> Result<Option<T>> {
    text.as_deref()
        .map(|t| {
            serde_json::from_str(t)
                .with_context(|| format!("--{flag}: not valid JSON of the expected shape: {t}"))
        })
        .transpose()
}

impl LocalArgs {
    /// The batch spec these flags describe.
    pub fn spec(&self) -> Result<BatchSpec> {
        let data = match &self.data {
            Some(dir) => format!("file://{}", dir.display()),
            None => format!(
                "synthetic://?symbols={}&years={}&seed={}",
                self.synthetic, self.years, self.seed
            ),
        };
        let mut spec = BatchSpec::new(data, &self.strategy);
        spec.universe = self
            .universe
            .as_ref()
            .map(|p| UniverseSpec::File(p.display().to_string()));
        spec.start = self.start.clone();
        spec.end = self.end.clone();
        spec.params = json_arg("params", &self.params)?;
        spec.grid = json_arg("grid", &self.grid)?;
        spec.capital = self.capital;
        spec.market = match self.market.as_str() {
            "cn" => Market::Cn,
            "us" => Market::Us,
            other => bail!("--market: {other:?} is not a market; use cn or us"),
        };
        spec.costs = json_arg::<CostsSpec>("costs", &self.costs)?;
        spec.tables = match &self.tables {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| Table::parse(n.trim()).with_context(|| format!("--tables: unknown table {n:?}; tables are metrics, trades, equity, portfolio")))
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        spec.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(spec)
    }
}

/// Runs the batch and writes `out/{metrics,trades,equity,portfolio}.parquet` and `summary.json`.
pub fn run(args: &LocalArgs) -> Result<Value> {
    let spec = args.spec()?;
    let data = DataSpec::parse(&spec.data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = open_source(&data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let universe =
        resolve_universe(&spec, &data, source.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;

    let threads = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--workers: must be at least 1");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let started = Instant::now();
    let (plan, outcome, tables) = pool.install(|| -> Result<_> {
        let plan =
            Plan::new(&spec, source.as_ref(), &universe).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bar = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(plan.batch.jobs.len() as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} jobs, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let collected = std::sync::Mutex::new(Vec::with_capacity(plan.batch.jobs.len()));
        let outcome = run_plan(
            &plan,
            &|i, t| {
                collected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, t))
            },
            &|done, _| bar.set_position(done as u64),
        )?;
        bar.finish_and_clear();
        let mut tables = collected.into_inner().unwrap_or_else(|e| e.into_inner());
        tables.sort_by_key(|(i, _)| *i);
        Ok((plan, outcome, tables))
    })?;
    let elapsed = started.elapsed().as_secs_f64();

    let (metrics, trades, equity) = concat_tables(tables.into_iter().map(|(_, t)| t))?;
    if spec.wants(Table::Metrics) {
        write_parquet(&args.out, "metrics", &metrics)?;
    }
    if spec.wants(Table::Trades) {
        write_parquet(&args.out, "trades", &trades)?;
    }
    if spec.wants(Table::Equity) {
        write_parquet(&args.out, "equity", &equity)?;
    }
    if spec.wants(Table::Portfolio) {
        write_parquet(&args.out, "portfolio", &outcome.portfolio)?;
    }

    // Best parameter sets by portfolio Sharpe; symbols ranked by total return under the best.
    let mut ranked: Vec<_> = outcome.portfolio_metrics.iter().collect();
    ranked.sort_by(|a, b| {
        b.1.sharpe
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.1.sharpe.unwrap_or(f64::NEG_INFINITY))
    });
    let best = ranked.first().map(|(p, _)| p.clone()).unwrap_or_default();
    let symbols = metrics
        .column_by_name("symbol")
        .map(|c| c.as_string::<i32>().clone());
    let params = metrics
        .column_by_name("params")
        .map(|c| c.as_string::<i32>().clone());
    let ret = metrics
        .column_by_name("total_return")
        .map(|c| c.as_primitive::<Float64Type>().clone());
    let mut by_symbol = Vec::new();
    if let (Some(s), Some(p), Some(r)) = (symbols, params, ret) {
        for i in 0..metrics.num_rows() {
            if p.value(i) == best && r.is_valid(i) {
                by_symbol.push((s.value(i).to_string(), r.value(i)));
            }
        }
    }
    by_symbol.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top = |v: &[(String, f64)]| {
        v.iter()
            .map(|(s, r)| json!({"symbol": s, "total_return": r}))
            .collect::<Vec<_>>()
    };
    let worst: Vec<_> = by_symbol.iter().rev().take(5).cloned().collect();
    let summary = json!({
        "spec": spec,
        "jobs": outcome.jobs,
        "failed": outcome.failed,
        "combinations": plan.combos.len(),
        "bar_evaluations": plan.bar_evaluations(),
        "elapsed_seconds": elapsed,
        "threads": threads,
        "best_params": best,
        "portfolio": outcome.portfolio_metrics.iter().map(|(p, m)| (p.clone(), m)).collect::<BTreeMap<_, _>>(),
        "best_parameter_sets": ranked.iter().take(5).map(|(p, m)| json!({"params": p, "sharpe": m.sharpe, "total_return": m.total_return})).collect::<Vec<_>>(),
        "best_symbols": top(&by_symbol[..by_symbol.len().min(5)]),
        "worst_symbols": top(&worst),
    });
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )
    .context("writing summary.json")?;
    Ok(summary)
}

/// The human summary printed after a run.
pub fn render(summary: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.4}"));
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("n/a".to_string(), |x| format!("{:.2}%", x * 100.0))
    };
    let mut out = String::new();
    let best = summary["best_params"].as_str().unwrap_or("");
    let p = &summary["portfolio"][best];
    out += &format!(
        "{} jobs ({} failed) x {} parameter sets, {} bar evaluations in {:.2}s on {} threads\n",
        summary["jobs"],
        summary["failed"],
        summary["combinations"],
        summary["bar_evaluations"],
        summary["elapsed_seconds"].as_f64().unwrap_or(0.0),
        summary["threads"]
    );
    out += &format!(
        "portfolio {best}: return {}, cagr {}, sharpe {}, max drawdown {}\n",
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
    if summary["combinations"].as_u64().unwrap_or(1) > 1 {
        out += "best parameter sets (portfolio sharpe):\n";
        for s in summary["best_parameter_sets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out += &format!(
                "  {} sharpe {} return {}\n",
                s["params"].as_str().unwrap_or(""),
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
            .map(|s| {
                format!(
                    "{} {}",
                    s["symbol"].as_str().unwrap_or(""),
                    pct(&s["total_return"])
                )
            })
            .collect();
        out += &format!("{title}: {}\n", list.join(", "));
    }
    out
}
