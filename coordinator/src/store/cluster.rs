//! The distributed mode's store: what a new leader needs to resume in etcd, every byte of
//! results in an object store.
//!
//! etcd (keys under `xt/`, each write fenced by the leader's election key, see
//! [`crate::leader`]):
//! - `batches/<id>`: an accepted batch (tenant, owner, where its spec and jobs are);
//! - `results/<id>/<leader>-<seq>`: one accepted result group: its object and the jobs it
//!   completes, with their records (a group holds many jobs: a 5,000-job batch costs a few
//!   hundred transactions, not 5,000);
//! - `finished/<id>`: where the summary and finished tables are; `cancelled/<id>`.
//!
//! Objects (immutable, written before the etcd key that makes them count, named with the
//! writing leader's revision so that two leaders never write the same name):
//! `batches/<id>/accepted-<leader>.json`, `batches/<id>/groups/<leader>-<seq>.xtr` (one
//! record of the embedded store's log format), `batches/<id>/summary-<leader>.json` and
//! `batches/<id>/tables-<leader>/<name>.parquet`; the audit log's records (`audit.rs`). An
//! object a deposed leader wrote is never named by etcd: an orphan, harmless.
//!
//! The trait is synchronous and called from blocking threads: the store runs its I/O on a
//! small runtime of its own and waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::*;
use crate::leader::Fence;

mod restore;
mod retention;

/// Where in etcd the cluster's keys are.
pub const PREFIX: &str = "xt/";

/// Keys read a range at a time when a leader resumes.
const SCAN_PAGE: i64 = 1_000;

/// Writes between two compactions of etcd's history.
const COMPACT_EVERY: u64 = 1_000;

#[derive(Debug, Serialize, Deserialize)]
struct BatchEntry {
    accepted: String,
    tenant: String,
    owner: String,
    submitted_ms: u64,
    jobs: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupEntry {
    object: String,
    /// Each job this group completes, its place in the group and its record.
    jobs: Vec<(u32, usize, JobRecord)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FinishedEntry {
    summary: String,
    tables: String,
    /// Once compacted: the object holding its jobs' records (the `results/` keys gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<String>,
}

/// A result object read back: its name, the tables decoded of it, and those tables.
type ReadBack = (String, Vec<String>, Arc<ResultGroup>);

#[derive(Debug, Clone)]
struct Located {
    object: String,
    k: usize,
    record: JobRecord,
}

pub struct ClusterStore {
    rt: Option<tokio::runtime::Runtime>,
    etcd: Client,
    pub(super) objects: Arc<dyn ObjectStore>,
    /// The results URL's path: every object is under it.
    base: ObjectPath,
    fence: Fence,
    pub(super) seq: AtomicU64,
    writes: AtomicU64,
    index: Mutex<HashMap<u64, HashMap<u32, Located>>>,
    finished: Mutex<HashMap<u64, FinishedEntry>>,
    /// The last few result objects read back, with the tables decoded of them.
    read: Mutex<Vec<ReadBack>>,
    /// Where finished tables are written before they are uploaded whole.
    scratch: PathBuf,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("objects", &self.objects.to_string())
            .field("base", &self.base)
            .field("fence", &self.fence)
            .finish()
    }
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        // Dropped from async code too, where a runtime may not block on its shutdown.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update completes before its guard drops; a poisoned lock holds good data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(parts: &[&str]) -> String {
    format!("{PREFIX}{}", parts.join("/"))
}

fn batch_key(kind: &str, id: u64) -> String {
    key(&[kind, &format!("{id:020}")])
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl ClusterStore {
    /// The store of the leader holding `fence`, with etcd at `endpoints` and objects in
    /// `results` (see [`object_store_at`]).
    pub fn open(
        endpoints: &[String],
        results: (Arc<dyn ObjectStore>, ObjectPath),
        fence: Fence,
        scratch: PathBuf,
    ) -> anyhow::Result<Self> {
        let (objects, base) = results;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("xt-store")
            .enable_all()
            .build()?;
        let endpoints = endpoints.to_vec();
        let etcd = futures::executor::block_on(
            rt.spawn(async move { xt_wire::leader::etcd(&endpoints).await }),
        )??;
        std::fs::create_dir_all(&scratch)?;
        Ok(ClusterStore {
            rt: Some(rt),
            etcd,
            objects,
            base,
            fence,
            seq: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            index: Mutex::default(),
            finished: Mutex::default(),
            read: Mutex::default(),
            scratch,
        })
    }

    /// Runs `f` on the store's runtime and waits for it.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let rt = self
            .rt
            .as_ref()
            .expect("the runtime lives as long as the store");
        futures::executor::block_on(rt.spawn(f)).map_err(other)?
    }

    pub(super) fn object(&self, name: &str) -> ObjectPath {
        let mut path = self.base.clone();
        for part in name.split('/') {
            path = path.clone().join(part);
        }
        path
    }

    /// Writes `bytes` as object `name`, failing if it exists.
    pub(super) fn put_new(&self, name: &str, bytes: impl Into<PutPayload>) -> io::Result<()> {
        let (objects, path, payload) = (self.objects.clone(), self.object(name), bytes.into());
        self.run(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            objects
                .put_opts(&path, payload, opts)
                .await
                .map_err(|e| other(format!("writing {path}: {e}")))?;
            Ok(())
        })
    }

