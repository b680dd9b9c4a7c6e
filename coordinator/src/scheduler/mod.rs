//! Job scheduling: a fair queue across batches, leases with deadlines that heartbeats
//! extend, bounded retries, idempotent completion and cancellation.
//!
//! Fairness is round-robin over batches that have queued jobs: each lease request takes one
//! job from the next batch in the ring, so a small batch never waits behind a big one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

mod jobs;

use jobs::{BatchJobs, Job};
pub use jobs::{JobStatus, Progress};

pub type BatchId = u64;
pub type WorkerId = u64;

/// One job of one batch (its index in the batch's job list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub batch: BatchId,
    pub job: u32,
}

/// A job handed to a worker; `attempt` counts from 1 and tags the results it sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub key: JobKey,
    pub attempt: u32,
}

/// What a reported completion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The first successful attempt: its results are the job's results.
    Accepted,
    /// The job already completed (or was given up or cancelled): drop these results.
    Duplicate,
    /// No such batch or job.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("batch {0} already exists")]
    BatchExists(BatchId),
    #[error("unknown batch {0}")]
    UnknownBatch(BatchId),
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
}

#[derive(Debug, Clone)]
struct Worker {
    last_seen: Instant,
    leases: HashSet<JobKey>,
    draining: bool,
}

/// The scheduler's whole state. Time is an argument of every call, never read inside.
#[derive(Debug)]
pub struct Scheduler {
    batches: BTreeMap<BatchId, BatchJobs>,
    /// Batches with queued jobs, in round-robin order.
    ring: VecDeque<BatchId>,
    workers: HashMap<WorkerId, Worker>,
    next_worker: WorkerId,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// Attempts before a job is recorded as failed.
    pub max_attempts: u32,
}

impl Scheduler {
    /// Workers are numbered from `first_worker` (a successor must not reuse ids).
    pub fn new(lease_ttl: Duration, max_attempts: u32, first_worker: WorkerId) -> Self {
        Scheduler {
            batches: BTreeMap::new(),
            ring: VecDeque::new(),
            workers: HashMap::new(),
            next_worker: first_worker,
            lease_ttl,
            max_attempts,
        }
    }

    /// Queues a batch of `jobs` jobs.
    pub fn submit(&mut self, batch: BatchId, jobs: u32) -> Result<(), ScheduleError> {
        if self.batches.contains_key(&batch) {
            return Err(ScheduleError::BatchExists(batch));
        }
        let job = Job {
            status: JobStatus::Queued,
            attempts: 0,
            last_error: None,
        };
        self.batches.insert(
            batch,
            BatchJobs {
                id: batch,
                jobs: vec![job; jobs as usize],
                queue: (0..jobs).collect(),
                cancelled: false,
                progress: Progress {
                    queued: jobs as usize,
                    ..Progress::default()
                },
            },
        );
        if jobs > 0 {
            self.ring.push_back(batch);
        }
        Ok(())
    }

    /// Restores a batch after a restart: jobs already done stay done, everything else is
    /// queued again (a running attempt's worker will report to a coordinator that no
    /// longer knows its lease, and its results count only if the job is still open).
    pub fn restore(&mut self, batch: BatchId, done: &[bool]) -> Result<(), ScheduleError> {
        self.submit(batch, done.len() as u32)?;
        let b = self
            .batches
            .get_mut(&batch)
            .ok_or(ScheduleError::UnknownBatch(batch))?;
        for (i, &d) in done.iter().enumerate() {
            if d {
                b.set(i as u32, JobStatus::Done { attempt: 0 });
            }
        }
        b.queue.retain(|&j| !done[j as usize]);
        if b.queue.is_empty() {
            self.ring.retain(|&id| id != batch);
        }
        Ok(())
    }

