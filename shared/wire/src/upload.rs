//! The upload format: how a worker's finished job attempts travel to the coordinator in
//! one Arrow Flight `DoPut`, encoded here and decoded by the coordinator with the same
//! definitions (the table names, the schemas of the internal tables, who owns which rows).

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::{FlightData, FlightDescriptor};
use serde::{Deserialize, Serialize};

/// The tables an upload carries, each named in its schema message's `app_metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UploadTable {
    Metrics,
    Trades,
    Equity,
    /// A job's dates (see [`calendar_schema`]).
    Calendar,
    /// A job's curves on its dates (see [`sleeves_schema`]).
    Sleeves,
    /// The dates of a portfolio part (see [`part_sums_schema`]).
    PartCalendar,
    PartSums,
}

impl UploadTable {
    pub const ALL: [UploadTable; 7] = [
        UploadTable::Metrics,
        UploadTable::Trades,
        UploadTable::Equity,
        UploadTable::Calendar,
        UploadTable::Sleeves,
        UploadTable::PartCalendar,
        UploadTable::PartSums,
    ];

    /// Each table's name, in the order of [`UploadTable::ALL`] (and of the variants).
    pub const NAMES: [&'static str; 7] = [
        "metrics",
        "trades",
        "equity",
        "calendar",
        "sleeves",
        "part_calendar",
        "part_sums",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<UploadTable> {
        UploadTable::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The schema every record batch of the table has.
    pub fn schema(self) -> SchemaRef {
        use xt_shared::schema::{EQUITY, METRICS, TRADES};
        match self {
            UploadTable::Metrics => METRICS.clone(),
            UploadTable::Trades => TRADES.clone(),
            UploadTable::Equity => EQUITY.clone(),
            UploadTable::Calendar | UploadTable::PartCalendar => calendar_schema(),
            UploadTable::Sleeves => sleeves_schema(),
            UploadTable::PartSums => part_sums_schema(),
        }
    }
}

/// One job attempt's results in a Flight upload. An upload carries one or more: the
/// descriptor's `cmd` is the JSON list of their `Upload`s, each table's schema message names
/// the table in `app_metadata` (`metrics`, `trades`, `equity`, `calendar`, `sleeves`,
/// `part_calendar`, `part_sums`), and each record batch names in its `app_metadata` whose
/// rows it carries: `i`, all of them the attempt at index `i` in that list, or `i:n,j:m,...`,
/// the first `n` rows attempt `i`'s, the next `m` attempt `j`'s. A worker sends the results it
/// has finished in one upload, each table in as few record batches as it can: one round
/// trip, one decode per table, one append to the store and one pass through the scheduler
/// for all of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub worker: u64,
    pub batch: u64,
    pub job: u32,
    pub attempt: u32,
    /// Bar evaluations the job performed (bars x parameter sets).
    #[serde(alias = "bars")]
    pub bar_evaluations: u64,
    /// Seconds the job ran on the worker.
    #[serde(default)]
    pub seconds: f64,
    /// Set when the job ran but its data failed: its tables are error rows, and it counts
    /// as failed without a retry (it would fail again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when this attempt's sleeves are not sent on their own but summed, with those of
    /// the upload's other attempts of the same batch that name the same part, into one
    /// portfolio part: the `part_calendar` and `part_sums` tables of the attempt at this
    /// index in the upload (which names itself). Such attempts complete all together or
    /// none of them (see [`UploadReply::resend`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// The content hash of the bars the job ran on (`Bars::content_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<u64>,
}

/// The reply to an upload (`PutResult.app_metadata`, JSON): for each of its attempts, in
/// order, whether it completed its job (false: another attempt had already).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadReply {
    pub accepted: Vec<bool>,
    /// Attempts (indices in the upload) summed into a part whose attempts could not all
    /// complete their jobs (one of them had been completed by another attempt meanwhile):
    /// none of them completed, and each must be sent again with its own sleeves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resend: Vec<u32>,
}

/// The internal tables a job sends for the portfolio: `calendar`, the dates of its bars, and
/// `sleeves`, each curve's equity on those dates, curve after curve (the parameter
/// combinations in order, then the benchmark): `curves x dates` rows. Every curve of a job
/// runs on the same bars, so the dates go once, not once per curve.
pub fn calendar_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "date",
        DataType::Date32,
        false,
    )]))
}

/// See [`calendar_schema`].
pub fn sleeves_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "equity",
        DataType::Float64,
        false,
    )]))
}

