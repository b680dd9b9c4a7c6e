//! Result files: a finished batch's tables written through the store a row group at a time,
//! each committed when whole.

use super::*;

/// Writes a batch's tables to `store` as a finished batch's are: each of `tables`
/// (`metrics`, `trades`, `equity`: its rows in job order) that the spec keeps, and the
/// portfolio, with the same writer settings, each committed when whole. For a batch run
/// elsewhere (the bench's in-process runner) to end where the cluster's batches end.
pub fn write_tables(
    store: &dyn StateStore,
    batch: u64,
    spec: &BatchSpec,
    tables: &[(&str, &[RecordBatch])],
    portfolio: &RecordBatch,
) -> anyhow::Result<()> {
    let mut files = TableFiles::create(store, batch, spec)?;
    for (name, batches) in tables {
        files.write(name, batches)?;
    }
    files.finish(portfolio, Vec::new())
}

/// The research tables (SEMANTICS sections 10 and 11) a batch made and keeps, each with the
/// sink it goes to.
pub(super) fn research_tables(
    store: &dyn StateStore,
    batch: u64,
    spec: &BatchSpec,
    research: &xt_shared::research::Research,
) -> anyhow::Result<Vec<(Box<dyn TableSink>, RecordBatch)>> {
    let mut out = Vec::new();
    for (table, rows) in [
        (Table::Grid, &research.grid),
        (Table::Folds, &research.folds),
        (Table::OosEquity, &research.oos_equity),
    ] {
        if let Some(rows) = rows
            && spec.wants(table)
        {
            out.push((
                store.create_table(batch, table.name(), rows.schema())?,
                rows.clone(),
            ));
        }
    }
    Ok(out)
}

/// A finished batch's Parquet files, written job by job. Each is written under a temporary
/// name and renamed when whole, so a reader never sees half a table. Rows are gathered and
/// handed to the writer a row group at a time: a write per job costs more than its rows.
pub(super) struct TableFiles {
    pub(super) writers: Vec<TableFile>,
    pub(super) portfolio: Option<Box<dyn TableSink>>,
}

pub(super) struct TableFile {
    pub(super) table: Table,
    pub(super) schema: arrow::datatypes::SchemaRef,
    pub(super) sink: Box<dyn TableSink>,
    pub(super) pending: Vec<RecordBatch>,
    pub(super) rows: usize,
}

impl TableFile {
    pub(super) fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows > 0 {
            let rows = arrow::compute::concat_batches(&self.schema, &self.pending)?;
            self.sink.write(&rows)?;
        }
        self.pending.clear();
        self.rows = 0;
        Ok(())
    }
}

impl TableFiles {
    pub(super) fn create(
        store: &dyn StateStore,
        batch: u64,
        spec: &BatchSpec,
    ) -> anyhow::Result<Self> {
        let mut writers = Vec::new();
        for (table, schema) in [
            (Table::Metrics, &*xt_shared::schema::METRICS),
            (Table::Trades, &*xt_shared::schema::TRADES),
            (Table::Equity, &*xt_shared::schema::EQUITY),
        ] {
            if spec.wants(table) {
                writers.push(TableFile {
                    table,
                    schema: schema.clone(),
                    sink: store.create_table(batch, table.name(), schema.clone())?,
                    pending: Vec::new(),
                    rows: 0,
                });
            }
        }
        let portfolio = spec
            .wants(Table::Portfolio)
            .then(|| {
                store.create_table(
                    batch,
                    Table::Portfolio.name(),
                    xt_shared::schema::PORTFOLIO.clone(),
                )
            })
            .transpose()?;
        Ok(TableFiles { writers, portfolio })
    }

    /// Adds one job's rows of table `name` (if the batch writes it).
    pub(super) fn write(&mut self, name: &str, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let Some(f) = self.writers.iter_mut().find(|f| f.table.name() == name) else {
            return Ok(());
        };
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            f.rows += b.num_rows();
            f.pending.push(b.clone());
        }
        if f.rows >= TABLE_ROW_GROUP {
            f.flush()?;
        }
        Ok(())
    }

    /// Adds the rows of the `k`th job of a kept group.
    pub(super) fn write_kept(&mut self, group: &ResultGroup, k: usize) -> anyhow::Result<()> {
        for t in &group.tables {
            if let Some(Some((start, rows))) = t.spans.get(k) {
                self.write(&t.name, &t.slice(*start, *rows))?;
            }
        }
        Ok(())
    }

    /// Writes what is left and commits every table: the job tables first, then the
    /// research tables, the portfolio last.
    pub(super) fn finish(
        self,
        portfolio: &RecordBatch,
        research: Vec<(Box<dyn TableSink>, RecordBatch)>,
    ) -> anyhow::Result<()> {
        let mut sinks = Vec::new();
        for mut f in self.writers {
            f.flush()?;
            sinks.push(f.sink);
        }
        for (mut sink, rows) in research {
            sink.write(&rows)?;
            sinks.push(sink);
        }
        if let Some(mut sink) = self.portfolio {
            sink.write(portfolio)?;
            sinks.push(sink);
        }
        for sink in sinks {
            sink.commit()?;
        }
        Ok(())
    }
}
