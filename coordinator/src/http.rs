//! The coordinator's own HTTP port, for the cluster rather than users: liveness,
//! readiness (ready only while it leads, so a Service in front of several coordinators
//! reaches the leader alone), Prometheus metrics, and the queue depth the workers'
//! autoscaler reads.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::service::Coordinator;

/// What this coordinator is now.
#[derive(Clone, Default)]
pub enum Role {
    /// Campaigning: another coordinator leads (or none yet).
    #[default]
    Standby,
    Leader(Coordinator),
    /// It led and no longer does; the process is stopping.
    Deposed,
}

impl Role {
    fn name(&self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Leader(_) => "leader",
            Role::Deposed => "deposed",
        }
    }
}

pub type SharedRole = Arc<Mutex<Role>>;

fn role(r: &SharedRole) -> Role {
    r.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The routes: `/healthz`, `/readyz`, `/metrics`, `/v1/queue`.
pub fn router(r: SharedRole) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/queue", get(queue))
        .with_state(r)
}

async fn readyz(State(r): State<SharedRole>) -> (StatusCode, String) {
    let role = role(&r);
    let status = match role {
        Role::Leader(_) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{}\n", role.name()))
}

/// `{"role", "queued", "running", "pending"}`: `pending` is queued plus leased, so busy
/// workers are not scaled away while the queue reads empty. Answered by the leader only.
async fn queue(State(r): State<SharedRole>) -> Response {
    match role(&r) {
        Role::Leader(c) => {
            let q = c.queue();
            axum::Json(serde_json::json!({
                "role": "leader",
                "queued": q.queued,
                "running": q.running,
                "pending": q.queued + q.running,
                "workers": q.workers,
            }))
            .into_response()
        }
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "role": other.name() })),
        )
            .into_response(),
    }
}

async fn metrics(State(r): State<SharedRole>) -> Response {
    let role = role(&r);
    let mut out = String::new();
    out.push_str("# HELP xt_coordinator_leader 1 while this coordinator leads.\n");
    out.push_str("# TYPE xt_coordinator_leader gauge\n");
    out.push_str(&format!(
        "xt_coordinator_leader {}\n",
        u8::from(matches!(role, Role::Leader(_)))
    ));
    // The role by name, as /readyz and the log give it: one series at 1, the others at 0.
    out.push_str(
        "# HELP xt_coordinator_role This coordinator's role: leader, standby or deposed.\n",
    );
    out.push_str("# TYPE xt_coordinator_role gauge\n");
    for name in ["leader", "standby", "deposed"] {
        out.push_str(&format!(
            "xt_coordinator_role{{role=\"{name}\"}} {}\n",
            u8::from(role.name() == name)
        ));
    }
    if let Role::Leader(c) = role {
        let q = c.queue();
        for (name, help, v) in [
            ("xt_jobs_queued", "Jobs waiting for a worker.", q.queued),
            ("xt_jobs_running", "Jobs leased to a worker.", q.running),
            ("xt_workers", "Workers registered.", q.workers),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
