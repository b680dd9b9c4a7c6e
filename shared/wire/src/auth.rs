//! The cluster credential: a shared secret every client of the coordinator (workers, the
//! API, `xt`) sends on every gRPC and Flight call, and the coordinator checks before any
//! service sees the call. Without it, whoever reaches the coordinator's port could submit
//! for any tenant or upload forged results.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// The metadata key the secret travels in.
pub const SECRET_KEY: &str = "x-xt-cluster-secret";

/// Shorter secrets are refused: this one key guards every tenant's batches.
pub const MIN_SECRET_BYTES: usize = 16;

/// The cluster secret, read from a file (a mounted Secret in Kubernetes).
#[derive(Clone)]
pub struct ClusterSecret(AsciiMetadataValue);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// Reads the secret from `path`: its first line, without surrounding whitespace; at
    /// least [`MIN_SECRET_BYTES`] of printable ASCII.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cluster secret file {}: {e}", path.display()))?;
        Self::new(text.lines().next().unwrap_or("").trim())
            .map_err(|e| anyhow::anyhow!("cluster secret file {}: {e}", path.display()))
    }

    pub fn new(secret: &str) -> anyhow::Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "the secret must be at least {MIN_SECRET_BYTES} bytes, got {}",
                secret.len()
            );
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("the secret must be printable ASCII without spaces");
        }
        Ok(ClusterSecret(MetadataValue::try_from(secret)?))
    }

    /// The secret from `--cluster-secret-file`, when one was given.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Option<Self>> {
        path.map(Self::read).transpose()
    }
}

/// Adds the secret to every call a client makes (nothing when there is none); a channel
/// that follows an elected coordinator also refuses calls at once while none leads.
#[derive(Clone, Default, Debug)]
pub struct SendSecret(Option<ClusterSecret>, Option<Arc<AtomicBool>>);

impl Interceptor for SendSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(leads) = &self.1
            && !leads.load(Ordering::SeqCst)
        {
            // Refused before it is sent: a submission is never accepted by a coordinator
            // elected later while its caller was told it failed.
            return Err(Status::unavailable(
                "no coordinator leads now (an election is under way, or etcd is \
                 unreachable); nothing was sent: retry",
            ));
        }
        if let Some(s) = &self.0 {
            request.metadata_mut().insert(SECRET_KEY, s.0.clone());
        }
        Ok(request)
    }
}

/// A connection to the coordinator that sends the cluster secret on every call.
pub type Channel = InterceptedService<tonic::transport::Channel, SendSecret>;

/// `channel`, sending `secret` on every call.
pub fn with_secret(channel: tonic::transport::Channel, secret: Option<ClusterSecret>) -> Channel {
    InterceptedService::new(channel, SendSecret(secret, None))
}

/// `channel`, sending `secret` on every call, and refusing calls while `leads` is false.
pub fn gated(
    channel: tonic::transport::Channel,
    secret: Option<ClusterSecret>,
    leads: Arc<AtomicBool>,
) -> Channel {
    InterceptedService::new(channel, SendSecret(secret, Some(leads)))
}

/// The coordinator's check: a call without the secret, or with another, is refused as
/// unauthenticated before any service sees it. With no secret configured, every call
/// passes (the single-machine mode, on loopback).
#[derive(Clone, Default, Debug)]
pub struct RequireSecret(Option<Arc<ClusterSecret>>);

impl RequireSecret {
    pub fn new(secret: Option<ClusterSecret>) -> Self {
        RequireSecret(secret.map(Arc::new))
    }
}

impl Interceptor for RequireSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let given = request.metadata().get(SECRET_KEY);
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), expected.0.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(format!(
                "{SECRET_KEY}: not this cluster's secret"
            ))),
            None => Err(Status::unauthenticated(format!(
                "{SECRET_KEY}: this coordinator takes calls only from its cluster's \
                 components, which send the cluster secret"
            ))),
        }
    }
}

/// Equal bytes, compared in a time that does not tell how long a prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_needs_the_same_secret() {
        let secret = ClusterSecret::new("0123456789abcdef-cluster").unwrap();
        let mut check = RequireSecret::new(Some(secret.clone()));
        assert_eq!(
            check.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let other = ClusterSecret::new("0123456789abcdef-another").unwrap();
        let forged = SendSecret(Some(other), None)
            .call(Request::new(()))
            .unwrap();
        assert_eq!(
            check.call(forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let sent = SendSecret(Some(secret), None)
            .call(Request::new(()))
            .unwrap();
        assert!(check.call(sent).is_ok());
        // No secret configured: the single-machine mode takes every call.
        assert!(RequireSecret::new(None).call(Request::new(())).is_ok());
    }

    #[test]
    fn short_or_unprintable_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("sixteen bytes with space").is_err());
        assert!(ClusterSecret::new("0123456789abcdef").is_ok());
    }
}
