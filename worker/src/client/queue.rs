//! The upload queue: results the pool threads computed, gathered an upload's worth at a
//! time, waiting for the uploader.

use super::*;

/// Computed results waiting for the uploader, an upload's worth to each pending upload. The
/// pool threads push each job's result as it finishes, its sleeves added to its batch's part
/// in the upload it joins.
#[derive(Default)]
pub(super) struct Queued {
    pub(super) uploads: std::collections::VecDeque<PendingUpload>,
    /// The uploader waits for a result: the next one pushed wakes it.
    pub(super) idle: bool,
    /// No more jobs come: the uploader ends once nothing is left to compute or send.
    pub(super) closed: bool,
}

/// The results one upload will carry.
#[derive(Default)]
pub(super) struct PendingUpload {
    pub(super) finished: Vec<Finished>,
    pub(super) bytes: usize,
    /// Its results' sleeves, summed so far.
    pub(super) parts: Parts,
}

impl Queued {
    /// Adds a finished job to the last pending upload, or to a new one when that is full (a
    /// job that fills an upload on its own goes alone, with its own sleeves); returns whether
    /// the uploader is to be woken.
    pub(super) fn push(&mut self, mut finished: Finished, bytes: usize) -> bool {
        let fits = |u: &PendingUpload| {
            u.finished.is_empty()
                || (u.finished.len() < UPLOAD_ATTEMPTS && u.bytes + bytes <= UPLOAD_BYTES)
        };
        if !self.uploads.back().is_some_and(fits) {
            self.uploads.push_back(PendingUpload::default());
        }
        let pending = self.uploads.back_mut().expect("an upload was just made");
        if let Ok(output) = &mut finished.result
            && bytes < UPLOAD_BYTES
            && output.error.is_none()
            && !output.point_in_time
        {
            // Summed, its sleeves are dropped here, on the thread that made them; a result
            // that does not sum (or may not: its batch has membership dates) goes with its
            // own.
            if pending
                .parts
                .add(pending.finished.len(), finished.lease.batch, output)
            {
                output.drop_sleeves();
            }
        }
        pending.finished.push(finished);
        pending.bytes += bytes;
        std::mem::take(&mut self.idle)
    }
}

/// The queue the pool threads push to and the uploader takes from, and the notice of a
/// result pushed.
#[derive(Default)]
pub(super) struct UploadQueue {
    pub(super) queued: Mutex<Queued>,
    pub(super) pushed: tokio::sync::Notify,
}

impl UploadQueue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        // Every change to the queue completes under the lock: a poisoned one is still whole.
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}
