//! Leadership in the distributed mode: coordinators campaign on etcd's election API
//! ([`xt_wire::leader::ELECTION`]) on a lease kept alive every third of its TTL; the one
//! elected serves, the others wait in the campaign.
//!
//! A leader stops at once when it can no longer be sure it leads: a keep-alive refused or
//! unanswered until the last third of its TTL, or a write whose fence fails (another
//! coordinator has been elected since). Every write it makes is fenced ([`Fence`]): a
//! transaction that holds only while the election key it created still exists with the
//! revision it was created at, so nothing a deposed leader writes counts.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp};
use tokio::sync::watch;

/// What makes a leader's writes count: its election key and that key's create revision.
#[derive(Clone, Debug)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: i64,
    deposed: Arc<watch::Sender<Option<String>>>,
}

impl Fence {
    /// The comparison every write transaction of this leader carries.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// Marks this leader deposed, with why; [`Fence::lost`] resolves.
    pub fn depose(&self, why: impl Into<String>) {
        self.deposed.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(why.into());
                true
            } else {
                false
            }
        });
    }

    pub fn is_deposed(&self) -> bool {
        self.deposed.borrow().is_some()
    }

    /// Resolves, with why, once this coordinator no longer leads.
    pub fn lost(&self) -> impl Future<Output = String> + Send + 'static {
        let mut rx = self.deposed.subscribe();
        async move {
            match rx.wait_for(|d| d.is_some()).await {
                Ok(d) => d.clone().unwrap_or_default(),
                Err(_) => "leadership dropped".to_string(),
            }
        }
    }

    /// A fence for tests: `key` at `revision`, never deposed by a keep-alive.
    pub fn detached(key: impl Into<Vec<u8>>, revision: i64) -> Fence {
        Fence {
            key: key.into(),
            revision,
            deposed: Arc::new(watch::channel(None).0),
        }
    }
}

/// Campaigns until elected, announcing `url` as where the leader serves, on a lease of
/// `ttl` kept alive every third of it (from before the campaign: a standby holds its place
/// in line the same way). Returns the fence of its leadership.
pub async fn campaign(client: &Client, url: &str, ttl: Duration) -> anyhow::Result<Fence> {
    let mut client = client.clone();
    let ttl_secs = ttl.as_secs().max(2) as i64;
    let lease = client.lease_grant(ttl_secs, None).await?.id();
    let (deposed, _) = watch::channel(None);
    let deposed = Arc::new(deposed);
    let keeper = keep_alive(client.clone(), lease, ttl_secs, deposed.clone());
    let elected = client.campaign(xt_wire::leader::ELECTION, url, lease).await;
    let leader = match elected {
        Ok(mut r) => r.take_leader(),
        Err(e) => {
            keeper.abort();
            return Err(anyhow::anyhow!("campaigning: {e}"));
        }
    };
    let Some(leader) = leader else {
        keeper.abort();
        anyhow::bail!("campaigning: etcd elected no key");
    };
    Ok(Fence {
        key: leader.key().to_vec(),
        revision: leader.rev(),
        deposed,
    })
}

/// Renews `lease` every third of its TTL; deposes when a renewal is refused (the lease is
/// gone) or when none has succeeded for two thirds of the TTL (a leader must stop before a
/// successor may be elected, not after).
fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl_secs: i64,
    deposed: Arc<watch::Sender<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    let depose = move |why: String| {
        deposed.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(why);
                true
            } else {
                false
            }
        });
    };
    tokio::spawn(async move {
        let ttl = Duration::from_secs(ttl_secs as u64);
        let period = ttl / 3;
        let mut renewed = tokio::time::Instant::now();
        let mut stream = None;
        loop {
            tokio::time::sleep(period).await;
            if stream.is_none() {
                stream = client.lease_keep_alive(lease).await.ok();
            }
            let ok = match &mut stream {
                Some((keeper, replies)) => match keeper.keep_alive().await {
                    Ok(()) => match tokio::time::timeout(period, replies.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => true,
                        Ok(Ok(Some(_))) => {
                            return depose(format!("lease {lease:x} expired"));
                        }
                        _ => false,
                    },
                    Err(_) => false,
                },
                None => false,
            };
            if ok {
                renewed = tokio::time::Instant::now();
            } else {
                stream = None;
                if renewed.elapsed() >= ttl * 2 / 3 {
                    return depose(format!(
                        "lease {lease:x} not renewed for {:?} of its {ttl:?}",
                        renewed.elapsed()
                    ));
                }
            }
        }
    })
}