    fn get(&self, name: &str) -> io::Result<Option<bytes::Bytes>> {
        let (objects, path) = (self.objects.clone(), self.object(name));
        self.run(async move {
            match objects.get(&path).await {
                Ok(r) => Ok(Some(
                    r.bytes()
                        .await
                        .map_err(|e| other(format!("reading {path}: {e}")))?,
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(other(format!("reading {path}: {e}"))),
            }
        })
    }

    /// Applies `ops` if this coordinator still leads and every one of `also` holds. A
    /// failed fence deposes it: the error says so, and nothing was written.
    fn fenced(&self, also: Vec<Compare>, ops: Vec<TxnOp>) -> io::Result<()> {
        if self.fence.is_deposed() {
            return Err(deposed());
        }
        let mut compares = vec![self.fence.compare()];
        compares.extend(also);
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(vec![TxnOp::get(self.fence.key.clone(), None)]);
        let mut etcd = self.etcd.clone();
        let (succeeded, still_leads, revision) = self.run(async move {
            let r = etcd
                .txn(txn)
                .await
                .map_err(|e| other(format!("etcd: {e}")))?;
            let still_leads = r.op_responses().iter().any(|op| match op {
                TxnOpResponse::Get(g) => !g.kvs().is_empty(),
                _ => false,
            });
            Ok((
                r.succeeded(),
                still_leads,
                r.header().map_or(0, |h| h.revision()),
            ))
        })?;
        if succeeded {
            self.compact_now_and_then(revision);
            return Ok(());
        }
        // Our election key still there, and created when we were elected: it was one of
        // the other comparisons that failed.
        if still_leads && !self.fence.is_deposed() {
            return Err(other("a key this write expects to be new exists already"));
        }
        self.fence
            .depose("a fenced write failed: another coordinator has been elected");
        Err(deposed())
    }

    /// Compacts etcd's history up to `revision` once every [`COMPACT_EVERY`] writes: the
    /// keys are only ever created, so what it frees is the history of other writers and of
    /// the election, and the database stays small over months.
    fn compact_now_and_then(&self, revision: i64) {
        if !(self.writes.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(COMPACT_EVERY)
            || revision < 2
        {
            return;
        }
        let mut etcd = self.etcd.clone();
        if let Some(rt) = &self.rt {
            rt.spawn(async move {
                let _ = etcd.compact(revision - 1, None).await;
            });
        }
    }

    /// Every key under `prefix` with its value, a page at a time.
    fn scan(&self, prefix: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut etcd = self.etcd.clone();
        let (prefix, end) = (prefix.to_string(), prefix_end(prefix));
        self.run(async move {
            let mut out = Vec::new();
            let mut from = prefix.into_bytes();
            loop {
                let r = etcd
                    .get(
                        from.clone(),
                        Some(
                            GetOptions::new()
                                .with_range(end.clone())
                                .with_limit(SCAN_PAGE),
                        ),
                    )
                    .await
                    .map_err(|e| other(format!("etcd: {e}")))?;
                for kv in r.kvs() {
                    out.push((
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.value().to_vec(),
                    ));
                }
                match (r.more(), r.kvs().last()) {
                    (true, Some(last)) => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => return Ok(out),
                }
            }
        })
    }

    pub(super) fn leader_tag(&self) -> String {
        format!("{:020}", self.fence.revision)
    }
}

fn deposed() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "this coordinator no longer leads: another has been elected",
    )
}

/// The id of a `<kind>/<id>...` key.
fn id_of(key: &str, kind: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?
        .strip_prefix(kind)?
        .strip_prefix('/')?
        .get(..20)?
        .parse()
        .ok()
}

impl StateStore for ClusterStore {
    fn save_strategy(&self, strategy: &SavedStrategy) -> io::Result<()> {
        let k = key(&[
            "strategies",
            &SavedStrategy::key(&strategy.tenant, &strategy.hash),
        ]);
        let json = serde_json::to_vec(strategy).map_err(other)?;
        self.fenced(vec![], vec![TxnOp::put(k, json, None)])
    }

