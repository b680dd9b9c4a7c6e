//! API load: 200 concurrent clients polling a batch's status over HTTP while the batch
//! runs (p50, p99, max), and the time from submission to the first job running. The whole
//! stack is in this process on loopback: coordinator, workers on every core, `xt serve`'s
//! router. Prints a markdown table. Run it in release:
//!
//! `cargo run --release -p bench --bin api -- [--clients 200] [--seconds 5]`

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use xt_api::auth::{Role, Verifier, mint};
use xt_api::serve::{App, router};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long the clients poll.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = std::env::temp_dir().join(format!("xt-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let cluster =
        xt_coordinator::local::LocalCluster::start(state.clone(), 1, cores, Default::default())
            .await?;
    let secret = b"bench-secret-0123456789";
    let channel = tonic::transport::Endpoint::from_shared(cluster.url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let app = App::new(channel, Verifier::hs256(secret));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    let token = mint(secret, "bench", "desk", &[Role::Researcher], 3600)?;
    let http = reqwest::Client::new();

    // Submission to first job running, on an idle cluster (median of 5).
    let mut first = Vec::new();
    for i in 0..5 {
        let spec = json!({"data": format!("synthetic://?symbols=50&years=1&seed={i}"), "strategy": "macd", "tables": ["metrics"]});
        let t = Instant::now();
        let reply: Value = http
            .post(format!("{api}/v1/batches"))
            .bearer_auth(&token)
            .json(&spec)
            .send()
            .await?
            .json()
            .await?;
        let id = reply["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("submit: {reply}"))?;
        loop {
            let s: Value = http
                .get(format!("{api}/v1/batches/{id}"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            let c = &s["counts"];
            if c["running"].as_u64() > Some(0) || c["done"].as_u64() > Some(0) {
                first.push(t.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        loop {
            let s: Value = http
                .get(format!("{api}/v1/batches/{id}"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if s["state"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    first.sort();

    // A long batch, and the clients polling it.
    let spec = json!({"data": "synthetic://?symbols=3000&years=10", "strategy": "macd",
                      "grid": {"fast": [8, 10, 12]}, "tables": ["metrics"]});
    let reply: Value = http
        .post(format!("{api}/v1/batches"))
        .bearer_auth(&token)
        .json(&spec)
        .send()
        .await?
        .json()
        .await?;
    let id = reply["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("submit: {reply}"))?;
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
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
    let s: Value = http
        .get(format!("{api}/v1/batches/{id}"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let _ = http
        .delete(format!("{api}/v1/batches/{id}"))
        .bearer_auth(&token)
        .send()
        .await?;

    println!("| API on loopback, {cores} cores shared with the running batch | value |");
    println!("|---|---|");
    println!(
        "| status polls by {} clients in {:.0} s | {} ({:.0}/s), {} errors |",
        args.clients,
        args.seconds,
        times.len(),
        times.len() as f64 / args.seconds,
        errors
    );
    println!("| status latency p50 | {:.1} ms |", percentile(&times, 0.5));
    println!(
        "| status latency p99 | {:.1} ms |",
        percentile(&times, 0.99)
    );
    println!("| status latency max | {:.1} ms |", percentile(&times, 1.0));
    println!(
        "| jobs the batch finished meanwhile | {} of {} |",
        s["counts"]["done"], s["jobs"]
    );
    println!(
        "| submission to first job running (median of 5, 50-symbol batch) | {:.1} ms (min {:.1}, max {:.1}) |",
        percentile(&first, 0.5),
        percentile(&first, 0.0),
        percentile(&first, 1.0)
    );
    drop(tasks);

    // A 5-million-row equity table downloaded as Parquet: peak memory of this process
    // (the whole stack) during the download against the size of what went through it.
    let spec = json!({"data": "synthetic://?symbols=400&years=10&seed=5", "strategy": "sma_cross",
                      "grid": {"fast": [5, 10, 15, 20, 25], "slow": [60]}, "tables": ["equity"]});
    let reply: Value = http
        .post(format!("{api}/v1/batches"))
        .bearer_auth(&token)
        .json(&spec)
        .send()
        .await?
        .json()
        .await?;
    let id = reply["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("submit: {reply}"))?;
    loop {
        let s: Value = http
            .get(format!("{api}/v1/batches/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if s["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = |key: &str| -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    };
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
    let seconds = t.elapsed().as_secs_f64();
    let peak = rss("VmHWM:");
    let rows = 400 * 10 * 252 * 5;
    println!(
        "| download of the {rows}-row equity table as Parquet | {:.0} MB in {seconds:.2} s; peak memory +{:.0} MB over {:.0} MB before |",
        bytes as f64 / 1e6,
        peak.saturating_sub(before) as f64 / 1e3,
        before as f64 / 1e3
    );
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
