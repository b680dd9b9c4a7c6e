//! The outbox: computed results filed by the pool threads, a bundle an upload, waiting for
//! the deliverer.

use super::*;

/// Computed results waiting for the deliverer, an upload's worth to a bundle. The pool
/// threads file each job's result as it finishes, its sleeves added to its batch's part in
/// the bundle it joins.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) bundles: std::collections::VecDeque<Bundle>,
    /// The deliverer waits for a result: the next one filed wakes it.
    pub(super) idle: bool,
    /// No more jobs come: the deliverer ends once nothing is left to compute or deliver.
    pub(super) closed: bool,
}

#[derive(Default)]
pub(super) struct Bundle {
    pub(super) finished: Vec<Finished>,
    pub(super) bytes: usize,
    /// Its results' sleeves, summed so far.
    pub(super) parts: Parts,
}

impl Outbox {
    /// Files a finished job in the last bundle, or a new one when it is full (a job that
    /// fills an upload on its own goes alone, with its own sleeves); returns whether the
    /// deliverer is to be woken.
    pub(super) fn file(&mut self, mut finished: Finished, bytes: usize) -> bool {
        let fits = |b: &Bundle| {
            b.finished.is_empty()
                || (b.finished.len() < UPLOAD_ATTEMPTS && b.bytes + bytes <= UPLOAD_BYTES)
        };
        if !self.bundles.back().is_some_and(fits) {
            self.bundles.push_back(Bundle::default());
        }
        let bundle = self.bundles.back_mut().expect("a bundle was just made");
        if let Ok(output) = &mut finished.result
            && bytes < UPLOAD_BYTES
            && output.error.is_none()
        {
            // Summed, its sleeves are dropped here, on the thread that made them; a result
            // that does not sum goes with its own.
            if bundle
                .parts
                .add(bundle.finished.len(), finished.lease.batch, output)
            {
                output.drop_sleeves();
            }
        }
        bundle.finished.push(finished);
        bundle.bytes += bytes;
        std::mem::take(&mut self.idle)
    }
}

/// The outbox, and the notice to its deliverer of a result filed.
#[derive(Default)]
pub(super) struct Handover {
    pub(super) outbox: Mutex<Outbox>,
    pub(super) filed: tokio::sync::Notify,
}

impl Handover {
    pub(super) fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Every change to the outbox completes under the lock: a poisoned one is still
        // whole.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}
