//! Liveness, readiness and Prometheus metrics.

use super::*;

/// Alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process answers", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the coordinator answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = String), (status = 503, body = String)))]
pub async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    match app.jobs.clone().stats(StatsRequest {}).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator does not answer\n",
        ),
    }
}

/// Prometheus metrics: jobs by state, queue depth, workers, job durations, bars.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = String)))]
pub async fn metrics(State(app): State<App>) -> Response {
    let s = match app.jobs.clone().stats(StatsRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the coordinator does not answer: {}\n", e.message()),
            )
                .into_response();
        }
    };
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP xt_jobs Jobs of all batches by state.\n# TYPE xt_jobs gauge"
    );
    for (state, n) in [
        ("queued", s.queued),
        ("running", s.running),
        ("done", s.done),
        ("failed", s.failed),
        ("cancelled", s.cancelled),
    ] {
        let _ = writeln!(out, "xt_jobs{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP xt_queue_depth Jobs waiting for a worker.\n# TYPE xt_queue_depth gauge\nxt_queue_depth {}",
        s.queued
    );
    let _ = writeln!(
        out,
        "# HELP xt_workers Registered workers.\n# TYPE xt_workers gauge\nxt_workers {}",
        s.workers
    );
    let _ = writeln!(
        out,
        "# HELP xt_batches Batches known, and those not finished.\n# TYPE xt_batches gauge\nxt_batches{{state=\"all\"}} {}\nxt_batches{{state=\"running\"}} {}",
        s.batches, s.batches_running
    );
    let _ = writeln!(
        out,
        "# HELP xt_bar_evaluations_total Bar evaluations (bars x parameter sets) completed; its rate is bars per second.\n# TYPE xt_bar_evaluations_total counter\nxt_bar_evaluations_total {}",
        s.bar_evaluations
    );
    let _ = writeln!(
        out,
        "# HELP xt_job_duration_seconds How long jobs ran on workers.\n# TYPE xt_job_duration_seconds histogram"
    );
    for (b, c) in s.duration_bounds.iter().zip(&s.duration_counts) {
        let _ = writeln!(out, "xt_job_duration_seconds_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(
        out,
        "xt_job_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        s.duration_count
    );
    let _ = writeln!(
        out,
        "xt_job_duration_seconds_sum {}\nxt_job_duration_seconds_count {}",
        s.duration_sum, s.duration_count
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
