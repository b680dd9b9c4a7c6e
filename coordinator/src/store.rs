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

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
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
    /// result of this job, in the same record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

/// A job's result tables by name (`metrics`, `trades`, `equity`, `calendar`, `sleeves`).
pub type Tables = HashMap<String, Vec<RecordBatch>>;

/// One job's result, as stored: its job, tables and record.
pub type JobResult<'a> = (u32, &'a Tables, &'a JobRecord);

/// Several of a batch's jobs' results as one: each table the jobs' rows one after another
/// (in one record batch, or a big table's parts as they came). Stored as one record and
/// kept in memory as one, so that a job costs its rows, not tables of its own.
#[derive(Debug, Clone)]
pub struct ResultGroup {
    pub jobs: Vec<(u32, JobRecord)>,
    /// Per table: its rows, and where each job's rows start and how many there are (`None`
    /// for a job without the table), in `jobs`' order.
    pub tables: Vec<GroupTable>,
}

#[derive(Debug, Clone)]
pub struct GroupTable {
    pub name: String,
    /// The rows, in one record batch or (a big table, not copied) in several.
    pub rows: Vec<RecordBatch>,
    pub spans: Spans,
    /// The rows are in buffers of their own (copied into one record batch), not in those of
    /// the messages they came in.
    pub own: bool,
}

impl GroupTable {
    /// Rows `start..start + n`, as slices of the batches they are in (one empty slice when
    /// `n` is 0: the job has the table, with no rows).
    pub fn slice(&self, start: usize, n: usize) -> Vec<RecordBatch> {
        if n == 0 {
            return self
                .rows
                .first()
                .map(|b| b.slice(0, 0))
                .into_iter()
                .collect();
        }
        let (mut out, mut at, end) = (Vec::new(), 0, start + n);
        for b in &self.rows {
            let (from, to) = (start.max(at), end.min(at + b.num_rows()));
            if from < to {
                out.push(b.slice(from - at, to - from));
            }
            at += b.num_rows();
            if at >= end {
                break;
            }
        }
        out
    }
}

/// Bytes of parts beyond which a table's parts are kept apart rather than copied into one
/// record batch: gathering saves a decode and an encode per part, which for big ones is
/// less than the copy.
const GATHER_BYTES: usize = 1 << 20;

/// Each job's `(start, rows)` in a group's table, `None` for a job without it.
pub type Spans = Vec<Option<(usize, usize)>>;

impl ResultGroup {
    /// The results' tables gathered: one job's as they are, several jobs' copied into one.
    pub fn new(results: &[JobResult<'_>]) -> Result<Self, arrow::error::ArrowError> {
        let mut names: Vec<&String> = results.iter().flat_map(|(_, t, _)| t.keys()).collect();
        names.sort();
        names.dedup();
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            let mut parts: Vec<&RecordBatch> = Vec::new();
            let mut spans = Vec::with_capacity(results.len());
            let mut at = 0;
            for (_, t, _) in results {
                spans.push(t.get(name).map(|batches| {
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    parts.extend(batches);
                    at += rows;
                    (at - rows, rows)
                }));
            }
            let Some(first) = parts.first() else {
                continue;
            };
            let bytes: usize = parts.iter().map(|b| batch_bytes(b)).sum();
            let (rows, own) = match parts.as_slice() {
                [one] => (vec![(*one).clone()], false),
                many if bytes > GATHER_BYTES => {
                    (many.iter().map(|b| (*b).clone()).collect(), false)
                }
                many => (
                    vec![arrow::compute::concat_batches(
                        &first.schema(),
                        many.iter().copied(),
                    )?],
                    true,
                ),
            };
            tables.push(GroupTable {
                name: name.clone(),
                rows,
                spans,
                own,
            });
        }
        Ok(ResultGroup {
            jobs: results.iter().map(|(j, _, r)| (*j, (*r).clone())).collect(),
            tables,
        })
    }

