//! Durable batch state behind one trait: what the coordinator must not lose when it
//! crashes. A batch is written once when accepted (its spec and jobs), and each job's
//! result once when its first completion is accepted; everything else (leases, attempts,
//! heartbeats) lives in memory and is rebuilt on restart: finished jobs stay finished,
//! the rest are queued again.
//!
//! `EmbeddedStore` keeps it in a local directory (the default, and `xt local`);
//! `ClusterStore`, the distributed mode's, keeps it in etcd and an object store. Nothing
//! else in the coordinator changes with the store.

mod audit;
mod cluster;
mod embedded;
mod group;
mod log;
mod objects;
#[cfg(test)]
mod tests;

pub use cluster::{ClusterStore, PREFIX as CLUSTER_PREFIX};
pub use embedded::{EmbeddedStore, batch_dir};
pub use group::{GroupTable, ResultGroup, Spans, batch_bytes};
use log::*;
use objects::ObjectSink;
pub use xt_objects::object_store_at;

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
pub struct AcceptedBatch {
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
    /// Bar evaluations (bars x parameter sets); logs written before the name read too.
    #[serde(alias = "bars")]
    pub bar_evaluations: u64,
    /// The job ran but its data failed; its tables are error rows.
    pub error: Option<String>,
    /// Its sleeves were summed, with other jobs' of the same upload, into the portfolio
    /// part (`part_calendar`, `part_sums`) stored with the result of this job, in the same
    /// record.
    #[serde(default, alias = "part", skip_serializing_if = "Option::is_none")]
    pub summed_into: Option<u32>,
    /// The content hash of the bars the job ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<u64>,
}

/// A job's result tables by name (`metrics`, `trades`, `equity`, `calendar`, `sleeves`).
pub type Tables = HashMap<String, Vec<RecordBatch>>;

/// One job's result, as stored: its job, tables and record.
pub type JobResult<'a> = (u32, &'a Tables, &'a JobRecord);

/// A batch as found on restart.
#[derive(Debug, Clone)]
pub struct RestoredBatch {
    pub id: u64,
    pub record: AcceptedBatch,
    pub done: Vec<Option<JobRecord>>,
    /// Present once the batch was aggregated.
    pub summary: Option<serde_json::Value>,
    pub cancelled: bool,
}

/// A written strategy a tenant saved: one immutable version, addressed by the hash of its
/// source (SEMANTICS section 13; the API's `/v1/strategies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedStrategy {
    pub tenant: String,
    /// The name its source declares; the newest version answers to it.
    pub name: String,
    /// `sha256:` and the hex digest of `source`.
    pub hash: String,
    pub source: String,
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub saved_ms: u64,
}

impl SavedStrategy {
    /// A file or key name for it: the tenant in hex (it may hold any character) and the
    /// digest.
    pub fn key(tenant: &str, hash: &str) -> String {
        let tenant: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{tenant}-{}", hash.trim_start_matches("sha256:"))
    }
}

pub trait StateStore: Send + Sync {
    /// Stores a saved strategy, durable when it returns (a second save of one is harmless).
    fn save_strategy(&self, strategy: &SavedStrategy) -> io::Result<()>;
    /// Removes one saved version; removing one that is not there is not an error.
    fn delete_strategy(&self, tenant: &str, hash: &str) -> io::Result<()>;
    /// Every saved strategy of every tenant.
    fn load_strategies(&self) -> io::Result<Vec<SavedStrategy>>;
    fn save_batch(&self, id: u64, record: &AcceptedBatch) -> io::Result<()>;
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
    /// Records that the batch was cancelled: a restart leaves its unfinished jobs cancelled.
    fn save_cancelled(&self, id: u64) -> io::Result<()>;
    fn load_all(&self) -> io::Result<Vec<RestoredBatch>>;
    /// Appends one audit record (a JSON object), durable when it returns.
    fn append_audit(&self, record: &serde_json::Value) -> io::Result<()>;
    /// Every audit record, oldest first.
    fn audit(&self) -> io::Result<Vec<serde_json::Value>>;
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
    /// Once a batch's tables and summary are stored: drops its jobs' uploaded tables, which
    /// those hold, keeping each job's record (what a restart needs to show the batch).
    fn compact(&self, id: u64, jobs: usize) -> io::Result<()>;
    /// Removes a finished batch and everything of it.
    fn delete_batch(&self, id: u64) -> io::Result<()>;
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
pub(crate) const TABLE_READ_ROWS: usize = 65_536;
