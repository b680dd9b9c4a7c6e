//! Upload intake: each attempt of a Flight upload checked against its batch, its job
//! reserved (a part's all together), stored, then completed and added to its batch's
//! running totals.

use super::*;

impl Coordinator {
    /// Completes job attempts with their uploaded tables. Each attempt whose job is still
    /// open is reserved for it (the attempts summed into one part all together, or none of
    /// them), stored durably (one append per batch), then counted and added to its batch's
    /// fold. Returns, for each, whether it completed its job, and whether it must be sent
    /// again on its own (its part could not be taken whole).
    pub(super) async fn accept(
        &self,
        uploads: Vec<(Upload, Tables)>,
    ) -> Result<(Vec<bool>, Vec<bool>), CoordinatorError> {
        let key = |u: &Upload| JobKey {
            batch: u.batch,
            job: u.job,
        };
        let n = uploads.len();
        let (mut reserved, mut resend) = (vec![false; n], vec![false; n]);
        {
            let mut s = self.lock();
            let mut parts: BTreeMap<(u64, u32), Vec<usize>> = BTreeMap::new();
            for (i, (u, _)) in uploads.iter().enumerate() {
                match u.part {
                    None => reserved[i] = s.scheduler.reserve(key(u)),
                    Some(k) => parts.entry((u.batch, k)).or_default().push(i),
                }
            }
            for members in parts.values() {
                let mut held = Vec::new();
                for &i in members {
                    if !s.scheduler.reserve(key(&uploads[i].0)) {
                        break;
                    }
                    held.push(i);
                }
                if held.len() == members.len() {
                    held.iter().for_each(|&i| reserved[i] = true);
                } else {
                    // One of its jobs was done (or is being stored) by another attempt: its
                    // sums cannot be split, so each is sent again with its own sleeves.
                    for &i in &held {
                        s.scheduler.release(key(&uploads[i].0));
                    }
                    members.iter().for_each(|&i| resend[i] = true);
                }
            }
        }
        // Whatever ends this call before its jobs complete (a failed store, a panic), no job
        // stays reserved.
        let mut unreserve = Unreserve {
            coordinator: self,
            keys: uploads
                .iter()
                .zip(&reserved)
                .filter(|(_, r)| **r)
                .map(|((u, _), _)| key(u))
                .collect(),
        };
        let uploads = Arc::new(uploads);
        let mut groups: Vec<(u64, ResultGroup)> = Vec::new();
        if reserved.iter().any(|&r| r) {
            // Durable before a job counts as done: a completed result survives a crash.
            // Written outside the lock; the reservations keep every other attempt of these
            // jobs out meanwhile. Each batch's results go as one group: one record, and kept
            // as one until the batch ends.
            let store_all = {
                let (store, uploads, reserved) =
                    (self.store.clone(), uploads.clone(), reserved.clone());
                move || {
                    let mut by_batch: BTreeMap<u64, Vec<JobResult<'_>>> = BTreeMap::new();
                    let records: Vec<JobRecord> = uploads
                        .iter()
                        .map(|(u, _)| JobRecord {
                            bar_evaluations: u.bar_evaluations,
                            error: u.error.clone(),
                            summed_into: u.part.map(|k| uploads[k as usize].0.job),
                            data_hash: u.data_hash,
                        })
                        .collect();
                    for (i, (u, tables)) in uploads.iter().enumerate() {
                        if reserved[i] {
                            by_batch
                                .entry(u.batch)
                                .or_default()
                                .push((u.job, tables, &records[i]));
                        }
                    }
                    let mut groups = Vec::with_capacity(by_batch.len());
                    for (batch, results) in by_batch {
                        let group = ResultGroup::new(&results).map_err(std::io::Error::other)?;
                        store.save_results(batch, &group)?;
                        groups.push((batch, group));
                    }
                    std::io::Result::Ok(groups)
                }
            };
            let bytes: usize = uploads
                .iter()
                .flat_map(|(_, t)| t.values().flatten())
                .map(crate::store::batch_bytes)
                .sum();
            // A small upload is stored on this thread: a hop to the blocking pool and back
            // costs more than its append.
            let stored = if bytes <= INLINE_STORE_BYTES {
                Ok(store_all())
            } else {
                tokio::task::spawn_blocking(store_all).await
            };
            match stored {
                Ok(Ok(g)) => groups = g,
                Ok(Err(e)) => {
                    return Err(CoordinatorError::Unavailable(format!(
                        "storing the results: {e}"
                    )));
                }
                Err(e) => return Err(CoordinatorError::internal(e)),
            }
        }
        let mut accepted = vec![false; n];
        let mut folds = Vec::new();
        let mut s = self.lock();
        for (i, (upload, _)) in uploads.iter().enumerate() {
            if !reserved[i] {
                continue;
            }
            let completion = match &upload.error {
                None => s
                    .scheduler
                    .complete(key(upload), upload.attempt, upload.worker),
                Some(error) => {
                    s.scheduler
                        .complete_failed(key(upload), upload.attempt, upload.worker, error)
                }
            };
            // Reserved, so it completes.
            debug_assert_eq!(completion, Completion::Accepted);
            let done = completion == Completion::Accepted;
            if done {
                s.durations.observe(upload.seconds);
                if let Some(run) = s.batches.get_mut(&upload.batch) {
                    run.bar_evaluations += upload.bar_evaluations;
                    // A job whose data failed has failed: error rows and cash, when the batch
                    // ends.
                    if upload.error.is_none() {
                        run.phase.fold_started();
                        folds.push((
                            i,
                            run.fold.clone(),
                            run.batch.jobs[upload.job as usize].capital,
                        ));
                    }
                }
            }
            accepted[i] = done;
        }
        unreserve.keys.clear();
        let kept: Vec<_> = groups
            .into_iter()
            .filter_map(|(batch, group)| Some((s.batches.get(&batch)?.fold.clone(), group)))
            .collect();
        drop(s);
        // Added outside the state lock (a grid's sleeves are many curves); the batch does
        // not finish while any is being added.
        for (i, fold, capital) in &folds {
            let (upload, tables) = &uploads[*i];
            let mut fold = fold.lock().unwrap_or_else(|e| e.into_inner());
            fold.add(upload.job as usize, *capital, tables, upload.part.is_some());
        }
        for (fold, group) in kept {
            fold.lock().unwrap_or_else(|e| e.into_inner()).keep(&group);
        }
        let mut s = self.lock();
        for (i, _, _) in &folds {
            if let Some(run) = s.batches.get_mut(&uploads[*i].0.batch) {
                run.phase.fold_ended();
            }
        }
        let batches: BTreeSet<u64> = uploads.iter().map(|(u, _)| u.batch).collect();
        for batch in batches {
            self.finish_if_done(&mut s, batch);
        }
        Ok((accepted, resend))
    }
}

