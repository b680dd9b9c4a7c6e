//! Running a leased job on this thread: its spec parsed, its data source opened once per
//! worker, its strategy expanded once per batch, its bars loaded and run through the engine
//! under its time budget, its tables and curves returned.

use super::*;

/// One finished job, ready to upload.
pub struct JobOutput {
    pub tables: Vec<(&'static str, RecordBatch)>,
    /// Its sleeve's capital, and its curves (parameter sets and the benchmark).
    pub capital: f64,
    pub curves: usize,
    /// Its batch has membership dates: its sleeves go on their own, never summed into a
    /// part (the coordinator rebalances them at each change of members).
    pub point_in_time: bool,
    pub bar_evaluations: u64,
    /// Why the job's data failed, when its tables are error rows.
    pub error: Option<String>,
    /// Seconds it took, reading its bars included.
    pub seconds: f64,
    /// The content hash of the bars it ran on (none when its data failed).
    pub data_hash: Option<u64>,
}

/// Runs a leased job: reads its bars from its data source, runs every combination, with
/// nothing to stop it.
pub fn run_leased(spec: &JobSpec, source: &dyn BarSource) -> Result<JobOutput, String> {
    let started = std::time::Instant::now();
    let (strategy, combos) =
        strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
            .map_err(|e| e.to_string())?;
    let control = Control {
        stops: &Stops::default(),
        cancelled: &std::sync::atomic::AtomicBool::new(false),
        budget: JobBudget {
            base: Duration::MAX,
            per_bar: Duration::ZERO,
        },
        endless: false,
    };
    run_expanded(spec, strategy.as_ref(), &combos, source, started, &control)
}

/// What may stop one job attempt, and its budget.
pub(super) struct Control<'a> {
    pub(super) stops: &'a Stops,
    pub(super) cancelled: &'a std::sync::atomic::AtomicBool,
    pub(super) budget: JobBudget,
    /// A test's fault: the job runs its engine over and over until something stops it.
    pub(super) endless: bool,
}

/// What a strategy's parameter sets are expanded from: the name, `params` and `grid`.
pub(super) type StrategyKey = (
    String,
    Option<std::collections::BTreeMap<String, serde_json::Value>>,
    Option<std::collections::BTreeMap<String, Vec<serde_json::Value>>>,
);

/// A strategy as the engine runs it, and its parameter sets.
pub(super) type Runnable = (Arc<dyn Strategy>, Arc<Vec<ParamSet>>);

/// A strategy and its parameter sets, expanded once for the jobs that share them (a batch's
/// jobs all do), not again for every job.
#[derive(Default)]
pub(super) struct Expanded {
    pub(super) last: Option<(StrategyKey, Runnable)>,
}

impl Expanded {
    pub(super) fn get(&mut self, spec: &JobSpec) -> Result<Runnable, String> {
        if let Some(((name, params, grid), (strategy, combos))) = &self.last
            && *name == spec.strategy
            && *params == spec.params
            && *grid == spec.grid
        {
            return Ok((strategy.clone(), combos.clone()));
        }
        let (strategy, combos) =
            strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
                .map_err(|e| e.to_string())?;
        let combos = Arc::new(combos);
        let key = (
            spec.strategy.clone(),
            spec.params.clone(),
            spec.grid.clone(),
        );
        self.last = Some((key, (strategy.clone(), combos.clone())));
        Ok((strategy, combos))
    }
}

/// What a worker's jobs share: each data source, opened once, and the strategy's parameter
/// sets, expanded once a batch.
#[derive(Default)]
pub(super) struct JobRunner {
    pub(super) data: Arc<xt_objects::DataAccess>,
    pub(super) sources: Mutex<HashMap<String, Arc<dyn BarSource>>>,
    pub(super) expanded: Mutex<Expanded>,
    pub(super) stops: Stops,
    pub(super) budget: JobBudget,
    pub(super) endless_symbol: Option<String>,
}

