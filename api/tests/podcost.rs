//! A worker in a pod keeps its pod's deletion cost at the jobs it holds, so a scale-down
//! takes idle workers first: it patches its own pod through the Kubernetes API (here an
//! HTTP server on loopback standing in for the API server, which no test machine has),
//! to the jobs it holds while busy and back to 0 when idle.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use xt_shared::BatchSpec;
use xt_testkit::{Proc, scratch};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{CancelRequest, SubmitRequest};

/// What the stand-in API server was sent: (namespace, pod, bearer, content type, cost).
type Patches = Arc<Mutex<Vec<(String, String, String, String, String)>>>;

async fn patch(
    State(seen): State<Patches>,
    Path((namespace, pod)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> &'static str {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cost = body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
        .as_str()
        .unwrap_or("missing")
        .to_string();
    seen.lock().unwrap().push((
        namespace,
        pod,
        header("authorization"),
        header("content-type"),
        cost,
    ));
    "{}"
}

/// Waits (30 s at most) until the costs sent end with `last` after `after` of them.
async fn sent(seen: &Patches, after: usize, last: impl Fn(&str) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let s = seen.lock().unwrap();
            if let Some(i) = s.iter().skip(after).position(|p| last(&p.4)) {
                return after + i + 1;
            }
            assert!(Instant::now() < deadline, "costs sent: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_workers_pod_costs_more_to_delete_than_an_idle_ones() {
    let dir = scratch("podcost");
    let seen: Patches = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{pod}",
            axum::routing::patch(patch),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    std::fs::write(dir.join("token"), "pod-token\n").unwrap();

    let (_coordinator, url) = xt_testkit::coordinator(&dir.join("state"), "127.0.0.1:0", &[]);
    let _worker = Proc(
        Command::new(xt_testkit::bin("xt-worker"))
            .args(["--coordinator", &url, "--slots", "1"])
            .env("XT_POD_NAME", "xt-worker-7f9c")
            .env("XT_POD_NAMESPACE", "xt")
            .env("XT_K8S_API", &api)
            .env("XT_K8S_TOKEN_FILE", dir.join("token"))
            .env("XT_TEST_ENDLESS_SYMBOL", "SYN00000")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Idle at start.
    let n = sent(&seen, 0, |c| c == "0").await;
    // A job that never ends by itself: the worker holds it, and its pod costs more.
    let mut client = BatchesClient::new(xt_wire::transport::connect(&url, None).await.unwrap());
    let spec = BatchSpec::new("synthetic://?symbols=1&years=1&seed=1", "macd");
    let batch = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(&spec).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch;
    let n = sent(&seen, n, |c| c.parse::<u64>().is_ok_and(|c| c > 0)).await;
    // Cancelled, the job stops: idle again.
    client.cancel(CancelRequest { batch }).await.unwrap();
    sent(&seen, n, |c| c == "0").await;
    for (namespace, pod, auth, content_type, _) in seen.lock().unwrap().iter() {
        assert_eq!((namespace.as_str(), pod.as_str()), ("xt", "xt-worker-7f9c"));
        assert_eq!(auth, "Bearer pod-token");
        assert_eq!(content_type, "application/merge-patch+json");
    }
}
