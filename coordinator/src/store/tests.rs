//! The store's tests: records survive a reopen, the first result wins, a torn tail is cut,
//! a finished table is seen whole once committed.

use super::group::column_bytes;
use super::*;
use arrow::array::{AsArray, Int32Array};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use std::sync::Arc;

fn table(values: &[i32]) -> Tables {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))]).unwrap();
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
    let record = AcceptedBatch {
        spec: BatchSpec::new("synthetic://?symbols=3", "macd"),
        jobs: Vec::new(),
        dates: vec![1, 2],
        tenant: "t".into(),
        owner: "u".into(),
        submitted_ms: 1,
    };
    store.save_batch(7, &record).unwrap();
    let done = JobRecord {
        bar_evaluations: 10,
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
        bar_evaluations: 1,
        summed_into: Some(part),
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

#[test]
fn the_audit_log_survives_a_torn_last_record() {
    let dir = scratch("audit-log", 1);
    let store = EmbeddedStore::open(&dir).unwrap();
    store.append_audit(&serde_json::json!({"n": 1})).unwrap();
    // A crash in the middle of the next append.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("audit.jsonl"))
        .unwrap();
    f.write_all(b"{\"n\": 2, \"tor").unwrap();
    drop(f);
    let store = EmbeddedStore::open(&dir).unwrap();
    store.append_audit(&serde_json::json!({"n": 3})).unwrap();
    let read: Vec<_> = store
        .audit()
        .unwrap()
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(read, [1, 3]);
}

#[test]
fn a_compacted_batch_keeps_its_records_and_a_deleted_one_is_gone() {
    let root = scratch("compact", 4);
    let store = EmbeddedStore::open(&root).unwrap();
    let spec = BatchSpec::new("synthetic://?symbols=3&years=1", "macd");
    let synth = xt_shared::SyntheticMarket {
        symbols: 3,
        years: 1,
        seed: 42,
    };
    let plan = xt_shared::job::plan(&spec, &synth, &synth.universe()).unwrap();
    let record = AcceptedBatch {
        spec,
        jobs: plan.jobs.into_iter().map(|j| j.spec).collect(),
        dates: plan.dates,
        tenant: "t".into(),
        owner: "u".into(),
        submitted_ms: 1,
    };
    store.save_batch(4, &record).unwrap();
    let done = JobRecord {
        bar_evaluations: 10,
        ..Default::default()
    };
    store
        .save_results(
            4,
            &group(&[(0, &table(&[1]), &done), (2, &table(&[2]), &done)]),
        )
        .unwrap();
    store
        .save_summary(4, &serde_json::json!({"jobs": 3}))
        .unwrap();
    let before = store.load_all().unwrap();
    store.compact(4, 3).unwrap();
    assert!(!root.join("4/results.log").exists(), "the uploads are gone");
    assert_eq!(stored(&store, 4, 0), None);
    let reopened = EmbeddedStore::open(&root).unwrap();
    let after = reopened.load_all().unwrap();
    assert_eq!(after[0].done, before[0].done, "the records stay");
    assert_eq!(
        after[0]
            .done
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        [true, false, true]
    );
    reopened.delete_batch(4).unwrap();
    assert!(!root.join("4").exists());
    assert!(reopened.load_all().unwrap().is_empty());
}
