//! The distributed mode's costs, measured with release binaries on loopback: the same
//! batch through a coordinator on the embedded store and through one on etcd and an object
//! store (a `file://` directory), run in turns; and failover, from the leader's SIGKILL to
//! the standby leading.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use xt_shared::BatchSpec;
use xt_testkit::{Etcd, Proc, bin, scratch};
use xt_wire::batches_client::BatchesClient;
use xt_wire::{StatusRequest, SubmitRequest};

use crate::report::Timing;

/// A process and the lines it prints.
struct Printing {
    proc: Proc,
    lines: mpsc::Receiver<String>,
}

impl Printing {
    fn start(cmd: &mut Command) -> anyhow::Result<Printing> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Printing {
            proc: Proc(child),
            lines,
        })
    }

    fn wait(&self, prefix: &str) -> anyhow::Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .with_context(|| format!("waiting for {prefix:?}"))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.to_string());
            }
        }
    }
}

fn coordinator(
    state: &Path,
    secret: &Path,
    etcd: Option<(&Etcd, &Path)>,
    ttl: u64,
) -> anyhow::Result<Printing> {
    let mut cmd = Command::new(bin("xt-coordinator"));
    cmd.args(["--listen", "127.0.0.1:0", "--lease-ms", "10000"])
        .arg("--state")
        .arg(state)
        .arg("--cluster-secret-file")
        .arg(secret);
    if let Some((etcd, results)) = etcd {
        cmd.arg("--etcd")
            .arg(etcd.endpoints())
            .arg("--results")
            .arg(results)
            .args(["--leader-ttl-secs", &ttl.to_string()]);
    }
    Printing::start(&mut cmd)
}

