//! Flow control: how much a worker leases ahead of its pool, and how much unsent work
//! it may hold before it stops leasing.

/// Rounds of `slots` jobs a worker keeps queued behind its running ones, for a mean job
/// time of `nanos` (0: none finished yet): 1 for jobs of 20 ms and more, up to 24 for short
/// ones (20 ms of work a slot at most). Deeper queues let the worker lease in larger rounds,
/// fewer calls for short jobs (measured in bench/PROFILE.md). What a worker may hold at a
/// batch's end is bounded by the 20 ms, and by the coordinator, which leases no worker more
/// than its share of the jobs queued.
pub(super) fn queued_rounds(nanos: u64) -> usize {
    const SHORT: u64 = 20_000_000;
    SHORT
        .checked_div(nanos)
        .map_or(1, |r| r.clamp(1, 24) as usize)
}

/// How long an idle worker's lease call waits for work: also how long it takes to notice a
/// shutdown while idle.
pub(super) const IDLE_WAIT_MS: u32 = 250;

/// A worker stops leasing once it holds more computed and unsent results (an
/// unreachable coordinator) than twice its queue and this many, or this many bytes of them.
/// Short jobs' results come hundreds to a [`LINGER`].
pub(super) const UNSENT: usize = 256;
pub(super) const UNSENT_BYTES: usize = 512 << 20;
