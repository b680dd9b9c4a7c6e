//! Portfolio parts: the sleeves of an upload's jobs of one batch summed as the jobs finish,
//! and the attempts an upload carries with or without them.

use super::*;

/// The values of `output`'s single-column table `name` (empty if it has none).
pub(super) fn values<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    output: &'a JobOutput,
    name: &str,
) -> &'a [T::Native] {
    use arrow::array::AsArray;
    output
        .tables
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, b)| b.column(0).as_primitive_opt::<T>())
        .map_or(&[], |a| a.values().as_ref())
}

/// The sleeves of several of a batch's finished jobs summed into one portfolio part (see
/// [`Upload::part`]), a job at a time: a worker adds each job's sleeves as it finishes, on
/// the thread that ran it (as the in-process runner adds its sleeves to the portfolio), so
/// an upload's part is summed by the time the upload goes. The part's calendar grows to the
/// union of its jobs' dates. Each job adds exactly what it would to the batch's portfolio
/// (the same fixed-point sums, see [`xt_shared::portfolio::PortfolioSum::add_part`]), in
/// whatever order the jobs come.
pub struct PartSum {
    pub(super) sums: xt_shared::portfolio::PortfolioSum,
    /// Each curve's value before the part's first date: its jobs' capital.
    pub(super) before: xt_shared::portfolio::FixedSum,
    pub(super) jobs: usize,
}

impl PartSum {
    /// An empty part of `curves` curves on `dates` (the calendar grows as jobs need).
    pub fn new(dates: Vec<xt_shared::Date>, curves: usize) -> Self {
        PartSum {
            sums: xt_shared::portfolio::PortfolioSum::new(dates, curves),
            before: Default::default(),
            jobs: 0,
        }
    }

    /// Jobs added so far.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Adds a job's sleeves (a job with no bar adds its capital throughout, as cash).
    pub fn add(&mut self, output: &JobOutput) -> Result<()> {
        use arrow::datatypes::{Date32Type, Float64Type};
        use xt_shared::portfolio::{PortfolioSum, union_dates};
        let curves = self.sums.curves.len();
        anyhow::ensure!(
            output.curves == curves,
            "a part's jobs have the same curves"
        );
        let dates = values::<Date32Type>(output, "calendar");
        let equity = values::<Float64Type>(output, "sleeves");
        anyhow::ensure!(equity.len() == curves * dates.len(), "a sleeve per curve");
        if self.jobs == 0 && self.sums.dates.is_empty() {
            self.sums = PortfolioSum::new(dates.to_vec(), curves);
        } else if !within(dates, &self.sums.dates) {
            // The sums so far carried onto the grown calendar, as the coordinator adds a
            // part onto the batch's: exact.
            let union = union_dates([self.sums.dates.as_slice(), dates].into_iter());
            let mut grown = PortfolioSum::new(union, curves);
            grown.add_part(&self.sums, &vec![self.before; curves]);
            self.sums = grown;
        }
        self.before.add(output.capital);
        for c in 0..curves {
            let curve = &equity[c * dates.len()..(c + 1) * dates.len()];
            self.sums.add_sleeve(c, output.capital, dates, curve);
        }
        self.jobs += 1;
        Ok(())
    }

    /// The part's `part_calendar` and `part_sums` tables.
    pub fn tables(&self) -> Result<PartTables> {
        let cells = self.sums.curves.len() * (self.sums.dates.len() + 1);
        let (mut hi, mut lo) = (Vec::with_capacity(cells), Vec::with_capacity(cells));
        for row in &self.sums.curves {
            for v in std::iter::once(self.before).chain(row.iter().copied()) {
                hi.push((v.raw() >> 64) as i64);
                lo.push(v.raw() as u64);
            }
        }
        Ok([
            (
                "part_calendar",
                RecordBatch::try_new(
                    calendar_schema(),
                    vec![Arc::new(arrow::array::Date32Array::from(
                        self.sums.dates.clone(),
                    ))],
                )?,
            ),
            (
                "part_sums",
                RecordBatch::try_new(
                    part_sums_schema(),
                    vec![
                        Arc::new(arrow::array::Int64Array::from(hi)),
                        Arc::new(arrow::array::UInt64Array::from(lo)),
                    ],
                )?,
            ),
        ])
    }
}

