//! The Arrow Flight service: `DoPut` decodes an upload's attempts and hands them to intake;
//! `ListFlights` and `DoGet` serve finished tables from the store.

use super::*;

impl Coordinator {
    /// The finished table a ticket (`batch_id/table`) names.
    pub(super) fn finished_table(&self, ticket: &str) -> Result<(u64, Table), Status> {
        let (batch, table) = ticket.split_once('/').ok_or_else(|| {
            Status::invalid_argument(format!(
                "ticket {} is not batch_id/table",
                xt_wire::excerpt(ticket)
            ))
        })?;
        let batch: u64 = batch.parse().map_err(|_| {
            Status::invalid_argument(format!("{} is not a batch id", xt_wire::excerpt(batch)))
        })?;
        let table = Table::parse(table).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{} is not a table (metrics, trades, equity, portfolio)",
                xt_wire::excerpt(table)
            ))
        })?;
        let s = self.lock();
        let run = s
            .batches
            .get(&batch)
            .ok_or_else(|| Status::not_found(format!("unknown batch {batch}")))?;
        if run.phase.summary().is_none() {
            return Err(Status::failed_precondition(format!(
                "batch {batch} has not finished"
            )));
        }
        if !run.batch.spec.wants(table) {
            return Err(Status::not_found(format!(
                "batch {batch} did not keep the {} table",
                table.name()
            )));
        }
        Ok((batch, table))
    }
}

type FlightStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Coordinator {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    /// Receives the tables of one or more job attempts (see [`Upload`] for the layout): the
    /// descriptor's `cmd` lists the attempts, each table's schema message names it, each
    /// record batch names its attempt.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let descriptor: FlightDescriptor = first
            .flight_descriptor
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first message must carry a descriptor"))?;
        let uploads: Vec<Upload> = serde_json::from_slice(&descriptor.cmd)
            .map_err(|e| Status::invalid_argument(format!("descriptor: {e}")))?;
        if uploads.is_empty() || uploads.len() > MAX_UPLOADS {
            return Err(Status::invalid_argument(format!(
                "an upload carries 1 to {MAX_UPLOADS} job attempts, not {}",
                uploads.len()
            )));
        }
        let all: BoxStream<'static, Result<FlightData, arrow_flight::error::FlightError>> =
            stream::once(async move { Ok(first) })
                .chain(input.map_err(arrow_flight::error::FlightError::from))
                .boxed();
        let mut decoder = FlightDataDecoder::new(all);
        let mut tables: Vec<Tables> = vec![Tables::new(); uploads.len()];
        let mut table: Option<String> = None;
        while let Some(message) = decoder
            .try_next()
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            match message.payload {
                DecodedPayload::Schema(_) => {
                    let name = std::str::from_utf8(&message.inner.app_metadata)
                        .ok()
                        .filter(|n| UploadTable::NAMES.contains(n))
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "each table's schema must name it in app_metadata: one of {}",
                                UploadTable::NAMES.join(", ")
                            ))
                        })?;
                    table = Some(name.to_string());
                }
                DecodedPayload::RecordBatch(b) => {
                    let name = table.clone().ok_or_else(|| {
                        Status::invalid_argument("a record batch before its schema")
                    })?;
                    let owners = owners(&message.inner.app_metadata, b.num_rows(), uploads.len())
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "each record batch must name in app_metadata whose rows it carries: an attempt's index below {}, or `i:n,j:m,...` (n rows of attempt i, then m of j) adding up to its {} rows",
                                uploads.len(),
                                b.num_rows()
                            ))
                        })?;
                    let mut offset = 0;
                    for (i, rows) in owners {
                        let part = if rows == b.num_rows() {
                            b.clone()
                        } else {
                            b.slice(offset, rows)
                        };
                        offset += rows;
                        tables[i].entry(name.clone()).or_default().push(part);
                    }
                }
                DecodedPayload::None => {}
            }
        }
        // Each attempt is judged on its own: one that could not have come from running its
        // job (or names a batch this coordinator does not have) is refused and its job tried
        // again, as if its worker had failed it; the others go on.
        let verdicts: Vec<Result<(), String>> = {
            let s = self.lock();
            uploads
                .iter()
                .zip(&tables)
                .enumerate()
                .map(|(i, (upload, tables))| match s.batches.get(&upload.batch) {
                    None => Err(format!("unknown batch {}", upload.batch)),
                    Some(run) => check_upload(run, upload, tables)
                        .and_then(|()| check_part(&uploads, i, tables)),
                })
                .collect()
        };
        // A part's attempts stand or fall together: its sums hold all their sleeves.
        let mut broken: HashMap<u32, u32> = HashMap::new();
        for (u, v) in uploads.iter().zip(&verdicts) {
            if let (Some(k), Err(_)) = (u.part, v) {
                broken.entry(k).or_insert(u.job);
            }
        }
        let verdicts: Vec<Result<(), String>> = verdicts
            .into_iter()
            .zip(&uploads)
            .map(
                |(verdict, upload)| match (verdict, upload.part.and_then(|k| broken.get(&k))) {
                    (Ok(()), Some(job)) => Err(format!(
                        "its sleeves are summed with those of job {job}, whose result was refused"
                    )),
                    (verdict, _) => verdict,
                },
            )
            .collect();
        let mut accepted = vec![false; uploads.len()];
        let (mut valid, mut positions) = (Vec::new(), Vec::new());
        for (i, ((upload, tables), verdict)) in
            uploads.into_iter().zip(tables).zip(verdicts).enumerate()
        {
            match verdict {
                Ok(()) => {
                    positions.push(i);
                    valid.push((upload, tables));
                }
                Err(e) => {
                    eprintln!(
                        "xt-coordinator: refused batch {} job {} attempt {} from worker {}: {e}",
                        upload.batch, upload.job, upload.attempt, upload.worker
                    );
                    let key = JobKey {
                        batch: upload.batch,
                        job: upload.job,
                    };
                    let error = format!("its result was refused: {e}");
                    self.fail_attempt(&mut self.lock(), key, upload.worker, &error);
                }
            }
        }
        // On a task of its own: a worker that goes away mid-upload drops this call, and
        // the jobs reserved for storing must still be completed or let go.
        let this = self.clone();
        let (done, again) = tokio::spawn(async move { this.accept(valid).await })
            .await
            .map_err(internal)??;
        let mut resend = Vec::new();
        for ((i, a), r) in positions.into_iter().zip(done).zip(again) {
            accepted[i] = a;
            if r {
                resend.push(i as u32);
            }
        }
        let reply = serde_json::to_vec(&UploadReply { accepted, resend }).map_err(internal)?;
        Ok(Response::new(
            stream::once(async move {
                Ok(PutResult {
                    app_metadata: reply.into(),
                })
            })
            .boxed(),
        ))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }
    /// The tables of finished batches; `criteria.expression` may be `{"tenant": "..."}`.
    async fn list_flights(
        &self,
        r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let expression = r.into_inner().expression;
        let tenant = if expression.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_slice(&expression)
                .map_err(|e| Status::invalid_argument(format!("criteria: {e}")))?;
            v.get("tenant").and_then(|t| t.as_str()).map(str::to_string)
        };
        let finished: Vec<(u64, Vec<Table>)> = {
            let s = self.lock();
            let mut v: Vec<_> = s
                .batches
                .iter()
                .filter(|(_, run)| run.phase.summary().is_some())
                .filter(|(_, run)| tenant.as_ref().is_none_or(|t| &run.batch.tenant == t))
                .map(|(id, run)| {
                    let tables = Table::ALL
                        .into_iter()
                        .filter(|t| run.batch.spec.wants(*t))
                        .collect();
                    (*id, tables)
                })
                .collect();
            v.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
            v
        };
        let mut infos = Vec::new();
        for (batch, tables) in finished {
            for table in tables {
                let ticket = format!("{batch}/{}", table.name());
                let Ok(Some(reader)) = self.store.open_table(batch, table.name()) else {
                    continue;
                };
                let rows = reader.rows as i64;
                let info = FlightInfo::new()
                    .try_with_schema(&reader.schema)
                    .map_err(internal)?
                    .with_descriptor(FlightDescriptor::new_path(vec![
                        batch.to_string(),
                        table.name().to_string(),
                    ]))
                    .with_endpoint(
                        arrow_flight::FlightEndpoint::new().with_ticket(Ticket::new(ticket)),
                    )
                    .with_total_records(rows);
                infos.push(Ok(info));
            }
        }
        Ok(Response::new(stream::iter(infos).boxed()))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    /// Streams a finished batch's table; the ticket is `batch_id/table`. Read from the store
    /// a part at a time, so a table of any size streams in bounded memory.
    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = String::from_utf8(r.into_inner().ticket.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8"))?;
        let (batch, table) = self.finished_table(&ticket)?;
        // Its turn among the downloads, held until its last batch is read.
        let turn = tokio::time::timeout(DOWNLOAD_WAIT, self.downloads.clone().acquire_owned())
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} tables are being downloaded, the most at once; try again shortly",
                    self.config.max_downloads
                ))
            })?
            .map_err(internal)?;
        let TableReader {
            schema, batches, ..
        } = self
            .store
            .open_table(batch, table.name())
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(match table {
                    Table::Grid => format!("{ticket}: the batch made no grid table (it ran one parameter set, or its tables left it out)"),
                    Table::Folds | Table::OosEquity => format!("{ticket}: the batch made no {} table (it asked for no walk_forward, or its tables left it out)", table.name()),
                    _ => format!("{ticket}: the store has no such table"),
                })
            })?;
        // What made the results travels with them, in the schema every client reads.
        let provenance = self
            .lock()
            .batches
            .get(&batch)
            .and_then(|run| run.phase.summary())
            .and_then(|s| s.get("provenance"))
            .map(Value::to_string);
        let schema = match provenance {
            Some(p) => {
                let mut metadata = schema.metadata().clone();
                metadata.insert(xt_shared::schema::PROVENANCE_KEY.to_string(), p);
                Arc::new(schema.as_ref().clone().with_metadata(metadata))
            }
            None => schema,
        };
        // The store's reader blocks: it runs on a blocking thread, handing batches over a
        // small channel (back-pressure: a slow client holds at most a few batches here).
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (downloads, most) = (self.downloads.clone(), self.config.max_downloads.max(1));
        let with_metadata = schema.clone();
        tokio::task::spawn_blocking(move || {
            for batch in batches {
                // Each batch under the schema with the metadata: a batch whose schema differs
                // from the last would go out with a schema message of its own.
                let item = batch
                    .and_then(|b| b.with_schema(with_metadata.clone()))
                    .map_err(arrow_flight::error::FlightError::from);
                if tx.blocking_send(item).is_err() {
                    break;
                }
            }
            drop(turn);
            // The last download out hands the memory they used back to the system: the
            // allocator keeps freed pages otherwise, and the process stays at its peak.
            if downloads.available_permits() == most {
                crate::memory::release_free_memory();
            }
        });
        let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(data.boxed()))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

/// Most job attempts one upload may carry.
pub const MAX_UPLOADS: usize = 4096;
