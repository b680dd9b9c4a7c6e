//! The distributed mode with its data and results in an S3-compatible server (moto's, on
//! loopback) and the API in front: a 300-symbol grid batch submitted over HTTP reads its
//! bars from objects on the workers, writes its tables as objects, and downloads through
//! the API equal to the in-process runner's on the same bars; data outside the
//! coordinator's object roots is refused with the field named.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};
use xt_api::auth::{Role, mint};
use xt_shared::source::CsvDir;
use xt_shared::universe::Universe;
use xt_shared::{BarSource, BatchSpec, SyntheticMarket};
use xt_testkit::{Etcd, Moto, Proc, scratch};

mod support;

const JWT: &str = "objects-test-jwt-secret-0123456789";
const SYMBOLS: usize = 300;

/// Starts `bin` with `envs`, and waits (a minute at most) for a line starting with each of
/// `prefixes` in turn, returning what follows each.
fn start(cmd: &mut Command, log: &Path, prefixes: &[&str]) -> (Proc, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    // Read to the end: a process printing to a closed pipe would die of it.
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found = Vec::new();
    for prefix in prefixes {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no line {prefix:?}: {e}; see {}", log.display()));
            if let Some(rest) = line.strip_prefix(prefix) {
                found.push(rest.trim().to_string());
                break;
            }
        }
    }
    (Proc(child), found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_over_objects_in_s3_runs_distributed_behind_the_api() {
    let Some(moto) = Moto::start("xt-data") else {
        return;
    };
    let Some(etcd) = Etcd::start("objects-etcd", 1) else {
        return;
    };
    let dir = scratch("objects-e2e");
    let aws = support::aws(&moto);

    // 300 symbols' bars as CSV objects, and as files for the in-process run to compare.
    let local = dir.join("cn");
    let synth = SyntheticMarket::new(SYMBOLS, 2, 5);
    support::put_market(&aws, "s3://xt-data/data/cn", &synth, &local).await;
    let members: String = std::iter::once("symbol".to_string())
        .chain(synth.symbols().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let bucket = "s3://xt-data";
    support::put(
        &aws,
        bucket,
        "data/cn/members.csv",
        members.clone().into_bytes(),
    )
    .await;
    // Bars the coordinator may not serve: beside its data root, not under it.
    let bars = std::fs::read(local.join("SYN00000.csv")).unwrap();
    support::put(&aws, bucket, "private/cn/SYN00000.csv", bars).await;

    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "objects-test-cluster-secret-0123456789\n").unwrap();
    let (_coordinator, _) = start(
        Command::new(xt_testkit::bin("xt-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--leader-ttl-secs", "2"])
            .args(["--etcd", &etcd.endpoints()])
            .args([
                "--results",
                "s3://xt-data/results",
                "--data-root",
                "s3://xt-data/data",
            ])
            .arg("--state")
            .arg(dir.join("coordinator"))
            .arg("--data-cache")
            .arg(dir.join("cache"))
            .arg("--cluster-secret-file")
            .arg(&secret)
            .envs(aws.iter().cloned()),
        &dir.join("coordinator.log"),
        &["role: leader"],
    );
    let _workers: Vec<Proc> = (0..2)
        .map(|i| {
            let log = dir.join(format!("worker-{i}.log"));
            Proc(
                Command::new(xt_testkit::bin("xt-worker"))
                    .args(["--slots", "1", "--etcd", &etcd.endpoints()])
                    .arg("--data-cache")
                    .arg(dir.join("cache"))
                    .env("XT_CLUSTER_SECRET_FILE", &secret)
                    .envs(aws.iter().cloned())
                    .stderr(std::fs::File::create(log).unwrap())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let (_api, addrs) = start(
        Command::new(env!("CARGO_BIN_EXE_xt"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--etcd",
                &etcd.endpoints(),
            ])
            .arg("--cluster-secret-file")
            .arg(&secret)
            .env("XT_JWT_SECRET", JWT),
        &dir.join("api.log"),
        &["listening on "],
    );
    let api = format!("http://{}", addrs[0]);
    let token = mint(JWT.as_bytes(), "ann", "desk-a", &[Role::Researcher], 3600).unwrap();
    let http = reqwest::Client::new();
    let submit = |spec: &Value| {
        http.post(format!("{api}/v1/batches"))
            .bearer_auth(&token)
            .json(spec)
            .send()
    };

    // Outside the object roots: refused, naming the field.
    let r = submit(&json!({"data": "s3://xt-data/private/cn", "strategy": "sma_cross"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "data", "{body}");

    let grid = json!({"fast": [5, 10], "slow": [30]});
    let spec = json!({
        "data": "s3://xt-data/data/cn",
        "universe": {"file": "members.csv"},
        "strategy": "sma_cross",
        "grid": grid,
    });
    let r = submit(&spec).await.unwrap();
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let id = r.json::<Value>().await.unwrap()["id"].clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let s: Value = http
            .get(format!("{api}/v1/batches/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["state"] != "running" {
            break s;
        }
        assert!(Instant::now() < deadline, "batch {id}: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["counts"]["done"], SYMBOLS, "{status}");

    let mut expected = BatchSpec::new(format!("file://{}", local.display()), "sma_cross");
    expected.grid = Some(serde_json::from_value(grid).unwrap());
    let universe = Universe::read_csv(members.as_bytes()).unwrap();
    let local =
        xt_worker::runner::run_batch(&expected, &CsvDir::open(&local).unwrap(), &universe).unwrap();
    for (table, want) in [
        ("metrics", &local.metrics),
        ("portfolio", &local.outcome.portfolio),
    ] {
        let r = http
            .get(format!(
                "{api}/v1/batches/{id}/results/{table}?format=parquet"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{table}");
        let bytes = r.bytes().await.unwrap();
        let got = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        if table == "metrics" {
            assert_eq!(
                got.num_rows(),
                SYMBOLS * 2,
                "every (symbol, parameter set) once"
            );
            let sort = |b: &arrow::record_batch::RecordBatch| {
                let columns = ["symbol", "params"].map(|c| arrow::compute::SortColumn {
                    values: b.column_by_name(c).unwrap().clone(),
                    options: None,
                });
                let order = arrow::compute::lexsort_to_indices(&columns, None).unwrap();
                arrow::compute::take_record_batch(b, &order).unwrap()
            };
            assert_eq!(
                sort(&got),
                sort(want),
                "metrics differ from the in-process run"
            );
        } else {
            assert_eq!(&got, want, "portfolio differs from the in-process run");
        }
    }
    // The finished tables are objects in the results store.
    let (store, _) = xt_objects::object_store_at(bucket, aws.clone()).unwrap();
    let listed = store
        .list_with_delimiter(Some(&ObjectPath::from(format!("results/batches/{id}"))))
        .await
        .unwrap();
    assert!(
        listed
            .common_prefixes
            .iter()
            .any(|p| p.filename().is_some_and(|n| n.starts_with("tables-"))),
        "{listed:?}"
    );
}
