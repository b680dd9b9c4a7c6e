//! Running totals: what a batch's accepted results add up to while it runs (the portfolio
//! sums, and the job tables kept in memory for its end).

use super::*;

/// What a running batch's accepted results add up to as they come in, so that its end need
/// not read them back from the store: the portfolio, and each job's tables to write.
#[derive(Default)]
pub(super) struct Fold {
    /// The portfolio's sums; `None` when they would take more memory than [`FOLD_CELLS`]
    /// (the end sums the sleeves from the store then, as after a restart).
    pub(super) sums: Option<PortfolioSum>,
    /// Each job's tables to write (`metrics`, and `trades` and `equity` when asked for): the
    /// group it was stored in, and its place there. A job with none here (past
    /// [`KEPT_BYTES`], or accepted before a restart) is read from the store at the end.
    pub(super) kept: Vec<Option<(Arc<ResultGroup>, usize)>>,
    pub(super) kept_bytes: usize,
    /// How the sleeves add up to the portfolio.
    pub(super) funding: Arc<Funding>,
}

/// Bytes of a batch's job tables held in memory until it ends; the rest are read back from
/// the store (an equity table of a big grid runs to gigabytes).
pub const KEPT_BYTES: usize = 64 << 20;

/// Bytes of tables up to which an upload is stored on the runtime thread that received it
/// (above, on the blocking pool: a grid's equity takes milliseconds to write).
pub(super) const INLINE_STORE_BYTES: usize = 1 << 20;

/// The tables a batch's end writes for each job.
pub(super) const JOB_TABLES: [&str; 3] = [
    UploadTable::NAMES[0],
    UploadTable::NAMES[1],
    UploadTable::NAMES[2],
];

impl Fold {
    pub(super) fn new(batch: &AcceptedBatch, combos: usize) -> Self {
        let curves = combos + 1;
        let dates = &batch.dates;
        Fold {
            sums: (dates.len().saturating_mul(curves) <= FOLD_CELLS)
                .then(|| PortfolioSum::new(dates.to_vec(), curves)),
            kept: vec![None; batch.jobs.len()],
            kept_bytes: 0,
            funding: Arc::new(JobSpec::funding(&batch.jobs, dates, batch.spec.capital)),
        }
    }

    /// A batch resumed after a restart: what was accepted before is in the store only.
    pub(super) fn restarted(jobs: usize) -> Self {
        Fold {
            sums: None,
            kept: vec![None; jobs],
            kept_bytes: 0,
            funding: Default::default(),
        }
    }

    /// Adds job `job`'s accepted result to the sums (`summed`: its sleeves are in a part).
    pub(super) fn add(&mut self, job: usize, capital: f64, tables: &Tables, summed: bool) {
        if let Some(sums) = &mut self.sums {
            add_result(sums, &self.funding, job, capital, tables, summed);
        }
    }

    /// Keeps the tables to write of a group of accepted results, while they fit. Without
    /// sums the end reads every result back from the store anyway, so nothing is kept.
    pub(super) fn keep(&mut self, group: &ResultGroup) {
        if self.sums.is_none() {
            return;
        }
        let Ok(group) = group.owned(&JOB_TABLES) else {
            return;
        };
        let group = Arc::new(group);
        let bytes = group.bytes();
        if self.kept_bytes + bytes > KEPT_BYTES {
            return;
        }
        self.kept_bytes += bytes;
        for (k, (job, _)) in group.jobs.iter().enumerate() {
            if let Some(slot) = self.kept.get_mut(*job as usize) {
                *slot = Some((group.clone(), k));
            }
        }
    }
}

/// Cells (dates x curves) of a portfolio summed as results come in; a bigger one (a grid of
/// thousands of parameter sets over decades) is summed when the batch ends instead, so a
/// running batch never holds more than this in sums (16 bytes a cell).
pub const FOLD_CELLS: usize = 1 << 23;

/// Adds job `job`'s sleeves (its `calendar` and `sleeves` tables, see
/// [`xt_wire::upload::calendar_schema`]) to the portfolio as `funding` says; a job with
/// none (no bar in range) stays in cash.
pub(super) fn add_sleeves(
    sums: &mut PortfolioSum,
    funding: &Funding,
    job: usize,
    capital: f64,
    tables: &Tables,
) {
    let dates = column::<Date32Type>(tables, "calendar");
    let equity = column::<Float64Type>(tables, "sleeves");
    if dates.is_empty() {
        funding.add_cash(sums, job, capital);
        return;
    }
    // Checked on upload: curves x dates values.
    for (curve, values) in equity.chunks_exact(dates.len()).enumerate() {
        funding.add_sleeve(sums, job, curve, capital, &dates, values);
    }
}

/// Adds job `job`'s result to the portfolio: its own sleeves or, when they were `summed`
/// into a part, the part if it carries it (the part's other attempts add nothing of their
/// own; parts come only from batches without membership dates, checked on upload).
pub(super) fn add_result(
    sums: &mut PortfolioSum,
    funding: &Funding,
    job: usize,
    capital: f64,
    tables: &Tables,
    summed: bool,
) {
    if !summed {
        add_sleeves(sums, funding, job, capital, tables);
        return;
    }
    if !tables.contains_key("part_sums") {
        return;
    }
    let dates = column::<Date32Type>(tables, "part_calendar");
    let hi = column::<arrow::datatypes::Int64Type>(tables, "part_sums");
    let lo = column_at::<arrow::datatypes::UInt64Type>(tables, "part_sums", 1);
    let fixed = |k: usize| FixedSum::from_raw(((hi[k] as i128) << 64) | lo[k] as i128);
    // Checked on upload: curves x (1 + dates) sums.
    let curves = sums.curves.len();
    let mut part = PortfolioSum::new(dates.to_vec(), curves);
    let mut before = Vec::with_capacity(curves);
    for (c, row) in part.curves.iter_mut().enumerate() {
        let at = c * (dates.len() + 1);
        before.push(fixed(at));
        for (d, v) in row.iter_mut().enumerate() {
            *v = fixed(at + 1 + d);
        }
    }
    sums.add_part(&part, &before);
}
