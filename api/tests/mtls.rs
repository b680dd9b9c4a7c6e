//! Mutual TLS on the coordinator's port, with certificates from `xt dev-ca`: a worker and a
//! client holding the cluster CA's certificates run a batch; a client speaking plain HTTP/2,
//! and one whose certificate another CA signed, are refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use xt_shared::BatchSpec;
use xt_testkit::{Proc, scratch};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusRequest, SubmitRequest};

fn dev_ca(dir: &std::path::Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_xt"))
        .args(["dev-ca", "--out"])
        .arg(dir)
        .args(["--hosts", "coordinator.test"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 5);
}

fn submit() -> SubmitRequest {
    let spec = BatchSpec::new("synthetic://?symbols=3&years=1&seed=6", "rsi");
    SubmitRequest {
        spec_json: serde_json::to_string(&spec).unwrap(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_cluster_cas_certificates_reach_the_coordinator() {
    let dir = scratch("mtls");
    let (certs, other) = (dir.join("certs"), dir.join("other"));
    dev_ca(&certs);
    dev_ca(&other);
    let path = |d: &std::path::Path, f: &str| d.join(f).to_str().unwrap().to_string();
    let (_coordinator, url) = xt_testkit::coordinator(
        &dir.join("state"),
        "127.0.0.1:0",
        &[
            "--tls-ca",
            &path(&certs, "ca.pem"),
            "--tls-cert",
            &path(&certs, "coordinator.pem"),
            "--tls-key",
            &path(&certs, "coordinator.key"),
        ],
    );
    let https = url.replace("http://", "https://");
    let _worker = Proc(
        Command::new(xt_testkit::bin("xt-worker"))
            .args(["--coordinator", &url, "--slots", "1"])
            .env("XT_TLS_CA", certs.join("ca.pem"))
            .env("XT_TLS_CERT", certs.join("client.pem"))
            .env("XT_TLS_KEY", certs.join("client.key"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Plain HTTP/2: no call gets through.
    let plain = Endpoint::from_shared(url.clone()).unwrap().connect_lazy();
    let refused = BatchesClient::new(plain).submit(submit()).await;
    assert!(refused.is_err(), "a plain call was served: {refused:?}");
    // A certificate of another CA: the handshake is refused.
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let foreign = ClientTlsConfig::new()
        .domain_name(xt_wire::tls::SERVER_NAME)
        .ca_certificate(Certificate::from_pem(read(&certs, "ca.pem")))
        .identity(Identity::from_pem(
            read(&other, "client.pem"),
            read(&other, "client.key"),
        ));
    let foreign = Endpoint::from_shared(https.clone())
        .unwrap()
        .tls_config(foreign)
        .unwrap()
        .connect_lazy();
    let refused = BatchesClient::new(foreign).submit(submit()).await;
    assert!(
        refused.is_err(),
        "a foreign certificate was served: {refused:?}"
    );

    // The cluster's own client certificate: the batch runs on the TLS worker.
    let tls = xt_wire::tls::Tls::load(
        &certs.join("ca.pem"),
        &certs.join("client.pem"),
        &certs.join("client.key"),
    )
    .unwrap();
    xt_wire::tls::install(tls).unwrap();
    let channel = xt_wire::transport::connect(&url, None).await.unwrap();
    let mut client = BatchesClient::new(channel);
    let batch = client.submit(submit()).await.unwrap().into_inner().batch;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = client
            .status(StatusRequest {
                batch,
                wait_ms: 500,
            })
            .await
            .unwrap()
            .into_inner();
        if s.finished {
            assert_eq!((s.done, s.failed), (3, 0), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
    }
}

#[test]
fn tls_flags_go_together() {
    let e = xt_wire::tls::from_flags(Some(std::path::Path::new("ca.pem")), None, None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("all three"), "{e}");
}
