//! The HTTP API end to end, with real processes: a coordinator, two workers and `xt serve`
//! on loopback, clients speaking HTTP (reqwest here, pyarrow and polars when the peers'
//! Python is present) and Arrow Flight (pyarrow.flight). Results must equal `xt local`'s
//! for the same spec, and every forbidden or malformed request must be a 4xx with a message.

use std::path::{Path, PathBuf};
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use xt_api::auth::{Role, mint};
use xt_shared::SyntheticMarket;

const SECRET: &str = "test-secret-0123456789-0123456789";

use xt_testkit::Proc;

/// Starts a binary with the tokens' secret and reads the `prefix ADDR` lines it prints.
fn start(bin: &str, args: &[&str], prefixes: &[&str]) -> (Proc, Vec<String>) {
    xt_testkit::start(Path::new(bin), args, &[("XT_JWT_SECRET", SECRET)], prefixes)
}

struct Cluster {
    _procs: Vec<Proc>,
    api: String,
    flight: String,
    root: PathBuf,
}

/// A data root with six synthetic symbols as CSV and a weighted universe file, and the
/// whole stack on loopback.
fn cluster(name: &str) -> Cluster {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("root/cn");
    std::fs::create_dir_all(&data).unwrap();
    let synth = SyntheticMarket::new(6, 3, 9);
    for i in 0..6 {
        let bars = synth.generate(i);
        xt_shared::source::write_csv(
            &bars,
            std::fs::File::create(data.join(format!("{}.csv", bars.symbol))).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(
        data.join("members.csv"),
        "symbol,weight\nSYN00000,2\nSYN00001,1\nSYN00002,1\nSYN00003,1\nSYN00004,1\n",
    )
    .unwrap();
    let root = base.join("root").canonicalize().unwrap();
    let state = base.join("state");
    let (coordinator, url) = xt_testkit::coordinator(
        &state,
        "127.0.0.1:0",
        &[
            "--data-root",
            root.to_str().unwrap(),
            "--max-running-batches",
            "3",
        ],
    );
    let workers: Vec<Proc> = (0..2)
        .map(|_| {
            Proc(
                Command::new(xt_testkit::bin("xt-worker"))
                    .args(["--coordinator", &url, "--slots", "1"])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let (api, addrs) = start(
        env!("CARGO_BIN_EXE_xt"),
        &[
            "serve",
            "--coordinator",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
        ],
        &["listening on ", "flight on "],
    );
    let mut procs = vec![coordinator, api];
    procs.extend(workers);
    Cluster {
        _procs: procs,
        api: format!("http://{}", addrs[0]),
        flight: format!("grpc://{}", addrs[1]),
        root,
    }
}

fn token(sub: &str, tenant: &str, role: Role) -> String {
    mint(SECRET.as_bytes(), sub, tenant, &[role], 3600).unwrap()
}

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.api));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    async fn bytes(&self, path: &str, token: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// Follows the event stream to its `done` event; returns (progress events, final status).
    async fn follow(&self, id: u64, token: &str) -> (usize, Value) {
        let r = self
            .http
            .get(format!("{}/v1/batches/{id}/events", self.api))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(120), r.text())
            .await
            .expect("the event stream ends when the batch does")
            .unwrap();
        let mut progress = 0;
        let mut last = Value::Null;
        for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
            let kind = event
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(str::trim);
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            match kind {
                Some("progress") => progress += 1,
                Some("done") => last = serde_json::from_str(&data).unwrap(),
                _ => {}
            }
        }
        (progress, last)
    }
}

fn batches(bytes: &[u8]) -> RecordBatch {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.to_vec())).unwrap();
    let schema = builder.schema().clone();
    let all: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &all).unwrap()
}

fn without_metadata(b: RecordBatch) -> RecordBatch {
    let schema = b
        .schema()
        .as_ref()
        .clone()
        .with_metadata(std::collections::HashMap::<String, String>::new());
    RecordBatch::try_new(std::sync::Arc::new(schema), b.columns().to_vec()).unwrap()
}

