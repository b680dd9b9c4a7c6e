//! The embedded store: batches in a local directory, result groups appended to a log per
//! batch, finished tables as Parquet.

use super::*;

/// A finished table of the embedded store: Parquet under a temporary name, renamed when
/// committed.
pub(super) struct ParquetSink {
    pub(super) writer: parquet::arrow::ArrowWriter<File>,
    pub(super) temporary: PathBuf,
    pub(super) path: PathBuf,
}

impl TableSink for ParquetSink {
    fn write(&mut self, rows: &RecordBatch) -> io::Result<()> {
        self.writer.write(rows).map_err(other)
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        self.writer.close().map_err(other)?;
        std::fs::rename(&self.temporary, &self.path)
    }
}

/// Where the embedded store rooted at `root` keeps batch `id`: `batch.json`, `results.log`,
/// `summary.json` and the finished tables as `<name>.parquet`.
/// A compacted batch's job records (see [`StateStore::compact`]), its `results.log` gone.
const DONE: &str = "done.json";

pub fn batch_dir(root: &Path, id: u64) -> PathBuf {
    root.join(id.to_string())
}

/// Batches under `root/<id>/`: `batch.json`, written when the batch is accepted;
/// `results.log`, to which each group of accepted results (an upload's jobs of the batch)
/// is appended as one record; and the finished tables with `summary.json`. One append per
/// group rather than a file per table: creating and renaming thousands of small files cost
/// more CPU than the jobs themselves.
///
/// A record is `XTR2`, the body's length (u64 LE), the body, and the length again. The body
/// is a JSON header line (each job and its [`JobRecord`]; each table's name, size and the
/// jobs' spans of rows in it) followed by each table as an Arrow IPC stream. A process
/// killed mid-append leaves a short last record, which the next open cuts off: its jobs run
/// again. A part (see [`JobRecord::part`]) and all its jobs are in one record, so they are
/// kept or cut together. Nothing is fsynced: a killed process loses nothing the kernel
/// already has; surviving a power loss is the etcd store's job.
/// The directory of saved strategies, beside the batches' directories.
const STRATEGIES: &str = "strategies";

#[derive(Debug)]
pub struct EmbeddedStore {
    root: PathBuf,
    logs: Mutex<HashMap<u64, ResultLog>>,
    /// Appends to `audit.jsonl`, one record a line, one writer at a time.
    audit: Mutex<()>,
}

impl EmbeddedStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(EmbeddedStore {
            root,
            logs: Mutex::default(),
            audit: Mutex::default(),
        })
    }

    pub(super) fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ResultLog>> {
        // Each log update completes before the guard drops; a poisoned lock holds good data.
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a batch's log, indexing its records and cutting off a torn last one.
    pub(super) fn open_log(&self, id: u64) -> io::Result<ResultLog> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(self.batch_dir(id).join("results.log"))?;
        let file_len = file.metadata()?.len();
        let mut index = HashMap::new();
        let mut offset = 0;
        while let Some(r) = read_record(&file, offset, file_len).map_err(|e| {
            other(format!(
                "{}: {e}",
                self.batch_dir(id).join("results.log").display()
            ))
        })? {
            for (k, (job, record)) in r.header.jobs.into_iter().enumerate() {
                // A late duplicate of a job already stored: the first record stays the result.
                index.entry(job).or_insert((offset, k, record));
            }
            offset = r.next;
        }
        if offset < file_len {
            file.set_len(offset)?;
        }
        Ok(ResultLog {
            file,
            len: offset,
            index,
            read: Vec::new(),
        })
    }

    pub(super) fn with_log<T>(
        &self,
        id: u64,
        f: impl FnOnce(&mut ResultLog) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut logs = self.logs();
        let log = match logs.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.open_log(id)?),
        };
        f(log)
    }
}

impl StateStore for EmbeddedStore {
    fn save_strategy(&self, strategy: &SavedStrategy) -> io::Result<()> {
        let dir = self.root.join(STRATEGIES);
        std::fs::create_dir_all(&dir)?;
        let name = SavedStrategy::key(&strategy.tenant, &strategy.hash);
        let json = serde_json::to_vec_pretty(strategy).map_err(other)?;
        write_atomic(&dir.join(format!("{name}.json")), &json)
    }

    fn delete_strategy(&self, tenant: &str, hash: &str) -> io::Result<()> {
        let name = SavedStrategy::key(tenant, hash);
        match std::fs::remove_file(self.root.join(STRATEGIES).join(format!("{name}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn load_strategies(&self) -> io::Result<Vec<SavedStrategy>> {
        let entries = match std::fs::read_dir(self.root.join(STRATEGIES)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(serde_json::from_slice(&std::fs::read(&path)?).map_err(other)?);
            }
        }
        Ok(out)
    }

    fn append_audit(&self, record: &serde_json::Value) -> io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(record).map_err(other)?;
        line.push(b'\n');
        let _one = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(self.root.join("audit.jsonl"))?;
        // A line torn by a crash is ended first, so that it does not swallow this one.
        let len = file.metadata()?.len();
        let mut last = [b'\n'];
        if len > 0 {
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut last, len - 1)?;
        }
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
        file.write_all(&line)?;
        file.sync_data()
    }

