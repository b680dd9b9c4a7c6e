//! Durable batch state behind one trait: what the coordinator must not lose when it
//! crashes. A batch is written once when accepted (its spec and jobs), and each job's
//! result once when its first completion is accepted; everything else (leases, attempts,
//! heartbeats) lives in memory and is rebuilt on restart: finished jobs stay finished,
//! the rest are queued again.
//!
//! `EmbeddedStore` keeps it in a local directory (the default, and `xt local`); an etcd
//! implementation of the same trait serves the distributed mode.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use xt_shared::job::JobSpec;
use xt_shared::{BatchSpec, Date};

/// What is written when a batch is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    pub spec: BatchSpec,
    pub jobs: Vec<JobSpec>,
    pub dates: Vec<Date>,
    /// Who submitted it: the tenant that may see it, and the user.
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub submitted_ms: u64,
}

/// A job's accepted completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub bars: u64,
    /// The job ran but its data failed; its tables are error rows.
    pub error: Option<String>,
    /// Its sleeves are in the portfolio part (`part_calendar`, `part_sums`) stored with the
    /// result of this job, the last of the results stored with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

/// A job's result tables by name (`metrics`, `trades`, `equity`, `calendar`, `sleeves`).
pub type Tables = HashMap<String, Vec<RecordBatch>>;

/// One job's result, as stored: its job, tables and record.
pub type JobResult<'a> = (u32, &'a Tables, &'a JobRecord);

/// A batch as found on restart.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub id: u64,
    pub record: BatchRecord,
    pub done: Vec<Option<JobRecord>>,
    /// Present once the batch was aggregated.
    pub summary: Option<serde_json::Value>,
}

