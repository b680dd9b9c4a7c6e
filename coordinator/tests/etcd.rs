//! The distributed mode's store against a real etcd (Debian's `etcd-server`, started on
//! loopback): a deposed leader's writes are refused and count for nothing, and its
//! successor resumes from what etcd and the object store hold.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int32Array};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use arrow::record_batch::RecordBatch;
use xt_coordinator::leader::{Fence, campaign};
use xt_coordinator::store::{
    AcceptedBatch, ClusterStore, JobRecord, ResultGroup, StateStore, Tables, object_store_at,
};
use xt_shared::{BatchSpec, SyntheticMarket};
use xt_testkit::{Etcd, scratch};

fn accepted(symbols: usize) -> AcceptedBatch {
    let synth = SyntheticMarket::new(symbols, 1, 3);
    let spec = BatchSpec::new(
        format!("synthetic://?symbols={symbols}&years=1&seed=3"),
        "sma_cross",
    );
    let plan = xt_shared::job::plan(&spec, &synth, &synth.universe()).unwrap();
    AcceptedBatch {
        spec,
        jobs: plan.jobs.into_iter().map(|j| j.spec).collect(),
        dates: plan.dates,
        tenant: "desk1".into(),
        owner: "ann".into(),
        submitted_ms: 1,
    }
}

fn metrics(values: &[i32]) -> Tables {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))]).unwrap();
    Tables::from([("metrics".to_string(), vec![batch])])
}

/// Job `job` done, with `values` as its metrics rows.
fn done(job: u32, values: &[i32]) -> ResultGroup {
    let (tables, record) = (metrics(values), JobRecord::default());
    ResultGroup::new(&[(job, &tables, &record)]).unwrap()
}

fn stored_values(store: &ClusterStore, batch: u64, job: u32) -> Option<Vec<i32>> {
    store
        .load_result(batch, job, &["metrics"])
        .unwrap()
        .map(|(_, t)| {
            t["metrics"]
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
                .collect()
        })
}

/// Where results go: a URL and the object store client's options.
type Results = (String, Vec<(String, String)>);

