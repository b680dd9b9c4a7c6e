//! Retention: a finished batch deleted whole (its record, tables and summary), on an
//! admin's request through the API (which audits it) or once older than the operator's
//! `--retain-days`.

use super::*;

impl Coordinator {
    /// Deletes finished batch `id`. A batch still running is refused: cancel it first.
    pub fn delete_batch(&self, id: u64) -> Result<(), CoordinatorError> {
        {
            let s = self.lock();
            let run = s
                .batches
                .get(&id)
                .ok_or_else(|| CoordinatorError::NotFound(format!("unknown batch {id}")))?;
            if run.phase.summary().is_none() {
                return Err(CoordinatorError::NotFinished(format!(
                    "batch {id} has not finished; cancel it, then delete it once it has"
                )));
            }
        }
        // Gone from the store before it is forgotten here: a failed delete leaves it whole.
        self.store
            .delete_batch(id)
            .map_err(|e| CoordinatorError::Unavailable(format!("deleting batch {id}: {e}")))?;
        let mut s = self.lock();
        s.batches.remove(&id);
        s.scheduler.forget(id);
        Ok(())
    }

    /// Deletes the finished batches submitted before `cutoff_ms` (milliseconds since the
    /// Unix epoch); returns their ids.
    pub fn delete_submitted_before(&self, cutoff_ms: u64) -> Vec<u64> {
        let old: Vec<u64> = {
            let s = self.lock();
            s.batches
                .iter()
                .filter(|(_, run)| {
                    run.phase.summary().is_some() && run.batch.submitted_ms < cutoff_ms
                })
                .map(|(id, _)| *id)
                .collect()
        };
        old.into_iter()
            .filter(|&id| match self.delete_batch(id) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("xt-coordinator: retention: {e}");
                    false
                }
            })
            .collect()
    }
}
