//! Reaching the coordinator: connecting (retried while it is not up yet) and registering
//! (retried while none leads).

use super::*;

pub(super) async fn connect(url: &str, secret: Option<ClusterSecret>) -> Result<Channel> {
    let endpoint =
        xt_wire::transport::endpoint(url).with_context(|| format!("--coordinator {url}"))?;
    let mut delay = Duration::from_millis(50);
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(xt_wire::auth::with_secret(c, secret)),
            Err(e) if delay < Duration::from_secs(30) => {
                eprintln!("xt-worker: coordinator {url} unreachable ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
        }
    }
}

/// Registers with the coordinator. A coordinator not up yet, or no leader elected yet:
/// waits for one (pods start in any order); any other refusal (a wrong cluster secret)
/// ends the worker.
pub(super) async fn register_with(
    jobs: &mut WorkersClient<Channel>,
    register: &RegisterRequest,
) -> Result<RegisterReply> {
    let mut delay = Duration::from_millis(100);
    loop {
        match jobs.register(register.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if e.code() == tonic::Code::Unavailable => {
                eprintln!(
                    "xt-worker: registering: {}; retrying in {delay:?}",
                    e.message()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
