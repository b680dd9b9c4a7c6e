//! What stops a leased job before its end: its batch cancelled (the coordinator names the
//! job in a heartbeat's answer), its time budget overrun, or the worker's drain deadline
//! passed. The engine asks between parameter sets and every few thousand bars (see
//! `engine::interrupt`); pool threads cannot be killed, so this is how a slot is freed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{Halt, Interrupt};

/// How long a job may run before it fails: `base` plus `per_bar` for every bar of every
/// curve (its parameter sets and the benchmark). The cluster bench's batch in process (bars
/// read, every curve run, tables built) took 0.19 CPU s for 300 x 2,520 bars x 2 curves,
/// about 0.13 µs a bar of a curve, so the default leaves about 15x that and a minute on top
/// for a loaded or slow machine, while still ending a job that stopped making progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobBudget {
    pub base: Duration,
    pub per_bar: Duration,
}

impl Default for JobBudget {
    fn default() -> Self {
        JobBudget {
            base: Duration::from_secs(60),
            per_bar: Duration::from_micros(2),
        }
    }
}

impl JobBudget {
    /// The budget of a job of `bars` bars and `curves` curves.
    pub fn of(&self, bars: usize, curves: usize) -> Duration {
        let evaluations = (bars as u128) * (curves as u128);
        let extra = self.per_bar.as_nanos().saturating_mul(evaluations);
        self.base
            .saturating_add(Duration::from_nanos(extra.min(u64::MAX as u128) as u64))
    }
}

/// Each job's stop flag, and the worker's drain flag.
#[derive(Default)]
pub struct Stops {
    jobs: Mutex<HashMap<(u64, u32, u32), Arc<AtomicBool>>>,
    drained: AtomicBool,
}

impl Stops {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u32, u32), Arc<AtomicBool>>> {
        // A map of flags holds no invariant a panic could break.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A leased attempt's flag, set when its batch is cancelled.
    pub fn start(&self, batch: u64, job: u32, attempt: u32) -> Arc<AtomicBool> {
        self.jobs()
            .entry((batch, job, attempt))
            .or_default()
            .clone()
    }

    /// The attempt is computed: nothing is left to stop.
    pub fn finish(&self, batch: u64, job: u32, attempt: u32) {
        self.jobs().remove(&(batch, job, attempt));
    }

    /// The coordinator cancelled the job: every attempt of it here stops.
    pub fn cancel(&self, batch: u64, job: u32) {
        for ((b, j, _), flag) in self.jobs().iter() {
            if (*b, *j) == (batch, job) {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The drain deadline passed: every job stops, and jobs not yet started stop at once.
    pub fn drain(&self) {
        self.drained.store(true, Ordering::SeqCst);
    }

    /// Why a job with this flag should not start (or go on), budget aside.
    pub fn halted(&self, cancelled: &AtomicBool) -> Option<Halt> {
        if cancelled.load(Ordering::Relaxed) {
            Some(Halt::Cancelled)
        } else if self.drained.load(Ordering::Relaxed) {
            Some(Halt::Drained)
        } else {
            None
        }
    }

    /// What the engine asks while the job runs, until `deadline` (none: no time limit).
    pub fn watch<'a>(&'a self, cancelled: &'a AtomicBool, deadline: Option<Instant>) -> Watch<'a> {
        Watch {
            stops: self,
            cancelled,
            deadline,
        }
    }
}

/// One running job's interrupt.
pub struct Watch<'a> {
    stops: &'a Stops,
    cancelled: &'a AtomicBool,
    deadline: Option<Instant>,
}

impl Interrupt for Watch<'_> {
    fn check(&self) -> Result<(), Halt> {
        if let Some(h) = self.stops.halted(self.cancelled) {
            return Err(h);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Halt::OverBudget);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_grows_with_bars_and_curves_and_saturates() {
        let b = JobBudget {
            base: Duration::from_secs(1),
            per_bar: Duration::from_micros(2),
        };
        assert_eq!(b.of(2_500, 4), Duration::from_millis(1_020));
        assert_eq!(b.of(0, 4), Duration::from_secs(1));
        assert!(b.of(usize::MAX, usize::MAX) > Duration::from_secs(1 << 33));
    }

    #[test]
    fn cancel_reaches_every_attempt_of_the_job_and_drain_every_job() {
        let stops = Stops::default();
        let (a, b, other) = (
            stops.start(1, 7, 1),
            stops.start(1, 7, 2),
            stops.start(1, 8, 1),
        );
        let later = Instant::now() + Duration::from_secs(3600);
        stops.cancel(1, 7);
        assert_eq!(stops.watch(&a, Some(later)).check(), Err(Halt::Cancelled));
        assert_eq!(stops.watch(&b, Some(later)).check(), Err(Halt::Cancelled));
        assert_eq!(stops.watch(&other, Some(later)).check(), Ok(()));
        assert_eq!(
            stops.watch(&other, Some(Instant::now())).check(),
            Err(Halt::OverBudget)
        );
        stops.finish(1, 8, 1);
        stops.drain();
        assert_eq!(stops.watch(&other, Some(later)).check(), Err(Halt::Drained));
        assert_eq!(stops.halted(&AtomicBool::new(false)), Some(Halt::Drained));
    }
}