/// Whether every date of `dates` is in `calendar` (both ascending).
pub(super) fn within(dates: &[xt_shared::Date], calendar: &[xt_shared::Date]) -> bool {
    if dates == calendar {
        return true;
    }
    let mut rest = calendar.iter();
    dates.iter().all(|d| rest.any(|c| c == d))
}

/// A portfolio part's `part_calendar` and `part_sums` tables.
pub type PartTables = [(&'static str, RecordBatch); 2];

/// A part's members (indices of an upload's attempts, of one batch) and its tables.
pub(super) type Part = (Vec<usize>, PartTables);

/// One attempt of an upload and its tables by name.
pub type Attempt = (Upload, Vec<(&'static str, RecordBatch)>);

/// The attempts of one upload of `outputs`: with `parts`, the sleeves of each batch's
/// results (those whose data was read) summed into one part, carried by the last of them;
/// without, each result with its own.
pub fn upload_attempts(outputs: &[(Upload, &JobOutput)], parts: bool) -> Result<Vec<Attempt>> {
    let mut summed = Parts::default();
    if parts {
        for (i, (u, o)) in outputs.iter().enumerate() {
            anyhow::ensure!(
                summed.add(i, u.batch, o),
                "job {}: its sleeves do not sum",
                u.job
            );
        }
    }
    Ok(attempts_with_parts(outputs, summed.tables(|i| i)?))
}

/// The parts of an upload's results: per batch, its results' sleeves summed (see
/// [`PartSum`]) and which results those are. A part may have one result: a worker's
/// results drop their sleeves once summed, so even a lone one goes as a part.
#[derive(Default)]
pub(super) struct Parts(pub(super) Vec<(u64, PartSum, Vec<usize>)>);

impl Parts {
    /// Adds result `index` of `batch` to its batch's part; a result whose data failed has
    /// no sleeves and joins none, nor does one of a batch with membership dates. False if its sleeves do not sum with the part's (it
    /// cannot happen with a worker's own results): it joins none either.
    pub(super) fn add(&mut self, index: usize, batch: u64, output: &JobOutput) -> bool {
        if output.error.is_some() || output.point_in_time {
            return true;
        }
        let at = match self.0.iter().position(|(b, _, _)| *b == batch) {
            Some(at) => at,
            None => {
                let part = PartSum::new(Vec::new(), output.curves);
                self.0.push((batch, part, Vec::new()));
                self.0.len() - 1
            }
        };
        let (_, part, members) = &mut self.0[at];
        if part.add(output).is_ok() {
            members.push(index);
            return true;
        }
        if members.is_empty() {
            self.0.remove(at);
        }
        false
    }

    /// Every part's members, as indices in the pending upload.
    pub(super) fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .flat_map(|(_, _, members)| members.iter().copied())
    }

    /// Each part: its members, as indices in the upload (`at` of their indices here), and
    /// its tables.
    pub(super) fn tables(&self, at: impl Fn(usize) -> usize) -> Result<Vec<Part>> {
        self.0
            .iter()
            .filter(|(_, _, members)| !members.is_empty())
            .map(|(_, part, members)| {
                Ok((members.iter().map(|&k| at(k)).collect(), part.tables()?))
            })
            .collect()
    }
}

/// The attempts of one upload of `outputs`, the sleeves of each of `parts`' members (indices
/// in `outputs`, of one batch) sent summed in its tables, carried by its last member.
pub(super) fn attempts_with_parts(
    outputs: &[(Upload, &JobOutput)],
    parts: Vec<Part>,
) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = outputs
        .iter()
        .map(|(u, o)| (u.clone(), o.tables.clone()))
        .collect();
    for (members, tables) in parts {
        let Some(&lead) = members.last() else {
            continue;
        };
        for &i in &members {
            let (upload, tables) = &mut attempts[i];
            upload.part = Some(lead as u32);
            tables.retain(|(n, _)| !matches!(*n, "calendar" | "sleeves"));
        }
        attempts[lead].1.extend(tables);
    }
    attempts
}
