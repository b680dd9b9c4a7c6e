//! The coordinator's network face: the gRPC `Jobs` service (register, lease, heartbeat,
//! complete, fail, drain, submit, status, cancel) and the Arrow Flight service that receives
//! result tables (`DoPut`, the descriptor naming batch, job, attempt and table), both on one
//! port. Results are staged per attempt and become the job's results when that attempt's
//! `Complete` is the first one accepted, so every job appears exactly once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tonic::{Request, Response, Status, Streaming};
use xt_shared::job::{JobSpec, plan};
use xt_shared::open::{open_source, resolve_universe};
use xt_shared::portfolio::PortfolioSum;
use xt_shared::spec::{DataSpec, Table};
use xt_shared::wire::jobs_server::Jobs;
use xt_shared::wire::*;
use xt_shared::{BatchSpec, Date};
use xt_worker::engine::strategy::ParamSet;
use xt_worker::engine::tables::TableWriter;
use xt_worker::runner::{concat_tables, finish_portfolio, strategy_combos};

use crate::scheduler::{Completion, JobKey, JobStatus, Scheduler};
use crate::store::{BatchRecord, EmbeddedStore, JobRecord, StateStore};

/// What a Flight upload says it is (the descriptor's `cmd`, JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq, Hash)]
pub struct Upload {
    pub batch: u64,
    pub job: u32,
    pub attempt: u32,
    /// `metrics`, `trades`, `equity` or `sleeves`.
    pub table: String,
}

#[derive(Default)]
struct JobResult {
    tables: HashMap<String, Vec<RecordBatch>>,
}

struct BatchRun {
    spec: BatchSpec,
    jobs: Vec<JobSpec>,
    combos: Vec<ParamSet>,
    dates: Vec<Date>,
    staged: HashMap<(u32, u32), JobResult>,
    bars: u64,
    started: Instant,
    summary: Option<Value>,
}

struct State {
    scheduler: Scheduler,
    next_batch: u64,
    batches: HashMap<u64, BatchRun>,
}

