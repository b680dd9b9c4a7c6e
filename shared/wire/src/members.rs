//! Worker membership in the distributed mode. Each worker keeps a key under [`MEMBERS`] on
//! an etcd lease of its own, renewed every third of its TTL; the leading coordinator reads
//! the prefix, and a worker whose key is gone (the process or its machine died, or it lost
//! etcd for a whole TTL) has left: its jobs are queued again at once, whatever its leases'
//! deadlines at the coordinator.

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};

/// The prefix of the workers' member keys.
pub const MEMBERS: &str = "xt/workers/";

/// A worker's place in the membership; the key is deleted when dropped.
pub struct Membership {
    /// The member key, sent to the coordinator when registering.
    pub key: String,
    renewal: tokio::task::JoinHandle<()>,
    client: Client,
    lease: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Membership {
    /// Leaves: the key goes now rather than when its lease would lapse.
    pub async fn leave(mut self) {
        self.renewal.abort();
        let lease = self.lease.load(std::sync::atomic::Ordering::SeqCst);
        let _ = self.client.lease_revoke(lease).await;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Joins as `name` (unique to this process) with a lease of `ttl`, kept alive in the
/// background; should the lease lapse all the same (etcd unreachable for a TTL), the key
/// is put again on a new one as soon as etcd answers.
pub async fn join(endpoints: &[String], name: &str, ttl: Duration) -> anyhow::Result<Membership> {
    let mut client = crate::leader::etcd(endpoints).await?;
    let key = format!("{MEMBERS}{name}");
    let ttl_secs = ttl.as_secs().max(1) as i64;
    // An etcd member down (a restart, a rollout) fails the calls sent to it: asked again,
    // for up to a minute, as the other members answer.
    let asked = tokio::time::Instant::now();
    let lease = loop {
        match put(&mut client, &key, ttl_secs).await {
            Ok(lease) => break lease,
            Err(e) if asked.elapsed() < Duration::from_secs(60) => {
                eprintln!("xt-worker: joining the cluster's members: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context("joining the cluster's members")),
        }
    };
    let lease = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(lease));
    let renewal = {
        let (mut client, key, lease) = (client.clone(), key.clone(), lease.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let period = Duration::from_secs(ttl_secs as u64) / 3;
            let mut stream = None;
            loop {
                tokio::time::sleep(period).await;
                let id = lease.load(SeqCst);
                if stream.is_none() {
                    stream = client.lease_keep_alive(id).await.ok();
                }
                let alive = match &mut stream {
                    Some((keeper, replies)) => match keeper.keep_alive().await {
                        Ok(()) => match tokio::time::timeout(period, replies.message()).await {
                            Ok(Ok(Some(r))) => Some(r.ttl() > 0),
                            _ => None,
                        },
                        Err(_) => None,
                    },
                    None => None,
                };
                match alive {
                    Some(true) => {}
                    // Lapsed: the coordinator has taken our jobs back; join again (our next
                    // heartbeat finds us unknown and registers anew).
                    Some(false) => {
                        stream = None;
                        if let Ok(id) = put(&mut client, &key, ttl_secs).await {
                            eprintln!("xt-worker: membership lapsed; joined again as {key}");
                            lease.store(id, SeqCst);
                        }
                    }
                    None => stream = None,
                }
            }
        })
    };
    Ok(Membership {
        key,
        renewal,
        client,
        lease,
    })
}

/// Puts `key` on a new lease of `ttl_secs`; returns the lease.
async fn put(client: &mut Client, key: &str, ttl_secs: i64) -> anyhow::Result<i64> {
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    client
        .put(key, "", Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

/// The member keys present now.
pub async fn present(client: &mut Client) -> anyhow::Result<std::collections::HashSet<String>> {
    let reply = client
        .get(
            MEMBERS,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(reply
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok().map(str::to_string))
        .collect())
}

/// A name no other worker has: the host's, the process id, and the clock.
pub fn unique_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{host}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}