fn worker(secret: &Path, to: &[&str], slots: usize) -> anyhow::Result<Proc> {
    Ok(Proc(
        Command::new(bin("xt-worker"))
            .args(to)
            .args(["--slots", &slots.to_string()])
            .env("XT_CLUSTER_SECRET_FILE", secret)
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

/// Seconds from submission to the batch finished.
async fn one_batch(
    client: &mut BatchesClient<xt_wire::auth::Channel>,
    spec: &BatchSpec,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let batch = client
        .submit(SubmitRequest {
            spec_json: serde_json::to_string(spec)?,
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch;
    loop {
        let s = client
            .status(StatusRequest {
                batch,
                wait_ms: 5_000,
            })
            .await?
            .into_inner();
        if s.finished {
            anyhow::ensure!(s.failed == 0, "batch {batch}: {s:?}");
            return Ok(started.elapsed().as_secs_f64());
        }
    }
}

/// `bench distributed`: the per-job cost of the etcd and object-store path against the
/// embedded store, and failover times.
pub async fn run(symbols: usize, runs: usize, slots: usize) -> anyhow::Result<()> {
    let etcd = Etcd::start("bench-distributed-etcd", 1).context("etcd is not installed")?;
    let dir = scratch("bench-distributed");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, "bench-distributed-secret-0123456789\n")?;
    let secret = xt_wire::auth::ClusterSecret::read(&secret_file)?;

    let embedded = coordinator(&dir.join("embedded"), &secret_file, None, 6)?;
    let embedded_url = format!("http://{}", embedded.wait("listening on ")?);
    let _w1 = worker(&secret_file, &["--coordinator", &embedded_url], slots)?;
    let mut embedded_client =
        BatchesClient::new(xt_wire::transport::connect(&embedded_url, Some(secret.clone())).await?);
    let results = dir.join("results");
    let leader = coordinator(
        &dir.join("leader"),
        &secret_file,
        Some((&etcd, &results)),
        6,
    )?;
    leader.wait("role: leader")?;
    let _w2 = worker(&secret_file, &["--etcd", &etcd.endpoints()], slots)?;
    let mut etcd_client =
        BatchesClient::new(xt_wire::leader::follow(&etcd.urls, Some(secret.clone())).await?);

    // Short jobs (one year of bars, one parameter set), so what the store costs a job shows.
    let spec = BatchSpec::new(
        format!("synthetic://?symbols={symbols}&years=1&seed=5"),
        "sma_cross",
    );
    eprintln!("warming up: a batch on each");
    one_batch(&mut embedded_client, &spec).await?;
    eprintln!("embedded: warm");
    one_batch(&mut etcd_client, &spec).await?;
    eprintln!("etcd: warm");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(one_batch(&mut embedded_client, &spec).await?);
        b.push(one_batch(&mut etcd_client, &spec).await?);
    }
    let ratios: Vec<f64> = b.iter().zip(&a).map(|(b, a)| b / a).collect();
    let (ta, tb) = (
        Timing::from_seconds(a.clone(), 0.0),
        Timing::from_seconds(b.clone(), 0.0),
    );
    let (lo, hi) = Timing::median_interval(&ratios);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_job_us = (median(&b) - median(&a)) / symbols as f64 * 1e6;
    println!("| store | batch of {symbols} jobs ({runs} runs in turns) |");
    println!("|---|---|");
    println!("| embedded (local files) | {} |", ta.show());
    println!("| etcd + object store (file://) | {} |", tb.show());
    println!(
        "\netcd/embedded, paired: median {:.3} (interval {lo:.3}-{hi:.3}); per job {per_job_us:+.0} µs",
        median(&ratios)
    );

    // Failover: the leader killed while a long batch runs, to the standby leading (resumed
    // and ready), and to the first job completed under it (the worker and the client find
    // it through etcd, lease, compute and upload).
    drop(leader);
    let mut long = BatchSpec::new("synthetic://?symbols=20000&years=2&seed=9", "sma_cross");
    long.grid = Some(serde_json::from_value(
        serde_json::json!({"fast": (5..21).collect::<Vec<u32>>(), "slow": [50]}),
    )?);
    println!(
        "\n| leader TTL | leader SIGKILLed to standby leading | to the first job completed under it |"
    );
    println!("|---|---|---|");
    for ttl in [2u64, 6] {
        let (mut leading, mut working) = (Vec::new(), Vec::new());
        for run in 0..3 {
            let state = |n: &str| dir.join(format!("failover-{ttl}-{run}-{n}"));
            let mut first = coordinator(&state("a"), &secret_file, Some((&etcd, &results)), ttl)?;
            first.wait("role: leader")?;
            let second = coordinator(&state("b"), &secret_file, Some((&etcd, &results)), ttl)?;
            second.wait("role: standby")?;
            // The client moves to the new leader within half a second: asked again until.
            let request = SubmitRequest {
                spec_json: serde_json::to_string(&long)?,
                ..Default::default()
            };
            let asked = Instant::now();
            let batch = loop {
                match etcd_client.submit(request.clone()).await {
                    Ok(r) => break r.into_inner().batch,
                    Err(e) if asked.elapsed().as_secs() < 10 => {
                        let _ = e;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let done = |c: &mut BatchesClient<xt_wire::auth::Channel>| {
                let mut c = c.clone();
                async move {
                    c.status(StatusRequest { batch, wait_ms: 0 })
                        .await
                        .map(|s| s.into_inner().done)
                }
            };
            while done(&mut etcd_client).await? < 10 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let killed = Instant::now();
            first.proc.0.kill()?;
            first.proc.0.wait()?;
            second.wait("role: leader")?;
            leading.push(killed.elapsed().as_secs_f64());
            // What the new leader resumed with, then its first job done. Calls fail while
            // none leads and until the client has moved: asked again.
            let mut resumed = None;
            loop {
                if let Ok(n) = done(&mut etcd_client).await {
                    if resumed.is_some_and(|r| n > r) {
                        break;
                    }
                    resumed.get_or_insert(n);
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            working.push(killed.elapsed().as_secs_f64());
            etcd_client.cancel(xt_wire::CancelRequest { batch }).await?;
        }
        println!(
            "| {ttl} s | {} | {} |",
            Timing::from_seconds(leading, 0.0).show(),
            Timing::from_seconds(working, 0.0).show()
        );
    }
    Ok(())
}