pub trait StateStore: Send + Sync {
    fn save_batch(&self, id: u64, record: &BatchRecord) -> io::Result<()>;
    /// Stores the results of several of a batch's jobs at once (all or none); a result for
    /// a job already stored, or given twice, is ignored after its first.
    fn save_results(&self, id: u64, results: &[JobResult<'_>]) -> io::Result<()>;
    /// A job's stored result: its record, and the tables of it named in `tables`.
    fn load_result(
        &self,
        id: u64,
        job: u32,
        tables: &[&str],
    ) -> io::Result<Option<(JobRecord, Tables)>>;
    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()>;
    fn load_all(&self) -> io::Result<Vec<StoredBatch>>;
    /// Where a batch's finished tables are written.
    fn batch_dir(&self, id: u64) -> PathBuf;
}

/// Batches under `root/<id>/`: `batch.json`, written when the batch is accepted;
/// `results.log`, to which each job's accepted result is appended as one record; and the
/// finished tables with `summary.json`. One append per job rather than a file per table:
/// creating and renaming thousands of small files cost more CPU than the jobs themselves.
///
/// A record is `XTR1`, the job (u32 LE), the body's length (u64 LE), the body, and the
/// length again. The body is a JSON header line (the [`JobRecord`] and each table's name
/// and size) followed by each table as an Arrow IPC stream. A process killed mid-append
/// leaves a short last record, which the next open cuts off: that job runs again. Results
/// whose sleeves were summed into one part are appended together, the part's record last,
/// so a cut append leaves records naming a part that is not there: the next open cuts them
/// off too, and they all run again. Nothing
/// is fsynced: a killed process loses nothing the kernel already has; surviving a power
/// loss is the etcd store's job.
#[derive(Debug)]
pub struct EmbeddedStore {
    root: PathBuf,
    logs: Mutex<HashMap<u64, ResultLog>>,
}

/// A batch's open result log and where each job's record starts.
#[derive(Debug)]
struct ResultLog {
    file: File,
    len: u64,
    index: HashMap<u32, (u64, JobRecord)>,
}

const MAGIC: &[u8; 4] = b"XTR1";
/// Magic, job and body length before the body; the length again after it.
const FRAME: u64 = 4 + 4 + 8 + 8;

#[derive(Debug, Serialize, Deserialize)]
struct RecordHeader {
    record: JobRecord,
    tables: Vec<(String, u64)>,
}

/// One record read back: its job, header, table bytes, and where the next one starts.
struct LogRecord {
    job: u32,
    header: RecordHeader,
    tables: Vec<u8>,
    next: u64,
}

/// Writes a file atomically: a crash leaves the old file or the new, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Appends one record to `out`.
fn encode(out: &mut Vec<u8>, job: u32, tables: &Tables, record: &JobRecord) -> io::Result<()> {
    let mut streams = Vec::new();
    let mut sizes = Vec::new();
    let mut names: Vec<&String> = tables.keys().collect();
    names.sort();
    for name in names {
        let batches = &tables[name];
        let Some(first) = batches.first() else {
            continue;
        };
        let before = streams.len();
        let mut w = StreamWriter::try_new(&mut streams, &first.schema()).map_err(other)?;
        for b in batches {
            w.write(b).map_err(other)?;
        }
        w.finish().map_err(other)?;
        drop(w);
        sizes.push((name.clone(), (streams.len() - before) as u64));
    }
    let mut header = serde_json::to_vec(&RecordHeader {
        record: record.clone(),
        tables: sizes,
    })
    .map_err(other)?;
    header.push(b'\n');
    let body = (header.len() + streams.len()) as u64;
    out.reserve((body + FRAME) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&job.to_le_bytes());
    out.extend_from_slice(&body.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&streams);
    out.extend_from_slice(&body.to_le_bytes());
    Ok(())
}

/// Reads the record at `offset`, or `None` where the log ends or its last record is cut
/// short.
fn read_record(file: &File, offset: u64, file_len: u64) -> io::Result<Option<LogRecord>> {
    if offset + FRAME > file_len {
        return Ok(None);
    }
    let mut head = [0u8; 16];
    file.read_exact_at(&mut head, offset)?;
    let job = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let body = u64::from_le_bytes(head[8..16].try_into().map_err(other)?);
    if &head[..4] != MAGIC || body > file_len || offset + FRAME + body > file_len {
        return Ok(None);
    }
    let mut bytes = vec![0u8; body as usize + 8];
    file.read_exact_at(&mut bytes, offset + 16)?;
    let trailer = u64::from_le_bytes(bytes[body as usize..].try_into().map_err(other)?);
    if trailer != body {
        return Ok(None);
    }
    bytes.truncate(body as usize);
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let Ok(header) = serde_json::from_slice::<RecordHeader>(&bytes[..newline]) else {
        return Ok(None);
    };
    let tables = bytes.split_off(newline + 1);
    Ok(Some(LogRecord {
        job,
        header,
        tables,
        next: offset + FRAME + body,
    }))
}

impl EmbeddedStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(EmbeddedStore {
            root,
            logs: Mutex::default(),
        })
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ResultLog>> {
        // Each log update completes before the guard drops; a poisoned lock holds good data.
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a batch's log, indexing its records and cutting off a torn last one.
    fn open_log(&self, id: u64) -> io::Result<ResultLog> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(self.batch_dir(id).join("results.log"))?;
        let file_len = file.metadata()?.len();
        let mut records = Vec::new();
        let mut offset = 0;
        while let Some(r) = read_record(&file, offset, file_len)? {
            records.push((offset, r.job, r.header.record));
            offset = r.next;
        }
        // Each part's record comes last in its append: one named but missing was cut off
        // with the rest of that append, which is the log's end.
        let parts: std::collections::HashSet<u32> = records
            .iter()
            .filter(|(_, job, r)| r.part == Some(*job))
            .map(|(_, job, _)| *job)
            .collect();
        if let Some(&(cut, _, _)) = records
            .iter()
            .find(|(_, _, r)| r.part.is_some_and(|p| !parts.contains(&p)))
        {
            offset = cut;
            records.retain(|(at, _, _)| *at < cut);
        }
        let mut index = HashMap::new();
        for (at, job, record) in records {
            // A late duplicate of a job already stored: the first record stays the result.
            index.entry(job).or_insert((at, record));
        }
        if offset < file_len {
            file.set_len(offset)?;
        }
        Ok(ResultLog {
            file,
            len: offset,
            index,
        })
    }

    fn with_log<T>(
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
    fn save_batch(&self, id: u64, record: &BatchRecord) -> io::Result<()> {
        std::fs::create_dir_all(self.batch_dir(id))?;
        let json = serde_json::to_vec(record).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("batch.json"), &json)
    }

    fn save_results(&self, id: u64, results: &[JobResult<'_>]) -> io::Result<()> {
        // Encoded outside the log's lock, into one buffer: one append for all of them.
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(results.len());
        for (job, tables, record) in results {
            encode(&mut bytes, *job, tables, record)?;
            ends.push(bytes.len());
        }
        self.with_log(id, |log| {
            // What is stored already, or given twice, stays out of the append.
            let mut seen = std::collections::HashSet::new();
            let fresh: Vec<bool> = results
                .iter()
                .map(|(job, _, _)| !log.index.contains_key(job) && seen.insert(*job))
                .collect();
            let starts = std::iter::once(0).chain(ends.iter().copied());
            let spans: Vec<(usize, usize)> = starts.zip(ends.iter().copied()).collect();
            let mut kept = Vec::new();
            let append = if fresh.iter().all(|&f| f) {
                &bytes[..]
            } else {
                for (&(a, b), _) in spans.iter().zip(&fresh).filter(|(_, f)| **f) {
                    kept.extend_from_slice(&bytes[a..b]);
                }
                &kept[..]
            };
            if append.is_empty() {
                return Ok(());
            }
            io::Write::write_all(&mut log.file, append).inspect_err(|_| {
                // Cut a partial append off, so the next record starts on a boundary.
                let _ = log.file.set_len(log.len);
            })?;
            let mut offset = log.len;
            for (((job, _, record), (a, b)), _) in
                results.iter().zip(&spans).zip(&fresh).filter(|(_, f)| **f)
            {
                log.index.insert(*job, (offset, (*record).clone()));
                offset += (b - a) as u64;
            }
            log.len = offset;
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
            let Some((offset, record)) = log.index.get(&job).cloned() else {
                return Ok(None);
            };
            let r = read_record(&log.file, offset, log.len)?
                .ok_or_else(|| other(format!("batch {id} job {job}: result record unreadable")))?;
            let mut tables = Tables::new();
            let mut at = 0usize;
            for (name, size) in r.header.tables {
                let part = r.tables.get(at..at + size as usize).ok_or_else(|| {
                    other(format!("batch {id} job {job}: table {name} cut short"))
                })?;
                at += size as usize;
                if !wanted.contains(&name.as_str()) {
                    continue;
                }
                let reader = StreamReader::try_new(part, None).map_err(other)?;
                tables.insert(name, reader.collect::<Result<_, _>>().map_err(other)?);
            }
            Ok(Some((record, tables)))
        })
    }

    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(summary).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("summary.json"), &json)
    }

