//! Scale-down that takes idle workers first, where the cluster allows it: a Kubernetes
//! ReplicaSet scaled down removes the pods of lowest `controller.kubernetes.io/pod-deletion-cost`
//! first (Kubernetes 1.22 and later), so a worker in a pod keeps its own pod's cost at the
//! number of jobs it holds: 0 when idle. Outside a pod (no `XT_POD_NAME`) it does nothing.

use std::time::Duration;

/// The annotation a ReplicaSet reads when it chooses which pods to remove.
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

const ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The worker's own pod, and what its cost was last set to.
pub struct PodCost {
    client: reqwest_tls::Client,
    url: String,
    token: String,
    last: Option<u64>,
}

impl PodCost {
    /// From the pod's environment: `XT_POD_NAME` and `XT_POD_NAMESPACE` (the downward API),
    /// the service account's token and CA; `XT_K8S_API` (default the in-cluster address)
    /// and `XT_K8S_TOKEN_FILE` name others. `None` outside a pod; an error when a pod's
    /// account cannot be read.
    pub fn from_env() -> anyhow::Result<Option<PodCost>> {
        let (Ok(name), Ok(namespace)) = (
            std::env::var("XT_POD_NAME"),
            std::env::var("XT_POD_NAMESPACE"),
        ) else {
            return Ok(None);
        };
        let api =
            std::env::var("XT_K8S_API").unwrap_or_else(|_| "https://kubernetes.default.svc".into());
        let token_file =
            std::env::var("XT_K8S_TOKEN_FILE").unwrap_or_else(|_| format!("{ACCOUNT}/token"));
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| anyhow::anyhow!("the pod's service account token {token_file}: {e}"))?;
        let mut client = reqwest_tls::Client::builder().timeout(Duration::from_secs(5));
        if let Ok(ca) = std::fs::read(format!("{ACCOUNT}/ca.crt")) {
            client = client.add_root_certificate(reqwest_tls::Certificate::from_pem(&ca)?);
        }
        Ok(Some(PodCost {
            client: client.build()?,
            url: format!("{api}/api/v1/namespaces/{namespace}/pods/{name}"),
            token: token.trim().to_string(),
            last: None,
        }))
    }

    /// Sets the cost to `jobs` when the worker has gone from idle to busy or back, or its
    /// load has doubled or halved since (not at every job: each is a write to the API
    /// server). A failed write is tried again at the next call.
    pub async fn set(&mut self, jobs: u64) {
        let changed = match self.last {
            None => true,
            Some(last) => (last == 0) != (jobs == 0) || jobs >= 2 * last || 2 * jobs <= last,
        };
        if !changed {
            return;
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {ANNOTATION: jobs.to_string()}}});
        let sent = self
            .client
            .patch(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => self.last = Some(jobs),
            Ok(r) => eprintln!("xt-worker: setting the pod's deletion cost: {}", r.status()),
            Err(e) => eprintln!("xt-worker: setting the pod's deletion cost: {e}"),
        }
    }
}

/// In a pod, keeps its cost at the jobs held (`computing` plus `unsent`), checked every
/// second, until the task returned is aborted; outside one, nothing.
pub fn follow(
    computing: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    unsent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(mut cost) = PodCost::from_env()? else {
        return Ok(None);
    };
    Ok(Some(tokio::spawn(async move {
        loop {
            cost.set((computing.load(SeqCst) + unsent.load(SeqCst)) as u64)
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })))
}
