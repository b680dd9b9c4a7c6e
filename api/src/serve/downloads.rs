//! Downloads: a finished table streamed from the coordinator's Flight `DoGet`, filtered by
//! symbol and parameter set, through a Parquet, Arrow IPC, CSV or JSON encoder batch by
//! batch.

use super::*;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Download {
    /// `parquet` (default), `arrow` (IPC stream), `csv` or `json` (an array of rows).
    format: Option<String>,
    /// Only this symbol's rows (metrics, trades, equity).
    symbol: Option<String>,
    /// Only this parameter set's rows, as its canonical JSON (`{"fast":12,"signal":9,"slow":26}`).
    params: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Format {
    Parquet,
    Arrow,
    Csv,
    Json,
}

/// One result table of a finished batch, streamed.
#[utoipa::path(get, path = "/v1/batches/{id}/results/{table}",
    params(("id" = u64, Path, description = "Batch id"), ("table" = String, Path, description = "metrics, trades, equity or portfolio"), Download),
    responses(
        (status = 200, description = "The table in the asked format", content_type = "application/octet-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The batch has not finished", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn results(
    State(app): State<App>,
    caller: Caller,
    path: Result<Path<(u64, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<Download>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((id, table)) = path.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()).field("id")
    })?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let Some(table) = Table::parse(&table) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no table {table:?}; tables are metrics, trades, equity, portfolio"),
        )
        .field("table"));
    };
    let format = match q.format.as_deref().unwrap_or("parquet") {
        "parquet" => Format::Parquet,
        "arrow" => Format::Arrow,
        "csv" => Format::Csv,
        "json" => Format::Json,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("format {other:?} is not parquet, arrow, csv or json"),
            )
            .field("format"));
        }
    };
    if q.symbol.is_some() && table == Table::Portfolio {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "the portfolio table has no symbol column",
        )
        .field("symbol"));
    }
    let status = visible(&app, &caller, id).await?;
    if !status.finished {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("batch {id} has not finished; its tables are written when it has"),
        ));
    }
    let ticket = Ticket::new(format!("{id}/{}", table.name()));
    let data = app
        .flight
        .clone()
        .do_get(ticket)
        .await
        .map_err(ApiError::from_status)?
        .into_inner();
    let batches = FlightRecordBatchStream::new_from_flight_data(
        data.map_err(arrow_flight::error::FlightError::from),
    );
    let filters = (q.symbol, q.params);
    let filtered = batches
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(move |b| {
            let r = filter(&b, &filters).map_err(|e| std::io::Error::other(e.to_string()));
            async move { r }
        });
    let (content_type, ext) = match format {
        Format::Parquet => ("application/vnd.apache.parquet", "parquet"),
        Format::Arrow => ("application/vnd.apache.arrow.stream", "arrow"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let body = Body::from_stream(encode(format, filtered.boxed()));
    let disposition = format!("attachment; filename=\"batch-{id}-{}.{ext}\"", table.name());
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Keeps the rows matching the `symbol=` and `params=` filters.
pub(super) fn filter(
    b: &RecordBatch,
    (symbol, params): &(Option<String>, Option<String>),
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut keep: Option<BooleanArray> = None;
    for (column, value) in [("symbol", symbol), ("params", params)] {
        let Some(value) = value else { continue };
        let Some(col) = b.column_by_name(column) else {
            continue;
        };
        let col = col.as_string::<i32>();
        let mask: BooleanArray = (0..col.len())
            .map(|i| Some(col.is_valid(i) && col.value(i) == value))
            .collect();
        keep = Some(match keep {
            None => mask,
            Some(k) => arrow::compute::and(&k, &mask)?,
        });
    }
    match keep {
        None => Ok(b.clone()),
        Some(k) => arrow::compute::filter_record_batch(b, &k),
    }
}

pub(super) type Batches = futures::stream::BoxStream<'static, Result<RecordBatch, std::io::Error>>;

/// A writer whose bytes are taken out after each record batch.
#[derive(Clone, Default)]
pub(super) struct Chunks(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Chunks {
    pub(super) fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Encodes record batches as they arrive; each yields the bytes it produced.
pub(super) fn encode(
    format: Format,
    mut batches: Batches,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let io = |e: arrow::error::ArrowError| std::io::Error::other(e.to_string());
    async_stream::try_stream! {
        let out = Chunks::default();
        let Some(first) = batches.next().await.transpose()? else {
            return;
        };
        let schema = first.schema();
        match format {
            Format::Arrow => {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(out.clone(), &schema).map_err(io)?;
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
                w.finish().map_err(io)?;
                yield out.take();
            }
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let mut w = parquet::arrow::ArrowWriter::try_new(out.clone(), schema, Some(props))
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                w.write(&first).map_err(|e| std::io::Error::other(e.to_string()))?;
                // One row group per incoming batch: memory stays at one batch.
                w.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(|e| std::io::Error::other(e.to_string()))?;
                    w.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
                    yield out.take();
                }
                w.close().map_err(|e| std::io::Error::other(e.to_string()))?;
                yield out.take();
            }
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out.clone());
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
            }
            Format::Json => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(out.clone());
                w.write(&first).map_err(io)?;
                yield out.take();
                while let Some(b) = batches.next().await.transpose()? {
                    w.write(&b).map_err(io)?;
                    yield out.take();
                }
                w.finish().map_err(io)?;
                yield out.take();
            }
        }
    }
}