    /// The `k`th job's tables, as slices.
    pub fn tables_of(&self, k: usize) -> Tables {
        let mut out = Tables::new();
        for t in &self.tables {
            if let Some(Some((start, rows))) = t.spans.get(k) {
                out.insert(t.name.clone(), t.slice(*start, *rows));
            }
        }
        out
    }

    /// Only the tables named in `names`, in buffers of their own: kept until a batch ends,
    /// they must not hold on to the upload they came in (its sleeves and all).
    pub fn owned(&self, names: &[&str]) -> Result<ResultGroup, arrow::error::ArrowError> {
        let mut tables = Vec::new();
        for t in self
            .tables
            .iter()
            .filter(|t| names.contains(&t.name.as_str()))
        {
            // All of a table's rows copied at once: a copy per job's slice costs a pass per
            // column and slice, which for a one-row metrics slice outweighs its bytes.
            let rows = match t.rows.as_slice() {
                // Copied into one record batch when the group was made.
                _ if t.own => t.rows.clone(),
                [] => Vec::new(),
                [one] => vec![owned(one)?],
                many => vec![arrow::compute::concat_batches(&many[0].schema(), many)?],
            };
            tables.push(GroupTable {
                name: t.name.clone(),
                rows,
                spans: t.spans.clone(),
                own: true,
            });
        }
        Ok(ResultGroup {
            jobs: self.jobs.clone(),
            tables,
        })
    }

    /// Bytes of its tables' rows.
    pub fn bytes(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.rows)
            .map(batch_bytes)
            .sum()
    }
}

/// Bytes of `batch`'s rows: a slice's, not those of the buffers it shares.
/// `get_array_memory_size` counts every buffer whole, so each job's one-row slice of an
/// upload would weigh as the whole upload's message, and be stored as a message of its own.
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| column_bytes(c.as_ref()))
        .sum()
}

/// A column's bytes from its length and type where they tell (fixed widths, strings), the
/// same as `to_data().get_slice_memory_size()` gives, without building each column's
/// `ArrayData` first, which cost more than copying the slices (bench/PROFILE.md).
fn column_bytes(c: &dyn arrow::array::Array) -> usize {
    use arrow::array::AsArray;
    // A validity bitmap counts where it has a null, as arrow's own measure counts it.
    let nulls = if c.null_count() > 0 {
        c.len().div_ceil(8)
    } else {
        0
    };
    if let Some(width) = c.data_type().primitive_width() {
        return nulls + c.len() * width;
    }
    if let Some(strings) = c.as_string_opt::<i32>() {
        let offsets = strings.value_offsets();
        let text = offsets
            .last()
            .zip(offsets.first())
            .map_or(0, |(b, a)| b - a);
        return nulls + offsets.len() * 4 + text as usize;
    }
    c.to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| c.get_array_memory_size())
}

/// A record batch in buffers of its own.
fn owned(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let copy = |c: &arrow::array::ArrayRef| {
        let data = c.to_data();
        let mut copy = arrow::array::MutableArrayData::new(vec![&data], false, data.len());
        copy.try_extend(0, 0, data.len())?;
        Ok::<_, arrow::error::ArrowError>(arrow::array::make_array(copy.freeze()))
    };
    let columns = batch.columns().iter().map(copy).collect::<Result<_, _>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

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
    fn save_results(&self, id: u64, results: &ResultGroup) -> io::Result<()>;
    /// A job's stored result: its record, and the tables of it named in `tables`.
    fn load_result(
        &self,
        id: u64,
        job: u32,
        tables: &[&str],
    ) -> io::Result<Option<(JobRecord, Tables)>>;
    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()>;
    fn load_all(&self) -> io::Result<Vec<StoredBatch>>;
    /// Starts writing a finished batch's table `name`: readers see none of it until it is
    /// committed, then all of it.
    fn create_table(
        &self,
        id: u64,
        name: &str,
        schema: SchemaRef,
    ) -> io::Result<Box<dyn TableSink>>;
    /// A finished batch's table `name`, read back a part at a time (`None`: there is none).
    fn open_table(&self, id: u64, name: &str) -> io::Result<Option<TableReader>>;
}

