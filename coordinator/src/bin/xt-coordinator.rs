//! `xt-coordinator`: the coordinator as its own process (the distributed mode).

use std::time::Duration;

use clap::Parser;
use xt_coordinator::service::{Config, Coordinator, serve};

#[derive(Debug, Parser)]
#[command(
    name = "xt-coordinator",
    version,
    about = "Queues batch jobs, leases them to workers, collects their results."
)]
struct Args {
    /// Address for the gRPC job service and the Flight result service.
    #[arg(long, env = "XT_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// State directory: accepted batches, completed job results, finished tables. A
    /// coordinator restarted on the same directory resumes every unfinished batch.
    #[arg(long, env = "XT_STATE", default_value = "xt-state")]
    state: std::path::PathBuf,
    /// A lease without a heartbeat for this long goes back to the queue (milliseconds).
    #[arg(long, env = "XT_LEASE_MS", default_value_t = 10_000)]
    lease_ms: u64,
    /// A directory batches may read bars and universe files from (repeatable; `XT_DATA_ROOTS`
    /// separates several with `:`). Paths in a batch resolve only inside these; with none,
    /// only synthetic data is served.
    #[arg(long = "data-root", env = "XT_DATA_ROOTS", value_delimiter = ':')]
    data_roots: Vec<std::path::PathBuf>,
    /// Per tenant: batches not yet finished.
    #[arg(long, env = "XT_MAX_RUNNING_BATCHES", default_value_t = 20)]
    max_running_batches: usize,
    /// Per tenant: jobs waiting in the queue.
    #[arg(long, env = "XT_MAX_QUEUED_JOBS", default_value_t = 1_000_000)]
    max_queued_jobs: usize,
    /// A file holding the cluster secret: every gRPC and Flight call must carry it
    /// (workers and `xt serve` are given the same file). Without it the port takes calls
    /// from anyone who reaches it.
    #[arg(long, env = "XT_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = xt_wire::auth::ClusterSecret::from_file(args.cluster_secret_file.as_deref())?;
    // Resume every batch in the state directory before taking requests.
    let coordinator = Coordinator::open(
        args.state.join("batches"),
        Config {
            lease_ttl: Duration::from_millis(args.lease_ms),
            data_roots: Some(args.data_roots),
            max_running_batches: args.max_running_batches,
            max_queued_jobs: args.max_queued_jobs,
            secret: secret.clone(),
        },
    )?;
    // Handled before the address is printed: whoever reads it may signal at once.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() && secret.is_none() {
        // Its port has no authentication of its own: whoever reaches it can submit, cancel,
        // lease and download for every tenant.
        eprintln!(
            "xt-coordinator: warning: listening on {bound}, not loopback; this port takes no \
             token, so anyone who can reach it can submit, cancel, lease and download every \
             tenant's batches: give it --cluster-secret-file, or keep it on a private network \
             only workers and the API reach"
        );
    }
    // The bound address, for whoever started us with port 0.
    println!("listening on {bound}");
    serve(coordinator, listener, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
}
