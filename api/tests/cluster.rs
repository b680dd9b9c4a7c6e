//! The distributed mode with real processes on loopback: a coordinator and worker
//! processes; one worker is killed with SIGKILL mid-batch and the batch still completes,
//! every job exactly once, with tables identical to the in-process runner's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use xt_shared::{BatchSpec, SyntheticMarket};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusRequest, SubmitRequest};

use xt_testkit::{Proc, read_parquet as read, scratch, scratch_root};

fn coordinator(state: &Path) -> (Proc, String) {
    coordinator_at(state, "127.0.0.1:0")
}

fn coordinator_at(state: &Path, listen: &str) -> (Proc, String) {
    xt_testkit::coordinator(
        state,
        listen,
        // The tests' data directories are made under the scratch root.
        &[
            "--lease-ms",
            "1000",
            "--data-root",
            scratch_root().to_str().unwrap(),
        ],
    )
}

fn worker(url: &str) -> Proc {
    faulty_worker(url, &[], None, None)
}

/// A one-slot worker with more flags, a symbol whose jobs never end by themselves, and at
/// most `limit` jobs leased in all.
fn faulty_worker(url: &str, args: &[&str], endless: Option<&str>, limit: Option<usize>) -> Proc {
    let mut command = Command::new(xt_testkit::bin("xt-worker"));
    command
        .args(["--coordinator", url, "--slots", "1"])
        .args(args)
        .stderr(Stdio::null());
    if let Some(symbol) = endless {
        command.env("XT_TEST_ENDLESS_SYMBOL", symbol);
    }
    if let Some(limit) = limit {
        command.env("XT_TEST_LEASE_LIMIT", limit.to_string());
    }
    Proc(command.spawn().unwrap())
}

/// `(symbol, params) -> final_equity` of a metrics table, checking each key appears once.
fn final_equity(metrics: &RecordBatch) -> BTreeMap<(String, String), Option<f64>> {
    let s = metrics.column_by_name("symbol").unwrap().as_string::<i32>();
    let p = metrics.column_by_name("params").unwrap().as_string::<i32>();
    let f = metrics
        .column_by_name("final_equity")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mut out = BTreeMap::new();
    for i in 0..metrics.num_rows() {
        let key = (s.value(i).to_string(), p.value(i).to_string());
        let v = f.is_valid(i).then(|| f.value(i));
        assert!(
            out.insert(key.clone(), v).is_none(),
            "{key:?} appears twice"
        );
    }
    out
}

/// A worker killed with SIGKILL while it holds leased jobs, one of them running: its leases
/// expire and other workers run them. The killed worker leases 5 of the 40 jobs and no more,
/// and its job of SYN00003 never ends, so at the kill it holds a running job and most of the
/// batch is still queued, however fast or slow the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let state = scratch("cluster-kill");
    let (_coordinator, url) = coordinator(&state);
    let mut first = faulty_worker(&url, &[], Some("SYN00003"), Some(5));

    let mut spec = BatchSpec::new("synthetic://?symbols=40&years=4&seed=3", "macd");
    spec.grid = Some(serde_json::from_value(serde_json::json!({"fast": [8, 12]})).unwrap());
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let reply = submit(&mut client, &spec).await;
    assert_eq!(reply.jobs, 40);
    // Jobs 0-2 done (one slot, jobs in lease order), job 3 running for good, 4 behind it.
    let before = wait_for(&mut client, reply.batch, |s| s.done == 3 && s.running == 2).await;
    assert_eq!(before.queued, 35, "{before:?}");
    // SIGKILL: no drain, no goodbye; its leases must expire and be re-run.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let workers: Vec<Proc> = (0..2).map(|_| worker(&url)).collect();
    let status = wait_finished(&mut client, reply.batch).await;
    assert_eq!((status.done, status.failed), (40, 0));

    let dir = state.join("batches").join(reply.batch.to_string());
    let cluster = read(&dir.join("metrics.parquet"));
    assert_eq!(cluster.num_rows(), 80);
    let synth = SyntheticMarket {
        symbols: 40,
        years: 4,
        seed: 3,
    };
    assert_as_in_process(&dir, &spec, &synth);
    drop(workers);
}