/// The coordinator: shared by the gRPC and Flight services and the lease reaper.
#[derive(Clone)]
pub struct Coordinator {
    state: Arc<Mutex<State>>,
    store: Arc<dyn StateStore>,
    heartbeat: Duration,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Coordinator {
    /// A coordinator on the embedded store in `state`, resuming every batch found there:
    /// finished jobs stay finished, the others are queued again.
    pub fn open(state: PathBuf, lease_ttl: Duration) -> anyhow::Result<Self> {
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(state)?);
        let mut scheduler = Scheduler::new(lease_ttl, 3);
        let mut batches = HashMap::new();
        let mut next_batch = 1;
        for stored in store.load_all()? {
            let r = stored.record;
            let (_, combos) = strategy_combos(
                &r.spec.strategy,
                r.spec.params.as_ref(),
                r.spec.grid.as_ref(),
            )?;
            let done: Vec<bool> = stored.done.iter().map(|d| d.is_some()).collect();
            scheduler.restore(stored.id, &done)?;
            for (j, d) in stored.done.iter().enumerate() {
                if let Some(JobRecord { error: Some(e), .. }) = d {
                    scheduler.set_failed(
                        JobKey {
                            batch: stored.id,
                            job: j as u32,
                        },
                        e,
                    );
                }
            }
            let bars = stored.done.iter().flatten().map(|d| d.bars).sum();
            next_batch = next_batch.max(stored.id + 1);
            batches.insert(
                stored.id,
                BatchRun {
                    spec: r.spec,
                    jobs: r.jobs,
                    combos,
                    dates: r.dates,
                    staged: HashMap::new(),
                    bars,
                    started: Instant::now(),
                    summary: stored.summary,
                },
            );
        }
        let coordinator = Coordinator {
            state: Arc::new(Mutex::new(State {
                scheduler,
                next_batch,
                batches,
            })),
            store,
            heartbeat: lease_ttl / 4,
        };
        // A batch whose last job finished just before a crash is aggregated now.
        coordinator.reap();
        Ok(coordinator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every mutation below completes before the guard drops; a panic elsewhere cannot
        // leave the state half-written, so a poisoned lock still holds good data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requeues the jobs of workers that stopped sending heartbeats; run it periodically.
    pub fn reap(&self) {
        let mut s = self.lock();
        s.scheduler.expire(Instant::now());
        let ids: Vec<u64> = s.batches.keys().copied().collect();
        for id in ids {
            self.finish_if_done(&mut s, id);
        }
    }

    /// Where a finished batch's tables are.
    pub fn batch_dir(&self, batch: u64) -> PathBuf {
        self.store.batch_dir(batch)
    }

    /// Validates and plans a batch, queues its jobs, returns its id and job count.
    pub fn submit(&self, spec: BatchSpec) -> Result<(u64, u32), Status> {
        let bad = |e: xt_shared::SpecError| Status::invalid_argument(e.to_string());
        spec.check().map_err(bad)?;
        let (_, combos) = strategy_combos(&spec.strategy, spec.params.as_ref(), spec.grid.as_ref())
            .map_err(bad)?;
        let data = DataSpec::parse(&spec.data).map_err(bad)?;
        let source = open_source(&data).map_err(bad)?;
        let universe = resolve_universe(&spec, &data, source.as_ref()).map_err(bad)?;
        let planned = plan(&spec, source.as_ref(), &universe).map_err(bad)?;
        let jobs: Vec<JobSpec> = planned.jobs.into_iter().map(|j| j.spec).collect();
        let n = jobs.len() as u32;
        let mut s = self.lock();
        let id = s.next_batch;
        s.next_batch += 1;
        // Durable before it is acknowledged: an accepted batch survives a crash.
        let record = BatchRecord {
            spec: spec.clone(),
            jobs: jobs.clone(),
            dates: planned.dates.clone(),
        };
        self.store
            .save_batch(id, &record)
            .map_err(|e| Status::unavailable(format!("storing the batch: {e}")))?;
        s.scheduler.submit(id, n).map_err(internal)?;
        s.batches.insert(
            id,
            BatchRun {
                spec,
                jobs,
                combos,
                dates: planned.dates,
                staged: HashMap::new(),
                bars: 0,
                started: Instant::now(),
                summary: None,
            },
        );
        Ok((id, n))
    }

    fn stage(&self, upload: Upload, batches: Vec<RecordBatch>) -> Result<(), Status> {
        let mut s = self.lock();
        let run = s
            .batches
            .get_mut(&upload.batch)
            .ok_or_else(|| Status::not_found(format!("unknown batch {}", upload.batch)))?;
        run.staged
            .entry((upload.job, upload.attempt))
            .or_default()
            .tables
            .entry(upload.table)
            .or_default()
            .extend(batches);
        Ok(())
    }

    fn finish_if_done(&self, s: &mut State, batch: u64) {
        // Finished batches stay in the map; skip them before counting their jobs.
        if s.batches
            .get(&batch)
            .is_none_or(|run| run.summary.is_some())
        {
            return;
        }
        let Ok(progress) = s.scheduler.progress(batch) else {
            return;
        };
        let Some(run) = s.batches.get_mut(&batch) else {
            return;
        };
        if !progress.finished() {
            return;
        }
        let failed: Vec<(u32, String)> = (0..run.jobs.len() as u32)
            .filter_map(|j| match s.scheduler.status(JobKey { batch, job: j }) {
                Some(JobStatus::Failed { error }) => Some((j, error.clone())),
                _ => None,
            })
            .collect();
        let summary = match aggregate(run, batch, &failed, self.store.as_ref()) {
            Ok(v) => v,
            Err(e) => json!({"error": format!("aggregating results: {e:#}")}),
        };
        if let Err(e) = self.store.save_summary(batch, &summary) {
            eprintln!("xt-coordinator: storing the summary of batch {batch}: {e}");
        }
        run.summary = Some(summary);
    }
}

/// Writes a finished batch's four tables and returns its summary.
fn aggregate(
    run: &mut BatchRun,
    batch: u64,
    failed: &[(u32, String)],
    store: &dyn StateStore,
) -> anyhow::Result<Value> {
    let dir = &store.batch_dir(batch);
    std::fs::create_dir_all(dir)?;
    let mut sums = PortfolioSum::new(run.dates.clone(), run.combos.len() + 1);
    let mut per_job = Vec::new();
    for j in 0..run.jobs.len() {
        let capital = run.jobs[j].capital;
        let result = store.load_result(batch, j as u32)?;
        let Some(result) = result else {
            // Given up after its attempts (or cancelled): error rows, a sleeve in cash.
            let error = failed
                .iter()
                .find(|(f, _)| *f as usize == j)
                .map_or("cancelled".to_string(), |(_, e)| e.clone());
            let mut w = TableWriter::new(&run.jobs[j].symbol, false, false);
            for p in &run.combos {
                w.push_error(p.json(), &error);
            }
            per_job.push(w.finish()?);
            sums.add_cash(capital);
            continue;
        };
        let sleeves = result.get("sleeves").cloned().unwrap_or_default();
        if sleeves.iter().all(|b| b.num_rows() == 0) {
            sums.add_cash(capital);
        }
        for b in &sleeves {
            use arrow::array::AsArray;
            let curve = b.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
            let dates = b.column(1).as_primitive::<arrow::datatypes::Date32Type>();
            let equity = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
            let mut start = 0;
            while start < b.num_rows() {
                let c = curve.value(start);
                let mut end = start;
                while end < b.num_rows() && curve.value(end) == c {
                    end += 1;
                }
                sums.add_sleeve(
                    c as usize,
                    capital,
                    &dates.values()[start..end],
                    &equity.values()[start..end],
                );
                start = end;
            }
        }
        let table = |name: &str,
                     schema: &arrow::datatypes::SchemaRef|
         -> anyhow::Result<Option<RecordBatch>> {
            match result.get(name) {
                None => Ok(None),
                Some(parts) => Ok(Some(arrow::compute::concat_batches(schema, parts)?)),
            }
        };
        let metrics = table("metrics", &xt_shared::schema::METRICS)?
            .unwrap_or_else(|| RecordBatch::new_empty(xt_shared::schema::METRICS.clone()));
        per_job.push(xt_worker::engine::tables::JobTables {
            metrics,
            trades: table("trades", &xt_shared::schema::TRADES)?,
            equity: table("equity", &xt_shared::schema::EQUITY)?,
        });
    }
    let (metrics, trades, equity) = concat_tables(per_job.into_iter())?;
    let (portfolio, portfolio_metrics) = finish_portfolio(&run.combos, run.spec.capital, &sums)?;
    let write = |name: &str, b: &RecordBatch| -> anyhow::Result<()> {
        let file = std::fs::File::create(dir.join(format!("{name}.parquet")))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, b.schema(), None)?;
        w.write(b)?;
        w.close()?;
        Ok(())
    };
    for (t, b) in [
        (Table::Metrics, &metrics),
        (Table::Trades, &trades),
        (Table::Equity, &equity),
        (Table::Portfolio, &portfolio),
    ] {
        if run.spec.wants(t) {
            write(t.name(), b)?;
        }
    }
    let summary = json!({
        "jobs": run.jobs.len(),
        "failed": failed.len(),
        "elapsed_seconds": run.started.elapsed().as_secs_f64(),
        "bars": run.bars,
        "portfolio": portfolio_metrics.iter().map(|(p, m)| (p.clone(), serde_json::to_value(m).unwrap_or(Value::Null))).collect::<serde_json::Map<_, _>>(),
    });
    Ok(summary)
}

#[tonic::async_trait]
impl Jobs for Coordinator {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let _ = r;
        let worker = self.lock().scheduler.register(Instant::now());
        Ok(Response::new(RegisterReply {
            worker,
            heartbeat_ms: self.heartbeat.as_millis() as u64,
        }))
    }

