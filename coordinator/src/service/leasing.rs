//! Leasing: jobs handed to workers a slot's worth at a time, and attempts reported failed;
//! a lease call with nothing queued waits for work.

use super::*;

impl Coordinator {
    /// An attempt of `worker`'s ended without a result: its job is queued again (waking the
    /// lease calls waiting for work) or, after its last attempt, failed with `error`.
    pub(super) fn fail_attempt(
        &self,
        s: &mut State,
        key: JobKey,
        worker: u64,
        error: &str,
    ) -> bool {
        let requeued = s.scheduler.fail(key, worker, error);
        if requeued {
            self.work.notify_waiters();
        }
        self.finish_if_done(s, key.batch);
        requeued
    }

    /// Leases up to `slots` queued jobs to `worker`.
    pub(super) fn lease_now(
        &self,
        worker: u64,
        slots: usize,
    ) -> Result<Vec<LeasedJob>, CoordinatorError> {
        let mut s = self.lock();
        let leases = s
            .scheduler
            .lease(worker, slots, now())
            .map_err(|e| CoordinatorError::NotFound(e.to_string()))?;
        leases
            .into_iter()
            .map(|l| {
                let run = s
                    .batches
                    .get(&l.key.batch)
                    .ok_or_else(|| CoordinatorError::internal("lease of an unknown batch"))?;
                Ok(LeasedJob {
                    key: l.key,
                    attempt: l.attempt,
                    batch: run.batch.clone(),
                    last: s
                        .scheduler
                        .progress(l.key.batch)
                        .is_ok_and(|p| p.queued == 0),
                })
            })
            .collect()
    }
}

/// A job leased to a worker: its spec is in its batch's plan.
pub(super) struct LeasedJob {
    pub(super) key: JobKey,
    pub(super) attempt: u32,
    pub(super) batch: Arc<AcceptedBatch>,
    /// No job of its batch was left queued by this lease.
    pub(super) last: bool,
}

/// Longest a lease call waits for work, or a status call for its batch to finish.
pub const MAX_WAIT_MS: u32 = 1_000;

/// Calls `look` until its answer is `ready` or `wait_ms` (at most [`MAX_WAIT_MS`]) have
/// passed, looking again whenever `wake` is notified. Registered for the wake-up before each
/// look, so one in between is not missed.
pub(super) async fn waited<T>(
    wake: &tokio::sync::Notify,
    wait_ms: u32,
    look: impl Fn() -> Result<T, CoordinatorError>,
    ready: impl Fn(&T) -> bool,
) -> Result<T, CoordinatorError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(MAX_WAIT_MS).into());
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let answer = look()?;
        if ready(&answer) || tokio::time::Instant::now() >= deadline {
            return Ok(answer);
        }
        let _ = tokio::time::timeout_at(deadline, woken).await;
    }
}
