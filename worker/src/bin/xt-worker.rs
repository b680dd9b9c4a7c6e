//! `xt-worker`: a worker process of the distributed mode.

use clap::Parser;
use std::time::Duration;

use xt_worker::client::{DRAIN_TIMEOUT, MEMBER_TTL, WorkerConfig, run_worker};
use xt_worker::stop::JobBudget;

#[derive(Debug, Parser)]
#[command(
    name = "xt-worker",
    version,
    about = "Pulls backtest jobs from a coordinator and runs them on every core."
)]
struct Args {
    /// The coordinator, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "XT_COORDINATOR", required_unless_present = "etcd")]
    coordinator: Option<String>,
    /// The distributed mode: etcd's client URLs (comma-separated), where the leading
    /// coordinator is found, and found again when another takes over.
    #[arg(long, env = "XT_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Jobs at once (default: every core).
    #[arg(long, env = "XT_SLOTS")]
    slots: Option<usize>,
    /// A job fails once it has run this many seconds plus `--job-budget-ns-per-bar`.
    #[arg(long, env = "XT_JOB_BUDGET_SECS", default_value_t = JobBudget::default().base.as_secs_f64())]
    job_budget_secs: f64,
    /// Nanoseconds a job may take for each bar of each curve, on top of `--job-budget-secs`.
    #[arg(long, env = "XT_JOB_BUDGET_NS_PER_BAR", default_value_t = JobBudget::default().per_bar.as_nanos() as u64)]
    job_budget_ns_per_bar: u64,
    /// On SIGTERM, how long jobs in flight may still run before they stop and go back to
    /// the queue (keep it under the pod's termination grace period).
    #[arg(long, env = "XT_DRAIN_SECS", default_value_t = DRAIN_TIMEOUT.as_secs_f64())]
    drain_secs: f64,
    /// The cluster secret the coordinator checks on every call (a file holding it).
    #[arg(long, env = "XT_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// Where bars read from an object store are cached on disk (one directory per process
    /// under it), and at most how many bytes of them. S3's usual `AWS_*` variables
    /// configure the client.
    #[arg(long, env = "XT_DATA_CACHE", default_value_os_t = xt_objects::default_cache_dir())]
    data_cache: std::path::PathBuf,
    #[arg(long, env = "XT_DATA_CACHE_BYTES", default_value_t = xt_objects::DEFAULT_CACHE_BYTES)]
    data_cache_bytes: u64,
    /// Bytes of decoded bars kept in memory between jobs and batches (files only; 0 keeps
    /// none); an eighth of the machine's memory by default.
    #[arg(long, env = "XT_BAR_CACHE_BYTES", default_value_t = xt_shared::cache::default_capacity())]
    bar_cache_bytes: u64,
    /// The distributed mode: the TTL of this worker's membership lease in etcd, in seconds;
    /// should the worker die, its jobs are queued again within it.
    #[arg(long, env = "XT_MEMBER_TTL_SECS", default_value_t = MEMBER_TTL.as_secs())]
    member_ttl_secs: u64,
    /// Mutual TLS on the cluster's port: the cluster CA's certificate, and this process's
    /// certificate and key (PEM; `xt dev-ca` makes a set for trying it). All three or none.
    #[arg(long, env = "XT_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    #[arg(long, env = "XT_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "XT_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

/// Seconds from a flag, or a message naming it.
fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{flag}: must be a finite number of seconds >= 0, got {v}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    xt_wire::tls::install_from_flags(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut config = WorkerConfig::new(
        args.coordinator.unwrap_or_default(),
        slots,
        format!("pid-{}", std::process::id()),
    );
    config.budget = JobBudget {
        base: seconds("--job-budget-secs", args.job_budget_secs)?,
        per_bar: Duration::from_nanos(args.job_budget_ns_per_bar),
    };
    config.drain_timeout = seconds("--drain-secs", args.drain_secs)?;
    config.etcd = args.etcd;
    config.member_ttl = Duration::from_secs(args.member_ttl_secs.max(1));
    xt_shared::cache::BarCache::init_global(args.bar_cache_bytes);
    config.data =
        xt_objects::DataAccess::new(&args.data_cache, args.data_cache_bytes, std::env::vars());
    config.secret = xt_wire::auth::ClusterSecret::from_file(args.cluster_secret_file.as_deref())?;
    // A fault for the tests: jobs of this symbol never end by themselves.
    config.endless_symbol = std::env::var("XT_TEST_ENDLESS_SYMBOL").ok();
    // A fault for the tests: the worker leases this many jobs in all, then no more.
    config.lease_limit = match std::env::var("XT_TEST_LEASE_LIMIT") {
        Ok(v) => Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("XT_TEST_LEASE_LIMIT: {v:?} is not a count"))?,
        ),
        Err(_) => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    run_worker(config, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
}