    async fn lease(&self, r: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let r = r.into_inner();
        let mut s = self.lock();
        let leases = s
            .scheduler
            .lease(r.worker, r.slots as usize, Instant::now())
            .map_err(|e| Status::not_found(e.to_string()))?;
        let mut jobs = Vec::with_capacity(leases.len());
        for l in leases {
            let run = s
                .batches
                .get(&l.key.batch)
                .ok_or_else(|| internal("lease of an unknown batch"))?;
            let spec_json =
                serde_json::to_string(&run.jobs[l.key.job as usize]).map_err(internal)?;
            jobs.push(JobLease {
                batch: l.key.batch,
                job: l.key.job,
                attempt: l.attempt,
                spec_json,
            });
        }
        Ok(Response::new(LeaseReply { jobs }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let cancelled = self
            .lock()
            .scheduler
            .heartbeat(r.into_inner().worker, Instant::now())
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(HeartbeatReply {
            cancelled: cancelled
                .into_iter()
                .map(|k| JobRef {
                    batch: k.batch,
                    job: k.job,
                })
                .collect(),
        }))
    }

    async fn complete(
        &self,
        r: Request<CompleteRequest>,
    ) -> Result<Response<CompleteReply>, Status> {
        let r = r.into_inner();
        let mut s = self.lock();
        let key = JobKey {
            batch: r.batch,
            job: r.job,
        };
        let open = matches!(
            s.scheduler.status(key),
            Some(JobStatus::Queued | JobStatus::Running { .. })
        );
        let staged = s
            .batches
            .get_mut(&r.batch)
            .and_then(|run| run.staged.remove(&(r.job, r.attempt)));
        if open {
            // Durable before the job counts as done: a completed result survives a crash.
            let record = JobRecord {
                bars: r.bars,
                error: (!r.error.is_empty()).then(|| r.error.clone()),
            };
            let tables = staged.unwrap_or_default().tables;
            self.store
                .save_result(r.batch, r.job, &tables, &record)
                .map_err(|e| Status::unavailable(format!("storing the result: {e}")))?;
        }
        let completion = if r.error.is_empty() {
            s.scheduler.complete(key, r.attempt, r.worker)
        } else {
            s.scheduler
                .complete_failed(key, r.attempt, r.worker, &r.error)
        };
        let accepted = completion == Completion::Accepted;
        if accepted && let Some(run) = s.batches.get_mut(&r.batch) {
            run.bars += r.bars;
        }
        self.finish_if_done(&mut s, r.batch);
        Ok(Response::new(CompleteReply { accepted }))
    }

    async fn fail(&self, r: Request<FailRequest>) -> Result<Response<FailReply>, Status> {
        let r = r.into_inner();
        let mut s = self.lock();
        let requeued = s.scheduler.fail(
            JobKey {
                batch: r.batch,
                job: r.job,
            },
            r.worker,
            &r.error,
        );
        if let Some(run) = s.batches.get_mut(&r.batch) {
            run.staged.remove(&(r.job, r.attempt));
        }
        self.finish_if_done(&mut s, r.batch);
        Ok(Response::new(FailReply { requeued }))
    }

    async fn drain(&self, r: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        self.lock().scheduler.drain(r.into_inner().worker);
        Ok(Response::new(DrainReply {}))
    }

    async fn submit(&self, r: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let spec: BatchSpec = serde_json::from_str(&r.into_inner().spec_json)
            .map_err(|e| Status::invalid_argument(format!("batch spec: {e}")))?;
        let this = self.clone();
        // Planning reads every member's bars: off the async threads.
        let (batch, jobs) = tokio::task::spawn_blocking(move || this.submit(spec))
            .await
            .map_err(internal)??;
        Ok(Response::new(SubmitReply { batch, jobs }))
    }

    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let id = r.into_inner().batch;
        let s = self.lock();
        let p = s
            .scheduler
            .progress(id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let run = s
            .batches
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("unknown batch {id}")))?;
        let elapsed = run.started.elapsed().as_secs_f64();
        let finished_jobs = p.done + p.failed + p.cancelled;
        let remaining = p.queued + p.running;
        let eta = if finished_jobs > 0 {
            elapsed / finished_jobs as f64 * remaining as f64
        } else {
            0.0
        };
        Ok(Response::new(StatusReply {
            elapsed_seconds: elapsed,
            eta_seconds: eta,
            queued: p.queued as u32,
            running: p.running as u32,
            done: p.done as u32,
            failed: p.failed as u32,
            cancelled: p.cancelled as u32,
            bars: run.bars,
            finished: run.summary.is_some(),
            summary_json: run
                .summary
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn cancel(&self, r: Request<CancelRequest>) -> Result<Response<CancelReply>, Status> {
        let id = r.into_inner().batch;
        let mut s = self.lock();
        s.scheduler
            .cancel(id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        self.finish_if_done(&mut s, id);
        Ok(Response::new(CancelReply {}))
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

    /// Receives one table of one job attempt; the descriptor's `cmd` is an [`Upload`].
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
        let upload: Upload = serde_json::from_slice(&descriptor.cmd)
            .map_err(|e| Status::invalid_argument(format!("descriptor: {e}")))?;
        let all: BoxStream<'static, Result<FlightData, arrow_flight::error::FlightError>> =
            stream::once(async move { Ok(first) })
                .chain(input.map_err(arrow_flight::error::FlightError::from))
                .boxed();
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(all)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.stage(upload, batches)?;
        Ok(Response::new(
            stream::once(async { Ok(PutResult::default()) }).boxed(),
        ))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
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
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented("do_get"))
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

/// Serves both services on `listener` until `shutdown` resolves, reaping expired leases.
pub async fn serve(
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let reaper = coordinator.clone();
    let period = coordinator.heartbeat;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            reaper.reap();
        }
    });
    tonic::transport::Server::builder()
        .add_service(
            xt_shared::wire::jobs_server::JobsServer::new(coordinator.clone())
                .max_decoding_message_size(64 << 20),
        )
        .add_service(
            arrow_flight::flight_service_server::FlightServiceServer::new(coordinator)
                .max_decoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(
            // Small request/response exchanges on loopback stall on Nagle and delayed ACKs
            // (tens of milliseconds per call) unless the sockets say otherwise.
            tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|s| {
                let _ = s.set_nodelay(true);
                s
            }),
            shutdown,
        )
        .await?;
    Ok(())
}
