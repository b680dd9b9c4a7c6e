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
use std::path::{Path, PathBuf};

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
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
}

/// A job's accepted completion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobRecord {
    pub bars: u64,
    /// The job ran but its data failed; its tables are error rows.
    pub error: Option<String>,
}

/// A job's result tables by name (`metrics`, `trades`, `equity`, `sleeves`).
pub type Tables = HashMap<String, Vec<RecordBatch>>;

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
    fn save_result(&self, id: u64, job: u32, tables: &Tables, record: &JobRecord)
    -> io::Result<()>;
    fn load_result(&self, id: u64, job: u32) -> io::Result<Option<Tables>>;
    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()>;
    fn load_all(&self) -> io::Result<Vec<StoredBatch>>;
    /// Where a batch's finished tables are written.
    fn batch_dir(&self, id: u64) -> PathBuf;
}

/// Batches under `root/<id>/`: `batch.json`, `results/<job>.<table>.arrow` and
/// `results/<job>.done` (written last: a job without it has no result), and the finished
/// tables with `summary.json`.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    root: PathBuf,
}

/// Writes a file atomically: a crash of the coordinator leaves the old file or the new,
/// never half of one. The data is not fsynced: a killed process loses nothing the kernel
/// already has, and syncing every result file cost milliseconds per job under the state
/// lock. Surviving a power loss is the etcd store's job.
fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    write(&mut f)?;
    std::fs::rename(&tmp, path)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl EmbeddedStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(EmbeddedStore { root })
    }

    fn results(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string()).join("results")
    }
}

impl StateStore for EmbeddedStore {
    fn save_batch(&self, id: u64, record: &BatchRecord) -> io::Result<()> {
        std::fs::create_dir_all(self.results(id))?;
        let json = serde_json::to_vec(record).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("batch.json"), |f| {
            io::Write::write_all(f, &json)
        })
    }

    fn save_result(
        &self,
        id: u64,
        job: u32,
        tables: &Tables,
        record: &JobRecord,
    ) -> io::Result<()> {
        let dir = self.results(id);
        for (name, batches) in tables {
            let Some(first) = batches.first() else {
                continue;
            };
            write_atomic(&dir.join(format!("{job}.{name}.arrow")), |f| {
                let mut w = FileWriter::try_new(f, &first.schema()).map_err(other)?;
                for b in batches {
                    w.write(b).map_err(other)?;
                }
                w.finish().map_err(other)
            })?;
        }
        let json = serde_json::to_vec(record).map_err(other)?;
        write_atomic(&dir.join(format!("{job}.done")), |f| {
            io::Write::write_all(f, &json)
        })
    }

    fn load_result(&self, id: u64, job: u32) -> io::Result<Option<Tables>> {
        let dir = self.results(id);
        if !dir.join(format!("{job}.done")).is_file() {
            return Ok(None);
        }
        let mut tables = Tables::new();
        for name in ["metrics", "trades", "equity", "sleeves"] {
            let path = dir.join(format!("{job}.{name}.arrow"));
            if path.is_file() {
                let reader = FileReader::try_new(File::open(&path)?, None).map_err(other)?;
                tables.insert(
                    name.to_string(),
                    reader.collect::<Result<_, _>>().map_err(other)?,
                );
            }
        }
        Ok(Some(tables))
    }

    fn save_summary(&self, id: u64, summary: &serde_json::Value) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(summary).map_err(other)?;
        write_atomic(&self.batch_dir(id).join("summary.json"), |f| {
            io::Write::write_all(f, &json)
        })
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
            let dir = self.results(id);
            let done = (0..record.jobs.len())
                .map(|j| {
                    std::fs::read(dir.join(format!("{j}.done")))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                })
                .collect();
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