    fn audit(&self) -> io::Result<Vec<serde_json::Value>> {
        let text = match std::fs::read_to_string(self.root.join("audit.jsonl")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // A record torn by a crash mid-append is the last line: skipped.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn save_batch(&self, id: u64, record: &AcceptedBatch) -> io::Result<()> {
        std::fs::create_dir_all(self.batch_dir(id))?;
        let json = serde_json::to_vec(record).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("batch.json"), &json)
    }

    fn save_results(&self, id: u64, group: &ResultGroup) -> io::Result<()> {
        // Encoded outside the log's lock.
        let pieces = encode(group)?;
        self.with_log(id, |log| {
            // What is stored already, or given twice, is not indexed again; a record of
            // nothing new is not written.
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<bool> = group
                .jobs
                .iter()
                .map(|(job, _)| !log.index.contains_key(job) && seen.insert(*job))
                .collect();
            if !fresh.iter().any(|&f| f) {
                return Ok(());
            }
            pieces
                .iter()
                .try_for_each(|p| io::Write::write_all(&mut log.file, p))
                .inspect_err(|_| {
                    // Cut a partial append off, so the next record starts on a boundary.
                    let _ = log.file.set_len(log.len);
                })?;
            for (k, ((job, record), fresh)) in group.jobs.iter().zip(fresh).enumerate() {
                if fresh {
                    log.index.insert(*job, (log.len, k, record.clone()));
                }
            }
            log.len += pieces.iter().map(|p| p.len() as u64).sum::<u64>();
            Ok(())
        })
    }

    fn load_result(
        &self,
        id: u64,
        job: u32,
        wanted: &[&str],
    ) -> io::Result<Option<(JobRecord, Tables)>> {
        self.with_log(id, |log| {
            let Some((offset, k, record)) = log.index.get(&job).cloned() else {
                return Ok(None);
            };
            let group = match log
                .read
                .iter()
                .find(|(at, names, _)| *at == offset && names.iter().eq(wanted))
            {
                Some((_, _, g)) => g.clone(),
                None => {
                    let r = read_record(&log.file, offset, log.len)?.ok_or_else(|| {
                        other(format!("batch {id} job {job}: result record unreadable"))
                    })?;
                    let g = std::sync::Arc::new(
                        decode(r, wanted)
                            .map_err(|e| other(format!("batch {id} job {job}: {e}")))?,
                    );
                    if log.read.len() == READ_CACHE {
                        log.read.remove(0);
                    }
                    let names = wanted.iter().map(|n| n.to_string()).collect();
                    log.read.push((offset, names, g.clone()));
                    g
                }
            };
            Ok(Some((record, group.tables_of(k))))
        })
    }

    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(summary).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("summary.json"), &json)
    }

    fn save_cancelled(&self, id: u64) -> io::Result<()> {
        std::fs::create_dir_all(self.batch_dir(id))?;
        write_atomic(&self.batch_dir(id).join("cancelled"), b"")
    }

    fn load_all(&self) -> io::Result<Vec<RestoredBatch>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(entry.path().join("batch.json")) else {
                continue;
            };
            let record: AcceptedBatch = serde_json::from_slice(&bytes).map_err(other)?;
            // A compacted batch's records are in done.json, its log gone.
            let done = match std::fs::read(entry.path().join(DONE)) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(other)?,
                Err(_) => self.with_log(id, |log| Ok(log.records(record.jobs.len())))?,
            };
            let summary = std::fs::read(entry.path().join("summary.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.push(RestoredBatch {
                id,
                record,
                done,
                summary,
                cancelled: entry.path().join("cancelled").exists(),
            });
        }
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    fn compact(&self, id: u64, jobs: usize) -> io::Result<()> {
        let done = self.with_log(id, |log| Ok(log.records(jobs)))?;
        let dir = self.batch_dir(id);
        write_atomic(&dir.join(DONE), &serde_json::to_vec(&done).map_err(other)?)?;
        self.logs().remove(&id);
        match std::fs::remove_file(dir.join("results.log")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn delete_batch(&self, id: u64) -> io::Result<()> {
        self.logs().remove(&id);
        match std::fs::remove_dir_all(self.batch_dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn create_table(
        &self,
        id: u64,
        name: &str,
        schema: SchemaRef,
    ) -> io::Result<Box<dyn TableSink>> {
        let dir = self.batch_dir(id);
        std::fs::create_dir_all(&dir)?;
        let temporary = dir.join(format!("{name}.parquet.tmp"));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(TABLE_ROW_GROUP))
            .build();
        let writer =
            parquet::arrow::ArrowWriter::try_new(File::create(&temporary)?, schema, Some(props))
                .map_err(other)?;
        Ok(Box::new(ParquetSink {
            writer,
            temporary,
            path: dir.join(format!("{name}.parquet")),
        }))
    }

    fn open_table(&self, id: u64, name: &str) -> io::Result<Option<TableReader>> {
        let path = self.batch_dir(id).join(format!("{name}.parquet"));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
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

impl EmbeddedStore {
    pub(super) fn batch_dir(&self, id: u64) -> PathBuf {
        batch_dir(&self.root, id)
    }
}