fn spec(name: &str) -> Value {
    json!({"name": name, "data": "file://cn", "universe": {"file": "members.csv"},
           "start": "2015-06-01", "strategy": "sma_cross",
           "grid": {"fast": [5, 10], "slow": [20]}, "capital": 1000000, "market": "cn",
           "costs": {"commission_rate": 0.0003, "min_commission": 5, "stamp_duty": 0.0005, "slippage": 0}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_and_download_every_table_in_every_format() {
    let c = cluster("http-e2e");
    let client = Client {
        http: reqwest::Client::new(),
        api: c.api.clone(),
    };
    let ann = token("ann", "desk1", Role::Researcher);
    let (code, body) = client
        .call(
            reqwest::Method::POST,
            "/v1/batches",
            Some(&ann),
            Some(&spec("e2e").to_string()),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_u64().unwrap();
    assert_eq!(body["jobs"], 5);
    assert_eq!(body["location"], format!("/v1/batches/{id}"));
    let (_, done) = client.follow(id, &ann).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["counts"]["done"], 5);
    assert!(done["summary"]["portfolio"].as_object().unwrap().len() == 2);

    // The same spec through `xt local`.
    let local = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-e2e-local");
    let o = Command::new(env!("CARGO_BIN_EXE_xt"))
        .args([
            "local",
            "--data",
            c.root.join("cn").to_str().unwrap(),
            "--universe",
            c.root.join("cn/members.csv").to_str().unwrap(),
            "--start",
            "2015-06-01",
            "--strategy",
            "sma_cross",
            "--grid",
            r#"{"fast":[5,10],"slow":[20]}"#,
            "--costs",
            r#"{"commission_rate":0.0003,"min_commission":5,"stamp_duty":0.0005,"slippage":0}"#,
            "--quiet",
            "--out",
            local.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Two parameter sets: the grid table too (SEMANTICS section 11).
    for table in ["metrics", "trades", "equity", "portfolio", "grid"] {
        let expected = batches(&std::fs::read(local.join(format!("{table}.parquet"))).unwrap());
        let (code, parquet) = client
            .bytes(
                &format!("/v1/batches/{id}/results/{table}?format=parquet"),
                &ann,
            )
            .await;
        assert_eq!(code, 200);
        let got = batches(&parquet);
        // What made the table travels in its schema: the batch's provenance.
        let provenance: Value =
            serde_json::from_str(&got.schema().metadata()["xtrading.provenance"]).unwrap();
        assert_eq!(provenance["strategy"], "sma_cross", "{provenance}");
        assert_eq!(provenance["data"]["symbols"].as_object().unwrap().len(), 5);
        assert_eq!(without_metadata(got), expected, "{table} as Parquet");
        let (_, ipc) = client
            .bytes(
                &format!("/v1/batches/{id}/results/{table}?format=arrow"),
                &ann,
            )
            .await;
        let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        let all: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let got = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
        assert!(got.schema().metadata().contains_key("xtrading.provenance"));
        assert_eq!(without_metadata(got), expected, "{table} as Arrow IPC");
        let (_, csv) = client
            .bytes(
                &format!("/v1/batches/{id}/results/{table}?format=csv"),
                &ann,
            )
            .await;
        let mut csv_reader = csv::Reader::from_reader(&csv[..]);
        let header: Vec<String> = csv_reader
            .headers()
            .unwrap()
            .iter()
            .map(String::from)
            .collect();
        let names: Vec<String> = expected
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(header, names, "{table} CSV header");
        assert_eq!(
            csv_reader.records().count(),
            expected.num_rows(),
            "{table} CSV rows"
        );
        let (_, json_rows) = client
            .get(
                &format!("/v1/batches/{id}/results/{table}?format=json"),
                &ann,
            )
            .await;
        let rows = json_rows.as_array().unwrap();
        assert_eq!(rows.len(), expected.num_rows(), "{table} JSON rows");
        let first_equity = expected
            .column(
                expected
                    .schema()
                    .index_of(if table == "metrics" {
                        "final_equity"
                    } else if table == "trades" {
                        "qty"
                    } else {
                        "equity"
                    })
                    .unwrap_or(0),
            )
            .clone();
        assert!(first_equity.len() == expected.num_rows());
    }
    // Filters.
    let (_, one) = client
        .bytes(
            &format!("/v1/batches/{id}/results/metrics?format=parquet&symbol=SYN00001"),
            &ann,
        )
        .await;
    assert_eq!(batches(&one).num_rows(), 2);
    // Ranges are not served, and the answer says so: a Range header gets the whole table.
    let r = client
        .http
        .get(format!(
            "{}/v1/batches/{id}/results/metrics?format=csv",
            client.api
        ))
        .bearer_auth(&ann)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["accept-ranges"], "none");
    assert!(r.bytes().await.unwrap().len() > 10);
    // A parameter set compares as values: key order and 20 against 20.0 do not matter.
    let escape = |p: &str| {
        p.replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A")
            .replace(',', "%2C")
            .replace('[', "%5B")
            .replace(']', "%5D")
    };
    for (params, rows) in [
        (r#"{"fast":5,"slow":20}"#, 1),
        (r#"{"slow":20.0,"fast":5}"#, 1),
        (r#"{"fast":5,"slow":21}"#, 0),
    ] {
        let (status, one) = client
            .bytes(
                &format!(
                    "/v1/batches/{id}/results/metrics?format=parquet&symbol=SYN00001&params={}",
                    escape(params)
                ),
                &ann,
            )
            .await;
        assert_eq!(status, 200, "{params}");
        assert_eq!(batches(&one).num_rows(), rows, "{params}");
    }
    for params in [r#"{"fast":5,"#, "[5,20]"] {
        let (status, body) = client
            .bytes(
                &format!("/v1/batches/{id}/results/metrics?params={}", escape(params)),
                &ann,
            )
            .await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("params")),
            "{body}"
        );
    }

    // The `xt` client: submit and follow to the end, then download.
    let spec_file = local.with_extension("json");
    std::fs::write(&spec_file, spec("from the cli").to_string()).unwrap();
    let xt = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xt"))
            .args(args)
            .env("XT_API", &c.api)
            .env("XT_TOKEN", &ann)
            .output()
            .unwrap()
    };
    let o = xt(&["submit", spec_file.to_str().unwrap(), "--wait"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("5 jobs") && stdout.contains("done"),
        "{stdout}"
    );
    let cli_id: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.trim_end_matches(':').parse().ok())
        .unwrap();
    // The summary for people, and `xt status` prints the same once the batch is done.
    let summary = &stdout[stdout
        .find(" jobs (")
        .map(|i| stdout[..i].rfind('\n').map_or(0, |n| n + 1))
        .unwrap()..];
    for part in [
        "benchmark (buy_and_hold): return",
        "best symbols: ",
        "worst symbols: ",
    ] {
        assert!(summary.contains(part), "{stdout}");
    }
    let o = xt(&["status", &cli_id.to_string()]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        status.contains(": done, 5 jobs: 5 done, 0 failed"),
        "{status}"
    );
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains(" bar evaluations in "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        strip(&status).ends_with(&strip(summary)),
        "{status}\n---\n{summary}"
    );
    let o = xt(&["status", &cli_id.to_string(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["summary"]["failures"]["jobs"], 0, "{json}");
    let downloaded = local.with_extension("trades.parquet");
    let o = xt(&[
        "download",
        &cli_id.to_string(),
        "--table",
        "trades",
        "-o",
        downloaded.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        without_metadata(batches(&std::fs::read(&downloaded).unwrap())),
        batches(&std::fs::read(local.join("trades.parquet")).unwrap())
    );
    let o = xt(&["status", "999999"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"));

    // Real clients: pyarrow over HTTP and Flight, polars over HTTP.
    if let Some(python) = support::peers_python("pyarrow.flight, polars") {
        let script = r#"
import sys, io, json, urllib.request
import pyarrow.flight as fl, pyarrow.parquet as pq, polars as pl
api, flight, token, batch = sys.argv[1:5]
req = urllib.request.Request(f"{api}/v1/batches/{batch}/results/metrics?format=parquet", headers={"Authorization": f"Bearer {token}"})
table = pq.read_table(io.BytesIO(urllib.request.urlopen(req).read()))
req = urllib.request.Request(f"{api}/v1/batches/{batch}/results/equity?format=arrow", headers={"Authorization": f"Bearer {token}"})
frame = pl.read_ipc_stream(io.BytesIO(urllib.request.urlopen(req).read()))
client = fl.connect(flight)
opts = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
names = sorted("/".join(p.decode() for p in i.descriptor.path) for i in client.list_flights(options=opts))
flown = client.do_get(fl.Ticket(f"{batch}/metrics".encode()), options=opts).read_all()
try:
    client.do_get(fl.Ticket(b"x" * 100_000), options=opts).read_all()
    refusal = ""
except Exception as e:  # pyarrow raises ArrowInvalid for INVALID_ARGUMENT
    refusal = str(e)
print(json.dumps({"http_rows": table.num_rows, "polars_rows": frame.height, "flights": names,
                  "flight_rows": flown.num_rows, "same": flown.equals(table), "refusal": refusal}))
"#;
        let o = Command::new(python)
            .args(["-c", script, &c.api, &c.flight, &ann, &id.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let metrics = batches(&std::fs::read(local.join("metrics.parquet")).unwrap());
        let equity = batches(&std::fs::read(local.join("equity.parquet")).unwrap());
        assert_eq!(v["http_rows"], metrics.num_rows());
        assert_eq!(v["polars_rows"], equity.num_rows());
        assert_eq!(v["flight_rows"], metrics.num_rows());
        assert_eq!(v["same"], true, "Flight and HTTP give the same table");
        // A bad ticket is refused, quoting a little of it, not echoing 100 KB.
        let refusal = v["refusal"].as_str().unwrap();
        assert!(
            refusal.contains("is not batch_id/table") && refusal.contains("(100000 bytes)"),
            "{refusal}"
        );
        assert!(refusal.len() < 1000, "{} bytes", refusal.len());
        let mut flights: Vec<String> = [id, cli_id]
            .iter()
            .flat_map(|b| {
                ["equity", "grid", "metrics", "portfolio", "trades"].map(|t| format!("{b}/{t}"))
            })
            .collect();
        flights.sort();
        assert_eq!(
            v["flights"],
            json!(flights),
            "the tenant's finished batches' tables"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tenants_and_bad_input_are_4xx_with_messages() {
    let c = cluster("http-guard");
    let client = Client {
        http: reqwest::Client::new(),
        api: c.api.clone(),
    };
    let ann = token("ann", "desk1", Role::Researcher);
    let bob = token("bob", "desk1", Role::Researcher);
    let viewer = token("vic", "desk1", Role::Viewer);
    let eve = token("eve", "desk2", Role::Researcher);
    let admin = token("root", "ops", Role::Admin);
    let post = |t: Option<String>, body: String| {
        let client = &client;
        async move {
            client
                .call(
                    reqwest::Method::POST,
                    "/v1/batches",
                    t.as_deref(),
                    Some(&body),
                )
                .await
        }
    };
    let small =
        json!({"data": "synthetic://?symbols=40&years=2&seed=3", "strategy": "macd"}).to_string();
    let (code, body) = post(Some(ann.clone()), small.clone()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_u64().unwrap();

    // Who may do what.
    assert_eq!(
        post(Some(viewer.clone()), small.clone()).await.0,
        403,
        "a viewer cannot submit"
    );
    assert_eq!(
        client.get(&format!("/v1/batches/{id}"), &viewer).await.0,
        200,
        "a viewer reads"
    );
    for path in [
        format!("/v1/batches/{id}"),
        format!("/v1/batches/{id}/events"),
        format!("/v1/batches/{id}/results/metrics"),
    ] {
        let (code, body) = client.get(&path, &eve).await;
        assert_eq!(
            code, 404,
            "another tenant's batch is not found at {path}: {body}"
        );
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (code, _) = client
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/batches/{id}"),
            Some(&eve),
            None,
        )
        .await;
    assert_eq!(
        code, 404,
        "another tenant cannot cancel, nor learn the batch exists"
    );
    let (code, body) = client
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/batches/{id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(code, 403, "a researcher cancels only their own: {body}");
    let (code, body) = client
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/batches/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let (_, list) = client.get("/v1/batches", &eve).await;
    assert_eq!(list["total"], 0, "eve sees none of desk1's batches");
    let (_, list) = client.get("/v1/batches", &viewer).await;
    assert_eq!(list["total"], 1);
    let (_, list) = client.get("/v1/batches", &admin).await;
    assert_eq!(list["total"], 1, "an admin sees every tenant");
    assert_eq!(
        client.get(&format!("/v1/batches/{id}"), &admin).await.0,
        200
    );
    let (code, body) = client
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/batches/{id}"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(code, 202, "the owner cancels: {body}");
    let (_, done) = client.follow(id, &ann).await;
    assert!(
        done["state"] == "cancelled" || done["state"] == "done",
        "{done}"
    );

    // Tokens.
    let expired = {
        let claims = xt_api::auth::Claims {
            sub: "ann".into(),
            tenant: "desk1".into(),
            roles: vec!["admin".into()],
            exp: 1000,
            nbf: None,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let forged = mint(
        b"not-the-service-secret!",
        "ann",
        "desk1",
        &[Role::Admin],
        3600,
    )
    .unwrap();
    for (t, why) in [
        (None, "missing"),
        (Some("garbage".to_string()), "malformed"),
        (Some(expired), "expired"),
        (Some(forged), "wrongly signed"),
    ] {
        let (code, body) = client
            .call(reqwest::Method::GET, "/v1/batches", t.as_deref(), None)
            .await;
        assert_eq!(code, 401, "{why} token: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }
    // The scheme in any case (RFC 7235); the library's own words never reach the client.
    let (code, _) = client
        .call(reqwest::Method::GET, "/v1/batches", None, None)
        .await;
    assert_eq!(code, 401);
    let lower = client
        .http
        .get(format!("{}/v1/batches", client.api))
        .header("authorization", format!("bearer {ann}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    let (_, body) = client
        .call(reqwest::Method::GET, "/v1/batches", Some("a.b.c"), None)
        .await;
    assert_eq!(
        body["error"]["message"],
        "invalid token: it is not a well-formed JWT with sub, tenant, roles and exp"
    );

    // Bad input: each a 4xx naming the field where there is one.
    let huge_grid = json!({"data": "synthetic://", "strategy": "sma_cross",
        "grid": {"fast": (1..=400).collect::<Vec<_>>(), "slow": (401..=800).collect::<Vec<_>>()}});
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{not json".into(), 400, None),
        (json!({"data": "synthetic://", "strategy": 5}).to_string(), 422, Some("strategy")),
        ("[]".into(), 422, None),
        ("\"macd\"".into(), 422, None),
        (json!({"data": "synthetic://", "strategy": "macd", "name": "a\u{202E}b"}).to_string(), 422, Some("name")),
        (json!({"data": "synthetic://", "strategy": "macd", "colour": "red"}).to_string(), 422, Some("colour")),
        (json!({"data": "synthetic://", "strategy": "macd", "costs": {"stamp": 1}}).to_string(), 422, Some("costs.stamp")),
        (r#"{"data": "synthetic://", "strategy": "macd", "strategy": "rsi"}"#.into(), 422, Some("strategy")),
        (r#"{"data": "synthetic://", "strategy": "macd", "params": {"fast": 8, "fast": 9}}"#.into(), 422, Some("params.fast")),
        (json!({"data": "synthetic://", "strategy": "momentum"}).to_string(), 422, Some("strategy")),
        (json!({"data": "synthetic://", "strategy": "macd", "params": {"fast": 30, "slow": 26}}).to_string(), 422, Some("params")),
        (json!({"data": "synthetic://", "strategy": "macd", "params": {"fast": -3}}).to_string(), 422, Some("params.fast")),
        (json!({"data": "synthetic://", "strategy": "macd", "capital": -1}).to_string(), 422, Some("capital")),
        // Accepted, this once stopped every worker: sizing spun past 2^53 lots.
        (json!({"data": "synthetic://", "strategy": "macd", "capital": 1e20}).to_string(), 422, Some("capital")),
        (json!({"data": "synthetic://", "strategy": "macd", "costs": {"min_commission": 1e300}}).to_string(), 422, Some("costs.min_commission")),
        (json!({"data": "synthetic://", "strategy": "macd", "start": "2024-01-01", "end": "2020-01-01"}).to_string(), 422, Some("start")),
        (json!({"data": "synthetic://", "strategy": "macd", "start": "yesterday"}).to_string(), 422, Some("start")),
        (json!({"data": "synthetic://", "strategy": "macd", "walk_forward": {"is": 10, "oos": 5}}).to_string(), 422, Some("walk_forward.is")),
        (json!({"data": "synthetic://", "strategy": "macd", "walk_forward": {"is": 30, "oos": 5, "metric": "alpha"}}).to_string(), 422, Some("walk_forward.metric")),
        (json!({"data": "synthetic://?years=1", "strategy": "macd", "walk_forward": {"is": 300, "oos": 5}}).to_string(), 422, Some("walk_forward")),
        (json!({"data": "synthetic://", "strategy": "macd", "pbo_blocks": 3}).to_string(), 422, Some("pbo_blocks")),
        (json!({"data": "synthetic://?symbols=0", "strategy": "macd"}).to_string(), 422, Some("data")),
        (json!({"data": "file://cn", "universe": {"symbols": ["SYN00000", "NOPE"]}, "strategy": "macd"}).to_string(), 422, Some("universe.symbols")),
        (json!({"data": "file://../..", "strategy": "macd"}).to_string(), 422, Some("data")),
        (json!({"data": "file:///etc", "strategy": "macd"}).to_string(), 422, Some("data")),
        (json!({"data": "file://cn", "universe": {"file": "../../../../etc/passwd"}, "strategy": "macd"}).to_string(), 422, Some("universe.file")),
        (json!({"data": "s3://bucket", "strategy": "macd"}).to_string(), 422, Some("data")),
        (huge_grid.to_string(), 422, Some("grid")),
        (format!("{{\"data\": \"{}\"}}", "x".repeat(2 << 20)), 413, None),
    ];
    for (body, want, field) in cases {
        let (code, reply) = post(Some(ann.clone()), body.clone()).await;
        let shown = &body[..body.len().min(120)];
        assert_eq!(code, want, "{shown}: {reply}");
        let e = &reply["error"];
        assert!(
            !e["message"].as_str().unwrap_or("").is_empty(),
            "{shown}: {reply}"
        );
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{shown}: {reply}");
        }
        if body.starts_with('[') || body.starts_with('"') {
            let m = e["message"].as_str().unwrap();
            assert!(m.starts_with("the body must be a JSON object"), "{m}");
        }
    }
    let (code, _) = client
        .call(reqwest::Method::POST, "/v1/batches", Some(&ann), None)
        .await;
    assert!(code == 415 || code == 400, "no body: {code}");
    // An oversized header gets the API's answer, in its JSON shape.
    for size in [100 << 10, 1 << 20] {
        let r = client
            .http
            .get(format!("{}/v1/batches", client.api))
            .bearer_auth(&ann)
            .header("x-padding", "x".repeat(size))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 431, "{size}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    }
    for (path, want) in [
        ("/v1/batches/abc", 400),
        ("/v1/batches/99999", 404),
        (&*format!("/v1/batches/{id}/results/pnl"), 404),
        (
            &*format!("/v1/batches/{id}/results/metrics?format=xlsx"),
            400,
        ),
        ("/v1/batches?limit=0", 400),
        ("/v1/batches?limit=x", 400),
        ("/v1/nothing", 404),
    ] {
        let (code, body) = client.get(path, &ann).await;
        assert_eq!(code, want, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }

    // Tenant limits: 3 running batches, then 429.
    let big = json!({"data": "synthetic://?symbols=2000&years=10", "strategy": "macd"}).to_string();
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(post(Some(eve.clone()), big.clone()).await.0);
    }
    assert_eq!(
        codes,
        vec![202, 202, 202, 429],
        "the fourth running batch passes desk2's limit"
    );
    let refused = client
        .http
        .post(format!("{}/v1/batches", client.api))
        .bearer_auth(&eve)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["retry-after"],
        "5",
        "a 429 says when to try again"
    );

    // The catalog and the service's own endpoints.
    let (code, s) = client.get("/v1/strategies", &viewer).await;
    assert_eq!(code, 200);
    let macd = s
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "macd")
        .unwrap();
    assert_eq!(macd["rules"], "fast < slow");
    assert_eq!(macd["params"].as_array().unwrap().len(), 3);
    let (_, u) = client.get("/v1/universes", &viewer).await;
    assert_eq!(u["files"], json!(["cn/members.csv"]));
    let (code, text) = client.bytes("/metrics", &viewer).await;
    let text = String::from_utf8(text).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("xt_workers 2") && text.contains("xt_job_duration_seconds_count"),
        "{text}"
    );
    assert_eq!(client.bytes("/healthz", "").await.0, 200);
    assert_eq!(client.bytes("/readyz", "").await.0, 200);
    let (code, doc) = client.get("/openapi.json", "").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/batches/{id}/results/{table}"].is_object());
}

/// Schemathesis fuzzes every operation from `/openapi.json`: no 5xx, every status code and
/// body as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_strategies_are_versions_of_a_tenant_run_by_name_or_hash() {
    let c = cluster("http-strategies");
    let client = Client {
        http: reqwest::Client::new(),
        api: c.api.clone(),
    };
    let ann = token("ann", "desk1", Role::Researcher);
    let viewer = token("vic", "desk1", Role::Viewer);
    let eve = token("eve", "desk2", Role::Researcher);
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/strategies/sma_cross.xts"),
    )
    .unwrap();
    let save = |t: &str, source: &str| {
        let body = json!({ "source": source }).to_string();
        let t = t.to_string();
        let client = &client;
        async move {
            client
                .call(
                    reqwest::Method::POST,
                    "/v1/strategies",
                    Some(&t),
                    Some(&body),
                )
                .await
        }
    };
    let (code, v1) = save(&ann, &source).await;
    assert_eq!(code, 201, "{v1}");
    assert_eq!(v1["name"], "sma_cross");
    assert_eq!(v1["hash"], xt_shared::lang::source_hash(&source));
    assert_eq!(v1["params"][0]["name"], "fast");
    let (code, again) = save(&ann, &source).await;
    assert_eq!(
        (code, &again["hash"]),
        (201, &v1["hash"]),
        "saving twice keeps one version"
    );
    let newer = source.replace("param fast: int = 10", "param fast: int = 5");
    let (code, v2) = save(&ann, &newer).await;
    assert_eq!(code, 201, "{v2}");

    // A broken source is refused with its line, column and caret.
    let (code, body) = save(
        &ann,
        &source.replace("sma(close, fast)", "sma(clsoe, fast)"),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["field"], "source");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 7, column 13: unknown name `clsoe`; did you mean `close`?"),
        "{message}"
    );
    assert!(message.contains("^^^^^"), "{message}");
    assert_eq!(save(&viewer, &source).await.0, 403, "a viewer cannot save");

    // Listed after the built-ins, for its tenant only; by name the newest version.
    let (_, list) = client.get("/v1/strategies", &ann).await;
    let saved: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "saved")
        .collect();
    assert_eq!(saved.len(), 2, "{list}");
    let (_, other) = client.get("/v1/strategies", &eve).await;
    assert!(
        other
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["kind"] == "builtin"),
        "{other}"
    );
    let (code, got) = client.get("/v1/strategies/sma_cross", &viewer).await;
    assert_eq!((code, &got["hash"]), (200, &v2["hash"]), "{got}");
    let v1_path = format!("/v1/strategies/{}", v1["hash"].as_str().unwrap());
    let (code, got) = client.get(&v1_path, &ann).await;
    assert_eq!((code, got["source"].as_str()), (200, Some(source.as_str())));
    assert_eq!(
        client.get(&v1_path, &eve).await.0,
        404,
        "another tenant's version"
    );

    // A batch names a version by hash, runs it, and records its hash; another tenant
    // cannot name it.
    let mut spec = spec("by-hash");
    spec["strategy"] = v1["hash"].clone();
    let body = spec.to_string();
    let (code, sub) = client
        .call(
            reqwest::Method::POST,
            "/v1/batches",
            Some(&ann),
            Some(&body),
        )
        .await;
    assert_eq!(code, 202, "{sub}");
    let (_, done) = client.follow(sub["id"].as_u64().unwrap(), &ann).await;
    let provenance = &done["summary"]["provenance"];
    assert_eq!(provenance["strategy"], "sma_cross", "{done}");
    assert_eq!(provenance["strategy_hash"], v1["hash"]);
    assert_eq!(done["summary"]["failed"], 0, "{done}");
    let (code, refused) = client
        .call(
            reqwest::Method::POST,
            "/v1/batches",
            Some(&eve),
            Some(&body),
        )
        .await;
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["error"]["field"], "strategy");

    // Deleting a name deletes every version; the batch keeps what it ran.
    assert_eq!(
        client
            .call(
                reqwest::Method::DELETE,
                "/v1/strategies/sma_cross",
                Some(&viewer),
                None
            )
            .await
            .0,
        403
    );
    let (code, gone) = client
        .call(
            reqwest::Method::DELETE,
            "/v1/strategies/sma_cross",
            Some(&ann),
            None,
        )
        .await;
    assert_eq!((code, &gone["deleted"]), (200, &json!(2)), "{gone}");
    assert_eq!(client.get("/v1/strategies/sma_cross", &ann).await.0, 404);
    let (_, status) = client
        .get(&format!("/v1/batches/{}", sub["id"]), &ann)
        .await;
    assert_eq!(status["summary"]["provenance"]["strategy_hash"], v1["hash"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let Some(python) = support::peers_python("pyarrow.flight, polars") else {
        return;
    };
    let st = Path::new(&python).with_file_name("st");
    if !st.is_file() {
        assert!(
            std::env::var("XT_REQUIRE_PEERS").is_err(),
            "XT_REQUIRE_PEERS is set but schemathesis (st) is not beside {python}"
        );
        eprintln!("skipping schemathesis: not installed beside {python}");
        return;
    }
    let c = cluster("http-schemathesis");
    for role in [Role::Admin, Role::Viewer] {
        let t = token("fuzz", "desk1", role);
        let mut cmd = Command::new(&st);
        cmd
            .args([
                "run",
                &format!("{}/openapi.json", c.api),
                "-H",
                &format!("Authorization: Bearer {t}"),
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "-n",
                "30",
            ])
            .env("SCHEMATHESIS_TELEMETRY", "false");
        let o = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "schemathesis as {role:?}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("passed"), "{out}");
    }
}

/// A service given an HS256 secret shorter than the hash refuses to start, saying why.
#[test]
fn a_short_token_secret_stops_the_service_at_start() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_xt"))
        .args([
            "serve",
            "--coordinator",
            "http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("XT_JWT_SECRET", "sixteen-bytes!!!")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("16 bytes") && err.contains("at least 32"),
        "{err}"
    );
}
