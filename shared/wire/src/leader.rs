//! Finding the coordinator in the distributed mode: coordinators campaign on one etcd
//! election, and the leader's value is the URL it serves on. Workers and the API follow
//! it: their channel to the coordinator points at whoever leads now, and moves by itself
//! when another takes over.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tonic::transport::channel::Change;

use crate::auth::{Channel, ClusterSecret, with_secret};

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

/// A channel to whichever coordinator leads, sending `secret` on every call. Calls made
/// while no coordinator leads wait for one; when the leader changes, the channel drops the
/// old one's connection and connects to the new (calls in flight to the old fail, and the
/// caller's retries reach the new).
pub async fn follow(
    endpoints: &[String],
    secret: Option<ClusterSecret>,
) -> anyhow::Result<Channel> {
    let mut client = etcd(endpoints).await?;
    let (channel, changes) = tonic::transport::Channel::balance_channel::<String>(4);
    tokio::spawn(async move {
        let mut serving: Option<String> = None;
        loop {
            let now = current(&mut client).await.unwrap_or(None);
            if now != serving {
                if let Some(old) = serving.take() {
                    let _ = changes.send(Change::Remove(old)).await;
                }
                if let Some(url) = &now
                    && let Ok(endpoint) = crate::transport::endpoint(url)
                {
                    if changes
                        .send(Change::Insert(url.clone(), endpoint))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    serving = now;
                }
            }
            if changes.is_closed() {
                return;
            }
            // Observing the election would say sooner, but its stream ends silently when
            // the etcd member it reads from goes away; a read every half second is as cheap
            // and never goes stale.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(with_secret(channel, secret))
}
