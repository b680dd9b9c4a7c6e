//! `xt local`: one batch on this machine, start to finish: builds the batch spec from
//! flags, runs it on every core, shows progress, writes the tables and a summary.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use xt_shared::spec::{CostsSpec, Table, UniverseSpec};
use xt_shared::{BatchSpec, Market};

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
    #[arg(
        long,
        env = "XT_STRATEGY",
        required_unless_present = "strategy_file",
        conflicts_with = "strategy_file"
    )]
    pub strategy: Option<String>,
    /// A strategy written in the strategy language (docs/strategy-language.md), e.g.
    /// examples/strategies/macd.xts; --params and --grid name its parameters.
    #[arg(long, env = "XT_STRATEGY_FILE")]
    pub strategy_file: Option<PathBuf>,
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
    /// Worker services on loopback (default 1); the cores are split between them.
    #[arg(long, env = "XT_WORKERS")]
    pub workers: Option<usize>,
    /// Walk-forward folds as JSON (SEMANTICS section 10), e.g.
    /// '{"is":504,"oos":126,"anchored":false,"purge":0,"metric":"sharpe"}'; writes the
    /// `folds` and `oos_equity` tables.
    #[arg(long, env = "XT_WALK_FORWARD")]
    pub walk_forward: Option<String>,
    /// Blocks for the probability of backtest overfitting (even, 2 to 20; default 16).
    #[arg(long, env = "XT_PBO_BLOCKS")]
    pub pbo_blocks: Option<usize>,
    /// Tables to write, comma separated (default: every table the batch makes: metrics,
    /// trades, equity, portfolio; grid for two parameter sets or more; folds and
    /// oos_equity with --walk-forward).
    #[arg(long, env = "XT_TABLES", value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Output directory.
    #[arg(long, env = "XT_OUT")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, env = "XT_QUIET")]
    pub quiet: bool,
    /// Exit with an error when more than this share of the jobs fail (0 to 1; the tables
    /// and summary are written all the same).
    #[arg(long, env = "XT_MAX_FAILED", default_value_t = crate::summary::MAX_FAILED, value_parser = share)]
    pub max_failed: f64,
}

/// A share between 0 and 1.
pub fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (0.1 is 10%)"
        )),
    }
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

/// A strategy file's source, bounded before it is read whole.
pub fn read_strategy(path: &std::path::Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("--strategy-file {}", path.display()))?
        .len();
    let most = xt_shared::lang::MAX_SOURCE;
    if size > most as u64 {
        bail!(
            "--strategy-file {}: {size} bytes; a strategy's source is at most {most}",
            path.display()
        );
    }
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("--strategy-file {}", path.display()))?;
    if !xt_shared::lang::is_source(&source) {
        bail!(
            "--strategy-file {}: a strategy's source starts with `strategy NAME` on its first line",
            path.display()
        );
    }
    Ok(source)
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
        let strategy = match (&self.strategy, &self.strategy_file) {
            (_, Some(path)) => read_strategy(path)?,
            (Some(name), None) => name.clone(),
            (None, None) => bail!("give --strategy NAME or --strategy-file PATH"),
        };
        let mut spec = BatchSpec::new(data, strategy);
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
                    .map(|n| {
                        Table::parse(n.trim()).with_context(|| {
                            format!(
                                "--tables: unknown table {n:?}; tables are {}",
                                Table::names()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        spec.walk_forward = json_arg("walk-forward", &self.walk_forward)?;
        spec.pbo_blocks = self.pbo_blocks;
        spec.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(spec)
    }
}

/// Runs the batch and writes `out/{metrics,trades,equity,portfolio}.parquet` and
/// `summary.json`. The batch goes through the same coordinator and worker services as the
/// distributed mode, on loopback ports the OS picks, with the state in a temporary directory.
pub fn run(args: &LocalArgs) -> Result<Value> {
    let spec = args.spec()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(1);
    if workers == 0 {
        bail!("--workers: must be at least 1");
    }
    let slots = (cores / workers).max(1);
    let state = std::env::temp_dir().join(format!(
        "xt-local-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let runtime = crate::cluster::runtime()?;
    let started = Instant::now();
    let result = runtime.block_on(on_loopback(&spec, &state, workers, slots, args.quiet));
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = result.and_then(|(dir, evaluations)| {
        summarise(
            &spec,
            &dir,
            &args.out,
            evaluations,
            elapsed,
            workers * slots,
        )
    });
    let _ = std::fs::remove_dir_all(&state);
    outcome
}

/// Starts a coordinator and `workers` workers on loopback, runs the batch, returns the
/// directory of its tables and its bar evaluations (bars x parameter sets).
async fn on_loopback(
    spec: &BatchSpec,
    state: &std::path::Path,
    workers: usize,
    slots: usize,
    quiet: bool,
) -> Result<(PathBuf, u64)> {
    use xt_wire::batches_client::BatchesClient;
    use xt_wire::{StatusRequest, SubmitRequest};
    let cluster = crate::cluster::LocalCluster::start(
        state.join("batches"),
        workers,
        slots,
        Default::default(),
    )
    .await?;
    let mut client = BatchesClient::connect(cluster.url.clone()).await?;
    let submitted = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec)?,
            ..Default::default()
        })
        .await;
    let reply = match submitted {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = cluster.stop().await;
            bail!("{}", status.message());
        }
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(reply.jobs as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} jobs, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Each call answers after 50 ms, or as soon as the batch has finished.
    let status = loop {
        let s = client
            .status(StatusRequest {
                batch: reply.batch,
                wait_ms: 50,
            })
            .await?
            .into_inner();
        bar.set_position((s.done + s.failed + s.cancelled) as u64);
        if s.finished {
            break s;
        }
    };
    bar.finish_and_clear();
    // The local mode's store is the embedded one: the tables are files to copy.
    let dir = xt_coordinator::store::batch_dir(&state.join("batches"), reply.batch);
    cluster.stop().await?;
    let summary: Value = serde_json::from_str(&status.summary_json).unwrap_or(Value::Null);
    if let Some(e) = summary.get("error").and_then(|e| e.as_str()) {
        bail!("{e}");
    }
    Ok((dir, status.bar_evaluations))
}

/// Copies the batch's tables to `out` and writes the summary: the batch's own (the
/// portfolio per parameter set, the best parameter sets, the best and worst symbols, the
/// benchmark, the failures) with the spec and how the run went on this machine.
fn summarise(
    spec: &BatchSpec,
    dir: &std::path::Path,
    out: &std::path::Path,
    bar_evaluations: u64,
    elapsed: f64,
    threads: usize,
) -> Result<Value> {
    for t in Table::ALL {
        let name = format!("{}.parquet", t.name());
        // A research table exists only where the batch made it (a grid, folds).
        if spec.wants(t) && (Table::BASIC.contains(&t) || dir.join(&name).is_file()) {
            std::fs::copy(dir.join(&name), out.join(&name))
                .with_context(|| format!("writing {}", out.join(&name).display()))?;
        }
    }
    let mut summary: Value = serde_json::from_slice(
        &std::fs::read(dir.join("summary.json")).context("reading the batch summary")?,
    )?;
    if let Value::Object(map) = &mut summary {
        map.insert("spec".into(), json!(spec));
        map.insert("bar_evaluations".into(), json!(bar_evaluations));
        map.insert("elapsed_seconds".into(), json!(elapsed));
        map.insert("threads".into(), json!(threads));
    }
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )
    .context("writing summary.json")?;
    Ok(summary)
}
