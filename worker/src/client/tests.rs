//! The upload queue and the parts summed job by job.

use super::*;

/// The `part_calendar` and `part_sums` tables of `outputs`' sleeves summed at once, on
/// their dates' union: what a part summed job by job must equal.
fn portfolio_part(outputs: &[&JobOutput]) -> Result<PartTables> {
    use arrow::datatypes::Date32Type;
    let curves = outputs.first().map_or(0, |o| o.curves);
    let dates = xt_shared::portfolio::union_dates(
        outputs.iter().map(|o| values::<Date32Type>(o, "calendar")),
    );
    let mut part = PartSum::new(dates, curves);
    for o in outputs {
        part.add(o)?;
    }
    part.tables()
}

/// A job's output with its sleeves: `curves` curves on `dates`, curve `c`'s equity on the
/// `k`th date `capital + 10 * c + k + 0.125`.
fn output(capital: f64, dates: &[i32], curves: usize) -> JobOutput {
    let equity: Vec<f64> = (0..curves)
        .flat_map(|c| (0..dates.len()).map(move |k| capital + (10 * c + k) as f64 + 0.125))
        .collect();
    JobOutput {
        point_in_time: false,
        tables: vec![
            (
                "calendar",
                RecordBatch::try_new(
                    calendar_schema(),
                    vec![Arc::new(arrow::array::Date32Array::from(dates.to_vec()))],
                )
                .unwrap(),
            ),
            (
                "sleeves",
                RecordBatch::try_new(
                    sleeves_schema(),
                    vec![Arc::new(arrow::array::Float64Array::from(equity))],
                )
                .unwrap(),
            ),
        ],
        capital,
        curves,
        bar_evaluations: dates.len() as u64,
        error: None,
        seconds: 0.0,
        data_hash: None,
    }
}

#[test]
fn a_part_summed_job_by_job_in_any_order_is_the_part_summed_at_once() {
    // Calendars that differ (gaps, a late start, one job with no bar at all), so the
    // part's calendar grows as jobs come.
    let outputs = [
        output(1000.0, &[2, 3, 5, 9], 3),
        output(250.5, &[5, 6, 12], 3),
        output(333.3, &[], 3),
        output(10.0, &[1, 12], 3),
        output(77.0, &[2, 3, 5, 9], 3),
    ];
    let all: Vec<&JobOutput> = outputs.iter().collect();
    let at_once = portfolio_part(&all).unwrap();
    assert_eq!(at_once[0].1.num_rows(), 7, "the union of the calendars");
    let orders: [[usize; 5]; 4] = [
        [0, 1, 2, 3, 4],
        [4, 3, 2, 1, 0],
        [2, 0, 3, 1, 4],
        [1, 4, 0, 2, 3],
    ];
    for order in orders {
        let mut part = PartSum::new(Vec::new(), 3);
        for &i in &order {
            part.add(&outputs[i]).unwrap();
        }
        assert_eq!(part.jobs(), 5);
        let tables = part.tables().unwrap();
        assert_eq!(tables[0], at_once[0], "calendar, order {order:?}");
        assert_eq!(tables[1], at_once[1], "sums, order {order:?}");
    }
    // A job of other curves is refused and leaves the part as it was.
    let mut part = PartSum::new(Vec::new(), 3);
    part.add(&outputs[0]).unwrap();
    let before = part.tables().unwrap();
    assert!(part.add(&output(5.0, &[1, 2], 2)).is_err());
    assert_eq!((part.jobs(), part.tables().unwrap()), (1, before));
}

fn finished(batch: u64, job: u32, result: Result<JobOutput, String>) -> Finished {
    Finished {
        worker: 1,
        lease: JobLease {
            batch,
            job,
            attempt: 1,
            spec_json: String::new(),
            last: false,
        },
        result,
    }
}

#[test]
fn the_upload_queue_sums_each_batch_part_and_starts_an_upload_when_one_is_full() {
    let mut queued = Queued::default();
    let mut push = |f: Finished| {
        let bytes = f.result.as_ref().map_or(0, JobOutput::bytes);
        queued.push(f, bytes)
    };
    assert!(!push(finished(1, 0, Ok(output(100.0, &[1, 2, 3], 2)))));
    push(finished(2, 0, Ok(output(50.0, &[1, 2], 2))));
    push(finished(1, 1, Err("the job panicked".into())));
    let mut failed_data = output(20.0, &[], 2);
    failed_data.error = Some("no such symbol".into());
    push(finished(1, 2, Ok(failed_data)));
    push(finished(1, 3, Ok(output(100.0, &[2, 4], 2))));
    assert_eq!(queued.uploads.len(), 1);
    let pending = &queued.uploads[0];
    assert_eq!(pending.finished.len(), 5);
    // Batch 1's part holds jobs 0 and 3 (not the failed attempt, nor the job whose data
    // failed: it has no sleeves), batch 2's its one job.
    let parts: Vec<(u64, usize, Vec<usize>)> = pending
        .parts
        .0
        .iter()
        .map(|(b, p, m)| (*b, p.jobs(), m.clone()))
        .collect();
    assert_eq!(parts, [(1, 2, vec![0, 4]), (2, 1, vec![1])]);
    // Summed, a result keeps no sleeves of its own; one whose data failed joined no part
    // and keeps its tables.
    let sleeves = |k: usize| {
        let output = pending.finished[k].result.as_ref().unwrap();
        output
            .tables
            .iter()
            .any(|(n, _)| matches!(*n, "calendar" | "sleeves"))
    };
    assert_eq!([0, 1, 3, 4].map(sleeves), [false, false, true, false]);
    let one = [&output(100.0, &[1, 2, 3], 2), &output(100.0, &[2, 4], 2)];
    assert_eq!(
        pending.parts.0[0].1.tables().unwrap(),
        portfolio_part(&one).unwrap()
    );
    // An idle uploader is woken by the next result, once.
    queued.idle = true;
    let mut push = |f: Finished| {
        let bytes = f.result.as_ref().map_or(0, JobOutput::bytes);
        queued.push(f, bytes)
    };
    assert!(push(finished(1, 4, Ok(output(1.0, &[1], 2)))));
    assert!(!push(finished(1, 5, Ok(output(1.0, &[1], 2)))));
    // A full upload: the next result starts another, with a part of its own.
    for job in 6..UPLOAD_ATTEMPTS as u32 + 1 {
        push(finished(1, job, Ok(output(1.0, &[1], 2))));
    }
    assert_eq!(queued.uploads.len(), 2);
    assert_eq!(queued.uploads[0].finished.len(), UPLOAD_ATTEMPTS);
    assert_eq!(queued.uploads[1].finished.len(), 2);
    assert_eq!(queued.uploads[1].parts.0[0].2, [0, 1]);
}
