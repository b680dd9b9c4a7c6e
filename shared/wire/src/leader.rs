//! Finding the coordinator in the distributed mode: coordinators campaign on one etcd
//! election, and the leader's value is the URL it serves on. Workers and the API follow
//! it: their channel to the coordinator points at whoever leads now, and moves by itself
//! when another takes over.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tonic::transport::channel::Change;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{Channel, ClusterSecret, gated};

/// The election the coordinators campaign on.
pub const ELECTION: &str = "xt/leader";

/// A client of the etcd cluster at `endpoints`, with timeouts that let a caller notice a
/// lost member rather than wait on it.
pub async fn etcd(endpoints: &[String]) -> anyhow::Result<Client> {
    Client::connect(
        endpoints,
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_timeout(Duration::from_secs(5))
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2)),
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!("etcd {}: {e}", endpoints.join(",")))
}

/// The URL of the coordinator that leads now, if one does.
pub async fn current(client: &mut Client) -> anyhow::Result<Option<String>> {
    match client.leader(ELECTION).await {
        Ok(r) => Ok(r
            .kv()
            .and_then(|kv| kv.value_str().ok())
            .map(str::to_string)),
        // etcd answers "election: no leader" as an error.
        Err(e) if e.to_string().contains("no leader") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How long etcd may not answer before a follower takes it that no coordinator leads.
const UNSURE: Duration = Duration::from_secs(2);

/// A channel to whichever coordinator leads, sending `secret` on every call. Calls made
/// while no coordinator leads are refused at once as unavailable (nothing is sent); when
/// the leader changes, the channel drops the old one's connection and connects to the new
/// (calls in flight to the old fail, and the caller's retries reach the new).
pub async fn follow(
    endpoints: &[String],
    secret: Option<ClusterSecret>,
) -> anyhow::Result<Channel> {
    let (channel, changes) = tonic::transport::Channel::balance_channel::<String>(4);
    let mut follower = Follower {
        client: etcd(endpoints).await?,
        changes,
        leads: Arc::new(AtomicBool::new(false)),
        serving: None,
        answered: tokio::time::Instant::now(),
    };
    let leads = follower.leads.clone();
    // The leader as it is now, before the first call (a moment more while an election or
    // an etcd member's restart is under way).
    let asked = tokio::time::Instant::now();
    follower.step().await;
    while follower.serving.is_none() && asked.elapsed() < UNSURE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        follower.step().await;
    }
    tokio::spawn(async move {
        while !follower.changes.is_closed() {
            // Observing the election would say sooner, but its stream ends silently when
            // the etcd member it reads from goes away; a read every half second is as cheap
            // and never goes stale.
            tokio::time::sleep(Duration::from_millis(500)).await;
            follower.step().await;
        }
    });
    Ok(gated(channel, secret, leads))
}

/// What [`follow`] keeps between two reads of the election.
struct Follower {
    client: Client,
    changes: tokio::sync::mpsc::Sender<Change<String, tonic::transport::Endpoint>>,
    leads: Arc<AtomicBool>,
    serving: Option<String>,
    answered: tokio::time::Instant,
}

impl Follower {
    /// Reads who leads and points the channel there.
    async fn step(&mut self) {
        let now = match current(&mut self.client).await {
            Ok(now) => {
                self.answered = tokio::time::Instant::now();
                now
            }
            // A moment without etcd changes nothing; longer, and the leader has stepped
            // down by now (it cannot renew its lease either).
            Err(_) if self.answered.elapsed() < UNSURE => self.serving.clone(),
            Err(_) => None,
        };
        if now != self.serving {
            match &now {
                Some(url) => eprintln!("xt: the coordinator leading is at {url}"),
                None => eprintln!("xt: no coordinator leads now"),
            }
            if let Some(old) = self.serving.take() {
                let _ = self.changes.send(Change::Remove(old)).await;
            }
            if let Some(url) = &now
                && let Ok(endpoint) = crate::transport::endpoint(url)
                && self
                    .changes
                    .send(Change::Insert(url.clone(), endpoint))
                    .await
                    .is_ok()
            {
                self.serving = now;
            }
        }
        self.leads.store(self.serving.is_some(), Ordering::SeqCst);
    }
}
