//! A batch's finish: once every job has ended, its tables are written from what was kept
//! (reading the rest back from the store) and its summary saved, on a thread of its own.

use super::*;

impl Coordinator {
    /// Once every job of `batch` has ended, writes its tables and summary on a thread of
    /// their own: a big batch's tables take seconds, and the state lock (every lease,
    /// upload and status call) must not wait on them. The batch counts as finished when
    /// its summary is in.
    pub(super) fn finish_if_done(&self, s: &mut State, batch: u64) {
        // Finished batches stay in the map; skip them before counting their jobs.
        if s.batches
            .get(&batch)
            .is_none_or(|run| !run.phase.may_finish())
        {
            return;
        }
        let Ok(progress) = s.scheduler.progress(batch) else {
            return;
        };
        let Some(run) = s.batches.get_mut(&batch) else {
            return;
        };
        if !progress.finished() {
            return;
        }
        // Each job's rows follow its final status: a job cancelled while its result was
        // being stored is a cancelled job, whatever the store holds.
        let ends: Vec<JobEnd> = (0..run.batch.jobs.len() as u32)
            .map(|j| match s.scheduler.status(JobKey { batch, job: j }) {
                Some(JobStatus::Failed { error }) => JobEnd::Failed(error.clone()),
                Some(JobStatus::Cancelled) => JobEnd::Cancelled,
                _ => JobEnd::Done,
            })
            .collect();
        let folded = run.phase.finish_started();
        // The sums hold every stored result only if each job done was added in this process.
        let done = ends.iter().filter(|e| matches!(e, JobEnd::Done)).count();
        let mut fold = std::mem::take(&mut *run.fold.lock().unwrap_or_else(|e| e.into_inner()));
        if folded != done {
            fold.sums = None;
        }
        let ended = Ended {
            batch: run.batch.clone(),
            combos: run.combos.clone(),
            bar_evaluations: run.bar_evaluations,
            started: run.started,
            ends,
            sums: fold.sums,
            kept: fold.kept,
        };
        let (store, state, finished) = (
            self.store.clone(),
            self.state.clone(),
            self.finished.clone(),
        );
        let jobs = run.batch.jobs.len();
        let thread = std::thread::spawn(move || {
            let summary = match aggregate(ended, batch, store.as_ref()) {
                Ok(v) => v,
                Err(e) => json!({"error": format!("aggregating results: {e:#}")}),
            };
            match store.save_summary(batch, &summary) {
                Err(e) => {
                    eprintln!("xt-coordinator: storing the summary of batch {batch}: {e}")
                }
                // The tables and summary hold the results now: the jobs' uploads go.
                Ok(()) if summary.get("error").is_none() => {
                    if let Err(e) = store.compact(batch, jobs) {
                        eprintln!("xt-coordinator: compacting batch {batch}: {e}");
                    }
                }
                Ok(()) => {}
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(run) = s.batches.get_mut(&batch) {
                run.phase.finished(summary);
            }
            drop(s);
            finished.notify_waiters();
        });
        let mut threads = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }

    /// Waits for every batch being finished to have its tables and summary written.
    pub fn join_finishing(&self) {
        let threads =
            std::mem::take(&mut *self.finishing.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// What the aggregation of a batch whose jobs have all ended reads.
pub(super) struct Ended {
    pub(super) batch: Arc<AcceptedBatch>,
    pub(super) combos: Arc<[ParamSet]>,
    pub(super) bar_evaluations: u64,
    pub(super) started: Instant,
    pub(super) ends: Vec<JobEnd>,
    /// The sleeves of every job done, summed as they were accepted.
    pub(super) sums: Option<PortfolioSum>,
    /// The tables to write of the jobs done that were kept in memory.
    pub(super) kept: Vec<Option<(Arc<ResultGroup>, usize)>>,
}

/// How a job of a finished batch ended.
pub(super) enum JobEnd {
    /// Its result is stored (its rows may still be errors, if its data failed).
    Done,
    /// Given up after its attempts, with the last error.
    Failed(String),
    Cancelled,
}

/// Writes a finished batch's four tables and returns its summary.
pub(super) fn aggregate(
    mut run: Ended,
    batch: u64,
    store: &dyn StateStore,
) -> anyhow::Result<Value> {
    let folded = run.sums.is_some();
    let kept = std::mem::take(&mut run.kept);
    let mut sums = run
        .sums
        .take()
        .unwrap_or_else(|| PortfolioSum::new(run.batch.dates.to_vec(), run.combos.len() + 1));
    let ends = &run.ends;
    let funding = JobSpec::funding(&run.batch.jobs, &run.batch.dates, run.batch.spec.capital);
    // With the sleeves summed already, only the tables to write are decoded.
    let wanted: &[&str] = if folded {
        &JOB_TABLES
    } else {
        &UploadTable::NAMES
    };
    // Each job's rows go to the files in job order, gathered a row group at a time: memory
    // holds what was kept and one row group of each table, not the batch's tables read
    // back (an equity table runs to millions of rows).
    let mut files = TableFiles::create(store, batch, &run.batch.spec)?;
    let mut digest = Digest::default();
    // Each job's data hash, for the batch's provenance (none for a job without bars).
    let mut hashes: Vec<Option<u64>> = vec![None; run.batch.jobs.len()];
    for (j, (job, end)) in run.batch.jobs.iter().zip(ends.iter()).enumerate() {
        let capital = job.capital;
        let result = match end {
            JobEnd::Done => match kept.get(j).and_then(Option::as_ref).filter(|_| folded) {
                Some((group, k)) => {
                    hashes[j] = group.jobs.get(*k).and_then(|(_, r)| r.data_hash);
                    if let Some(t) = group.tables.iter().find(|t| t.name == "metrics")
                        && let Some(Some((start, rows))) = t.spans.get(*k)
                    {
                        digest.metrics(&job.symbol, &t.slice(*start, *rows));
                    }
                    files.write_kept(group, *k)?;
                    continue;
                }
                None => store.load_result(batch, j as u32, wanted)?.ok_or_else(|| {
                    anyhow::anyhow!("job {j} is done but the store has no result for it")
                }),
            },
            JobEnd::Failed(error) => Err(anyhow::anyhow!("{error}")),
            JobEnd::Cancelled => Err(anyhow::anyhow!("cancelled")),
        };
        let (record, result) = match result {
            Ok(r) => r,
            Err(error) => {
                // No result: error rows, a sleeve in cash.
                if let JobEnd::Failed(e) = end {
                    digest.fail(&job.symbol, e);
                }
                let mut w = TableWriter::new(&job.symbol, false, false);
                for p in run.combos.iter() {
                    w.push_error(p.json(), &error.to_string());
                }
                files.write("metrics", &[w.finish()?.metrics])?;
                funding.add_cash(&mut sums, j, capital);
                continue;
            }
        };
        hashes[j] = record.data_hash;
        if !folded {
            add_result(
                &mut sums,
                &funding,
                j,
                capital,
                &result,
                record.summed_into.is_some(),
            );
        }
        if let Some(metrics) = result.get("metrics") {
            digest.metrics(&job.symbol, metrics);
        }
        for (name, batches) in &result {
            files.write(name, batches)?;
        }
    }
    let spec = &run.batch.spec;
    let finished = finish_portfolio(&run.combos, spec.capital, &sums, &funding)?;
    let (portfolio, portfolio_metrics) = (&finished.table, &finished.metrics);
    let research = research_of(&run.combos, &sums.dates, &finished, spec)?;
    let research_files = research_tables(store, batch, spec, &research)?;
    files.finish(portfolio, research_files)?;
    let benchmark = benchmark_metrics(portfolio, run.batch.spec.capital);
    let mut summary = json!({
        "jobs": run.batch.jobs.len(),
        // Jobs without a result: given up after their attempts, or their data unreadable.
        "failed": digest.failed(),
        "cancelled": ends.iter().filter(|e| matches!(e, JobEnd::Cancelled)).count(),
        "elapsed_seconds": run.started.elapsed().as_secs_f64(),
        "bar_evaluations": run.bar_evaluations,
        "portfolio": portfolio_summary(portfolio_metrics),
    });
    if let Value::Object(map) = &mut summary {
        map.extend(digest.fields(portfolio_metrics, &benchmark, portfolio));
        if let Some(v) = research.overfitting {
            map.insert("overfitting".into(), v);
        }
        if let Some(v) = research.walk_forward {
            map.insert("walk_forward".into(), v);
        }
        let warnings = warnings::warnings(map, &digest.affordable, spec.market.lot());
        map.insert("warnings".into(), warnings.into());
        map.insert(
            "provenance".into(),
            provenance(spec, &run.batch.jobs, &hashes),
        );
    }
    Ok(summary)
}

/// What made a batch's results (SEMANTICS section 9): the engine's version, the strategy
/// and its parameters, the market rules in force and the identity of the data read (each
/// symbol's content hash, and one hash of them all in job order).
fn provenance(spec: &BatchSpec, jobs: &[JobSpec], hashes: &[Option<u64>]) -> Value {
    let mut all = xt_shared::bars::Fnv::default();
    let mut symbols = serde_json::Map::new();
    for (job, h) in jobs.iter().zip(hashes) {
        all.write(job.symbol.as_bytes());
        all.write(&[0]);
        all.write(&h.unwrap_or(0).to_le_bytes());
        symbols.insert(
            job.symbol.clone(),
            h.map_or(Value::Null, |h| format!("{h:016x}").into()),
        );
    }
    let mut costs = serde_json::to_value(spec.resolved_costs()).unwrap_or_default();
    if spec.costs.and_then(|c| c.stamp_duty).is_none() {
        costs["stamp_duty"] = "schedule".into();
    }
    let (strategy, strategy_hash) = xt_shared::strategy::provenance(&spec.strategy);
    json!({
        "engine": format!("xtrading {}", env!("CARGO_PKG_VERSION")),
        "strategy": strategy,
        "strategy_hash": strategy_hash,
        "params": spec.params,
        "grid": spec.grid,
        "market": spec.market.name(),
        "costs": costs,
        "rules": {
            "source": if spec.rules.is_some() { "batch" } else { "builtin" },
            "schedule": xt_shared::rules::describe(&spec.schedule()),
            "overrides": "a universe row's price_limit and each cost the batch sets hold on every date",
        },
        "data": {
            "url": spec.data,
            "hash": format!("{:016x}", all.0),
            "symbols": symbols,
        },
    })
}

/// The sweep's research (SEMANTICS sections 10 and 11) from its portfolio curves.
fn research_of(
    combos: &[ParamSet],
    dates: &[xt_shared::Date],
    portfolio: &xt_shared::tables::FinishedPortfolio,
    spec: &BatchSpec,
) -> anyhow::Result<xt_shared::research::Research> {
    let metrics: Vec<_> = portfolio.metrics.iter().map(|(_, m)| m.clone()).collect();
    Ok(xt_shared::research::research(
        combos,
        dates,
        &portfolio.curves,
        &metrics,
        spec.capital,
        spec.walk_forward.as_ref(),
        spec.pbo_blocks
            .unwrap_or(xt_shared::research::DEFAULT_PBO_BLOCKS),
    )?)
}

/// The benchmark's own metrics, from the portfolio table's `benchmark_equity` (the same
/// curve beside every parameter set: the first set's rows).
fn benchmark_metrics(
    portfolio: &RecordBatch,
    capital: f64,
) -> xt_shared::metrics::PortfolioMetrics {
    use arrow::array::AsArray;
    let (Some(params), Some(bench)) = (
        portfolio.column_by_name("params"),
        portfolio.column_by_name("benchmark_equity"),
    ) else {
        return Default::default();
    };
    let params = params.as_string::<i32>();
    let bench = bench.as_primitive::<Float64Type>();
    let rows = (0..portfolio.num_rows())
        .take_while(|&i| params.value(i) == params.value(0))
        .count();
    let curve = &bench.values()[..rows];
    xt_shared::metrics::portfolio_metrics(capital, curve, curve)
}

/// A summary's `portfolio`: each parameter set's portfolio metrics against the benchmark.
pub fn portfolio_summary(
    metrics: &[(String, xt_shared::metrics::PortfolioMetrics)],
) -> serde_json::Map<String, Value> {
    metrics
        .iter()
        .map(|(p, m)| (p.clone(), serde_json::to_value(m).unwrap_or(Value::Null)))
        .collect()
}
