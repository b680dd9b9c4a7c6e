//! `xt-coordinator`: the coordinator as its own process (the distributed mode).

use std::time::Duration;

use clap::Parser;
use std::sync::{Arc, Mutex};

use xt_coordinator::http::{Role, SharedRole};
use xt_coordinator::leader::campaign;
use xt_coordinator::service::{Config, Coordinator, serve};
use xt_coordinator::store::{ClusterStore, object_store_at};

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
    /// Where batches may read bars and universe files: a directory, or an object-store
    /// prefix `s3://bucket/prefix` (repeatable; `XT_DATA_ROOTS` separates several with `,`,
    /// or `:` as PATH does). A batch's data resolves only inside these; with none, only
    /// synthetic data is served.
    #[arg(long = "data-root", env = "XT_DATA_ROOTS")]
    data_roots: Vec<String>,
    /// Where bars read from an object store are cached on disk (one directory per process
    /// under it), and at most how many bytes of them.
    #[arg(long, env = "XT_DATA_CACHE", default_value_os_t = xt_objects::default_cache_dir())]
    data_cache: std::path::PathBuf,
    #[arg(long, env = "XT_DATA_CACHE_BYTES", default_value_t = xt_objects::DEFAULT_CACHE_BYTES)]
    data_cache_bytes: u64,
    /// Per tenant: batches not yet finished.
    #[arg(long, env = "XT_MAX_RUNNING_BATCHES", default_value_t = 20)]
    max_running_batches: usize,
    /// Per tenant: jobs waiting in the queue.
    #[arg(long, env = "XT_MAX_QUEUED_JOBS", default_value_t = 1_000_000)]
    max_queued_jobs: usize,
    /// Delete finished batches (record, tables, summary) this many days after they were
    /// submitted, checked hourly; 0 keeps them until deleted through the API.
    #[arg(long, env = "XT_RETAIN_DAYS", default_value_t = 0)]
    retain_days: u32,
    /// Tables streamed out at once (downloads through the API and Flight); more wait their
    /// turn for up to 30 s, then are told to retry.
    #[arg(long, env = "XT_MAX_DOWNLOADS", default_value_t = 4)]
    max_downloads: usize,
    /// A file holding the cluster secret: every gRPC and Flight call must carry it
    /// (workers and `xt serve` are given the same file). Without it the port takes calls
    /// from anyone who reaches it.
    #[arg(long, env = "XT_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// The distributed mode: etcd's client URLs (comma-separated). Coordinators campaign
    /// for leadership; the leader serves, the others stand by. Needs --results and
    /// --cluster-secret-file; --state is then only a scratch directory.
    #[arg(long, env = "XT_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Where results go in the distributed mode: `file:///dir`, `s3://bucket/prefix`
    /// (S3's usual `AWS_*` variables configure the client).
    #[arg(long, env = "XT_RESULTS")]
    results: Option<String>,
    /// The URL workers and the API reach this coordinator at, announced when it leads
    /// (default: http:// and the address it bound).
    #[arg(long, env = "XT_ADVERTISE")]
    advertise: Option<String>,
    /// The leadership lease's time to live, in seconds: a leader that cannot renew it
    /// stops within two thirds of it, and a standby takes over about one TTL after.
    #[arg(long, env = "XT_LEADER_TTL_SECS", default_value_t = 6)]
    leader_ttl_secs: u64,
    /// An HTTP port for the cluster: /healthz, /readyz (ready only while leading),
    /// /metrics (Prometheus) and /v1/queue (queued plus leased jobs, for autoscaling).
    #[arg(long, env = "XT_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Mutual TLS on the cluster's port: the cluster CA's certificate, and this process's
    /// certificate and key (PEM; `xt dev-ca` makes a set for trying it). All three or none.
    #[arg(long, env = "XT_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    #[arg(long, env = "XT_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "XT_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

/// Serves the cluster's HTTP port when asked for one, printing where.
async fn http(args: &Args, role: SharedRole) -> anyhow::Result<()> {
    if let Some(addr) = &args.http_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("http on {}", listener.local_addr()?);
        let app = xt_coordinator::http::router(role);
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    Ok(())
}

/// The `--data-root` values, each possibly a list (as `XT_DATA_ROOTS` gives them).
fn data_roots(values: &[String]) -> anyhow::Result<xt_shared::open::DataRoots> {
    let all: Vec<String> = values
        .iter()
        .flat_map(|v| xt_shared::open::DataRoots::split(v))
        .collect();
    xt_shared::open::DataRoots::parse(&all).map_err(anyhow::Error::msg)
}

