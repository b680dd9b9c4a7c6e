//! A batch's server-sent events: `progress` as it runs, then `done` with its summary.

use super::*;

/// Progress as server-sent events: a `progress` event whenever the counts change (at most
/// one per 250 ms), then a `done` event with the final status and summary.
#[utoipa::path(get, path = "/v1/batches/{id}/events", params(("id" = u64, Path, description = "Batch id")),
    responses(
        (status = 200, description = "An event stream of BatchStatus objects", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(app): State<App>,
    caller: Caller,
    id: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = batch_id(id)?;
    let first = visible(&app, &caller, id).await?;
    let stream = async_stream::stream! {
        let mut last: Option<(Counts, u64)> = None;
        let mut current = first;
        loop {
            let status = BatchStatus::from(current.clone());
            let key = (status.counts, status.bar_evaluations);
            if current.finished {
                yield Ok(Event::default().event("done").json_data(&status).unwrap_or_default());
                break;
            }
            if last != Some(key) {
                last = Some(key);
                yield Ok(Event::default().event("progress").json_data(&status).unwrap_or_default());
            }
            // Answered after the interval, or at once when the batch finishes.
            let wait_ms = app.event_interval.as_millis().min(u32::MAX as u128) as u32;
            match app.jobs.clone().status(StatusRequest { batch: id, wait_ms }).await {
                Ok(r) => current = r.into_inner(),
                Err(e) => {
                    let body = json!({"error": {"code": "coordinator_unavailable", "message": e.message(), "field": null}});
                    yield Ok(Event::default().event("error").data(body.to_string()));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
