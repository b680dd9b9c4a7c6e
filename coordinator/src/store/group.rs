//! Result groups: an upload's accepted results of one batch gathered into one record (each
//! table the jobs' rows one after another, each job's span of rows), and what their bytes
//! weigh.

use super::*;

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
pub(super) const GATHER_BYTES: usize = 1 << 20;

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
pub(super) fn column_bytes(c: &dyn arrow::array::Array) -> usize {
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
pub(super) fn owned(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
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