impl JobRunner {
    /// Runs a leased job on this thread; a panic is the job's error.
    pub(super) fn run(
        &self,
        lease: &JobLease,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<JobOutput, String> {
        let started = std::time::Instant::now();
        let run = || {
            if let Some(h) = self.stops.halted(cancelled) {
                return Err(h.to_string());
            }
            let spec: JobSpec =
                serde_json::from_str(&lease.spec_json).map_err(|e| format!("job spec: {e}"))?;
            let source = {
                let mut cache = self.sources.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get(&spec.data) {
                    Some(s) => s.clone(),
                    None => {
                        let data = DataSpec::parse(&spec.data).map_err(|e| e.to_string())?;
                        let s = self.data.open(&data).map_err(|e| e.to_string())?;
                        cache.insert(spec.data.clone(), s.clone());
                        s
                    }
                }
            };
            let (strategy, combos) = self
                .expanded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&spec)?;
            let control = Control {
                stops: &self.stops,
                cancelled,
                budget: self.budget,
                endless: self.endless_symbol.as_deref() == Some(spec.symbol.as_str()),
            };
            run_expanded(
                &spec,
                strategy.as_ref(),
                &combos,
                source.as_ref(),
                started,
                &control,
            )
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .unwrap_or_else(|_| Err("the job panicked".to_string()))
    }
}

/// [`run_leased`] with the strategy and its parameter sets expanded already; `started`: when
/// the job began. A job that overruns its budget gives error rows, as one whose data failed
/// (another attempt would overrun the same way); a cancelled or drained one gives no result.
pub(super) fn run_expanded(
    spec: &JobSpec,
    strategy: &dyn Strategy,
    combos: &[ParamSet],
    source: &dyn BarSource,
    started: std::time::Instant,
    control: &Control<'_>,
) -> Result<JobOutput, String> {
    let mut bars = source
        .load_range(&spec.symbol, spec.start, spec.end)
        .map_err(|e| e.to_string());
    let n = bars.as_ref().map_or(0, |b| b.len());
    let curves = combos.len() + 1;
    let budget = control.budget.of(n, curves);
    // A budget past the clock's range never runs out.
    let watch = control
        .stops
        .watch(control.cancelled, started.checked_add(budget));
    let mut equity: Vec<f64> = Vec::with_capacity(n * curves);
    let mut sink = |c: usize, dates: &[xt_shared::Date], eq: &[f64]| {
        // Curves come in order, all on the job's bars; an endless job starts over.
        if c == 0 {
            equity.clear();
        }
        debug_assert_eq!(equity.len(), c * dates.len());
        equity.extend_from_slice(eq);
    };
    let mut tables = execute(spec, strategy, combos, &bars, &watch, &mut sink);
    while control.endless && tables.is_ok() {
        tables = execute(spec, strategy, combos, &bars, &watch, &mut sink);
    }
    let tables = match tables {
        Ok(t) => t,
        Err(JobError::Halted(Halt::OverBudget)) => {
            let error = format!(
                "{}: {:.1} s for {n} bars x {curves} curves (its parameter sets and the \
                 benchmark), {:.1} s plus {} ns a bar of a curve",
                Halt::OverBudget,
                budget.as_secs_f64(),
                control.budget.base.as_secs_f64(),
                control.budget.per_bar.as_nanos(),
            );
            bars = Err(error);
            equity.clear();
            execute(spec, strategy, combos, &bars, &Never, &mut |_, _, _| {})
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let error = bars.as_ref().err().cloned();
    let data_hash = bars.as_ref().ok().map(xt_shared::Bars::content_hash);
    // The curves' calendar is the bars' dates (none when the data failed): moved, not
    // copied.
    let calendar = bars.map(|b| b.dates).unwrap_or_default();
    let column = |schema: SchemaRef, array: arrow::array::ArrayRef| {
        RecordBatch::try_new(schema, vec![array]).map_err(|e| e.to_string())
    };
    let calendar = column(
        calendar_schema(),
        Arc::new(arrow::array::Date32Array::from(calendar)),
    )?;
    let sleeves = column(
        sleeves_schema(),
        Arc::new(arrow::array::Float64Array::from(equity)),
    )?;
    let mut out = vec![
        ("metrics", tables.metrics),
        ("calendar", calendar),
        ("sleeves", sleeves),
    ];
    out.extend(tables.trades.map(|t| ("trades", t)));
    out.extend(tables.equity.map(|t| ("equity", t)));
    Ok(JobOutput {
        tables: out,
        capital: spec.capital,
        curves,
        point_in_time: spec.point_in_time,
        bar_evaluations: (n * combos.len()) as u64,
        error,
        seconds: started.elapsed().as_secs_f64(),
        data_hash,
    })
}

/// A job computed on this worker, waiting to be sent: its tables, or why the attempt
/// could not produce any (reported with `Fail`, so the job is tried again).
pub(super) struct Finished {
    pub(super) worker: u64,
    pub(super) lease: JobLease,
    pub(super) result: Result<JobOutput, String>,
}

impl JobOutput {
    /// Drops its `calendar` and `sleeves` tables, once summed into a part: a worker holds
    /// a part's sums per upload, not every job's curves until the upload is taken (a grid's
    /// job has a curve per combination). Should the coordinator ask for the job's sleeves
    /// on their own after all, the job runs again (see [`send_pending`]).
    pub(super) fn drop_sleeves(&mut self) {
        self.tables
            .retain(|(n, _)| !matches!(*n, "calendar" | "sleeves"));
    }

    /// Bytes of its tables in memory.
    pub fn bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}
