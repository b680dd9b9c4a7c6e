//! Admission: a submitted batch checked, planned into jobs (on the coordinator's planning
//! pool), held to its tenant's limits, stored and queued; and a batch's status as clients
//! see it.

use super::*;

impl Coordinator {
    /// Validates and plans a batch for `tenant`, queues its jobs, returns its id and job count.
    pub fn submit(
        &self,
        spec: BatchSpec,
        tenant: &str,
        owner: &str,
    ) -> Result<(u64, u32), CoordinatorError> {
        let bad = CoordinatorError::Spec;
        spec.check().map_err(bad)?;
        let spec = self.with_saved_source(spec, tenant)?;
        let (chosen, combos) =
            strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
                .map_err(bad)?;
        let spec = match &self.config.data_roots {
            Some(roots) => xt_shared::open::confine(&spec, roots).map_err(bad)?,
            None => spec,
        };
        self.check_limits(tenant, 0)?;
        let data = DataSpec::parse(&spec.data).map_err(bad)?;
        let source = self.config.data.open(&data).map_err(bad)?;
        let universe = resolve_universe(&spec, &data, source.as_ref()).map_err(bad)?;
        // A batch bigger than its tenant may ever queue is refused before it is planned
        // (planning reads every symbol's dates): waiting would never let it in.
        let most = self.config.max_queued_jobs;
        if universe.members.len() > most {
            return Err(bad(xt_shared::SpecError::new(
                "universe",
                format!(
                    "{} symbols; a batch has at most {most} jobs here (the limit of jobs a tenant may queue)",
                    universe.members.len()
                ),
            )));
        }
        let planned = self
            .planner
            .install(|| plan(&spec, source.as_ref(), &universe))
            .map_err(bad)?;
        check_lookback(&chosen, &combos, planned.dates.len(), &spec).map_err(bad)?;
        let jobs: Vec<JobSpec> = planned.jobs.into_iter().map(|j| j.spec).collect();
        let n = jobs.len() as u32;
        self.check_limits(tenant, n as usize)?;
        let mut s = self.lock();
        let id = s.next_batch;
        s.next_batch += 1;
        // Durable before it is acknowledged: an accepted batch survives a crash.
        let record = AcceptedBatch {
            spec,
            jobs,
            dates: planned.dates,
            tenant: tenant.to_string(),
            owner: owner.to_string(),
            submitted_ms: now_ms(),
        };
        self.store
            .save_batch(id, &record)
            .map_err(|e| CoordinatorError::Unavailable(format!("storing the batch: {e}")))?;
        s.scheduler
            .submit(id, n)
            .map_err(CoordinatorError::internal)?;
        self.work.notify_waiters();
        s.batches.insert(
            id,
            BatchRun {
                fold: Arc::new(Mutex::new(Fold::new(&record, combos.len()))),
                batch: Arc::new(record),
                combos: combos.into(),
                bar_evaluations: 0,
                started: Instant::now(),
                phase: Phase::new(None),
            },
        );
        Ok((id, n))
    }

    /// Refuses a tenant's new batch of `jobs` jobs past its limits.
    pub(super) fn check_limits(&self, tenant: &str, jobs: usize) -> Result<(), CoordinatorError> {
        let s = self.lock();
        let mut running = 0;
        let mut queued = 0;
        for (id, run) in &s.batches {
            if run.batch.tenant != tenant || run.phase.summary().is_some() {
                continue;
            }
            running += 1;
            queued += s.scheduler.progress(*id).map_or(0, |p| p.queued);
        }
        if running >= self.config.max_running_batches {
            return Err(CoordinatorError::Limit(format!(
                "tenant {tenant:?} has {running} batches running, its limit; wait for one to finish or cancel one"
            )));
        }
        if queued + jobs > self.config.max_queued_jobs {
            return Err(CoordinatorError::Limit(format!(
                "tenant {tenant:?} has {queued} jobs queued; {jobs} more would pass its limit of {}",
                self.config.max_queued_jobs
            )));
        }
        Ok(())
    }

    /// The status of one batch.
    pub(super) fn status_of(&self, s: &State, id: u64) -> Result<BatchView, CoordinatorError> {
        let progress = s
            .scheduler
            .progress(id)
            .map_err(|e| CoordinatorError::NotFound(e.to_string()))?;
        let run = s
            .batches
            .get(&id)
            .ok_or_else(|| CoordinatorError::NotFound(format!("unknown batch {id}")))?;
        let summary = run.phase.summary().cloned();
        // A finished batch's clock stopped when it was aggregated.
        let elapsed = summary
            .as_ref()
            .and_then(|v| v["elapsed_seconds"].as_f64())
            .unwrap_or_else(|| run.started.elapsed().as_secs_f64());
        let finished_jobs = progress.done + progress.failed + progress.cancelled;
        let remaining = progress.queued + progress.running;
        let eta = if finished_jobs > 0 && summary.is_none() {
            elapsed / finished_jobs as f64 * remaining as f64
        } else {
            0.0
        };
        Ok(BatchView {
            id,
            progress,
            elapsed_seconds: elapsed,
            eta_seconds: eta,
            bar_evaluations: run.bar_evaluations,
            summary,
            tenant: run.batch.tenant.clone(),
            owner: run.batch.owner.clone(),
            name: run.batch.spec.name.clone(),
            submitted_ms: run.batch.submitted_ms,
            jobs: run.batch.jobs.len(),
        })
    }
}

/// A batch as clients see it: its jobs' progress and, once finished, its summary.
#[derive(Debug, Clone)]
pub struct BatchView {
    pub id: u64,
    pub progress: crate::scheduler::Progress,
    pub elapsed_seconds: f64,
    /// Seconds still to go at the rate so far (0 before a job ends and once finished).
    pub eta_seconds: f64,
    /// Bar evaluations so far.
    pub bar_evaluations: u64,
    /// Set once its tables and summary are stored.
    pub summary: Option<Arc<Value>>,
    pub tenant: String,
    pub owner: String,
    pub name: Option<String>,
    pub submitted_ms: u64,
    pub jobs: usize,
}

/// A written strategy's parameter set whose windows need more bars than the batch's
/// calendar holds would never signal: refused, naming the set.
fn check_lookback(
    chosen: &Chosen,
    combos: &[ParamSet],
    bars: usize,
    spec: &BatchSpec,
) -> Result<(), xt_shared::SpecError> {
    let Chosen::Script { plans, .. } = chosen else {
        return Ok(());
    };
    match plans.iter().zip(combos).find(|(p, _)| p.lookback >= bars) {
        Some((plan, set)) => Err(xt_shared::SpecError::new(
            if spec.grid.is_some() {
                "grid"
            } else {
                "params"
            },
            format!(
                "{}: its windows need {} bars before the first signal; the date range holds {bars}",
                set.json(),
                plan.lookback + 1
            ),
        )),
        None => Ok(()),
    }
}
