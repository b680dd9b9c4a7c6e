//! A batch's jobs as the scheduler keeps them: each job's status, and the counts of those
//! statuses kept in step with every change.

use std::collections::VecDeque;
use std::time::Instant;

use super::{BatchId, WorkerId};

/// Where a job is in its life; every change goes through `BatchJobs::set`:
/// ```text
/// Queued --lease--> Running --deadline passed, or Fail--> Queued (or Failed, attempts spent)
/// Queued | Running --reserve--> Storing --finish--> Done | Failed
///                               Storing --release--> what it was (Cancelled if its batch was)
/// Queued | Running --cancel--> Cancelled
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    Queued,
    Running {
        worker: WorkerId,
        attempt: u32,
        deadline: Instant,
    },
    /// An attempt's result is being stored (see [`super::Scheduler::reserve`]): the job completes
    /// with it unless storing fails, so nothing else may end it meanwhile. Counted as what
    /// it was (`from`, queued or running) until then.
    Storing {
        from: Box<JobStatus>,
    },
    Done {
        attempt: u32,
    },
    /// Failed `max_attempts` times; the last error is kept.
    Failed {
        error: String,
    },
    Cancelled,
}

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) status: JobStatus,
    pub(super) attempts: u32,
    pub(super) last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct BatchJobs {
    pub(super) id: BatchId,
    pub(super) jobs: Vec<Job>,
    pub(super) queue: VecDeque<u32>,
    pub(super) cancelled: bool,
    /// The jobs' statuses counted, kept in step by `set`: progress is read on every
    /// completion and status poll, and counting a 20,000-job batch each time made
    /// completing it quadratic.
    pub(super) progress: Progress,
}

impl BatchJobs {
    /// Every status change goes through here, so `progress` always counts `jobs`.
    pub(super) fn set(&mut self, job: u32, status: JobStatus) {
        let j = &mut self.jobs[job as usize];
        self.progress.count(&j.status, -1);
        self.progress.count(&status, 1);
        j.status = status;
    }
}

/// Counts of a batch's jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub queued: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl Progress {
    pub(super) fn count(&mut self, status: &JobStatus, by: isize) {
        let n = match status {
            JobStatus::Storing { from } => return self.count(from, by),
            JobStatus::Queued => &mut self.queued,
            JobStatus::Running { .. } => &mut self.running,
            JobStatus::Done { .. } => &mut self.done,
            JobStatus::Failed { .. } => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *n = n.wrapping_add_signed(by);
    }

    /// Every job has reached a final state.
    pub fn finished(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
}