fn open(etcd: &Etcd, fence: Fence, results: &Results, name: &str) -> ClusterStore {
    ClusterStore::open(
        &etcd.urls,
        object_store_at(&results.0, results.1.clone()).unwrap(),
        fence,
        scratch(&format!("etcd-store-scratch-{name}")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_refused_and_its_successor_resumes() {
    let dir = scratch("etcd-fence-results");
    fence_and_resume("etcd-fence", (dir.to_str().unwrap().to_string(), vec![])).await;
}

/// The same with the results in an S3-compatible store (moto's server, on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_in_s3_are_fenced_and_resumed_the_same() {
    let Some(s3) = xt_testkit::Moto::start("xt-results") else {
        return;
    };
    let results = (
        "s3://xt-results/cluster".to_string(),
        s3.options()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    fence_and_resume("etcd-fence-s3", results).await;
}

async fn fence_and_resume(name: &str, results: Results) {
    let Some(etcd) = Etcd::start(name, 1) else {
        return;
    };
    let mut client = xt_wire::leader::etcd(&etcd.urls).await.unwrap();
    let ttl = Duration::from_secs(2);

    let a = campaign(&client, "http://a:1", ttl).await.unwrap();
    assert_eq!(
        xt_wire::leader::current(&mut client)
            .await
            .unwrap()
            .as_deref(),
        Some("http://a:1")
    );
    let store_a = open(&etcd, a.clone(), &results, &format!("{name}-a"));
    store_a.save_batch(1, &accepted(3)).unwrap();
    store_a.save_results(1, &done(0, &[10, 11])).unwrap();
    // A result given again is not stored twice; the first stays.
    store_a.save_results(1, &done(0, &[99])).unwrap();
    assert_eq!(stored_values(&store_a, 1, 0), Some(vec![10, 11]));
    // An id already taken is refused, and the leader is not deposed for it.
    let taken = store_a.save_batch(1, &accepted(2)).unwrap_err();
    assert_ne!(taken.kind(), ErrorKind::PermissionDenied, "{taken}");
    assert!(!a.is_deposed());

    // Its election key goes (as when its lease lapses) and another coordinator is elected.
    client.delete(a.key.clone(), None).await.unwrap();
    let b = campaign(&client, "http://b:2", ttl).await.unwrap();
    assert_eq!(
        xt_wire::leader::current(&mut client)
            .await
            .unwrap()
            .as_deref(),
        Some("http://b:2")
    );

    // The deposed leader's writes are refused, and it learns that it was deposed.
    let refused = store_a.save_results(1, &done(1, &[20])).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    assert!(a.is_deposed());
    let why = tokio::time::timeout(Duration::from_secs(5), a.lost())
        .await
        .expect("a deposed leader's fence resolves");
    assert!(why.contains("another coordinator"), "{why}");
    assert!(store_a.save_batch(2, &accepted(2)).is_err());
    assert!(store_a.save_cancelled(1).is_err());

    // The successor resumes with exactly what the first wrote while it led.
    let store_b = open(&etcd, b.clone(), &results, &format!("{name}-b"));
    let restored = store_b.load_all().unwrap();
    assert_eq!(restored.len(), 1, "batch 2 was never accepted");
    let batch = &restored[0];
    assert_eq!((batch.id, batch.record.jobs.len()), (1, 3));
    assert_eq!(batch.record.tenant, "desk1");
    assert!(batch.done[0].is_some() && batch.done[1].is_none() && batch.done[2].is_none());
    assert!(!batch.cancelled && batch.summary.is_none());
    assert_eq!(stored_values(&store_b, 1, 0), Some(vec![10, 11]));
    assert_eq!(stored_values(&store_b, 1, 1), None);

    // It finishes the batch: results, a table, the summary, a cancellation, all durable.
    store_b.save_results(1, &done(1, &[21])).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
    let mut sink = store_b.create_table(1, "metrics", schema.clone()).unwrap();
    let rows =
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2, 3]))]).unwrap();
    sink.write(&rows).unwrap();
    assert!(
        store_b.open_table(1, "metrics").unwrap().is_none(),
        "no table before the batch is finished"
    );
    sink.commit().unwrap();
    store_b
        .save_summary(1, &serde_json::json!({"jobs": 3}))
        .unwrap();
    store_b.save_cancelled(1).unwrap();
    for n in 0..3 {
        store_b
            .append_audit(&serde_json::json!({"action": "submit", "n": n}))
            .unwrap();
    }
    drop(store_b);

    let store_c = open(&etcd, b.clone(), &results, &format!("{name}-c"));
    let restored = store_c.load_all().unwrap();
    let batch = &restored[0];
    assert!(batch.done[1].is_some() && batch.cancelled);
    assert_eq!(batch.summary, Some(serde_json::json!({"jobs": 3})));
    assert_eq!(stored_values(&store_c, 1, 1), Some(vec![21]));
    let table = store_c
        .open_table(1, "metrics")
        .unwrap()
        .expect("the table");
    assert_eq!(table.rows, 3);
    let read: Vec<i32> = table
        .batches
        .flat_map(|b| {
            b.unwrap()
                .column(0)
                .as_primitive::<Int32Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(read, [1, 2, 3]);
    // The audit log, in the order written, whoever reads it.
    let audit: Vec<_> = store_c
        .audit()
        .unwrap()
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(audit, [0, 1, 2]);

    // Compacted: the jobs' uploads go, their records stay (a restart shows the same
    // batch), the tables stay.
    let records = batch.done.clone();
    store_c.compact(1, 3).unwrap();
    let keys = client
        .get(
            "xt/results/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(keys.kvs().is_empty(), "no results keys are left");
    drop(store_c);
    let store_d = open(&etcd, b.clone(), &results, &format!("{name}-d"));
    let restored = store_d.load_all().unwrap();
    assert_eq!(
        restored[0].done, records,
        "the same records after compaction"
    );
    assert_eq!(restored[0].summary, Some(serde_json::json!({"jobs": 3})));
    assert_eq!(stored_values(&store_d, 1, 1), None, "the uploads are gone");
    assert_eq!(store_d.open_table(1, "metrics").unwrap().unwrap().rows, 3);

    // Deleted: nothing of it is left, for this store or the next.
    store_d.delete_batch(1).unwrap();
    assert!(store_d.open_table(1, "metrics").unwrap().is_none());
    drop(store_d);
    let store_e = open(&etcd, b, &results, &format!("{name}-e"));
    assert!(store_e.load_all().unwrap().is_empty());
}

/// A leader whose lease is gone (revoked here, as when it lapses) is deposed by its
/// keep-alive within a renewal period, without writing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_gone_steps_down() {
    let Some(etcd) = Etcd::start("etcd-lease", 1) else {
        return;
    };
    let mut client = xt_wire::leader::etcd(&etcd.urls).await.unwrap();
    let fence = campaign(&client, "http://a:1", Duration::from_secs(3))
        .await
        .unwrap();
    let key = client.get(fence.key.clone(), None).await.unwrap();
    let lease = key.kvs()[0].lease();
    assert!(!fence.is_deposed());
    client.lease_revoke(lease).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), fence.lost())
        .await
        .expect("deposed within a renewal period");
    assert!(why.contains(&format!("lease {lease:x}")), "{why}");
    assert_eq!(xt_wire::leader::current(&mut client).await.unwrap(), None);
}

/// While no coordinator leads, a submission through a channel that follows the leader is
/// refused at once, retryably, and never sent: no coordinator elected later accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_without_a_leader_is_refused_and_never_sent() {
    let Some(etcd) = Etcd::start("etcd-no-leader", 1) else {
        return;
    };
    let channel = xt_wire::leader::follow(&etcd.urls, None).await.unwrap();
    let mut batches = xt_wire::batches_client::BatchesClient::new(channel);
    let spec = BatchSpec::new("synthetic://?symbols=2&years=1&seed=1", "macd");
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        batches.submit(xt_wire::SubmitRequest {
            spec_json: serde_json::to_string(&spec).unwrap(),
            ..Default::default()
        }),
    )
    .await
    .expect("refused at once, not left waiting")
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("no coordinator leads"),
        "{refused:?}"
    );
    assert!(refused.message().contains("retry"), "{refused:?}");
}
