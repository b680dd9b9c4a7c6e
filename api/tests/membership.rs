//! Worker membership on etcd leases: a worker killed while it holds a job that never ends
//! has its job queued again once its membership lease lapses (2 s), though the
//! coordinator's own lease on the job would hold it for ten minutes; another worker then
//! completes the batch.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xt_shared::BatchSpec;
use xt_testkit::{Etcd, Proc, scratch};
use xt_wire::auth::ClusterSecret;
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusReply, StatusRequest, SubmitRequest};

fn worker(
    etcd: &Etcd,
    secret: &std::path::Path,
    log: &std::path::Path,
    envs: &[(&str, &str)],
) -> Proc {
    Proc(
        Command::new(xt_testkit::bin("xt-worker"))
            .args([
                "--slots",
                "1",
                "--member-ttl-secs",
                "2",
                "--etcd",
                &etcd.endpoints(),
            ])
            .env("XT_CLUSTER_SECRET_FILE", secret)
            .envs(envs.iter().copied())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

async fn wait_for(
    client: &mut BatchesClient<xt_wire::auth::Channel>,
    batch: u64,
    within: Duration,
    ready: impl Fn(&StatusReply) -> bool,
) -> StatusReply {
    let deadline = Instant::now() + within;
    loop {
        let s = client
            .status(StatusRequest {
                batch,
                wait_ms: 200,
            })
            .await
            .unwrap()
            .into_inner();
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "batch {batch}: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_jobs_are_queued_again_when_its_membership_lapses() {
    let Some(etcd) = Etcd::start("members-etcd", 1) else {
        return;
    };
    let dir = scratch("membership");
    let secret_file = dir.join("cluster-secret");
    std::fs::write(&secret_file, "membership-test-secret-0123456789\n").unwrap();
    let log = dir.join("coordinator.log");
    let mut coordinator = Command::new(xt_testkit::bin("xt-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--lease-ms", "600000"])
        .args(["--leader-ttl-secs", "2", "--etcd", &etcd.endpoints()])
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--results")
        .arg(dir.join("results"))
        .arg("--cluster-secret-file")
        .arg(&secret_file)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = coordinator.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let _coordinator = Proc(coordinator);
    while !rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the coordinator leads")
        .starts_with("role: leader")
    {}

    let secret = ClusterSecret::read(&secret_file).unwrap();
    let channel = xt_wire::leader::follow(&etcd.urls, Some(secret))
        .await
        .unwrap();
    let mut client = BatchesClient::new(channel);
    let spec = BatchSpec::new("synthetic://?symbols=3&years=1&seed=2", "sma_cross");
    let batch = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(&spec).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch;

    // The first job queued is SYN00000's: this worker leases it alone and never ends it.
    let mut stuck = worker(
        &etcd,
        &secret_file,
        &dir.join("stuck.log"),
        &[
            ("XT_TEST_ENDLESS_SYMBOL", "SYN00000"),
            ("XT_TEST_LEASE_LIMIT", "1"),
        ],
    );
    let s = wait_for(&mut client, batch, Duration::from_secs(60), |s| {
        s.running == 1
    })
    .await;
    assert_eq!((s.done, s.queued), (0, 2), "{s:?}");
    stuck.0.kill().unwrap();
    stuck.0.wait().unwrap();

    // Only the lapsed membership can give the job back within the minute: its lease at the
    // coordinator runs for ten.
    let _other = worker(&etcd, &secret_file, &dir.join("other.log"), &[]);
    let s = wait_for(&mut client, batch, Duration::from_secs(60), |s| s.finished).await;
    assert_eq!((s.done, s.failed), (3, 0), "{s:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("left (its membership lapsed); 1 job(s) queued again"),
        "{logged}"
    );
}

/// A worker that starts while etcd is down joins once it is back, rather than exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_waits_for_etcd() {
    let Some(mut etcd) = Etcd::start("members-join-etcd", 1) else {
        return;
    };
    etcd.kill(0);
    let urls = etcd.urls.clone();
    let joining = tokio::spawn(async move {
        xt_wire::members::join(&urls, "late-worker", Duration::from_secs(5)).await
    });
    // Still trying (not failed) while etcd is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!joining.is_finished(), "join gave up while etcd was down");
    etcd.restart(0);
    etcd.wait_ready(0);
    let member = tokio::time::timeout(Duration::from_secs(30), joining)
        .await
        .expect("joined once etcd was back")
        .unwrap()
        .unwrap();
    let mut client = xt_wire::leader::etcd(&etcd.urls).await.unwrap();
    let present = xt_wire::members::present(&mut client).await.unwrap();
    assert!(present.contains(&member.key), "{present:?}");
    member.leave().await;
    let present = xt_wire::members::present(&mut client).await.unwrap();
    assert!(!present.contains("xt/workers/late-worker"), "{present:?}");
}
