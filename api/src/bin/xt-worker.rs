//! `xt-worker`: a worker process of the distributed mode.

use clap::Parser;
use xt_worker::client::{WorkerConfig, run_worker};

#[derive(Debug, Parser)]
#[command(
    name = "xt-worker",
    version,
    about = "Pulls backtest jobs from a coordinator and runs them on every core."
)]
struct Args {
    /// The coordinator, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "XT_COORDINATOR")]
    coordinator: String,
    /// Jobs at once (default: every core).
    #[arg(long, env = "XT_SLOTS")]
    slots: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = WorkerConfig {
        coordinator: args.coordinator,
        slots,
        name: format!("pid-{}", std::process::id()),
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
