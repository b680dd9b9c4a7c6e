//! The scheduler's rules, with time moved by hand: leases, heartbeats, retries, duplicates,
//! fairness, cancellation, restore.

use super::*;

const TTL: Duration = Duration::from_secs(10);

fn key(batch: BatchId, job: u32) -> JobKey {
    JobKey { batch, job }
}

#[test]
fn a_small_batch_is_not_starved_by_a_big_one() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 5_000).unwrap();
    let w = s.register(t);
    s.lease(w, 4, t).unwrap();
    s.submit(2, 10).unwrap();
    let leases = s.lease(w, 4, t).unwrap();
    let from_small = leases.iter().filter(|l| l.key.batch == 2).count();
    assert_eq!(from_small, 2, "{leases:?}");
    // The small batch finishes within its first ten rounds.
    let mut done_small = from_small;
    while done_small < 10 {
        done_small += s
            .lease(w, 2, t)
            .unwrap()
            .iter()
            .filter(|l| l.key.batch == 2)
            .count();
    }
    assert_eq!(s.progress(2).unwrap().queued, 0);
    assert!(s.progress(1).unwrap().queued > 4_900);
}

#[test]
fn no_worker_leases_more_than_its_share_of_the_queue() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 30).unwrap();
    let alone = s.register(t);
    assert_eq!(
        s.lease(alone, 4, t).unwrap().len(),
        4,
        "alone: what it asks"
    );
    let (a, b) = (s.register(t), s.register(t));
    // 26 queued, 3 workers: at most 9 each, of what is left each time.
    assert_eq!(s.lease(a, 50, t).unwrap().len(), 9);
    assert_eq!(s.lease(b, 50, t).unwrap().len(), 6);
    s.drain(alone);
    // A draining worker takes no share: 11 queued, 2 workers.
    assert_eq!(s.lease(a, 50, t).unwrap().len(), 6);
    assert_eq!(s.lease(b, 50, t).unwrap().len(), 3);
    assert_eq!(s.lease(a, 50, t).unwrap().len(), 1);
    assert_eq!(s.lease(b, 50, t).unwrap().len(), 1);
    assert_eq!(s.queue_depth(), 0);
}

#[test]
fn a_silent_worker_loses_its_leases_and_a_heartbeat_keeps_them() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 2).unwrap();
    let (a, b) = (s.register(t), s.register(t));
    let la = s.lease(a, 1, t).unwrap();
    let lb = s.lease(b, 1, t).unwrap();
    s.heartbeat(b, t + Duration::from_secs(8)).unwrap();
    let requeued = s.expire(t + Duration::from_secs(11));
    assert_eq!(requeued, vec![la[0].key]);
    assert!(matches!(
        s.status(lb[0].key),
        Some(JobStatus::Running { .. })
    ));
    // Another worker picks the job up as attempt 2.
    let again = s.lease(b, 1, t + Duration::from_secs(12)).unwrap();
    assert_eq!(
        again,
        vec![Lease {
            key: la[0].key,
            attempt: 2
        }]
    );
}

#[test]
fn the_first_completion_wins_and_late_duplicates_are_dropped() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 1).unwrap();
    let (a, b) = (s.register(t), s.register(t));
    let first = s.lease(a, 1, t).unwrap()[0];
    s.heartbeat(b, t + TTL / 2).unwrap();
    s.expire(t + TTL);
    let second = s.lease(b, 1, t + TTL).unwrap()[0];
    assert_eq!(second.attempt, 2);
    // The slow first attempt reports after all: it is the first completion, so it wins.
    assert_eq!(
        s.complete(first.key, first.attempt, a),
        Completion::Accepted
    );
    assert_eq!(
        s.complete(second.key, second.attempt, b),
        Completion::Duplicate
    );
    assert_eq!(
        s.progress(1).unwrap(),
        Progress {
            done: 1,
            ..Progress::default()
        }
    );
    assert_eq!(s.complete(key(9, 0), 1, a), Completion::Unknown);
}

