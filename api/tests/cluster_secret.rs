//! The coordinator's port with a cluster secret: a submit or an upload without it, or with
//! another, is refused before any service sees it; a worker given the secret runs a batch.

use std::process::{Command, Stdio};
use std::time::Duration;

use arrow_flight::FlightData;
use arrow_flight::flight_service_client::FlightServiceClient;
use xt_shared::BatchSpec;
use xt_testkit::{Proc, scratch};
use xt_wire::auth::ClusterSecret;
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusRequest, SubmitRequest};

fn submit_request() -> SubmitRequest {
    let spec = BatchSpec::new("synthetic://?symbols=3&years=1&seed=4", "sma_cross");
    SubmitRequest {
        spec_json: serde_json::to_string(&spec).unwrap(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_cluster_secret_are_refused() {
    let state = scratch("cluster-secret");
    let secret_file = state.join("cluster-secret");
    std::fs::write(&secret_file, "s3cret-of-this-cluster-0123456789\n").unwrap();
    let (_coordinator, url) = xt_testkit::coordinator(
        &state,
        "127.0.0.1:0",
        &["--cluster-secret-file", secret_file.to_str().unwrap()],
    );

    // No secret: the submit is refused, and so is an upload of forged results.
    let anonymous = xt_wire::transport::connect(&url, None).await.unwrap();
    let refused = BatchesClient::new(anonymous.clone())
        .submit(submit_request())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("cluster secret"), "{refused:?}");
    let forged = FlightServiceClient::new(anonymous)
        .do_put(futures::stream::iter(vec![FlightData::default()]))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");

    // Another secret: refused too.
    let other = ClusterSecret::new("not-the-secret-of-this-cluster").unwrap();
    let wrong = xt_wire::transport::connect(&url, Some(other))
        .await
        .unwrap();
    let refused = BatchesClient::new(wrong.clone())
        .submit(submit_request())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let forged = FlightServiceClient::new(wrong)
        .do_put(futures::stream::iter(vec![FlightData::default()]))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");

    // A worker without the secret cannot register; one with it runs the batch.
    let mut stranger = Command::new(xt_testkit::bin("xt-worker"))
        .args(["--coordinator", &url, "--slots", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = stranger.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stranger.stderr.take().unwrap(), &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(!out.0.success(), "a worker without the secret ran");
    assert!(out.1.contains("cluster secret"), "{}", out.1);

    let _worker = Proc(
        Command::new(xt_testkit::bin("xt-worker"))
            .args(["--coordinator", &url, "--slots", "1"])
            .env("XT_CLUSTER_SECRET_FILE", &secret_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let secret = ClusterSecret::read(&secret_file).unwrap();
    let mut client = BatchesClient::new(
        xt_wire::transport::connect(&url, Some(secret))
            .await
            .unwrap(),
    );
    let batch = client
        .submit(submit_request())
        .await
        .unwrap()
        .into_inner()
        .batch;
    let status = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let s = client
                .status(StatusRequest {
                    batch,
                    wait_ms: 1_000,
                })
                .await
                .unwrap()
                .into_inner();
            if s.finished {
                return s;
            }
        }
    })
    .await
    .expect("the batch finished within two minutes");
    assert_eq!((status.done, status.failed), (3, 0), "{status:?}");
}
