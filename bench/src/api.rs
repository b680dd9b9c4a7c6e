//! API load: 200 concurrent clients polling a batch's status over HTTP while the batch
//! runs (p50, p99, max), and the time from submission to the first job running. The whole
//! stack is in this process on loopback: coordinator, workers on every core, `xt serve`'s
//! router.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xt_api::auth::{Role, Verifier, mint};
use xt_api::serve::{App, router};

use crate::report::{Table, Target};

/// The bench's HTTP client of the API, with its token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Submits a batch spec; returns its id.
    async fn submit(&self, spec: &Value) -> anyhow::Result<u64> {
        let reply: Value = self
            .http
            .post(format!("{}/v1/batches", self.base))
            .bearer_auth(&self.token)
            .json(spec)
            .send()
            .await?
            .json()
            .await?;
        reply["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("submit: {reply}"))
    }

    async fn status(&self, id: u64) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/batches/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Polls every `every` until the batch is no longer running.
    async fn wait_finished(&self, id: u64, every: Duration) -> anyhow::Result<()> {
        while self.status(id).await?["state"] == "running" {
            tokio::time::sleep(every).await;
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Polling latency under `clients` concurrent clients for `seconds`, submission to first job
/// running, and a 5-million-row download's memory.
pub async fn run(clients: usize, seconds: f64) -> anyhow::Result<(Table, Vec<Target>)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = std::env::temp_dir().join(format!("xt-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let cluster =
        xt_api::cluster::LocalCluster::start(state.clone(), 1, cores, Default::default()).await?;
    let secret = b"bench-secret-0123456789-0123456789";
    let channel = xt_wire::transport::connect(&cluster.url, None).await?;
    let app = App::new(channel, Verifier::hs256(secret)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    let token = mint(secret, "bench", "desk", &[Role::Researcher], 3600)?;
    let http = reqwest::Client::new();
    let client = Api {
        http: http.clone(),
        base: api.clone(),
        token: token.clone(),
    };

    // Submission to first job running, on an idle cluster (median of 5).
    let mut first = Vec::new();
    for i in 0..5 {
        let spec = json!({"data": format!("synthetic://?symbols=50&years=1&seed={i}"), "strategy": "macd", "tables": ["metrics"]});
        let t = Instant::now();
        let id = client.submit(&spec).await?;
        loop {
            let c = &client.status(id).await?["counts"];
            if c["running"].as_u64() > Some(0) || c["done"].as_u64() > Some(0) {
                first.push(t.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client.wait_finished(id, Duration::from_millis(20)).await?;
    }
    first.sort();

    // A long batch, and the clients polling it.
    let spec = json!({"data": "synthetic://?symbols=3000&years=10", "strategy": "macd",
                      "grid": {"fast": [8, 10, 12]}, "tables": ["metrics"]});
    let id = client.submit(&spec).await?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, token) = (
            http.clone(),
            format!("{api}/v1/batches/{id}"),
            token.clone(),
        );
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < until {
                let t = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        times.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (times, errors)
        });
    }
    let mut times = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (t, e) = r?;
        times.extend(t);
        errors += e;
    }
    times.sort();
    let s = client.status(id).await?;
    let _ = http
        .delete(format!("{api}/v1/batches/{id}"))
        .bearer_auth(&token)
        .send()
        .await?;

    let mut table = Table::new(
        format!("HTTP API on loopback, {cores} cores shared with a running batch"),
        &["measurement", "value"],
    );
    table.row(vec![
        format!("status polls by {clients} clients in {seconds:.0} s"),
        format!(
            "{} ({:.0}/s), {errors} errors",
            times.len(),
            times.len() as f64 / seconds
        ),
    ]);
    table.row(vec![
        "status latency p50 / p99 / max".into(),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0)
        ),
    ]);
    table.row(vec![
        "jobs the batch finished meanwhile".into(),
        format!("{} of {}", s["counts"]["done"], s["jobs"]),
    ]);
    table.row(vec![
        "submission to first job running (median of 5, 50-symbol batch)".into(),
        format!(
            "{:.1} ms (min {:.1}, max {:.1})",
            percentile(&first, 0.5),
            percentile(&first, 0.0),
            percentile(&first, 1.0)
        ),
    ]);
    drop(tasks);

    // A 5-million-row equity table downloaded as Parquet: peak memory of this process
    // (the whole stack) during the download against the size of what went through it.
    let spec = json!({"data": "synthetic://?symbols=400&years=10&seed=5", "strategy": "sma_cross",
                      "grid": {"fast": [5, 10, 15, 20, 25], "slow": [60]}, "tables": ["equity"]});
    let id = client.submit(&spec).await?;
    client.wait_finished(id, Duration::from_millis(50)).await?;
    let rss = crate::report::status_kb;
    // Forget the peak so far (the batch's own), so the next peak is the download's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = rss("VmRSS:");
    let t = Instant::now();
    let mut body = http
        .get(format!(
            "{api}/v1/batches/{id}/results/equity?format=parquet"
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .bytes_stream();
    let mut bytes = 0usize;
    use futures::StreamExt;
    while let Some(chunk) = body.next().await {
        bytes += chunk?.len();
    }
    let took = t.elapsed().as_secs_f64();
    let peak = rss("VmHWM:");
    let rows = 400 * 10 * 252 * 5;
    table.row(vec![
        format!("download of the {rows}-row equity table as Parquet"),
        format!(
            "{:.0} MB in {took:.2} s; peak memory +{:.0} MB over {:.0} MB before",
            bytes as f64 / 1e6,
            peak.saturating_sub(before) as f64 / 1e3,
            before as f64 / 1e3
        ),
    ]);
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    let p99 = percentile(&times, 0.99);
    let first_ms = percentile(&first, 0.5);
    let targets = vec![
        Target::new(
            format!("API status p99, {clients} clients polling"),
            "< 50 ms",
            format!("{p99:.1} ms"),
            p99 < 50.0,
        ),
        Target::new(
            "API submission to first job running",
            "< 100 ms",
            format!("{first_ms:.1} ms"),
            first_ms < 100.0,
        ),
    ];
    Ok((table, targets))
}