#[test]
fn a_poison_job_fails_after_three_attempts_and_the_batch_finishes() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 2).unwrap();
    let w = s.register(t);
    let mut attempts = 0;
    loop {
        let leases = s.lease(w, 2, t).unwrap();
        if leases.is_empty() {
            break;
        }
        for l in leases {
            if l.key.job == 0 {
                attempts += 1;
                s.fail(
                    l.key,
                    w,
                    "SYM: the bar of 2020-01-06: high must be >= max(open, close)",
                );
            } else {
                s.complete(l.key, l.attempt, w);
            }
        }
    }
    assert_eq!(attempts, 3);
    let p = s.progress(1).unwrap();
    assert!(p.finished());
    assert_eq!((p.done, p.failed), (1, 1));
    assert!(
        matches!(s.status(key(1, 0)), Some(JobStatus::Failed { error }) if error.contains("high must be"))
    );
}

#[test]
fn cancel_drops_queued_jobs_and_tells_running_ones() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 10).unwrap();
    let w = s.register(t);
    let running = s.lease(w, 2, t).unwrap();
    s.cancel(1).unwrap();
    assert!(s.lease(w, 5, t).unwrap().is_empty());
    let told: HashSet<_> = s.heartbeat(w, t).unwrap().into_iter().collect();
    assert_eq!(told, running.iter().map(|l| l.key).collect());
    assert_eq!(s.progress(1).unwrap().cancelled, 10);
    assert_eq!(s.complete(running[0].key, 1, w), Completion::Duplicate);
}

#[test]
fn a_job_reserved_for_storing_completes_whatever_happens_meanwhile() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 1, 1);
    s.submit(1, 3).unwrap();
    let w = s.register(t);
    let l = s.lease(w, 2, t).unwrap();
    assert!(s.reserve(l[0].key));
    assert!(!s.reserve(l[0].key), "held once");
    // Its lease expires (the last attempt), another attempt fails it, the batch is
    // cancelled: none of them ends it, and nothing leases it.
    s.expire(t + Duration::from_secs(11));
    assert!(!s.fail(l[0].key, w, "late failure"));
    s.cancel(1).unwrap();
    assert!(matches!(
        s.status(l[0].key),
        Some(JobStatus::Storing { from }) if matches!(**from, JobStatus::Running { .. })
    ));
    assert_eq!(s.progress(1).unwrap().running, 1, "counted as what it was");
    assert!(!s.progress(1).unwrap().finished());
    assert_eq!(s.complete(l[0].key, 1, w), Completion::Accepted);
    assert_eq!(s.progress(1).unwrap().done, 1);
    assert!(s.progress(1).unwrap().finished());
    assert!(!s.reserve(l[0].key), "done jobs are not open");

    // Storing failed: a queued job skipped meanwhile is queued again.
    s.submit(2, 2).unwrap();
    let w2 = s.register(t);
    assert!(s.reserve(key(2, 0)));
    let leased = s.lease(w2, 2, t).unwrap();
    assert_eq!(
        leased.iter().map(|l| l.key).collect::<Vec<_>>(),
        vec![key(2, 1)]
    );
    s.release(key(2, 0));
    assert_eq!(s.lease(w2, 2, t).unwrap()[0].key, key(2, 0));
    // And in a cancelled batch, a released job is cancelled.
    assert!(s.reserve(key(2, 1)));
    s.cancel(2).unwrap();
    assert_eq!(s.progress(2).unwrap().cancelled, 1);
    s.release(key(2, 1));
    assert_eq!(s.progress(2).unwrap().cancelled, 2);
}

#[test]
fn draining_takes_no_new_jobs_and_deregistering_requeues() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.submit(1, 4).unwrap();
    let w = s.register(t);
    let held = s.lease(w, 2, t).unwrap();
    s.drain(w);
    assert!(s.lease(w, 2, t).unwrap().is_empty());
    s.complete(held[0].key, 1, w);
    assert_eq!(s.deregister(w), vec![held[1].key]);
    assert_eq!(s.queue_depth(), 3);
}

#[test]
fn restore_keeps_done_jobs_done() {
    let t = Instant::now();
    let mut s = Scheduler::new(TTL, 3, 1);
    s.restore(7, &[true, false, true, false]).unwrap();
    let w = s.register(t);
    let leases = s.lease(w, 10, t).unwrap();
    assert_eq!(
        leases.iter().map(|l| l.key.job).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(s.progress(7).unwrap().done, 2);
}
