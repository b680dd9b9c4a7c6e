//! The bar cache through the services `xt local` runs: a second batch over the same files
//! reads none of them, and its results are the first's. Alone in its test binary, so the
//! process's cache counts this test's reads only.

use std::time::Duration;

use xt_shared::cache::BarCache;
use xt_shared::{BarSource, BatchSpec, SyntheticMarket};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusRequest, SubmitRequest};

async fn run(client: &mut BatchesClient<tonic::transport::Channel>, spec: &BatchSpec) -> String {
    let id = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .batch;
    loop {
        let s = client
            .status(StatusRequest {
                batch: id,
                wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        if s.finished {
            let mut summary: serde_json::Value = serde_json::from_str(&s.summary_json).unwrap();
            // What differs between two runs of one batch: how long they took.
            summary.as_object_mut().unwrap().remove("elapsed_seconds");
            return summary.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_batch_over_the_same_files_reads_none() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bar-cache");
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let market = SyntheticMarket::new(8, 2, 5);
    // Files last written a minute ago: their size and time tell their version.
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    for s in market.symbols().unwrap() {
        let path = data.join(format!("{s}.csv"));
        let file = std::fs::File::create(&path).unwrap();
        xt_shared::source::write_csv(&market.load(&s).unwrap(), &file).unwrap();
        file.set_modified(past).unwrap();
    }
    let cluster =
        xt_api::cluster::LocalCluster::start(root.join("state"), 1, 2, Default::default())
            .await
            .unwrap();
    let mut client = BatchesClient::connect(cluster.url.clone()).await.unwrap();
    let mut spec = BatchSpec::new(format!("file://{}", data.display()), "macd");
    spec.grid = Some(serde_json::from_str(r#"{"fast":[8,12]}"#).unwrap());
    let cache = BarCache::global();

    let first = run(&mut client, &spec).await;
    let after_first = cache.stats();
    // Planning read each file once, into the cache; the jobs read them from there.
    assert_eq!(after_first.misses, 8, "{after_first:?}");
    assert!(after_first.hits >= 8, "{after_first:?}");

    let second = run(&mut client, &spec).await;
    let after_second = cache.stats();
    assert_eq!(
        after_second.misses, 8,
        "the second batch read a file: {after_second:?}"
    );
    assert!(
        after_second.hits >= after_first.hits + 16,
        "{after_second:?}"
    );
    assert_eq!(first, second);
    cluster.stop().await.unwrap();
}