/// `part_sums`: the sleeves of several of an upload's jobs summed into one portfolio part
/// (see [`Upload::part`]) on their dates' union, `part_calendar` (a [`calendar_schema`]
/// table). Each curve's fixed-point sums (2^-60 units, `hi * 2^64 + lo`), curve after
/// curve: its value before the part's first date (the jobs' capital), then one a date.
pub fn part_sums_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("hi", DataType::Int64, false),
        Field::new("lo", DataType::UInt64, false),
    ]))
}

/// About the most bytes of a record batch one Flight message carries.
const MESSAGE_BYTES: usize = 4 << 20;

/// The Flight messages of one upload of `attempts` (see [`Upload`]): each table's schema
/// once, named, then its rows, the attempts' one after another, in as few record batches as
/// [`MESSAGE_BYTES`] allows. Each record batch says whose rows it carries: `i` (all of them
/// attempt `i`'s) or `i:n,j:m,...` (the first `n` rows attempt `i`'s, the next `m` attempt
/// `j`'s). The first message carries the descriptor.
///
/// One record batch for many attempts, not one each: every message costs a decode, a check
/// and a copy per column on both sides, which for a one-row metrics table outweighs its
/// bytes many times.
pub fn upload_messages(attempts: &[(Upload, &[(&str, RecordBatch)])]) -> Result<Vec<FlightData>> {
    let mut names: Vec<&str> = Vec::new();
    for (_, tables) in attempts {
        for (name, _) in *tables {
            if !names.contains(name) {
                names.push(name);
            }
        }
    }
    let mut data: Vec<FlightData> = Vec::new();
    for name in names {
        let rows: Vec<(usize, &RecordBatch)> = attempts
            .iter()
            .enumerate()
            .flat_map(|(i, (_, tables))| {
                tables
                    .iter()
                    .filter(move |(n, _)| *n == name)
                    .map(move |(_, b)| (i, b))
            })
            .collect();
        let schema = rows[0].1.schema();
        let messages = table_messages(&rows)?;
        let mut encoded =
            arrow_flight::utils::batches_to_flight_data(&schema, messages.iter().map(|(_, b)| b))?;
        // One message per record batch: the result schemas have no dictionaries.
        anyhow::ensure!(
            encoded.len() == messages.len() + 1,
            "table {name}: dictionary-encoded columns cannot be uploaded"
        );
        encoded[0].app_metadata = name.as_bytes().to_vec().into();
        for (message, (owners, _)) in encoded[1..].iter_mut().zip(&messages) {
            message.app_metadata = owners.clone().into_bytes().into();
        }
        data.extend(encoded);
    }
    let uploads: Vec<&Upload> = attempts.iter().map(|(u, _)| u).collect();
    let descriptor = FlightDescriptor::new_cmd(serde_json::to_vec(&uploads)?);
    data.first_mut()
        .context("an upload needs at least one table")?
        .flight_descriptor = Some(descriptor);
    Ok(data)
}

/// One table's `(attempt, rows)` as record batches of at most about [`MESSAGE_BYTES`], each
/// with the list of whose rows it carries (see [`upload_messages`]): small ones gathered
/// into one, a big one (a grid's equity) alone, in zero-copy slices.
fn table_messages(rows: &[(usize, &RecordBatch)]) -> Result<Vec<(String, RecordBatch)>> {
    let mut messages = Vec::new();
    let mut group: Vec<(usize, &RecordBatch)> = Vec::new();
    let mut bytes = 0;
    let flush = |group: &mut Vec<(usize, &RecordBatch)>,
                 messages: &mut Vec<(String, RecordBatch)>|
     -> Result<()> {
        match group.as_slice() {
            [] => {}
            [(i, b)] => messages.push((i.to_string(), (*b).clone())),
            many => {
                let owners: Vec<String> = many
                    .iter()
                    .map(|(i, b)| format!("{i}:{}", b.num_rows()))
                    .collect();
                let batch = arrow::compute::concat_batches(
                    &many[0].1.schema(),
                    many.iter().map(|(_, b)| *b),
                )?;
                messages.push((owners.join(","), batch));
            }
        }
        group.clear();
        Ok(())
    };
    for &(i, b) in rows {
        let size = b.get_array_memory_size();
        if size > MESSAGE_BYTES || bytes + size > MESSAGE_BYTES {
            flush(&mut group, &mut messages)?;
            bytes = 0;
        }
        if size > MESSAGE_BYTES {
            messages.extend(message_slices(b).map(|s| (i.to_string(), s)));
            continue;
        }
        bytes += size;
        group.push((i, b));
    }
    flush(&mut group, &mut messages)?;
    Ok(messages)
}