    fn load_all(&self) -> io::Result<Vec<StoredBatch>> {
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
            let record: BatchRecord = serde_json::from_slice(&bytes).map_err(other)?;
            let done = self.with_log(id, |log| {
                Ok((0..record.jobs.len() as u32)
                    .map(|j| log.index.get(&j).map(|(_, r)| r.clone()))
                    .collect())
            })?;
            let summary = std::fs::read(entry.path().join("summary.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.push(StoredBatch {
                id,
                record,
                done,
                summary,
            });
        }
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    fn batch_dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn table(values: &[i32]) -> Tables {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))])
            .unwrap();
        Tables::from([("metrics".to_string(), vec![batch.clone(), batch])])
    }

    #[test]
    fn results_survive_reopen_first_wins_and_a_torn_tail_is_cut() {
        let root = std::env::temp_dir().join(format!("xt-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = EmbeddedStore::open(&root).unwrap();
        let record = BatchRecord {
            spec: BatchSpec::new("synthetic://?symbols=3", "macd"),
            jobs: Vec::new(),
            dates: vec![1, 2],
            tenant: "t".into(),
            owner: "u".into(),
            submitted_ms: 1,
        };
        store.save_batch(7, &record).unwrap();
        let done = JobRecord {
            bars: 10,
            ..Default::default()
        };
        store
            .save_results(7, &[(0, &table(&[1, 2]), &done), (0, &table(&[8]), &done)])
            .unwrap();
        store.save_results(7, &[(0, &table(&[9]), &done)]).unwrap();
        let failed = JobRecord {
            error: Some("bad bar".into()),
            ..Default::default()
        };
        store
            .save_results(7, &[(2, &table(&[3]), &failed)])
            .unwrap();
        let len = std::fs::metadata(root.join("7/results.log")).unwrap().len();
        drop(store);
        // A crash mid-append: half a record at the end.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("7/results.log"))
            .unwrap();
        let mut torn = Vec::new();
        encode(&mut torn, 1, &table(&[4]), &done).unwrap();
        io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
        drop(f);

        let store = EmbeddedStore::open(&root).unwrap();
        let first = store.load_result(7, 0, &["metrics"]).unwrap().unwrap().1;
        assert_eq!(first, table(&[1, 2]), "the first result stays");
        assert_eq!(
            store.load_result(7, 1, &["metrics"]).unwrap(),
            None,
            "the torn record is gone"
        );
        assert_eq!(
            store.load_result(7, 2, &["metrics"]).unwrap().unwrap(),
            (failed.clone(), table(&[3]))
        );
        assert_eq!(
            std::fs::metadata(root.join("7/results.log")).unwrap().len(),
            len,
            "cut back to the last whole record"
        );
        // Appending after the cut gives a readable log again.
        store
            .save_results(7, &[(0, &table(&[6]), &done), (1, &table(&[5]), &done)])
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(&root).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            store.load_result(7, 1, &["metrics"]).unwrap().unwrap().1,
            table(&[5])
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn results_summed_into_a_part_are_kept_all_or_none() {
        let root = std::env::temp_dir().join(format!("xt-store-part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("3")).unwrap();
        let member = |part| JobRecord {
            bars: 1,
            part: Some(part),
            ..Default::default()
        };
        let store = EmbeddedStore::open(&root).unwrap();
        let whole = [
            (0, &table(&[10]), &member(1)),
            (1, &table(&[11]), &member(1)),
        ];
        store.save_results(3, &whole).unwrap();
        let len = std::fs::metadata(root.join("3/results.log")).unwrap().len();
        drop(store);
        // A crash after the first records of an append, before its part's record.
        let mut cut = Vec::new();
        encode(&mut cut, 2, &table(&[12]), &member(4)).unwrap();
        encode(&mut cut, 3, &table(&[13]), &member(4)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("3/results.log"))
            .unwrap();
        io::Write::write_all(&mut f, &cut).unwrap();
        drop(f);

        let store = EmbeddedStore::open(&root).unwrap();
        let done: Vec<bool> = {
            let logs = store.with_log(3, |log| Ok(log.index.clone())).unwrap();
            (0..4).map(|j| logs.contains_key(&j)).collect()
        };
        assert_eq!(
            done,
            [true, true, false, false],
            "the part's jobs run again"
        );
        assert_eq!(
            std::fs::metadata(root.join("3/results.log")).unwrap().len(),
            len,
            "cut back to the whole append"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