    /// Forgets a batch none of whose jobs is queued or running (a finished batch deleted);
    /// false if it has such jobs, or is unknown.
    pub fn forget(&mut self, batch: BatchId) -> bool {
        let open = |b: &BatchJobs| b.progress.queued + b.progress.running > 0;
        match self.batches.get(&batch) {
            Some(b) if !open(b) => {
                self.batches.remove(&batch);
                self.ring.retain(|&id| id != batch);
                true
            }
            _ => false,
        }
    }

    /// Marks a restored job failed (its data failed before the restart).
    pub fn set_failed(&mut self, key: JobKey, error: &str) {
        if let Some(b) = self.batches.get_mut(&key.batch)
            && (key.job as usize) < b.jobs.len()
        {
            b.set(
                key.job,
                JobStatus::Failed {
                    error: error.to_string(),
                },
            );
        }
    }

    pub fn register(&mut self, now: Instant) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                last_seen: now,
                leases: HashSet::new(),
                draining: false,
            },
        );
        id
    }

    /// Up to `slots` jobs for `worker`, one per batch in turn.
    pub fn lease(
        &mut self,
        worker: WorkerId,
        slots: usize,
        now: Instant,
    ) -> Result<Vec<Lease>, ScheduleError> {
        // No worker takes more than its share of what is queued: workers lease several
        // rounds of short jobs ahead, and at a batch's end the jobs one of them holds
        // would leave the others idle.
        let workers = self.workers.values().filter(|w| !w.draining).count().max(1);
        let slots = slots.min(self.queue_depth().div_ceil(workers).max(1));
        let w = self
            .workers
            .get_mut(&worker)
            .ok_or(ScheduleError::UnknownWorker(worker))?;
        w.last_seen = now;
        if w.draining {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(slots);
        while out.len() < slots {
            let Some(batch_id) = self.ring.pop_front() else {
                break;
            };
            let Some(batch) = self.batches.get_mut(&batch_id) else {
                continue;
            };
            let Some(job) = batch.queue.pop_front() else {
                continue;
            };
            if !batch.queue.is_empty() {
                self.ring.push_back(batch_id);
            }
            if matches!(batch.jobs[job as usize].status, JobStatus::Storing { .. }) {
                // Completing now; queued again should storing fail.
                continue;
            }
            batch.jobs[job as usize].attempts += 1;
            let attempt = batch.jobs[job as usize].attempts;
            batch.set(
                job,
                JobStatus::Running {
                    worker,
                    attempt,
                    deadline: now + self.lease_ttl,
                },
            );
            let key = JobKey {
                batch: batch_id,
                job,
            };
            w.leases.insert(key);
            out.push(Lease { key, attempt });
        }
        Ok(out)
    }

    /// Extends every lease of `worker`; returns the jobs it holds that were cancelled.
    pub fn heartbeat(
        &mut self,
        worker: WorkerId,
        now: Instant,
    ) -> Result<Vec<JobKey>, ScheduleError> {
        let w = self
            .workers
            .get_mut(&worker)
            .ok_or(ScheduleError::UnknownWorker(worker))?;
        w.last_seen = now;
        let mut cancelled = Vec::new();
        for key in &w.leases {
            if let Some(job) = self
                .batches
                .get_mut(&key.batch)
                .and_then(|b| b.jobs.get_mut(key.job as usize))
            {
                match &mut job.status {
                    JobStatus::Running { deadline, .. } => *deadline = now + self.lease_ttl,
                    JobStatus::Cancelled => cancelled.push(*key),
                    _ => {}
                }
            }
        }
        w.leases.retain(|k| !cancelled.contains(k));
        Ok(cancelled)
    }

    /// A worker will take no new jobs (SIGTERM); it keeps its leases until it reports them.
    pub fn drain(&mut self, worker: WorkerId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.draining = true;
        }
    }

    /// A worker left cleanly: its unfinished leases go back to the queue at once.
    pub fn deregister(&mut self, worker: WorkerId) -> Vec<JobKey> {
        let Some(w) = self.workers.remove(&worker) else {
            return Vec::new();
        };
        let mut requeued = Vec::new();
        for key in w.leases {
            if self.requeue(key, worker, None) {
                requeued.push(key);
            }
        }
        requeued
    }

    /// Leases whose deadline passed go back to the queue (or fail for good after
    /// `max_attempts`); workers silent for a whole lease period are forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<JobKey> {
        let mut expired = Vec::new();
        for b in self.batches.values() {
            for (i, j) in b.jobs.iter().enumerate() {
                if let JobStatus::Running {
                    worker, deadline, ..
                } = j.status
                    && deadline <= now
                {
                    expired.push((
                        worker,
                        JobKey {
                            batch: b.id,
                            job: i as u32,
                        },
                    ));
                }
            }
        }
        let mut requeued = Vec::new();
        for (worker, key) in expired {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.leases.remove(&key);
            }
            if self.requeue(
                key,
                worker,
                Some("lease expired: the worker stopped sending heartbeats".into()),
            ) {
                requeued.push(key);
            }
        }
        let ttl = self.lease_ttl;
        self.workers
            .retain(|_, w| now.duration_since(w.last_seen) < ttl || !w.leases.is_empty());
        requeued
    }

    /// Puts a running job back in the queue, or records it failed after its last attempt.
    /// Returns whether it was queued again.
    fn requeue(&mut self, key: JobKey, worker: WorkerId, error: Option<String>) -> bool {
        let max = self.max_attempts;
        let Some(batch) = self.batches.get_mut(&key.batch) else {
            return false;
        };
        let Some(job) = batch.jobs.get_mut(key.job as usize) else {
            return false;
        };
        if !matches!(job.status, JobStatus::Running { worker: w, .. } if w == worker) {
            return false;
        }
        if let Some(e) = error {
            job.last_error = Some(e);
        }
        if job.attempts >= max {
            let error = job.last_error.clone().unwrap_or_else(|| "gave up".into());
            batch.set(key.job, JobStatus::Failed { error });
            return false;
        }
        batch.set(key.job, JobStatus::Queued);
        batch.queue.push_back(key.job);
        if !self.ring.contains(&key.batch) {
            self.ring.push_back(key.batch);
        }
        true
    }

    /// Holds an open job for an attempt whose result is about to be stored: until `finish`
    /// or `release`, no other attempt can reserve it, and it is neither leased, requeued,
    /// failed nor cancelled, so a stored result always completes its job (and the results
    /// stored together complete their jobs together). False if the job has ended or is
    /// held already.
    pub fn reserve(&mut self, key: JobKey) -> bool {
        let Some(batch) = self.batches.get_mut(&key.batch) else {
            return false;
        };
        let Some(job) = batch.jobs.get(key.job as usize) else {
            return false;
        };
        if !matches!(job.status, JobStatus::Queued | JobStatus::Running { .. }) {
            return false;
        }
        let from = Box::new(job.status.clone());
        batch.set(key.job, JobStatus::Storing { from });
        true
    }

    /// Lets go of a reserved job whose result could not be stored: it carries on as if
    /// never reserved (queued again if it was skipped meanwhile, cancelled if its batch
    /// was).
    pub fn release(&mut self, key: JobKey) {
        let Some(batch) = self.batches.get_mut(&key.batch) else {
            return;
        };
        let Some(JobStatus::Storing { from }) = batch.jobs.get(key.job as usize).map(|j| &j.status)
        else {
            return;
        };
        let from = (**from).clone();
        if batch.cancelled {
            batch.set(key.job, JobStatus::Cancelled);
            return;
        }
        let queued = from == JobStatus::Queued;
        batch.set(key.job, from);
        if queued && !batch.queue.contains(&key.job) {
            batch.queue.push_back(key.job);
            if !self.ring.contains(&key.batch) {
                self.ring.push_back(key.batch);
            }
        }
    }

    /// A worker reports a job's attempt finished with results. The first report of a job
    /// that is still open wins, whichever attempt it came from; later ones are duplicates.
    pub fn complete(&mut self, key: JobKey, attempt: u32, worker: WorkerId) -> Completion {
        self.finish(key, attempt, worker, None)
    }

    /// Like `complete`, for a job whose results are error rows (its data failed): it is
    /// recorded failed with `error` at once, since another attempt would fail the same way.
    pub fn complete_failed(
        &mut self,
        key: JobKey,
        attempt: u32,
        worker: WorkerId,
        error: &str,
    ) -> Completion {
        self.finish(key, attempt, worker, Some(error))
    }

    fn finish(
        &mut self,
        key: JobKey,
        attempt: u32,
        worker: WorkerId,
        error: Option<&str>,
    ) -> Completion {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.leases.remove(&key);
        }
        let Some(batch) = self.batches.get_mut(&key.batch) else {
            return Completion::Unknown;
        };
        let Some(job) = batch.jobs.get_mut(key.job as usize) else {
            return Completion::Unknown;
        };
        match &job.status {
            JobStatus::Done { .. } | JobStatus::Failed { .. } | JobStatus::Cancelled => {
                Completion::Duplicate
            }
            JobStatus::Queued | JobStatus::Running { .. } | JobStatus::Storing { .. } => {
                // Only a requeued job still sits in the queue; scanning it for every
                // completion would make a big batch quadratic.
                let queued = match &job.status {
                    JobStatus::Storing { from } => **from == JobStatus::Queued,
                    status => *status == JobStatus::Queued,
                };
                if queued {
                    batch.queue.retain(|&j| j != key.job);
                }
                let status = match error {
                    None => JobStatus::Done { attempt },
                    Some(e) => JobStatus::Failed {
                        error: e.to_string(),
                    },
                };
                batch.set(key.job, status);
                Completion::Accepted
            }
        }
    }

    /// A worker reports an attempt failed (the engine could not even produce error rows,
    /// or the worker is shutting down without finishing it).
    pub fn fail(&mut self, key: JobKey, worker: WorkerId, error: &str) -> bool {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.leases.remove(&key);
        }
        self.requeue(key, worker, Some(error.to_string()))
    }

    /// Drops the batch's queued jobs; running ones are told on their worker's next heartbeat.
    pub fn cancel(&mut self, batch: BatchId) -> Result<(), ScheduleError> {
        let b = self
            .batches
            .get_mut(&batch)
            .ok_or(ScheduleError::UnknownBatch(batch))?;
        b.cancelled = true;
        b.queue.clear();
        for j in 0..b.jobs.len() as u32 {
            let job = &b.jobs[j as usize];
            // A job whose result is being stored completes with it.
            if matches!(job.status, JobStatus::Queued | JobStatus::Running { .. }) {
                b.set(j, JobStatus::Cancelled);
            }
        }
        self.ring.retain(|&id| id != batch);
        Ok(())
    }

    pub fn progress(&self, batch: BatchId) -> Result<Progress, ScheduleError> {
        let b = self
            .batches
            .get(&batch)
            .ok_or(ScheduleError::UnknownBatch(batch))?;
        debug_assert_eq!(b.progress, {
            let mut p = Progress::default();
            for j in &b.jobs {
                p.count(&j.status, 1);
            }
            p
        });
        Ok(b.progress)
    }

    pub fn status(&self, key: JobKey) -> Option<&JobStatus> {
        self.batches
            .get(&key.batch)?
            .jobs
            .get(key.job as usize)
            .map(|j| &j.status)
    }

    /// Jobs waiting in every queue: the autoscaling signal, and each lease's bound. Every
    /// batch with queued jobs is in the ring, once, so the finished batches need no visit.
    pub fn queue_depth(&self) -> usize {
        self.ring
            .iter()
            .filter_map(|b| self.batches.get(b))
            .map(|b| b.queue.len())
            .sum()
    }

    /// Workers registered and not gone.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

#[cfg(test)]
mod tests;
