//! Downloads: a finished table streamed from the coordinator's Flight `DoGet`, filtered by
//! symbol and parameter set, through a Parquet, Arrow IPC, CSV or JSON encoder batch by
//! batch.

use std::collections::HashMap;

use serde_json::Map;

use super::*;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Download {
    /// `parquet` (default), `arrow` (IPC stream), `csv` or `json` (an array of rows).
    format: Option<String>,
    /// Only this symbol's rows (metrics, trades, equity): the symbol exactly as the universe
    /// names it, case and suffix included (`600519.SH`).
    symbol: Option<String>,
    /// Only this parameter set's rows: a JSON object of every parameter of the set, compared
    /// as values (`{"slow":26,"fast":12.0,"signal":9}` is `{"fast":12,"signal":9,"slow":26}`).
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
            format!("no table {table:?}; tables are {}", Table::names()),
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
    let params = q.params.as_deref().map(parse_params).transpose()?;
    if q.symbol.is_some() && !matches!(table, Table::Metrics | Table::Trades | Table::Equity) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("the {} table has no symbol column", table.name()),
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
    let mut rows = Rows {
        symbol: q.symbol,
        params,
        seen: HashMap::new(),
    };
    let filtered = batches
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(move |b| {
            let r = rows
                .filter(&b)
                .map_err(|e| std::io::Error::other(e.to_string()));
            async move { r }
        });
    let (content_type, ext) = match format {
        Format::Parquet => ("application/vnd.apache.parquet", "parquet"),
        Format::Arrow => ("application/vnd.apache.arrow.stream", "arrow"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    // The schema's metadata (the batch's provenance) comes with the stream, into the
    // Parquet and Arrow files.
    let body = Body::from_stream(encode(format, filtered.boxed()));
    let disposition = format!("attachment; filename=\"batch-{id}-{}.{ext}\"", table.name());
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            // Encoded as it streams, so there are no byte offsets to serve a range from: a
            // client that asks gets the whole table, and is told so (RFC 9110 section 14.3).
            (header::ACCEPT_RANGES, "none".to_string()),
        ],
        body,
    )
        .into_response())
}

/// The `params=` filter: a JSON object, else a 400 naming the field.
fn parse_params(text: &str) -> Result<Map<String, Value>, ApiError> {
    let bad =
        |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m).field("params");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad(format!(
            "params must be a JSON object of the parameter set, such as {{\"fast\":12,\"signal\":9,\"slow\":26}}, not {other}"
        ))),
        Err(e) => Err(bad(format!("params is not valid JSON: {e}"))),
    }
}

/// Whether two parameter sets are the same: the same names, numbers equal as numbers (`30`
/// is `30.0`), other values equal.
fn same_params(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, x)| {
            b.get(k).is_some_and(|y| match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => x == y,
            })
        })
}

/// The rows a download keeps: `symbol=` matched exactly, `params=` as values. A table's
/// `params` column holds a batch's few parameter sets over and over, so each distinct one is
/// parsed once.
struct Rows {
    symbol: Option<String>,
    params: Option<Map<String, Value>>,
    seen: HashMap<String, bool>,
}

impl Rows {
    fn filter(&mut self, b: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut keep: Option<BooleanArray> = None;
        let mut and = |mask: BooleanArray| -> Result<(), arrow::error::ArrowError> {
            keep = Some(match keep.take() {
                None => mask,
                Some(k) => arrow::compute::and(&k, &mask)?,
            });
            Ok(())
        };
        if let (Some(symbol), Some(col)) = (&self.symbol, b.column_by_name("symbol")) {
            let col = col.as_string::<i32>();
            and((0..col.len())
                .map(|i| Some(col.is_valid(i) && col.value(i) == symbol))
                .collect())?;
        }
        if let (Some(want), Some(col)) = (&self.params, b.column_by_name("params")) {
            let col = col.as_string::<i32>();
            let seen = &mut self.seen;
            let mut matches = |text: &str| -> bool {
                if let Some(&m) = seen.get(text) {
                    return m;
                }
                let m = serde_json::from_str::<Map<String, Value>>(text)
                    .is_ok_and(|have| same_params(&have, want));
                seen.insert(text.to_string(), m);
                m
            };
            and((0..col.len())
                .map(|i| Some(col.is_valid(i) && matches(col.value(i))))
                .collect())?;
        }
        match keep {
            None => Ok(b.clone()),
            Some(k) => arrow::compute::filter_record_batch(b, &k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn parameter_sets_compare_as_values() {
        let canonical = map(r#"{"fast":12,"signal":9,"slow":26}"#);
        for same in [
            r#"{"slow":26,"fast":12,"signal":9}"#,
            r#"{"fast":12.0,"signal":9,"slow":2.6e1}"#,
        ] {
            assert!(same_params(&map(same), &canonical), "{same}");
        }
        for other in [
            r#"{"fast":12,"signal":9}"#,
            r#"{"fast":12,"signal":9,"slow":27}"#,
            r#"{"fast":12,"signal":9,"slow":"26"}"#,
            r#"{"fast":12,"signal":9,"slow":26,"k":1}"#,
        ] {
            assert!(!same_params(&map(other), &canonical), "{other}");
        }
    }

    #[test]
    fn a_malformed_filter_is_a_400_naming_params() {
        for text in ["{\"fast\":", "[12, 26]", "12"] {
            let e = format!("{:?}", parse_params(text).unwrap_err());
            assert!(
                e.contains("status: 400") && e.contains(r#"field: Some("params")"#),
                "{e}"
            );
        }
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