/// A finished table being written (see [`StateStore::create_table`]).
pub trait TableSink: Send {
    fn write(&mut self, rows: &RecordBatch) -> io::Result<()>;
    /// Makes the whole table visible at once.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// A finished table read back: its schema, its row count, and its rows in record batches
/// of a bounded size, so a table of any size streams in bounded memory.
pub struct TableReader {
    pub schema: SchemaRef,
    pub rows: u64,
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
}

/// Rows per Parquet row group of a finished table, and per record batch read back.
pub const TABLE_ROW_GROUP: usize = 131_072;
const TABLE_READ_ROWS: usize = 65_536;

/// A finished table of the embedded store: Parquet under a temporary name, renamed when
/// committed.
struct ParquetSink {
    writer: parquet::arrow::ArrowWriter<File>,
    temporary: PathBuf,
    path: PathBuf,
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
#[derive(Debug)]
pub struct EmbeddedStore {
    root: PathBuf,
    logs: Mutex<HashMap<u64, ResultLog>>,
}

/// A batch's open result log: where each job's record starts and its place in it, and the
/// last few records read back (a batch's end reads its jobs in order, several a record).
#[derive(Debug)]
struct ResultLog {
    file: File,
    len: u64,
    index: HashMap<u32, (u64, usize, JobRecord)>,
    /// Each with its offset and the tables decoded of it.
    read: Vec<(u64, Vec<String>, std::sync::Arc<ResultGroup>)>,
}

/// Records read back and kept by a log.
const READ_CACHE: usize = 4;

const MAGIC: &[u8; 4] = b"XTR2";
/// Magic and body length before the body; the length again after it.
const FRAME: u64 = 4 + 8 + 8;

#[derive(Debug, Serialize, Deserialize)]
struct RecordHeader {
    jobs: Vec<(u32, JobRecord)>,
    /// Name, bytes, and each job's `(start, rows)` in it.
    tables: Vec<(String, u64, Spans)>,
}

/// One record read back: its header, table bytes, and where the next one starts.
struct LogRecord {
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

/// One record of `group`, in two pieces written one after the other: the frame's head with
/// the header, then the tables' streams with the frame's tail. Apart, the streams (nearly
/// all of a record's bytes) are not copied once more to join them.
fn encode(group: &ResultGroup) -> io::Result<[Vec<u8>; 2]> {
    // About what the streams take, so that they are not copied as they grow.
    let mut streams = Vec::with_capacity(group.bytes() + 4096);
    let mut tables = Vec::with_capacity(group.tables.len());
    for t in &group.tables {
        let before = streams.len();
        let Some(first) = t.rows.first() else {
            continue;
        };
        let mut w = StreamWriter::try_new(&mut streams, &first.schema()).map_err(other)?;
        for b in &t.rows {
            w.write(b).map_err(other)?;
        }
        w.finish().map_err(other)?;
        drop(w);
        tables.push((
            t.name.clone(),
            (streams.len() - before) as u64,
            t.spans.clone(),
        ));
    }
    let header = serde_json::to_vec(&RecordHeader {
        jobs: group.jobs.clone(),
        tables,
    })
    .map_err(other)?;
    let body = (header.len() + 1 + streams.len()) as u64;
    let mut head = Vec::with_capacity(MAGIC.len() + 8 + header.len() + 1);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&body.to_le_bytes());
    head.extend_from_slice(&header);
    head.push(b'\n');
    streams.extend_from_slice(&body.to_le_bytes());
    Ok([head, streams])
}

/// Reads the record at `offset`, or `None` where the log ends or its last record is cut
/// short.
fn read_record(file: &File, offset: u64, file_len: u64) -> io::Result<Option<LogRecord>> {
    let mut head = [0u8; 12];
    let got = head.len().min(file_len.saturating_sub(offset) as usize);
    file.read_exact_at(&mut head[..got], offset)?;
    if got >= MAGIC.len() {
        let magic = &head[..MAGIC.len()];
        // A torn append starts with the magic; anything else is not this log's record, and
        // is not cut off: it may be a result this version cannot read.
        if magic != MAGIC {
            return Err(other(format!(
                "the record at byte {offset} is not an {} record (it starts {:?}){}",
                String::from_utf8_lossy(MAGIC),
                String::from_utf8_lossy(magic),
                if magic == b"XTR1" {
                    ": the log was written by an earlier version, which must finish its batches"
                } else {
                    ""
                }
            )));
        }
    }
    if offset + FRAME > file_len {
        return Ok(None);
    }
    let body = u64::from_le_bytes(head[4..12].try_into().map_err(other)?);
    if body > file_len || offset + FRAME + body > file_len {
        return Ok(None);
    }
    let mut bytes = vec![0u8; body as usize + 8];
    file.read_exact_at(&mut bytes, offset + 12)?;
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
        header,
        tables,
        next: offset + FRAME + body,
    }))
}