/// A universe with membership dates, through a coordinator and two worker processes: the
/// coordinator rebalances the sleeves at each change of members (SEMANTICS section 5) and
/// the tables are the in-process runner's, the portfolio bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_in_time_batch_is_funded_as_in_process() {
    let state = scratch("cluster-pit");
    let data = scratch("cluster-pit-data");
    xt_testkit::pit_market(&data);
    let (_coordinator, url) = coordinator(&state);
    let _workers: Vec<Proc> = (0..2).map(|_| worker(&url)).collect();
    let mut spec = BatchSpec::new(format!("file://{}", data.display()), "macd");
    spec.grid = Some(serde_json::from_value(serde_json::json!({"fast": [8, 12]})).unwrap());
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let reply = submit(&mut client, &spec).await;
    assert_eq!(reply.jobs, 5);
    let status = wait_finished(&mut client, reply.batch).await;
    assert_eq!((status.done, status.failed), (5, 0));

    let dir = state.join("batches").join(reply.batch.to_string());
    let source = xt_shared::CsvDir::open(&data).unwrap();
    let universe = xt_shared::Universe::load(&data.join("universe.csv")).unwrap();
    assert_tables_as(
        &dir,
        &xt_worker::runner::run_batch(&spec, &source, &universe).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_with_the_field_named() {
    let state = scratch("cluster-bad");
    let (_coordinator, url) = coordinator(&state);
    let mut client = BatchesClient::connect(url).await.unwrap();
    for (spec, message) in [
        (
            r#"{"data": "synthetic://?symbols=3", "strategy": "nope"}"#,
            "strategy: unknown strategy",
        ),
        (
            r#"{"data": "synthetic://?symbols=3", "strategy": "sma_cross", "params": {"fast": 9, "slow": 3}}"#,
            "fast must be < slow",
        ),
        (r#"{"data": "ftp://x", "strategy": "macd"}"#, "data:"),
        (
            r#"{"data": "synthetic://", "strategy": "macd", "start": "2030-01-01", "end": "2020-01-01"}"#,
            "start",
        ),
        (
            r#"{"data": "synthetic://", "strategy": "macd", "colour": 1}"#,
            "unknown field",
        ),
    ] {
        let e = client
            .submit(SubmitRequest {
                spec_json: spec.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{spec}");
        assert!(e.message().contains(message), "{spec}: {}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_recorded_failed_and_the_rest_complete() {
    let state = scratch("cluster-poison");
    let data = state.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let synth = SyntheticMarket {
        symbols: 6,
        years: 2,
        seed: 4,
    };
    for i in 0..6 {
        let sym = synth.symbol(i);
        let bars = xt_shared::BarSource::load(&synth, &sym).unwrap();
        xt_shared::source::write_csv(
            &bars,
            std::fs::File::create(data.join(format!("{sym}.csv"))).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(
        data.join("POISON.csv"),
        "date,open,high,low,close,volume\n2015-01-05,10,9,8,10,100\n",
    )
    .unwrap();
    let (_coordinator, url) = coordinator(&state);
    let _workers: Vec<Proc> = (0..2).map(|_| worker(&url)).collect();
    let spec = BatchSpec::new(format!("file://{}", data.display()), "rsi");
    let mut client = BatchesClient::connect(url).await.unwrap();
    let reply = submit(&mut client, &spec).await;
    assert_eq!(reply.jobs, 7);
    let status = wait_finished(&mut client, reply.batch).await;
    assert_eq!((status.done, status.failed), (6, 1));
    let metrics = table(&state, reply.batch, "metrics");
    let symbols = metrics.column_by_name("symbol").unwrap().as_string::<i32>();
    let errors = metrics.column_by_name("error").unwrap().as_string::<i32>();
    let poison = (0..metrics.num_rows())
        .find(|&i| symbols.value(i) == "POISON")
        .unwrap();
    assert!(
        errors
            .value(poison)
            .contains("POISON: the bar of 2015-01-05: high must be >= max(open, close)"),
        "{}",
        errors.value(poison)
    );
    assert_eq!(errors.null_count(), 6);
}

/// SIGTERM: the worker takes no new jobs, finishes and delivers those it leased, exits 0,
/// and another worker finishes the batch. The first worker leases 20 of the 300 jobs and no
/// more, so at its drain the rest are still queued, however fast or slow the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_and_another_finishes_the_batch() {
    let state = scratch("cluster-drain");
    let (_coordinator, url) = coordinator(&state);
    let mut first = faulty_worker(&url, &[], None, Some(20));
    let spec = BatchSpec::new("synthetic://?symbols=300&years=4&seed=8", "turtle");
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let reply = submit(&mut client, &spec).await;
    // Signalled as soon as its 20 jobs are leased, most of them still to run.
    wait_for(&mut client, reply.batch, |s| s.done + s.running == 20).await;
    let exit = terminate(&mut first);
    assert!(exit.success(), "a draining worker exits 0, got {exit:?}");
    let after = status_now(&mut client, reply.batch).await;
    assert_eq!(
        (after.done, after.running, after.queued),
        (20, 0, 280),
        "the drained worker finished and delivered every job it had leased: {after:?}"
    );
    let _second = worker(&url);
    let status = wait_finished(&mut client, reply.batch).await;
    assert_eq!((status.done, status.failed), (300, 0));
    let metrics = table(&state, reply.batch, "metrics");
    assert_eq!(final_equity(&metrics).len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_and_restarted_loses_nothing() {
    let state = scratch("cluster-restart");
    let (mut first, url) = coordinator(&state);
    let _workers: Vec<Proc> = (0..2).map(|_| worker(&url)).collect();
    let mut spec = BatchSpec::new("synthetic://?symbols=50&years=5&seed=12", "bollinger");
    spec.grid = Some(serde_json::from_value(serde_json::json!({"k": [1.5, 2.0]})).unwrap());
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let reply = submit(&mut client, &spec).await;
    loop {
        let s = client
            .status(StatusRequest {
                batch: reply.batch,
                wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        if s.done >= 8 {
            assert!(!s.finished, "finished before the crash");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // Same state directory, same address: the workers find it again.
    let (_second, url2) = coordinator_at(&state, url.trim_start_matches("http://"));
    assert_eq!(url, url2);
    let mut client = BatchesClient::connect(url).await.unwrap();
    let status = wait_finished(&mut client, reply.batch).await;
    assert_eq!((status.done, status.failed), (50, 0));
    let dir = state.join("batches").join(reply.batch.to_string());
    let synth = SyntheticMarket {
        symbols: 50,
        years: 5,
        seed: 12,
    };
    assert_as_in_process(&dir, &spec, &synth);
}

/// A finished batch's tables in `dir` against the in-process runner's: every row's final
/// equity, and the portfolio bit for bit.
fn assert_as_in_process(dir: &Path, spec: &BatchSpec, synth: &SyntheticMarket) {
    let local = xt_worker::runner::run_batch(spec, synth, &synth.universe()).unwrap();
    assert_tables_as(dir, &local);
}

/// A finished batch's tables in `dir` against `local`'s, as [`assert_as_in_process`].
fn assert_tables_as(dir: &Path, local: &xt_worker::runner::BatchResult) {
    assert_eq!(
        final_equity(&read(&dir.join("metrics.parquet"))),
        final_equity(&local.metrics)
    );
    assert_eq!(
        read(&dir.join("portfolio.parquet")),
        local.outcome.portfolio,
        "portfolio differs from the in-process run"
    );
}

/// A coordinator process and a batch of `symbols` synthetic symbols on it whose worker a
/// test plays: every job leased at once by a worker registered by hand, and run; nothing
/// uploaded yet.
struct Played {
    coordinator: Proc,
    url: String,
    client: BatchesClient<tonic::transport::Channel>,
    spec: BatchSpec,
    synth: SyntheticMarket,
    batch: u64,
    worker: u64,
    leases: Vec<xt_wire::JobLease>,
    outputs: Vec<xt_worker::client::JobOutput>,
}

async fn played(state: &Path, symbols: usize, seed: u64) -> Played {
    let (coordinator, url) = coordinator(state);
    let synth = SyntheticMarket {
        symbols,
        years: 2,
        seed,
    };
    let spec = BatchSpec::new(
        format!("synthetic://?symbols={symbols}&years=2&seed={seed}"),
        "sma_cross",
    );
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let batch = submit(&mut client, &spec).await.batch;
    let worker = register(&url, symbols as u32).await;
    let leases = lease(&url, worker, symbols as u32).await;
    assert_eq!(leases.len(), symbols);
    let outputs = run_leases(&leases, &synth);
    Played {
        coordinator,
        url,
        client,
        spec,
        synth,
        batch,
        worker,
        leases,
        outputs,
    }
}

/// Registers a worker of `slots` slots by hand, as the upload tests play one.
async fn register(url: &str, slots: u32) -> u64 {
    let request = xt_wire::RegisterRequest {
        name: "test".into(),
        slots,
        ..Default::default()
    };
    workers(url)
        .await
        .register(request)
        .await
        .unwrap()
        .into_inner()
        .worker
}

/// A client of the coordinator's `Workers` service, as a worker has.
async fn workers(url: &str) -> xt_wire::workers_client::WorkersClient<tonic::transport::Channel> {
    xt_wire::workers_client::WorkersClient::connect(url.to_string())
        .await
        .unwrap()
}

/// Up to `slots` jobs for `worker`, at once.
async fn lease(url: &str, worker: u64, slots: u32) -> Vec<xt_wire::JobLease> {
    let request = xt_wire::LeaseRequest {
        worker,
        slots,
        wait_ms: 0,
    };
    workers(url)
        .await
        .lease(request)
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// Runs leased jobs as a worker does.
fn run_leases(
    leases: &[xt_wire::JobLease],
    source: &SyntheticMarket,
) -> Vec<xt_worker::client::JobOutput> {
    leases
        .iter()
        .map(|l| {
            let job: xt_shared::job::JobSpec = serde_json::from_str(&l.spec_json).unwrap();
            xt_worker::client::run_leased(&job, source).unwrap()
        })
        .collect()
}

/// Attempt `attempt` of a leased job by `worker`, as its upload names it.
fn attempt_upload(
    worker: u64,
    lease: &xt_wire::JobLease,
    attempt: u32,
    output: &xt_worker::client::JobOutput,
) -> xt_wire::upload::Upload {
    xt_wire::upload::Upload {
        worker,
        batch: lease.batch,
        job: lease.job,
        attempt,
        bar_evaluations: output.bar_evaluations,
        seconds: output.seconds,
        error: None,
        part: None,
        data_hash: None,
    }
}

/// A channel to the coordinator at `url`, as a worker's uploads use.
async fn channel(url: &str) -> xt_wire::auth::Channel {
    xt_wire::transport::connect(url, None).await.unwrap()
}

/// Submits `spec` (as the API does, with no tenant), expecting it accepted.
async fn submit(
    client: &mut BatchesClient<tonic::transport::Channel>,
    spec: &BatchSpec,
) -> xt_wire::SubmitReply {
    client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_finished(
    client: &mut BatchesClient<tonic::transport::Channel>,
    batch: u64,
) -> xt_wire::StatusReply {
    wait_for(client, batch, |s| s.finished).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_is_not_starved_and_cancel_stops_a_big_one() {
    let state = scratch("cluster-fair");
    let (_coordinator, url) = coordinator(&state);
    let _worker = worker(&url);
    let mut client = BatchesClient::connect(url).await.unwrap();
    let big = submit(
        &mut client,
        &BatchSpec::new("synthetic://?symbols=400&years=4&seed=1", "macd"),
    )
    .await;
    let small = submit(
        &mut client,
        &BatchSpec::new("synthetic://?symbols=5&years=4&seed=2", "macd"),
    )
    .await;
    let done_small = wait_finished(&mut client, small.batch).await;
    assert_eq!(done_small.done, 5);
    let s = client
        .status(StatusRequest {
            batch: big.batch,
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.done < 100,
        "the small batch waited behind the big one: big had {} done",
        s.done
    );
    assert!(s.elapsed_seconds > 0.0);
    client
        .cancel(xt_wire::CancelRequest { batch: big.batch })
        .await
        .unwrap();
    let s = wait_finished(&mut client, big.batch).await;
    assert!(s.cancelled > 0 && s.done + s.cancelled == 400, "{s:?}");
    let metrics = table(&state, big.batch, "metrics");
    let errors = metrics.column_by_name("error").unwrap();
    assert_eq!(
        errors.len() - errors.null_count(),
        s.cancelled as usize,
        "cancelled jobs are error rows"
    );
}

/// One Flight upload carrying several job attempts, as a busy worker sends them: each job
/// completes once (a repeated attempt in the same upload or a later one is answered "not
/// accepted"), an upload naming no attempt for a record batch is refused whole, an attempt
/// with broken tables is refused alone and its job runs again, and the batch's tables equal
/// the in-process run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_completes_several_jobs_each_once() {
    use xt_wire::upload::Upload;
    use xt_wire::upload::upload_messages;
    use xt_worker::client::upload;

    let state = scratch("cluster-multi-upload");
    let Played {
        coordinator: _coordinator,
        url,
        mut client,
        spec,
        synth,
        batch,
        worker,
        leases,
        outputs,
    } = played(&state, 3, 11).await;
    let attempt = |i: usize| {
        let (l, o) = (&leases[i], &outputs[i]);
        (attempt_upload(worker, l, l.attempt, o), o.tables.as_slice())
    };
    let channel = channel(&url).await;

    let accepted = upload(&channel, &[attempt(0), attempt(1), attempt(0)])
        .await
        .unwrap()
        .accepted;
    assert_eq!(accepted, [true, true, false]);

    // A record batch that names an attempt the upload does not have: refused, nothing kept.
    let mut data = upload_messages(&[attempt(2)]).unwrap();
    data[1].app_metadata = "5".into();
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(channel.clone());
    let refused = async {
        let mut r = flight
            .do_put(futures::stream::iter(data))
            .await?
            .into_inner();
        while r.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("app_metadata"), "{refused:?}");
    let s = client
        .status(StatusRequest { batch, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.done, s.running, s.finished), (2, 1, false));

    // Within one upload, an attempt that could not have come from its job (a curve short)
    // or names a batch the coordinator does not have is refused alone: the others count,
    // and the refused job is queued again like a failed attempt.
    let (good, tables) = attempt(2);
    let mut short: Vec<(&str, arrow::record_batch::RecordBatch)> = tables.to_vec();
    for (name, b) in short.iter_mut() {
        if *name == "sleeves" {
            *b = b.slice(0, b.num_rows() - 1);
        }
    }
    let mut stranger = attempt(0).0;
    stranger.batch = 999;
    let accepted = upload(
        &channel,
        &[
            (good.clone(), &short[..]),
            (stranger, attempt(0).1),
            attempt(1),
        ],
    )
    .await
    .unwrap()
    .accepted;
    assert_eq!(accepted, [false, false, false]);
    let s = client
        .status(StatusRequest { batch, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.done, s.running, s.queued), (2, 0, 1));
    let again = lease(&url, worker, 3).await;
    assert_eq!(
        (again.len(), again[0].job, again[0].attempt),
        (1, leases[2].job, 2)
    );
    // A status call with a wait answers at its end while the batch runs, and the moment it
    // finishes.
    let asked = Instant::now();
    let s = client
        .status(StatusRequest {
            batch,
            wait_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!s.finished && asked.elapsed() >= Duration::from_millis(200));
    let waiting = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            let s = client
                .status(StatusRequest {
                    batch,
                    wait_ms: 1_000,
                })
                .await
                .unwrap()
                .into_inner();
            (s, asked.elapsed())
        })
    };
    let retried = Upload { attempt: 2, ..good };
    let accepted = upload(&channel, &[(retried, tables), attempt(1)])
        .await
        .unwrap()
        .accepted;
    assert_eq!(accepted, [true, false]);
    let (s, waited) = waiting.await.unwrap();
    assert!(s.finished, "{s:?}");
    assert!(
        waited < Duration::from_millis(1_000),
        "woken by the end, not its wait"
    );
    assert_eq!((s.done, s.failed), (3, 0));

    let dir = state.join("batches").join(batch.to_string());
    assert_as_in_process(&dir, &spec, &synth);
}

/// Sleeves summed into one part, as a worker sends several finished jobs of a batch: the
/// part's jobs complete together, or (one of them done already) none of them and each is
/// asked for again on its own; a broken part is refused whole and its jobs run again; and
/// the portfolio, rebuilt from the stored parts by a restarted coordinator, is bit-identical
/// to the in-process run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_completes_its_jobs_together_or_is_sent_again() {
    use xt_worker::client::{upload, upload_attempts};

    let state = scratch("cluster-parts");
    let Played {
        coordinator: mut first,
        url,
        mut client,
        spec,
        synth,
        batch,
        worker,
        leases,
        outputs,
    } = played(&state, 4, 5).await;
    let attempt_of = |worker, i: usize, attempt: u32| {
        let upload = attempt_upload(worker, &leases[i], attempt, &outputs[i]);
        (upload, &outputs[i])
    };
    let attempt = |i, attempt| attempt_of(worker, i, attempt);
    let send = async |attempts: &[xt_worker::client::Attempt]| {
        let channel = channel(&url).await;
        let attempts: Vec<_> = attempts
            .iter()
            .map(|(u, t)| (u.clone(), t.as_slice()))
            .collect();
        upload(&channel, &attempts).await
    };

    // Job 0 alone; then jobs 0, 1 and 2 in one part: job 0 is done, so none of the three
    // completes, and each is asked for again.
    let alone = upload_attempts(&[attempt(0, 1)], true).unwrap();
    assert_eq!(send(&alone).await.unwrap().accepted, [true]);
    let part = upload_attempts(&[attempt(0, 1), attempt(1, 1), attempt(2, 1)], true).unwrap();
    assert_eq!(
        part.iter().map(|(u, _)| u.part).collect::<Vec<_>>(),
        [Some(2), Some(2), Some(2)]
    );
    assert!(part[2].1.iter().any(|(n, _)| *n == "part_sums"));
    assert!(
        part[0]
            .1
            .iter()
            .all(|(n, _)| !matches!(*n, "sleeves" | "part_sums"))
    );
    let reply = send(&part).await.unwrap();
    assert_eq!(
        (reply.accepted, reply.resend),
        (vec![false; 3], vec![0, 1, 2])
    );
    let s = client
        .status(StatusRequest { batch, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.done, s.running), (1, 3));

    // A part whose carrier lost its sums: refused whole, both jobs queued again.
    let mut broken = upload_attempts(&[attempt(1, 1), attempt(2, 1)], true).unwrap();
    broken[1].1.retain(|(n, _)| *n != "part_sums");
    let reply = send(&broken).await.unwrap();
    assert_eq!((reply.accepted, reply.resend), (vec![false; 2], vec![]));
    let again = lease(&url, worker, 4).await;
    assert_eq!(
        again.iter().map(|l| (l.job, l.attempt)).collect::<Vec<_>>(),
        [(leases[1].job, 2), (leases[2].job, 2)]
    );

    // Jobs 1 and 2 (their second attempts) in one part: both complete.
    let part = upload_attempts(&[attempt(1, 2), attempt(2, 2)], true).unwrap();
    let reply = send(&part).await.unwrap();
    assert_eq!((reply.accepted, reply.resend), (vec![true; 2], vec![]));

    // The coordinator is killed and restarted on its state: job 3 runs again, and the end
    // sums the portfolio from the log, the part included.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (_second, url2) = coordinator_at(&state, url.trim_start_matches("http://"));
    assert_eq!(url, url2);
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let worker = register(&url, 4).await;
    let last = lease(&url, worker, 4).await;
    assert_eq!(
        last.iter().map(|l| l.job).collect::<Vec<_>>(),
        [leases[3].job]
    );
    let alone = upload_attempts(&[attempt_of(worker, 3, last[0].attempt)], true).unwrap();
    assert_eq!(send(&alone).await.unwrap().accepted, [true]);
    let s = wait_finished(&mut client, batch).await;
    assert_eq!((s.done, s.failed), (4, 0));

    let dir = state.join("batches").join(batch.to_string());
    assert_as_in_process(&dir, &spec, &synth);
}

/// A worker's results go summed into their batch's part, each dropping its sleeves once
/// summed. When the coordinator cannot take a part whole (one of its jobs was done
/// meanwhile by another attempt) and asks for its jobs on their own, the worker runs them
/// again and sends each with its own sleeves: every job completes once, and the batch's
/// tables equal the in-process run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_part_runs_its_jobs_again_and_sends_them_alone() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use xt_shared::job::JobSpec;
    use xt_wire::JobLease;
    use xt_worker::client::{Rerun, run_leased, upload, upload_attempts, upload_finished};

    let state = scratch("cluster-rerun");
    let Played {
        coordinator: _coordinator,
        url,
        mut client,
        spec,
        synth,
        batch,
        worker,
        leases,
        outputs,
    } = played(&state, 4, 7).await;
    let channel = channel(&url).await;

    // Job 1 completes first by an attempt of its own, with its own sleeves, as another
    // worker's would after this one's lease had lapsed.
    let first = attempt_upload(worker, &leases[1], leases[1].attempt, &outputs[1]);
    let alone = upload_attempts(&[(first, &outputs[1])], false).unwrap();
    let alone: Vec<_> = alone
        .iter()
        .map(|(u, t)| (u.clone(), t.as_slice()))
        .collect();
    assert_eq!(upload(&channel, &alone).await.unwrap().accepted, [true]);

    // Then the worker's four results, sent as its uploader sends them: one part,
    // refused whole, so all four run again and go alone (job 1's then answered "not
    // accepted").
    let reruns = Arc::new(AtomicUsize::new(0));
    let rerun: Rerun = {
        let reruns = reruns.clone();
        Arc::new(move |lease: JobLease| {
            reruns.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job: JobSpec = serde_json::from_str(&lease.spec_json).unwrap();
            let _ = tx.send(run_leased(&job, &synth));
            rx
        })
    };
    let results = leases
        .iter()
        .cloned()
        .zip(outputs)
        .map(|(lease, output)| (worker, lease, Ok(output)))
        .collect();
    upload_finished(&channel, rerun, results).await;
    assert_eq!(reruns.load(Ordering::SeqCst), 4);

    let s = wait_finished(&mut client, batch).await;
    assert_eq!((s.done, s.failed), (4, 0));
    let dir = state.join("batches").join(batch.to_string());
    assert_as_in_process(&dir, &spec, &synth);
}

/// A finished batch's table, from the coordinator's state directory `state`.
fn table(state: &Path, batch: u64, name: &str) -> RecordBatch {
    read(
        &xt_coordinator::store::batch_dir(&state.join("batches"), batch)
            .join(format!("{name}.parquet")),
    )
}

/// The status of `batch` now.
async fn status_now(
    client: &mut BatchesClient<tonic::transport::Channel>,
    batch: u64,
) -> xt_wire::StatusReply {
    client
        .status(StatusRequest { batch, wait_ms: 0 })
        .await
        .unwrap()
        .into_inner()
}

/// Sends SIGTERM and waits for the process to exit (a minute at most: a drain that does not
/// end fails the test rather than hanging it).
fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    let term = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = proc.0.try_wait().unwrap() {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within a minute of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status of `batch` once `ready` holds of it.
async fn wait_for(
    client: &mut BatchesClient<tonic::transport::Channel>,
    batch: u64,
    ready: impl Fn(&xt_wire::StatusReply) -> bool,
) -> xt_wire::StatusReply {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status_now(client, batch).await;
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "batch {batch}: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A job that never ends by itself (a test fault of the worker's) holds the worker's only
/// slot. Cancelling its batch stops it, so the next batch runs on that slot; and when one
/// holds the slot at SIGTERM, the drain deadline stops it, the worker exits 0 and the job
/// goes back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_job_is_stopped_by_cancel_and_by_the_drain_deadline() {
    let state = scratch("cluster-endless");
    let (_coordinator, url) = coordinator(&state);
    let mut worker = faulty_worker(&url, &["--drain-secs", "1"], Some("SYN00002"), None);
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let mut endless = BatchSpec::new("synthetic://?symbols=3&years=2&seed=1", "macd");
    endless.universe = Some(xt_shared::spec::UniverseSpec::Symbols(vec![
        "SYN00002".into(),
    ]));

    let first = submit(&mut client, &endless).await;
    wait_for(&mut client, first.batch, |s| s.running == 1).await;
    client
        .cancel(xt_wire::CancelRequest { batch: first.batch })
        .await
        .unwrap();
    // The slot is free again only if the cancel reached the running job.
    let next = submit(
        &mut client,
        &BatchSpec::new("synthetic://?symbols=2&years=2&seed=1", "macd"),
    )
    .await;
    let s = wait_finished(&mut client, next.batch).await;
    assert_eq!((s.done, s.failed), (2, 0));

    let second = submit(&mut client, &endless).await;
    wait_for(&mut client, second.batch, |s| s.running == 1).await;
    let exit = terminate(&mut worker);
    assert!(exit.success(), "a drained worker exits 0, got {exit:?}");
    let s = status_now(&mut client, second.batch).await;
    assert_eq!(
        (s.running, s.queued, s.done),
        (0, 1, 0),
        "the stopped job is queued again: {s:?}"
    );
}

/// A job that overruns its time budget fails for good with a message saying so, and the
/// batch's other jobs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_budget_fails_with_a_clear_error() {
    let state = scratch("cluster-budget");
    let (_coordinator, url) = coordinator(&state);
    let _worker = faulty_worker(
        &url,
        &["--job-budget-secs", "2", "--job-budget-ns-per-bar", "0"],
        Some("SYN00001"),
        None,
    );
    let mut client = BatchesClient::connect(url.clone()).await.unwrap();
    let spec = BatchSpec::new("synthetic://?symbols=3&years=1&seed=1", "macd");
    let reply = submit(&mut client, &spec).await;
    let s = wait_finished(&mut client, reply.batch).await;
    assert_eq!((s.done, s.failed), (2, 1), "{s:?}");
    let metrics = table(&state, reply.batch, "metrics");
    let symbols = metrics.column_by_name("symbol").unwrap().as_string::<i32>();
    let errors = metrics.column_by_name("error").unwrap().as_string::<i32>();
    for i in 0..metrics.num_rows() {
        if symbols.value(i) == "SYN00001" {
            assert!(
                errors
                    .value(i)
                    .contains("the job overran its time budget: 2.0 s"),
                "{}",
                errors.value(i)
            );
        } else {
            assert!(errors.is_null(i), "{}", errors.value(i));
        }
    }
}
