//! Sending: finished results gathered into uploads and sent over Flight, retried until the
//! coordinator answers; a job whose sleeves are asked for on their own runs again.

use super::*;

/// Where the uploader sends results, and how it runs a job again whose sleeves the
/// coordinator asks for on their own.
pub(super) struct Uploader {
    pub(super) channel: Channel,
    pub(super) rerun: Rerun,
}

/// Runs a job again (on the worker's pool): its result, when it comes.
pub type Rerun = Arc<
    dyn Fn(JobLease) -> tokio::sync::oneshot::Receiver<Result<JobOutput, String>> + Send + Sync,
>;

/// Sends one upload; returns, for each attempt, whether it completed its job, and which to
/// send again on their own.
pub async fn upload(
    channel: &Channel,
    attempts: &[(Upload, &[(&str, RecordBatch)])],
) -> Result<UploadReply> {
    let data = upload_messages(attempts)?;
    let mut flight = FlightServiceClient::new(channel.clone()).max_encoding_message_size(256 << 20);
    let mut response = flight.do_put(stream::iter(data)).await?.into_inner();
    let mut reply = None;
    while let Some(r) = response.message().await? {
        reply = Some(serde_json::from_slice::<UploadReply>(&r.app_metadata)?);
    }
    reply.context("the coordinator did not answer the upload")
}

/// Whether an upload's error is the coordinator's answer about the upload itself (malformed:
/// the same bytes would be refused again) rather than a failure to get it there.
pub(super) fn is_final(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>().is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition
        )
    })
}

/// How long the uploader waits, after a result is ready, for others to go with it. Every
/// upload costs a round trip, a decode, a log record, wake-ups on both sides and, for the
/// sleeves summed into a part, a part's worth of bytes (a curve per date, whatever the
/// number of jobs in it): fewer, fuller uploads cost less per job. A worker with nothing
/// left to compute does not wait, so a batch's last results and a short batch's only ones
/// go at once, as do a batch's last results once the coordinator has none of it queued.
/// The value is the best of those measured (bench/PROFILE.md).
pub(super) const LINGER: Duration = Duration::from_millis(60);

/// Most attempts, and about the most bytes of tables, one upload carries.
pub(super) const UPLOAD_ATTEMPTS: usize = 256;
pub(super) const UPLOAD_BYTES: usize = 16 << 20;