/// A record's tables named in `wanted`, decoded.
fn decode(r: LogRecord, wanted: &[&str]) -> io::Result<ResultGroup> {
    let mut tables = Vec::with_capacity(r.header.tables.len());
    let mut at = 0usize;
    for (name, size, spans) in r.header.tables {
        let bytes = r
            .tables
            .get(at..at + size as usize)
            .ok_or_else(|| other(format!("table {name} cut short")))?;
        at += size as usize;
        if !wanted.contains(&name.as_str()) {
            continue;
        }
        let reader = StreamReader::try_new(bytes, None).map_err(other)?;
        let rows = reader.collect::<Result<Vec<_>, _>>().map_err(other)?;
        let total: usize = rows.iter().map(|b| b.num_rows()).sum();
        if spans.iter().flatten().any(|(start, n)| start + n > total) {
            return Err(other(format!("table {name}: a job's rows past its end")));
        }
        tables.push(GroupTable {
            name,
            rows,
            spans,
            own: false,
        });
    }
    Ok(ResultGroup {
        jobs: r.header.jobs,
        tables,
    })
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
                    .map(|j| log.index.get(&j).map(|(_, _, r)| r.clone()))
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
    fn batch_dir(&self, id: u64) -> PathBuf {
        batch_dir(&self.root, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;

    fn table(values: &[i32]) -> Tables {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))])
            .unwrap();
        Tables::from([("metrics".to_string(), vec![batch.clone(), batch])])
    }

    /// A job's `metrics` values, whatever batches they come in.
    fn values(tables: &Tables) -> Vec<i32> {
        tables["metrics"]
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
            .collect()
    }

    /// A fresh store root for test `name`, with batch `batch`'s directory made.
    fn scratch(name: &str, batch: u64) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xt-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(batch.to_string())).unwrap();
        root
    }

    fn group(results: &[JobResult<'_>]) -> ResultGroup {
        ResultGroup::new(results).unwrap()
    }

    /// Jobs 0, 1, ... done with `jobs`' tables, as one group.
    fn gather(jobs: &[Tables]) -> ResultGroup {
        let record = JobRecord::default();
        let results: Vec<JobResult<'_>> = jobs
            .iter()
            .enumerate()
            .map(|(j, t)| (j as u32, t, &record))
            .collect();
        group(&results)
    }

    fn stored(store: &EmbeddedStore, batch: u64, job: u32) -> Option<(JobRecord, Vec<i32>)> {
        store
            .load_result(batch, job, &["metrics"])
            .unwrap()
            .map(|(r, t)| (r, values(&t)))
    }

    #[test]
    fn a_finished_table_is_seen_whole_once_committed_and_read_back_in_parts() {
        let root = scratch("table", 3);
        let store = EmbeddedStore::open(&root).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let rows = |from: i32, to: i32| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int32Array::from_iter_values(from..to))],
            )
            .unwrap()
        };
        let mut sink = store.create_table(3, "metrics", schema.clone()).unwrap();
        sink.write(&rows(0, 100_000)).unwrap();
        sink.write(&rows(100_000, 150_000)).unwrap();
        assert!(
            store.open_table(3, "metrics").unwrap().is_none(),
            "seen before its commit"
        );
        sink.commit().unwrap();
        assert!(store.open_table(3, "trades").unwrap().is_none());
        let table = store.open_table(3, "metrics").unwrap().unwrap();
        assert_eq!((table.rows, table.schema.clone()), (150_000, schema));
        let parts: Vec<RecordBatch> = table.batches.map(Result::unwrap).collect();
        assert!(
            parts.iter().all(|b| b.num_rows() <= TABLE_READ_ROWS),
            "read in parts"
        );
        assert_eq!(
            values(&[("metrics".to_string(), parts)].into_iter().collect()),
            (0..150_000).collect::<Vec<_>>()
        );
        // The embedded layout, which `xt local` copies from.
        assert!(batch_dir(&root, 3).join("metrics.parquet").is_file());
    }

    #[test]
    fn results_survive_reopen_first_wins_and_a_torn_tail_is_cut() {
        let root = scratch("reopen", 7);
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
        let failed = JobRecord {
            error: Some("bad bar".into()),
            ..Default::default()
        };
        store
            .save_results(
                7,
                &group(&[
                    (0, &table(&[1, 2]), &done),
                    (0, &table(&[8]), &done),
                    (3, &table(&[7]), &done),
                ]),
            )
            .unwrap();
        store
            .save_results(7, &group(&[(0, &table(&[9]), &done)]))
            .unwrap();
        store
            .save_results(7, &group(&[(2, &table(&[3]), &failed)]))
            .unwrap();
        let len = std::fs::metadata(root.join("7/results.log")).unwrap().len();
        drop(store);
        // A crash mid-append: half a record at the end.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("7/results.log"))
            .unwrap();
        let torn = encode(&group(&[(1, &table(&[4]), &done)]))
            .unwrap()
            .concat();
        io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
        drop(f);

        let store = EmbeddedStore::open(&root).unwrap();
        assert_eq!(
            stored(&store, 7, 0),
            Some((done.clone(), vec![1, 2, 1, 2])),
            "the first result stays"
        );
        assert_eq!(stored(&store, 7, 3), Some((done.clone(), vec![7, 7])));
        assert_eq!(stored(&store, 7, 1), None, "the torn record is gone");
        assert_eq!(stored(&store, 7, 2), Some((failed.clone(), vec![3, 3])));
        assert_eq!(
            std::fs::metadata(root.join("7/results.log")).unwrap().len(),
            len,
            "cut back to the last whole record"
        );
        // Appending after the cut gives a readable log again.
        store
            .save_results(
                7,
                &group(&[(0, &table(&[6]), &done), (1, &table(&[5]), &done)]),
            )
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(&root).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(stored(&store, 7, 1), Some((done.clone(), vec![5, 5])));
        assert_eq!(stored(&store, 7, 0).unwrap().1, [1, 2, 1, 2]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_big_table_is_stored_in_its_parts_and_read_back_whole() {
        let root = scratch("big", 1);
        let store = EmbeddedStore::open(&root).unwrap();
        let part = |k: i32| table(&(k * 300_000..(k + 1) * 300_000).collect::<Vec<_>>());
        let parts: Vec<RecordBatch> = (0..3).map(|k| part(k)["metrics"][0].clone()).collect();
        let big = Tables::from([("metrics".to_string(), parts)]);
        let small = table(&[7]);
        let done = JobRecord::default();
        let g = group(&[(4, &small, &done), (5, &big, &done)]);
        assert_eq!(
            g.tables[0].rows.len(),
            5,
            "1.2 MB a part: none copied into one"
        );
        store.save_results(1, &g).unwrap();
        drop(store);
        let store = EmbeddedStore::open(&root).unwrap();
        let want: Vec<i32> = (0..900_000).collect();
        assert_eq!(stored(&store, 1, 5).unwrap().1, want);
        assert_eq!(stored(&store, 1, 4).unwrap().1, [7, 7]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_log_of_another_format_is_refused_not_cut() {
        let root = scratch("old", 2);
        let old = b"XTR1\x00\x00\x00\x00 an earlier version's record".to_vec();
        std::fs::write(root.join("2/results.log"), &old).unwrap();
        let store = EmbeddedStore::open(&root).unwrap();
        let e = store
            .load_result(2, 0, &["metrics"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("earlier version") && e.contains("results.log"),
            "{e}"
        );
        assert_eq!(std::fs::read(root.join("2/results.log")).unwrap(), old);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_jobs_rows_are_sliced_across_the_batches_they_span() {
        let batch = |v: &[i32]| table(v)["metrics"][0].clone();
        let t = GroupTable {
            name: "metrics".into(),
            rows: vec![batch(&[0, 1, 2]), batch(&[3]), batch(&[4, 5])],
            spans: Vec::new(),
            own: true,
        };
        let rows = |start, n| values(&Tables::from([("metrics".into(), t.slice(start, n))]));
        assert_eq!(rows(0, 6), [0, 1, 2, 3, 4, 5]);
        assert_eq!(rows(2, 3), [2, 3, 4]);
        assert_eq!(rows(3, 1), [3]);
        assert_eq!(rows(5, 1), [5]);
        assert_eq!(t.slice(4, 0).len(), 1, "an empty table is still there");
        assert_eq!(rows(4, 0), Vec::<i32>::new());
    }

    #[test]
    fn kept_tables_hold_each_jobs_rows_in_buffers_of_their_own() {
        // One upload's metrics: a record batch of three jobs' rows, sliced per job, as
        // `do_put` hands them over (big enough for the group to keep the slices as they
        // are); and a table the group is not asked to keep.
        let all: Vec<i32> = (0..400_000).collect();
        let upload = table(&all)["metrics"][0].clone();
        let (a, b, c) = (
            upload.slice(0, 1),
            upload.slice(1, 2),
            upload.slice(3, 399_997),
        );
        let jobs = [
            Tables::from([
                ("metrics".to_string(), vec![a]),
                ("sleeves".into(), table(&[7])["metrics"].clone()),
            ]),
            Tables::from([("metrics".to_string(), vec![b])]),
            Tables::from([("metrics".to_string(), vec![c])]),
        ];
        let gathered = gather(&jobs);
        assert_eq!(gathered.tables.len(), 2, "metrics and sleeves");
        assert_eq!(gathered.tables[0].rows.len(), 3, "slices, not copied");
        let kept = gathered.owned(&["metrics"]).unwrap();
        assert_eq!(kept.tables.len(), 1, "only the tables asked for");
        let per_job: Vec<Vec<i32>> = (0..3).map(|k| values(&kept.tables_of(k))).collect();
        assert_eq!(per_job, [vec![0], vec![1, 2], all[3..].to_vec()]);
        // No buffer of the kept rows lies inside the upload's.
        let range = |b: &RecordBatch| {
            let v = b.column(0).as_primitive::<Int32Type>().values();
            let p = v.as_ptr() as usize;
            p..p + v.len() * 4
        };
        let theirs = range(&upload);
        for rows in &kept.tables[0].rows {
            let ours = range(rows);
            assert!(ours.end <= theirs.start || ours.start >= theirs.end);
        }
    }

    #[test]
    fn small_slices_of_a_big_upload_are_gathered_once_and_kept_without_another_copy() {
        // An upload's metrics as `do_put` hands them over: each job's row a slice of one
        // record batch whose buffers are far bigger than the rows (8 KB each here, the
        // whole message's body in a real upload). 200 such slices are 800 bytes of rows,
        // though each reports the 8 KB it shares.
        let upload = table(&(0..2_000).collect::<Vec<_>>())["metrics"][0].clone();
        let jobs: Vec<Tables> = (0..200)
            .map(|k| Tables::from([("metrics".to_string(), vec![upload.slice(k, 1)])]))
            .collect();
        assert_eq!(batch_bytes(&jobs[0]["metrics"][0]), 4);
        let gathered = gather(&jobs);
        let metrics = &gathered.tables[0];
        assert!(metrics.own && metrics.rows.len() == 1, "one record batch");
        // The log record's streams: the schema and one message for the 200 rows (800 bytes
        // of values), not a message a job (over 200 bytes each).
        let [_, streams] = encode(&gathered).unwrap();
        assert!(streams.len() < 2_000, "{} bytes", streams.len());
        // Kept as it is: the rows are already in buffers of their own.
        let kept = gathered.owned(&["metrics"]).unwrap();
        let values = |b: &RecordBatch| b.column(0).as_primitive::<Int32Type>().values().as_ptr();
        assert_eq!(values(&kept.tables[0].rows[0]), values(&metrics.rows[0]));
        assert_eq!(
            (0..200)
                .map(|k| self::values(&kept.tables_of(k))[0])
                .collect::<Vec<_>>(),
            (0..200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_slices_bytes_are_arrows_own_measure_of_its_rows() {
        use arrow::array::{ArrayRef, Date32Array, Float64Array, StringArray};
        // Each column takes one of the measure's own paths (a fixed width with and without
        // nulls, strings); other types fall back to arrow's measure itself.
        let columns: [ArrayRef; 3] = [
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
                Some(4.0),
            ])),
            Arc::new(StringArray::from(vec!["a", "bcd", "", "efgh"])),
            Arc::new(Date32Array::from(vec![1, 2, 3, 4])),
        ];
        for c in &columns {
            for (start, n) in [(0, 4), (1, 2), (3, 1), (2, 0)] {
                let slice = c.slice(start, n);
                assert_eq!(
                    column_bytes(slice.as_ref()),
                    slice.to_data().get_slice_memory_size().unwrap(),
                    "{} rows {start}..{}",
                    c.data_type(),
                    start + n
                );
            }
        }
    }

    #[test]
    fn results_stored_together_are_kept_or_cut_together() {
        let root = scratch("part", 3);
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
        store.save_results(3, &group(&whole)).unwrap();
        let len = std::fs::metadata(root.join("3/results.log")).unwrap().len();
        drop(store);
        // A crash partway through the record of a part's jobs: the first job's rows are
        // on disk, the rest are not.
        let cut = encode(&group(&[
            (2, &table(&[12]), &member(3)),
            (3, &table(&[13]), &member(3)),
        ]))
        .unwrap()
        .concat();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("3/results.log"))
            .unwrap();
        io::Write::write_all(&mut f, &cut[..cut.len() - 20]).unwrap();
        drop(f);

        let store = EmbeddedStore::open(&root).unwrap();
        let done: Vec<bool> = (0..4).map(|j| stored(&store, 3, j).is_some()).collect();
        assert_eq!(
            done,
            [true, true, false, false],
            "the part's jobs run again"
        );
        assert_eq!(stored(&store, 3, 0), Some((member(1), vec![10, 10])));
        assert_eq!(stored(&store, 3, 1), Some((member(1), vec![11, 11])));
        assert_eq!(
            std::fs::metadata(root.join("3/results.log")).unwrap().len(),
            len,
            "cut back to the whole record"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