fn set(role: &SharedRole, to: Role) {
    *role.lock().unwrap_or_else(|e| e.into_inner()) = to;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    xt_wire::tls::install_from_flags(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    let secret = xt_wire::auth::ClusterSecret::from_file(args.cluster_secret_file.as_deref())?;
    let config = Config {
        lease_ttl: Duration::from_millis(args.lease_ms),
        data_roots: Some(data_roots(&args.data_roots)?),
        data: xt_objects::DataAccess::new(
            &args.data_cache,
            args.data_cache_bytes,
            std::env::vars(),
        ),
        max_running_batches: args.max_running_batches,
        max_queued_jobs: args.max_queued_jobs,
        secret: secret.clone(),
        retain: (args.retain_days > 0)
            .then(|| Duration::from_secs(u64::from(args.retain_days) * 86_400)),
        max_downloads: args.max_downloads,
    };
    if !args.etcd.is_empty() {
        return distributed(&args, config).await;
    }
    // Resume every batch in the state directory before taking requests.
    let coordinator = Coordinator::open(args.state.join("batches"), config)?;
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
    http(
        &args,
        Arc::new(Mutex::new(Role::Leader(coordinator.clone()))),
    )
    .await?;
    serve(coordinator, listener, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
}

/// The distributed mode: stand by until elected, then resume every batch from etcd and
/// serve until stopped or deposed. A deposed leader stops serving at once and campaigns
/// again (when etcd itself is down, it waits for it).
async fn distributed(args: &Args, config: Config) -> anyhow::Result<()> {
    if config.secret.is_none() {
        anyhow::bail!(
            "--etcd: the distributed mode needs --cluster-secret-file (its port is reached \
             from other machines, and takes calls only from its own cluster's components)"
        );
    }
    let results = args
        .results
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--etcd: the distributed mode needs --results URL"))?;
    let results = object_store_at(results, std::env::vars())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // One socket for every term as leader: the address announced stays the same.
    let socket = std::net::TcpListener::bind(&args.listen)?;
    socket.set_nonblocking(true)?;
    let bound = socket.local_addr()?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    println!("listening on {bound}");
    let role = SharedRole::default();
    http(args, role.clone()).await?;
    let ttl = Duration::from_secs(args.leader_ttl_secs.max(2));
    let etcd = xt_wire::leader::etcd(&args.etcd).await?;
    let mut retry = Duration::from_millis(100);
    loop {
        set(&role, Role::Standby);
        println!("role: standby (campaigning as {advertise})");
        let elected = tokio::select! {
            fence = campaign(&etcd, &advertise, ttl) => fence,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let fence = match elected {
            Ok(f) => f,
            Err(e) => {
                eprintln!("xt-coordinator: {e}; campaigning again in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry = Duration::from_millis(100);
        let (endpoints, scratch) = (args.etcd.clone(), args.state.join("scratch"));
        let results = results.clone();
        let (store_fence, config) = (fence.clone(), config.clone());
        let resumed = tokio::task::spawn_blocking(move || {
            let store = ClusterStore::open(&endpoints, results, store_fence, scratch)?;
            Coordinator::with_store(Arc::new(store), config)
        })
        .await?;
        let coordinator = match resumed {
            Ok(c) => c,
            Err(e) => {
                fence.depose(format!("resuming failed: {e}"));
                println!("role: deposed (resuming failed: {e})");
                continue;
            }
        };
        set(&role, Role::Leader(coordinator.clone()));
        // Once it has resumed every batch and is ready.
        println!("role: leader (election key revision {})", fence.revision);
        let lost = fence.lost();
        let stopped = Arc::new(Mutex::new(true));
        let by_signal = stopped.clone();
        let listener = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
        let _members = AbortOnDrop(tokio::spawn(watch_members(
            etcd.clone(),
            coordinator.clone(),
        )));
        serve(coordinator, listener, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
                why = lost => {
                    *by_signal.lock().unwrap_or_else(|e| e.into_inner()) = false;
                    set_deposed(&why);
                }
            }
        })
        .await?;
        if *stopped.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        set(&role, Role::Deposed);
        // `serve` took the signal stream's borrow; make a fresh one for the next term.
        term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    }
}

/// Stops a task when dropped: the leader's member watch ends with its term.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the workers' member keys every half second (a watch stream can end silently when
/// its etcd member goes away; a read cannot go stale): a worker whose key has gone has left,
/// and its jobs are queued again. A read that fails changes nothing.
async fn watch_members(mut etcd: etcd_client::Client, coordinator: Coordinator) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let read_at = tokio::time::Instant::now().into_std();
        let Ok(present) = xt_wire::members::present(&mut etcd).await else {
            continue;
        };
        for (member, requeued) in coordinator.members_left(&present, read_at) {
            eprintln!(
                "xt-coordinator: worker {member} left (its membership lapsed); {requeued} job(s) queued again"
            );
        }
    }
}

fn set_deposed(why: &str) {
    println!("role: deposed ({why})");
}
