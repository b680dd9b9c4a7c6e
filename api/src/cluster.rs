//! A whole cluster in one process: the coordinator's services and `n` workers on loopback
//! ports the OS picks, the very same services as the distributed mode. This is wiring, not
//! coordination: `xt local` and the cluster bench run batches on it.

use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use xt_worker::client::{WorkerConfig, run_worker};

use xt_coordinator::service::{Config, Coordinator, serve};

/// The runtime a whole cluster in one process runs on: one thread for every service and
/// worker loop (the jobs run on the workers' rayon pools, and big stores and the batches'
/// planning and tables on tokio's blocking threads). Its tasks hand messages to each other
/// on that thread; with more, a hand-over between two of them can wake another thread,
/// which on cores the jobs are using preempts a job (measured in bench/PROFILE.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

pub struct LocalCluster {
    /// `http://127.0.0.1:<port>` of the coordinator.
    pub url: String,
    pub coordinator: Coordinator,
    stop_workers: watch::Sender<bool>,
    stop_server: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl LocalCluster {
    /// Starts a coordinator on the embedded store in `state` and `workers` workers with
    /// `slots` job slots each.
    pub async fn start(
        state: PathBuf,
        workers: usize,
        slots: usize,
        config: Config,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let coordinator = Coordinator::open(state, config)?;
        let (stop_workers, workers_stopped) = watch::channel(false);
        let (stop_server, server_stopped) = watch::channel(false);
        let stopped_signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let server = tokio::spawn(serve(
            coordinator.clone(),
            listener,
            stopped_signal(server_stopped),
        ));
        let workers = (0..workers)
            .map(|i| {
                let config = WorkerConfig::new(url.clone(), slots, format!("local-{i}"));
                tokio::spawn(run_worker(config, stopped_signal(workers_stopped.clone())))
            })
            .collect();
        Ok(LocalCluster {
            url,
            coordinator,
            stop_workers,
            stop_server,
            server,
            workers,
        })
    }

    /// Drains the workers, then stops the coordinator.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_workers.send(true);
        for w in self.workers {
            w.await??;
        }
        let _ = self.stop_server.send(true);
        self.server.await??;
        Ok(())
    }
}