/// `batch` in row slices of at most about [`MESSAGE_BYTES`] each (zero-copy).
fn message_slices(batch: &RecordBatch) -> impl Iterator<Item = RecordBatch> + '_ {
    let rows = batch.num_rows();
    let bytes = batch.get_array_memory_size().max(1);
    let per = (rows * MESSAGE_BYTES / bytes).clamp(1, rows.max(1));
    (0..rows.max(1))
        .step_by(per)
        .map(move |start| batch.slice(start, per.min(rows - start)))
}

/// Whose rows a record batch of `rows` rows carries, from its `app_metadata` (see
/// [`xt_wire::upload::upload_messages`]): `(attempt, rows)` in order, attempts below
/// `attempts`; `None` if it is malformed or does not add up.
pub fn owners(metadata: &[u8], rows: usize, attempts: usize) -> Option<Vec<(usize, usize)>> {
    let text = std::str::from_utf8(metadata).ok()?;
    let owners: Vec<(usize, usize)> = if text.contains(':') {
        text.split(',')
            .map(|o| {
                let (i, n) = o.split_once(':')?;
                Some((i.parse().ok()?, n.parse().ok()?))
            })
            .collect::<Option<_>>()?
    } else {
        vec![(text.parse().ok()?, rows)]
    };
    let total = owners
        .iter()
        .try_fold(0usize, |t, (_, n)| t.checked_add(*n))?;
    (total == rows && owners.iter().all(|(i, _)| *i < attempts)).then_some(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_batch_names_whose_rows_it_carries_and_they_add_up() {
        assert_eq!(owners(b"2", 5, 3), Some(vec![(2, 5)]));
        assert_eq!(
            owners(b"0:1,2:0,1:4", 5, 3),
            Some(vec![(0, 1), (2, 0), (1, 4)])
        );
        for bad in [
            &b"3"[..],
            b"0:1,1:3",
            b"0:1,1:5",
            b"0:1,3:4",
            b"x",
            b"0:",
            b"",
            b"0:1,,",
        ] {
            assert_eq!(owners(bad, 5, 3), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn small_tables_go_gathered_and_a_big_one_in_slices_each_naming_whose_rows() {
        let rows = 1_500_000;
        let equity = RecordBatch::try_new(
            sleeves_schema(),
            vec![Arc::new(arrow::array::Float64Array::from_iter_values(
                (0..rows).map(|i| i as f64),
            ))],
        )
        .unwrap();
        let dates = |n: i32| {
            RecordBatch::try_new(
                calendar_schema(),
                vec![Arc::new(arrow::array::Date32Array::from_iter_values(0..n))],
            )
            .unwrap()
        };
        let upload = |job| Upload {
            worker: 1,
            batch: 1,
            job,
            attempt: 1,
            bar_evaluations: 0,
            seconds: 0.0,
            error: None,
            part: None,
            data_hash: None,
        };
        let first = [("calendar", dates(3))];
        let second = [("calendar", dates(0)), ("sleeves", equity.clone())];
        let third = [("calendar", dates(2))];
        let data = upload_messages(&[
            (upload(0), &first[..]),
            (upload(1), &second[..]),
            (upload(2), &third[..]),
        ])
        .unwrap();
        // calendar: its schema, then one record batch of every attempt's rows in order.
        assert_eq!(&data[0].app_metadata[..], b"calendar");
        assert_eq!(&data[1].app_metadata[..], b"0:3,1:0,2:2");
        let calendar = arrow_flight::utils::flight_data_to_batches(&data[..2]).unwrap();
        let all =
            arrow::compute::concat_batches(&calendar_schema(), &[dates(3), dates(0), dates(2)])
                .unwrap();
        assert_eq!(calendar, [all]);
        // sleeves: its schema and slices of the one big table, each naming its attempt.
        let sleeves = &data[2..];
        assert_eq!(&sleeves[0].app_metadata[..], b"sleeves");
        assert!(sleeves.len() > 3, "{} messages", sleeves.len());
        for m in &sleeves[1..] {
            assert_eq!(&m.app_metadata[..], b"1");
            assert!(
                m.data_body.len() <= MESSAGE_BYTES + 1024,
                "{}",
                m.data_body.len()
            );
        }
        let back = arrow_flight::utils::flight_data_to_batches(sleeves).unwrap();
        let back = arrow::compute::concat_batches(&sleeves_schema(), &back).unwrap();
        assert_eq!(back, equity);
        let uploads: Vec<Upload> =
            serde_json::from_slice(&data[0].flight_descriptor.as_ref().unwrap().cmd).unwrap();
        assert_eq!(uploads, [upload(0), upload(1), upload(2)]);
    }

    #[test]
    fn every_table_is_named_and_found_by_its_name() {
        for t in UploadTable::ALL {
            assert_eq!(UploadTable::from_name(t.name()), Some(t));
        }
        assert_eq!(UploadTable::from_name("pnl"), None);
    }
}