    fn delete_strategy(&self, tenant: &str, hash: &str) -> io::Result<()> {
        let k = key(&["strategies", &SavedStrategy::key(tenant, hash)]);
        self.fenced(vec![], vec![TxnOp::delete(k, None)])
    }

    fn load_strategies(&self) -> io::Result<Vec<SavedStrategy>> {
        self.scan(&key(&["strategies/"]))?
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).map_err(other))
            .collect()
    }

    fn save_batch(&self, id: u64, record: &AcceptedBatch) -> io::Result<()> {
        let object = format!("batches/{id}/accepted-{}.json", self.leader_tag());
        self.put_new(&object, serde_json::to_vec(record).map_err(other)?)?;
        let entry = BatchEntry {
            accepted: object,
            tenant: record.tenant.clone(),
            owner: record.owner.clone(),
            submitted_ms: record.submitted_ms,
            jobs: record.jobs.len(),
        };
        let k = batch_key("batches", id);
        self.fenced(
            vec![Compare::create_revision(k.clone(), CompareOp::Equal, 0)],
            vec![TxnOp::put(
                k,
                serde_json::to_vec(&entry).map_err(other)?,
                None,
            )],
        )
    }

    fn save_results(&self, id: u64, group: &ResultGroup) -> io::Result<()> {
        let fresh: Vec<(u32, usize, JobRecord)> = {
            let index = lock(&self.index);
            let stored = index.get(&id);
            let mut seen = std::collections::HashSet::new();
            group
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, (job, _))| {
                    stored.is_none_or(|s| !s.contains_key(job)) && seen.insert(*job)
                })
                .map(|(k, (job, record))| (*job, k, record.clone()))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let name = format!(
            "{}-{:010}",
            self.leader_tag(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let object = format!("batches/{id}/groups/{name}.xtr");
        let [head, streams] = encode(group)?;
        self.put_new(
            &object,
            PutPayload::from_iter([bytes::Bytes::from(head), bytes::Bytes::from(streams)]),
        )?;
        let entry = GroupEntry {
            object: object.clone(),
            jobs: fresh,
        };
        let k = key(&["results", &format!("{id:020}"), &name]);
        self.fenced(
            vec![],
            vec![TxnOp::put(
                k,
                serde_json::to_vec(&entry).map_err(other)?,
                None,
            )],
        )?;
        let mut index = lock(&self.index);
        let jobs = index.entry(id).or_default();
        for (job, k, record) in entry.jobs {
            jobs.entry(job).or_insert(Located {
                object: object.clone(),
                k,
                record,
            });
        }
        Ok(())
    }

    fn load_result(
        &self,
        id: u64,
        job: u32,
        wanted: &[&str],
    ) -> io::Result<Option<(JobRecord, Tables)>> {
        let Some(at) = lock(&self.index)
            .get(&id)
            .and_then(|jobs| jobs.get(&job))
            .cloned()
        else {
            return Ok(None);
        };
        let cached = lock(&self.read)
            .iter()
            .find(|(o, names, _)| *o == at.object && names.iter().eq(wanted))
            .map(|(_, _, g)| g.clone());
        let group = match cached {
            Some(g) => g,
            None => {
                let bytes = self.get(&at.object)?.ok_or_else(|| {
                    other(format!("batch {id} job {job}: {} is missing", at.object))
                })?;
                let g = Arc::new(
                    decode(parse_record(bytes.to_vec())?, wanted)
                        .map_err(|e| other(format!("batch {id} job {job}: {e}")))?,
                );
                let mut read = lock(&self.read);
                if read.len() == READ_CACHE {
                    read.remove(0);
                }
                let names = wanted.iter().map(|n| n.to_string()).collect();
                read.push((at.object.clone(), names, g.clone()));
                g
            }
        };
        Ok(Some((at.record, group.tables_of(at.k))))
    }

    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()> {
        let entry = FinishedEntry {
            summary: format!("batches/{id}/summary-{}.json", self.leader_tag()),
            tables: format!("batches/{id}/tables-{}", self.leader_tag()),
            done: None,
        };
        self.put_new(
            &entry.summary,
            serde_json::to_vec_pretty(summary).map_err(other)?,
        )?;
        self.fenced(
            vec![],
            vec![TxnOp::put(
                batch_key("finished", id),
                serde_json::to_vec(&entry).map_err(other)?,
                None,
            )],
        )?;
        lock(&self.finished).insert(id, entry);
        Ok(())
    }

    fn save_cancelled(&self, id: u64) -> io::Result<()> {
        self.fenced(
            vec![],
            vec![TxnOp::put(batch_key("cancelled", id), "", None)],
        )
    }

    fn append_audit(&self, record: &serde_json::Value) -> io::Result<()> {
        self.put_audit(record)
    }

    fn audit(&self) -> io::Result<Vec<serde_json::Value>> {
        self.read_audit()
    }

    fn load_all(&self) -> io::Result<Vec<RestoredBatch>> {
        self.restore_all()
    }

    fn create_table(
        &self,
        id: u64,
        name: &str,
        schema: SchemaRef,
    ) -> io::Result<Box<dyn TableSink>> {
        let temporary = self.scratch.join(format!(
            "{id}-{name}-{}.parquet",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(TABLE_ROW_GROUP))
            .build();
        let writer =
            parquet::arrow::ArrowWriter::try_new(File::create(&temporary)?, schema, Some(props))
                .map_err(other)?;
        Ok(Box::new(ObjectSink {
            writer,
            temporary,
            objects: self.objects.clone(),
            path: self.object(&format!(
                "batches/{id}/tables-{}/{name}.parquet",
                self.leader_tag()
            )),
            rt: self.rt.as_ref().map(|r| r.handle().clone()),
        }))
    }

    fn compact(&self, id: u64, jobs: usize) -> io::Result<()> {
        self.compact_results(id, jobs)
    }

    fn delete_batch(&self, id: u64) -> io::Result<()> {
        self.delete_all(id)
    }

    fn open_table(&self, id: u64, name: &str) -> io::Result<Option<TableReader>> {
        let Some(finished) = lock(&self.finished).get(&id).cloned() else {
            return Ok(None);
        };
        let Some(bytes) = self.get(&format!("{}/{name}.parquet", finished.tables))? else {
            return Ok(None);
        };
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(other)?;
        let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let reader = builder
            .with_batch_size(TABLE_READ_ROWS)
            .build()
            .map_err(other)?;
        Ok(Some(TableReader {
            schema: arrow::record_batch::RecordBatchReader::schema(&reader),
            rows,
            batches: Box::new(reader),
        }))
    }
}