/// Sends one upload of `outputs` (`parts`: the sleeves summed, see [`attempts_with_parts`]),
/// retrying with backoff until the coordinator answers; returns the attempts it asks to be
/// sent again on their own.
pub(super) async fn send_until_answered(
    channel: &Channel,
    outputs: &[(Upload, &JobOutput)],
    parts: Vec<Part>,
) -> Vec<u32> {
    let attempts = attempts_with_parts(outputs, parts);
    let attempts: Vec<(Upload, &[(&str, RecordBatch)])> = attempts
        .iter()
        .map(|(u, t)| (u.clone(), t.as_slice()))
        .collect();
    let mut delay = Duration::from_millis(50);
    loop {
        match upload(channel, &attempts).await {
            Ok(reply) => return reply.resend,
            Err(e) if is_final(&e) => {
                // The coordinator read the upload and refused it whole: sending it again
                // would get the same answer. Its jobs' leases expire and they run again.
                eprintln!(
                    "xt-worker: the coordinator refused {} job result(s): {e:#}",
                    attempts.len()
                );
                return Vec::new();
            }
            Err(e) => {
                eprintln!(
                    "xt-worker: sending {} job result(s): {e:#}; retrying in {delay:?}",
                    attempts.len()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Reports an attempt that produced no result, so the job is tried again. A lost report
/// costs nothing: the lease expires and the job runs again.
pub(super) async fn fail(channel: &Channel, worker: u64, lease: &JobLease, error: String) {
    let request = FailRequest {
        worker,
        batch: lease.batch,
        job: lease.job,
        attempt: lease.attempt,
        error,
    };
    let _ = WorkersClient::new(channel.clone()).fail(request).await;
}

/// Sends computed jobs as they come: each upload takes what finished while the previous
/// one was on its way and what finishes within [`LINGER`] after, so a busy worker sends many
/// per round trip and one with nothing left to compute sends at once. The wait is a timer
/// (cut short when the last job running finishes), not a wake-up per finished job: on
/// shared cores every wake-up of this task preempts a job. An upload's sleeves are summed
/// by the pool threads as its jobs finish (see [`Queued::push`]), so its part is ready when
/// it goes, a batch's last included. An upload is retried with backoff until the
/// coordinator answers: a finished result is never dropped while the worker runs.
pub(super) async fn run_uploader(
    to: Uploader,
    queue: Arc<UploadQueue>,
    unsent: Arc<AtomicUsize>,
    unsent_bytes: Arc<AtomicUsize>,
    wake_leasing: Arc<tokio::sync::Notify>,
    computing: Arc<AtomicUsize>,
    flush: Arc<tokio::sync::Notify>,
) {
    loop {
        let lone = loop {
            {
                let mut o = queue.lock();
                if !o.uploads.is_empty() {
                    o.idle = false;
                    break o.uploads.len() == 1;
                }
                if o.closed && computing.load(Ordering::SeqCst) == 0 {
                    return;
                }
                o.idle = true;
            }
            queue.pushed.notified().await;
        };
        if lone && computing.load(Ordering::SeqCst) > 0 {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = flush.notified() => {}
            }
        }
        let pending = queue
            .lock()
            .uploads
            .pop_front()
            .expect("only the uploader takes uploads");
        send_pending(&to, &pending).await;
        unsent.fetch_sub(pending.finished.len(), Ordering::SeqCst);
        unsent_bytes.fetch_sub(pending.bytes, Ordering::SeqCst);
        wake_leasing.notify_one();
    }
}

/// Sends one pending upload's results: those that failed reported apart, the others in one
/// upload, each batch's summed into its part; then whatever the coordinator asks for again
/// on its own (see [`run_uploader`]).
pub(super) async fn send_pending(to: &Uploader, pending: &PendingUpload) {
    let (channel, rerun) = (&to.channel, &to.rerun);
    // Indices of the pending upload's results in the upload: the failed ones are reported
    // apart.
    let mut at = vec![usize::MAX; pending.finished.len()];
    let mut outputs: Vec<(Upload, &JobOutput)> = Vec::new();
    let mut leases: Vec<&JobLease> = Vec::new();
    for (k, f) in pending.finished.iter().enumerate() {
        match &f.result {
            Ok(output) => {
                at[k] = outputs.len();
                leases.push(&f.lease);
                outputs.push((
                    Upload {
                        worker: f.worker,
                        batch: f.lease.batch,
                        job: f.lease.job,
                        attempt: f.lease.attempt,
                        bar_evaluations: output.bar_evaluations,
                        seconds: output.seconds,
                        error: output.error.clone(),
                        part: None,
                        data_hash: output.data_hash,
                    },
                    output,
                ))
            }
            Err(error) => fail(channel, f.worker, &f.lease, error.clone()).await,
        }
    }
    // Should a part's tables fail, its members (their sleeves dropped once summed) are
    // held back, to go again with their own below.
    let (parts, mut held_back) = match pending.parts.tables(|k| at[k]) {
        Ok(parts) => (parts, Vec::new()),
        Err(e) => {
            eprintln!("xt-worker: a part's tables: {e:#}");
            (Vec::new(), pending.parts.members().map(|k| at[k]).collect())
        }
    };
    let first: Vec<usize> = (0..outputs.len())
        .filter(|i| !held_back.contains(i))
        .collect();
    let sent: Vec<(Upload, &JobOutput)> = first.iter().map(|&i| outputs[i].clone()).collect();
    // The attempts of a part the coordinator could not take whole (one of its jobs done
    // meanwhile by another attempt: the sums cannot be split) go again, each with its
    // own sleeves. Only a part's members are asked for, and their sleeves were dropped
    // once summed, so each of these jobs runs again first: the same spec on the same bars
    // gives the same sleeves, bit for bit.
    if !sent.is_empty() {
        let resend = send_until_answered(channel, &sent, parts).await;
        held_back.extend(
            resend
                .into_iter()
                .filter_map(|i| first.get(i as usize).copied()),
        );
    }
    let reruns: Vec<_> = held_back
        .into_iter()
        .filter_map(|i| Some((&outputs.get(i)?.0, *leases.get(i)?)))
        .map(|(upload, lease)| (upload, lease, rerun(lease.clone())))
        .collect();
    let mut again: Vec<(Upload, JobOutput)> = Vec::new();
    for (upload, lease, result) in reruns {
        match result.await {
            Ok(Ok(output)) => again.push((upload.clone(), output)),
            Ok(Err(error)) => fail(channel, upload.worker, lease, error).await,
            Err(_) => {
                let error = "the job's second run was lost".to_string();
                fail(channel, upload.worker, lease, error).await
            }
        }
    }
    let mut again: Vec<(Upload, &JobOutput)> = again.iter().map(|(u, o)| (u.clone(), o)).collect();
    while !again.is_empty() {
        // No parts now: nothing is asked for again.
        let resend = send_until_answered(channel, &again, Vec::new()).await;
        let resend: std::collections::HashSet<usize> =
            resend.into_iter().map(|i| i as usize).collect();
        again = again
            .into_iter()
            .enumerate()
            .filter(|(i, _)| resend.contains(i))
            .map(|(_, o)| o)
            .collect();
    }
}

/// Sends `results` as the worker does the results of one upload (each of a batch summed into its
/// part, the sleeves dropped once summed; any the coordinator asks for again run again
/// with `rerun` and go on their own), in uploads of up to [`UPLOAD_ATTEMPTS`]: what a
/// worker's uploader does, for a caller that computed the results itself.
pub async fn upload_finished(
    channel: &Channel,
    rerun: Rerun,
    results: Vec<(u64, JobLease, Result<JobOutput, String>)>,
) {
    let mut queued = Queued::default();
    for (worker, lease, result) in results {
        let bytes = result.as_ref().map_or(0, JobOutput::bytes);
        queued.push(
            Finished {
                worker,
                lease,
                result,
            },
            bytes,
        );
    }
    let to = Uploader {
        channel: channel.clone(),
        rerun,
    };
    for pending in queued.uploads {
        send_pending(&to, &pending).await;
    }
}
