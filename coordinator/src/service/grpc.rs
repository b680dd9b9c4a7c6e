//! The gRPC services, `Workers` (what workers call) and `Batches` (what clients call): thin
//! adapters from requests to the coordinator's methods.

use super::*;

#[tonic::async_trait]
impl Workers for Coordinator {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let member = r.into_inner().member;
        let (mut s, at) = (self.lock(), now());
        let worker = s.scheduler.register(at);
        if !member.is_empty() {
            s.members.insert(member, (worker, at));
        }
        drop(s);
        Ok(Response::new(RegisterReply {
            worker,
            heartbeat_ms: self.heartbeat.as_millis() as u64,
        }))
    }

    async fn lease(&self, r: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let r = r.into_inner();
        let jobs = waited(
            &self.work,
            r.wait_ms,
            || self.lease_now(r.worker, r.slots as usize),
            |jobs| !jobs.is_empty(),
        )
        .await?;
        // The specs go as JSON, serialized here, outside the state lock.
        let jobs = jobs
            .into_iter()
            .map(|l| {
                Ok(JobLease {
                    batch: l.key.batch,
                    job: l.key.job,
                    attempt: l.attempt,
                    spec_json: serde_json::to_string(&l.batch.jobs[l.key.job as usize])
                        .map_err(internal)?,
                    last: l.last,
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(LeaseReply { jobs }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let cancelled = self
            .lock()
            .scheduler
            .heartbeat(r.into_inner().worker, now())
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

    async fn fail(&self, r: Request<FailRequest>) -> Result<Response<FailReply>, Status> {
        let r = r.into_inner();
        let key = JobKey {
            batch: r.batch,
            job: r.job,
        };
        let requeued = self.fail_attempt(&mut self.lock(), key, r.worker, &r.error);
        Ok(Response::new(FailReply { requeued }))
    }

    async fn drain(&self, r: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        self.lock().scheduler.drain(r.into_inner().worker);
        // A lease call of this worker still waiting answers now, with nothing.
        self.work.notify_waiters();
        Ok(Response::new(DrainReply {}))
    }
}

#[tonic::async_trait]
impl Batches for Coordinator {
    async fn submit(&self, r: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let r = r.into_inner();
        let spec: BatchSpec = serde_json::from_str(&r.spec_json)
            .map_err(|e| Status::invalid_argument(format!("batch spec: {e}")))?;
        let this = self.clone();
        // Planning reads every member's dates: off the async threads.
        let (batch, jobs) =
            tokio::task::spawn_blocking(move || this.submit(spec, &r.tenant, &r.owner))
                .await
                .map_err(internal)??;
        Ok(Response::new(SubmitReply { batch, jobs }))
    }

    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let r = r.into_inner();
        let status = waited(
            &self.finished,
            r.wait_ms,
            || self.status_of(&self.lock(), r.batch),
            |s| s.summary.is_some(),
        )
        .await?;
        Ok(Response::new(status.into()))
    }

    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let r = r.into_inner();
        let s = self.lock();
        let mut ids: Vec<u64> = s
            .batches
            .iter()
            .filter(|(_, run)| r.tenant.is_empty() || run.batch.tenant == r.tenant)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let total = ids.len() as u32;
        let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) } as usize;
        let batches = ids
            .into_iter()
            .skip(r.offset as usize)
            .take(limit)
            .map(|id| self.status_of(&s, id).map(StatusReply::from))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListReply { batches, total }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let s = self.lock();
        let mut reply = StatsReply {
            workers: s.scheduler.workers() as u32,
            batches: s.batches.len() as u32,
            duration_bounds: s.durations.bounds.clone(),
            duration_counts: s.durations.counts.clone(),
            duration_sum: s.durations.sum,
            duration_count: s.durations.count,
            ..StatsReply::default()
        };
        for (id, run) in &s.batches {
            if let Ok(p) = s.scheduler.progress(*id) {
                reply.queued += p.queued as u64;
                reply.running += p.running as u64;
                reply.done += p.done as u64;
                reply.failed += p.failed as u64;
                reply.cancelled += p.cancelled as u64;
            }
            reply.bar_evaluations += run.bar_evaluations;
            if run.phase.summary().is_none() {
                reply.batches_running += 1;
            }
        }
        Ok(Response::new(reply))
    }

    async fn universes(
        &self,
        _: Request<UniversesRequest>,
    ) -> Result<Response<UniversesReply>, Status> {
        let roots = self.config.data_roots.clone().unwrap_or_default().dirs;
        let files = tokio::task::spawn_blocking(move || xt_shared::open::universe_files(&roots))
            .await
            .map_err(internal)?;
        Ok(Response::new(UniversesReply { files }))
    }

    async fn cancel(&self, r: Request<CancelRequest>) -> Result<Response<CancelReply>, Status> {
        let id = r.into_inner().batch;
        if !self.lock().batches.contains_key(&id) {
            return Err(Status::not_found(format!("no batch {id}")));
        }
        // Durable before it is acknowledged, as a submission is.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save_cancelled(id))
            .await
            .map_err(internal)?
            .map_err(|e| Status::unavailable(format!("storing the cancellation: {e}")))?;
        let mut s = self.lock();
        s.scheduler
            .cancel(id)
            .map_err(|e| Status::not_found(e.to_string()))?;
        self.finish_if_done(&mut s, id);
        Ok(Response::new(CancelReply {}))
    }

    async fn save_strategy(
        &self,
        r: Request<SaveStrategyRequest>,
    ) -> Result<Response<SaveStrategyReply>, Status> {
        let r = r.into_inner();
        let this = self.clone();
        let saved =
            tokio::task::spawn_blocking(move || this.save_strategy(&r.tenant, &r.owner, &r.source))
                .await
                .map_err(internal)??;
        Ok(Response::new(SaveStrategyReply {
            strategy_json: serde_json::to_string(&saved).map_err(internal)?,
        }))
    }

    async fn list_strategies(
        &self,
        r: Request<ListStrategiesRequest>,
    ) -> Result<Response<ListStrategiesReply>, Status> {
        let saved = self.saved_strategies(&r.into_inner().tenant);
        let strategy_json = saved
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        Ok(Response::new(ListStrategiesReply { strategy_json }))
    }

    async fn get_strategy(
        &self,
        r: Request<GetStrategyRequest>,
    ) -> Result<Response<GetStrategyReply>, Status> {
        let r = r.into_inner();
        let saved = self.saved_strategy(&r.tenant, &r.reference)?;
        Ok(Response::new(GetStrategyReply {
            strategy_json: serde_json::to_string(&saved).map_err(internal)?,
        }))
    }

    async fn delete_strategy(
        &self,
        r: Request<DeleteStrategyRequest>,
    ) -> Result<Response<DeleteStrategyReply>, Status> {
        let r = r.into_inner();
        let this = self.clone();
        let deleted =
            tokio::task::spawn_blocking(move || this.delete_strategy(&r.tenant, &r.reference))
                .await
                .map_err(internal)??;
        Ok(Response::new(DeleteStrategyReply {
            deleted: deleted as u32,
        }))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteReply>, Status> {
        let id = r.into_inner().batch;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.delete_batch(id))
            .await
            .map_err(internal)??;
        Ok(Response::new(DeleteReply {}))
    }

    async fn audit(&self, r: Request<AuditRequest>) -> Result<Response<AuditReply>, Status> {
        let record: serde_json::Value = serde_json::from_str(&r.into_inner().record_json)
            .map_err(|e| Status::invalid_argument(format!("record_json: {e}")))?;
        if !record.is_object() {
            return Err(Status::invalid_argument("record_json: not a JSON object"));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.append_audit(&record))
            .await
            .map_err(internal)?
            .map_err(|e| Status::unavailable(format!("storing the audit record: {e}")))?;
        Ok(Response::new(AuditReply {}))
    }

    async fn audit_log(
        &self,
        r: Request<AuditLogRequest>,
    ) -> Result<Response<AuditLogReply>, Status> {
        let r = r.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.audit())
            .await
            .map_err(internal)?
            .map_err(|e| Status::unavailable(format!("reading the audit log: {e}")))?;
        // A tenant sees its own records only; refused tokens name no tenant.
        let records_json = records
            .iter()
            .rev()
            .filter(|rec| rec["tenant"].as_str() == Some(r.tenant.as_str()))
            .take(limit)
            .map(|rec| rec.to_string())
            .collect();
        Ok(Response::new(AuditLogReply { records_json }))
    }
}

impl From<BatchView> for StatusReply {
    fn from(v: BatchView) -> Self {
        let p = v.progress;
        StatusReply {
            elapsed_seconds: v.elapsed_seconds,
            eta_seconds: v.eta_seconds,
            queued: p.queued as u32,
            running: p.running as u32,
            done: p.done as u32,
            failed: p.failed as u32,
            cancelled: p.cancelled as u32,
            bar_evaluations: v.bar_evaluations,
            finished: v.summary.is_some(),
            summary_json: v.summary.map(|s| s.to_string()).unwrap_or_default(),
            batch: v.id,
            tenant: v.tenant,
            owner: v.owner,
            name: v.name.unwrap_or_default(),
            submitted_ms: v.submitted_ms,
            jobs: v.jobs as u32,
        }
    }
}
