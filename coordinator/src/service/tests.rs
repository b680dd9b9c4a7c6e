//! The services run in-process, called as gRPC handlers without a network, on tokio's
//! paused clock: time moves only when a test moves it (or when every task waits), so lease
//! deadlines and long polls are tested without racing the threads that run jobs.

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xt-service-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn coordinator(name: &str) -> Coordinator {
    let config = Config {
        lease_ttl: Duration::from_secs(30),
        ..Config::default()
    };
    Coordinator::open(scratch(name), config).unwrap()
}

fn batch(symbols: usize) -> BatchSpec {
    BatchSpec::new(
        format!("synthetic://?symbols={symbols}&years=1&seed=1"),
        "macd",
    )
}

async fn register(c: &Coordinator) -> u64 {
    c.register(Request::new(RegisterRequest {
        name: "w".into(),
        slots: 1,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
    .worker
}

async fn lease(c: &Coordinator, worker: u64, wait_ms: u32) -> Vec<JobLease> {
    c.lease(Request::new(LeaseRequest {
        worker,
        slots: 1,
        wait_ms,
    }))
    .await
    .unwrap()
    .into_inner()
    .jobs
}

#[tokio::test(start_paused = true)]
async fn a_lease_without_heartbeats_expires_and_its_job_goes_to_another_worker() {
    let c = coordinator("expire");
    let (id, jobs) = c.submit(batch(1), "t", "u").unwrap();
    assert_eq!(jobs, 1);
    let a = register(&c).await;
    let first = lease(&c, a, 0).await;
    assert_eq!((first.len(), first[0].attempt), (1, 1));

    // A heartbeat before the deadline keeps the lease.
    tokio::time::advance(Duration::from_secs(29)).await;
    c.heartbeat(Request::new(HeartbeatRequest { worker: a }))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    c.reap();
    let b = register(&c).await;
    assert!(lease(&c, b, 0).await.is_empty(), "the lease was kept alive");

    // None for a whole lease period: the job is queued again and leased to b.
    tokio::time::advance(Duration::from_secs(2)).await;
    c.reap();
    let again = lease(&c, b, 0).await;
    assert_eq!((again.len(), again[0].batch, again[0].attempt), (1, id, 2));
}

#[tokio::test(start_paused = true)]
async fn a_status_call_waits_until_its_deadline_and_no_longer() {
    let c = coordinator("status-wait");
    let (id, _) = c.submit(batch(2), "t", "u").unwrap();
    let started = tokio::time::Instant::now();
    let reply = c
        .status(Request::new(StatusRequest {
            batch: id,
            wait_ms: 5_000,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.finished);
    // Capped at MAX_WAIT_MS, whatever the client asked for.
    assert_eq!(started.elapsed(), Duration::from_millis(MAX_WAIT_MS.into()));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_lease_call_answers_as_soon_as_a_batch_comes_in() {
    let c = coordinator("lease-wait");
    let worker = register(&c).await;
    let started = tokio::time::Instant::now();
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { lease(&c, worker, 1_000).await })
    };
    // The lease call is waiting on an empty queue before the batch comes in.
    tokio::task::yield_now().await;
    c.submit(batch(1), "t", "u").unwrap();
    let jobs = waiting.await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO, "it answered at once");
}

#[tokio::test]
async fn a_stopped_service_leaves_nothing_running() {
    let c = coordinator("stop");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(c.clone(), listener, async {}).await.unwrap();
    // The reaper, the servers and their connections each held a handle; only ours is left.
    assert_eq!(Arc::strong_count(&c.state), 1);
}

/// A batch with more symbols than its tenant may ever queue is a 422 on `universe`, before
/// planning; one that fits but must wait for room is a 429.
#[test]
fn a_batch_that_can_never_fit_is_refused_before_planning() {
    let config = Config {
        max_queued_jobs: 10,
        ..Config::default()
    };
    let c = Coordinator::open(scratch("never-fits"), config).unwrap();
    match c.submit(batch(11), "t", "u") {
        Err(CoordinatorError::Spec(e)) => {
            assert_eq!(e.field, "universe", "{e:?}");
            assert!(e.message.contains("at most 10 jobs"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    c.submit(batch(6), "t", "u").unwrap();
    assert!(matches!(
        c.submit(batch(6), "t", "u"),
        Err(CoordinatorError::Limit(_))
    ));
}

/// A running batch cannot be deleted; finished, it is deleted whole, by request or once
/// older than the retention age.
#[tokio::test]
async fn a_finished_batch_is_deleted_on_request_or_by_age() {
    let c = coordinator("delete");
    let (old, _) = c.submit(batch(2), "t", "u").unwrap();
    assert!(matches!(
        c.delete_batch(old),
        Err(CoordinatorError::NotFinished(_))
    ));
    // Cancelled before any job ran: it finishes with error rows.
    for id in [old] {
        c.cancel(Request::new(CancelRequest { batch: id }))
            .await
            .unwrap();
    }
    c.join_finishing();
    let root = std::env::temp_dir().join(format!("xt-service-delete-{}", std::process::id()));
    let dir = crate::store::batch_dir(&root, old);
    assert!(dir.join("summary.json").exists() && !dir.join("results.log").exists());
    // By age: only batches submitted before the cutoff go.
    let (new, _) = c.submit(batch(1), "t", "u").unwrap();
    c.cancel(Request::new(CancelRequest { batch: new }))
        .await
        .unwrap();
    c.join_finishing();
    // The second submitted later than any cutoff here (both may share a millisecond).
    {
        let mut s = c.lock();
        let run = s.batches.get_mut(&new).unwrap();
        let mut later = (*run.batch).clone();
        later.submitted_ms = u64::MAX;
        run.batch = Arc::new(later);
    }
    let cutoff = c.lock().batches[&old].batch.submitted_ms + 1;
    assert_eq!(c.delete_submitted_before(cutoff), [old]);
    assert!(!dir.exists(), "its directory is gone");
    assert!(matches!(
        c.delete_batch(old),
        Err(CoordinatorError::NotFound(_))
    ));
    c.delete_batch(new).unwrap();
    assert!(c.lock().batches.is_empty());
}

/// Downloads past the bound wait their turn, and one that waits too long is told to retry.
#[tokio::test(start_paused = true)]
async fn downloads_past_the_bound_wait_their_turn_or_are_told_to_retry() {
    use arrow_flight::flight_service_server::FlightService;
    let c = coordinator("downloads");
    let (id, _) = c.submit(batch(1), "t", "u").unwrap();
    c.cancel(Request::new(CancelRequest { batch: id }))
        .await
        .unwrap();
    c.join_finishing();
    let get = || {
        c.do_get(Request::new(arrow_flight::Ticket::new(format!(
            "{id}/metrics"
        ))))
    };
    // Every turn taken: a download waits, and is refused once it has waited too long.
    let most = c.config.max_downloads as u32;
    let held = c.downloads.clone().acquire_many_owned(most).await.unwrap();
    let refused = get().await.err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("try again"), "{refused}");
    // A turn given back within the wait: the download goes ahead.
    let waiting = tokio::spawn({
        let c = c.clone();
        async move {
            c.do_get(Request::new(arrow_flight::Ticket::new(format!(
                "{id}/metrics"
            ))))
            .await
            .map(|_| ())
        }
    });
    tokio::time::sleep(DOWNLOAD_WAIT / 2).await;
    assert!(!waiting.is_finished(), "it waits its turn");
    drop(held);
    waiting.await.unwrap().unwrap();
}