/// Lets go of jobs reserved for storing when dropped (see `Scheduler::release`).
pub(super) struct Unreserve<'a> {
    pub(super) coordinator: &'a Coordinator,
    pub(super) keys: Vec<JobKey>,
}

impl Drop for Unreserve<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut s = self.coordinator.lock();
        for &key in &self.keys {
            s.scheduler.release(key);
        }
    }
}

/// Rejects an upload that could not have come from running its job: a job the batch does
/// not have, a table with the wrong columns, a sleeve for a curve that does not exist.
/// Checked before anything is stored, so a broken client cannot spoil a batch's results.
pub(super) fn check_upload(run: &BatchRun, upload: &Upload, tables: &Tables) -> Result<(), String> {
    if upload.job as usize >= run.batch.jobs.len() {
        return Err(format!(
            "batch {} has {} jobs; there is no job {}",
            upload.batch,
            run.batch.jobs.len(),
            upload.job
        ));
    }
    for (name, batches) in tables {
        let Some(table) = UploadTable::from_name(name) else {
            return Err(format!("table {name}: an upload has no such table"));
        };
        let expected = table.schema();
        for b in batches {
            if b.schema().fields() != expected.fields() {
                return Err(format!(
                    "table {name}: columns {:?} are not the {name} schema",
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    let curves = run.combos.len() + 1;
    let dates = column::<Date32Type>(tables, "calendar");
    let equity = column::<Float64Type>(tables, "sleeves");
    if equity.len() != curves * dates.len() {
        return Err(format!(
            "table sleeves: {} equity values for {} dates; the batch has {curves} curves (its parameter sets and the benchmark)",
            equity.len(),
            dates.len()
        ));
    }
    ascending("calendar", &dates)?;
    if let Some(v) = equity
        .iter()
        .find(|v| !v.is_finite() || v.abs() > xt_shared::spec::MAX_EQUITY)
    {
        return Err(format!("table sleeves: equity {v} is not a finite amount"));
    }
    if upload.part.is_some() && run.batch.jobs[upload.job as usize].point_in_time {
        return Err(format!(
            "batch {} has membership dates: its sleeves are rebalanced at each change, so each job sends its own calendar and sleeves, never a part",
            upload.batch
        ));
    }
    if upload.part.is_some() && (tables.contains_key("calendar") || tables.contains_key("sleeves"))
    {
        return Err("an attempt summed into a part sends no calendar or sleeves of its own".into());
    }
    if tables.contains_key("part_calendar") || tables.contains_key("part_sums") {
        let dates = column::<Date32Type>(tables, "part_calendar");
        let hi = column::<arrow::datatypes::Int64Type>(tables, "part_sums");
        if hi.len() != curves * (dates.len() + 1) {
            return Err(format!(
                "table part_sums: {} sums for {} dates; the batch has {curves} curves, each a sum before the first date and one a date",
                hi.len(),
                dates.len()
            ));
        }
        ascending("part_calendar", &dates)?;
    }
    Ok(())
}

pub(super) fn ascending(table: &str, dates: &[Date]) -> Result<(), String> {
    match dates.windows(2).find(|w| w[0] >= w[1]) {
        Some(w) => Err(format!(
            "table {table}: dates must ascend, {} then {}",
            w[0], w[1]
        )),
        None => Ok(()),
    }
}

/// An attempt summed into a part (see [`Upload::part`]): the part's attempt, of the same
/// batch, names itself and carries the part's tables, which no other attempt does; an
/// attempt whose data failed has no sleeves to sum.
pub(super) fn check_part(uploads: &[Upload], i: usize, tables: &Tables) -> Result<(), String> {
    let upload = &uploads[i];
    let carries = tables.contains_key("part_calendar") && tables.contains_key("part_sums");
    let Some(k) = upload.part else {
        return if tables.contains_key("part_calendar") || tables.contains_key("part_sums") {
            Err("tables part_calendar and part_sums come with the attempt a part names".into())
        } else {
            Ok(())
        };
    };
    if upload.error.is_some() {
        return Err("an attempt whose data failed has no sleeves to sum into a part".into());
    }
    if uploads
        .get(k as usize)
        .is_none_or(|lead| lead.part != Some(k) || lead.batch != upload.batch)
    {
        return Err(format!(
            "part {k}: no attempt of batch {} at that index names itself as the part",
            upload.batch
        ));
    }
    if (k as usize == i) != carries {
        return Err(format!(
            "part {k}: the attempt at index {k} carries tables part_calendar and part_sums, and only it"
        ));
    }
    Ok(())
}

/// The values of a table's only column, its record batches joined (borrowed when it has
/// one, as a worker sends it).
pub(super) fn column<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    tables: &'a Tables,
    name: &str,
) -> std::borrow::Cow<'a, [T::Native]> {
    column_at::<T>(tables, name, 0)
}

/// The values of column `index` of a table (checked against its schema on upload).
pub(super) fn column_at<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    tables: &'a Tables,
    name: &str,
    index: usize,
) -> std::borrow::Cow<'a, [T::Native]> {
    use arrow::array::AsArray;
    match tables.get(name).map(Vec::as_slice) {
        None | Some([]) => std::borrow::Cow::Borrowed(&[]),
        Some([b]) => std::borrow::Cow::Borrowed(b.column(index).as_primitive::<T>().values()),
        Some(parts) => parts
            .iter()
            .flat_map(|b| b.column(index).as_primitive::<T>().values().iter().copied())
            .collect(),
    }
}
