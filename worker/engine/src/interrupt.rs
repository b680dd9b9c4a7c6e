//! How a running job is stopped from outside. A job runs on a pool thread that cannot be
//! killed, so the engine asks its caller between parameter sets and every `CHECK_BARS`
//! bars whether to go on; the engine itself reads no clock and no flag.

/// Bars simulated between two checks inside one parameter set (a fraction of a
/// millisecond of work), so even a single very long series stops promptly.
pub const CHECK_BARS: usize = 4096;

/// Why a job stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Halt {
    #[error("the batch was cancelled")]
    Cancelled,
    #[error("the job overran its time budget")]
    OverBudget,
    #[error("the worker stopped before the job finished (drain deadline)")]
    Drained,
}

/// Asked by the engine whether the job should stop.
pub trait Interrupt: Sync {
    fn check(&self) -> Result<(), Halt>;
}

/// Never stops a job: the in-process runner and tests.
pub struct Never;

impl Interrupt for Never {
    #[inline]
    fn check(&self) -> Result<(), Halt> {
        Ok(())
    }
}
