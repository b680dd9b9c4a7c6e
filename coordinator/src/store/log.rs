//! The result log's format: a record is `XTR2`, the body's length, the body (a JSON header
//! line, then each table as an Arrow IPC stream) and the length again; a torn last record
//! is detected and cut.

use super::*;

/// A batch's open result log: where each job's record starts and its place in it, and the
/// last few records read back (a batch's end reads its jobs in order, several a record).
#[derive(Debug)]
pub(super) struct ResultLog {
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) index: HashMap<u32, (u64, usize, JobRecord)>,
    /// Each with its offset and the tables decoded of it.
    pub(super) read: Vec<(u64, Vec<String>, std::sync::Arc<ResultGroup>)>,
}

impl ResultLog {
    /// Each of `jobs` jobs' record, `None` for a job without a stored result.
    pub(super) fn records(&self, jobs: usize) -> Vec<Option<JobRecord>> {
        (0..jobs as u32)
            .map(|j| self.index.get(&j).map(|(_, _, r)| r.clone()))
            .collect()
    }
}

/// Records read back and kept by a log.
pub(super) const READ_CACHE: usize = 4;

pub(super) const MAGIC: &[u8; 4] = b"XTR2";
/// Magic and body length before the body; the length again after it.
pub(super) const FRAME: u64 = 4 + 8 + 8;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RecordHeader {
    pub(super) jobs: Vec<(u32, JobRecord)>,
    /// Name, bytes, and each job's `(start, rows)` in it.
    pub(super) tables: Vec<(String, u64, Spans)>,
}

/// One record read back: its header, table bytes, and where the next one starts.
pub(super) struct LogRecord {
    pub(super) header: RecordHeader,
    pub(super) tables: Vec<u8>,
    pub(super) next: u64,
}

/// Writes a file atomically: a crash leaves the old file or the new, never half of one.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub(super) fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One record of `group`, in two pieces written one after the other: the frame's head with
/// the header, then the tables' streams with the frame's tail. Apart, the streams (nearly
/// all of a record's bytes) are not copied once more to join them.
pub(super) fn encode(group: &ResultGroup) -> io::Result<[Vec<u8>; 2]> {
    // About what the streams take, so that they are not copied as they grow.
    let mut streams = Vec::with_capacity(group.bytes() + 4096);
    let mut tables = Vec::with_capacity(group.tables.len());
    for t in &group.tables {
        let before = streams.len();
        let Some(first) = t.rows.first() else {
            continue;
        };
        let mut w = StreamWriter::try_new(&mut streams, &first.schema()).map_err(other)?;
        for b in &t.rows {
            w.write(b).map_err(other)?;
        }
        w.finish().map_err(other)?;
        drop(w);
        tables.push((
            t.name.clone(),
            (streams.len() - before) as u64,
            t.spans.clone(),
        ));
    }
    let header = serde_json::to_vec(&RecordHeader {
        jobs: group.jobs.clone(),
        tables,
    })
    .map_err(other)?;
    let body = (header.len() + 1 + streams.len()) as u64;
    let mut head = Vec::with_capacity(MAGIC.len() + 8 + header.len() + 1);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&body.to_le_bytes());
    head.extend_from_slice(&header);
    head.push(b'\n');
    streams.extend_from_slice(&body.to_le_bytes());
    Ok([head, streams])
}

/// Reads the record at `offset`, or `None` where the log ends or its last record is cut
/// short.
pub(super) fn read_record(
    file: &File,
    offset: u64,
    file_len: u64,
) -> io::Result<Option<LogRecord>> {
    let mut head = [0u8; 12];
    let got = head.len().min(file_len.saturating_sub(offset) as usize);
    file.read_exact_at(&mut head[..got], offset)?;
    if got >= MAGIC.len() {
        let magic = &head[..MAGIC.len()];
        // A torn append starts with the magic; anything else is not this log's record, and
        // is not cut off: it may be a result this version cannot read.
        if magic != MAGIC {
            return Err(other(format!(
                "the record at byte {offset} is not an {} record (it starts {:?}){}",
                String::from_utf8_lossy(MAGIC),
                String::from_utf8_lossy(magic),
                if magic == b"XTR1" {
                    ": the log was written by an earlier version, which must finish its batches"
                } else {
                    ""
                }
            )));
        }
    }
    if offset + FRAME > file_len {
        return Ok(None);
    }
    let body = u64::from_le_bytes(head[4..12].try_into().map_err(other)?);
    if body > file_len || offset + FRAME + body > file_len {
        return Ok(None);
    }
    let mut bytes = vec![0u8; body as usize + 8];
    file.read_exact_at(&mut bytes, offset + 12)?;
    let trailer = u64::from_le_bytes(bytes[body as usize..].try_into().map_err(other)?);
    if trailer != body {
        return Ok(None);
    }
    bytes.truncate(body as usize);
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let Ok(header) = serde_json::from_slice::<RecordHeader>(&bytes[..newline]) else {
        return Ok(None);
    };
    let tables = bytes.split_off(newline + 1);
    Ok(Some(LogRecord {
        header,
        tables,
        next: offset + FRAME + body,
    }))
}

/// A record's tables named in `wanted`, decoded.
pub(super) fn decode(r: LogRecord, wanted: &[&str]) -> io::Result<ResultGroup> {
    let mut tables = Vec::with_capacity(r.header.tables.len());
    let mut at = 0usize;
    for (name, size, spans) in r.header.tables {
        let bytes = r
            .tables
            .get(at..at + size as usize)
            .ok_or_else(|| other(format!("table {name} cut short")))?;
        at += size as usize;
        if !wanted.contains(&name.as_str()) {
            continue;
        }
        let reader = StreamReader::try_new(bytes, None).map_err(other)?;
        let rows = reader.collect::<Result<Vec<_>, _>>().map_err(other)?;
        let total: usize = rows.iter().map(|b| b.num_rows()).sum();
        if spans.iter().flatten().any(|(start, n)| start + n > total) {
            return Err(other(format!("table {name}: a job's rows past its end")));
        }
        tables.push(GroupTable {
            name,
            rows,
            spans,
            own: false,
        });
    }
    Ok(ResultGroup {
        jobs: r.header.jobs,
        tables,
    })
}

/// A whole record held in memory (an object of the etcd store): unlike a log's last
/// record, it cannot be torn, so anything short or malformed is an error.
pub(super) fn parse_record(mut bytes: Vec<u8>) -> io::Result<LogRecord> {
    let bad = |why: &str| other(format!("result object: {why}"));
    if bytes.len() < FRAME as usize || &bytes[..4] != MAGIC {
        return Err(bad("not an XTR2 record"));
    }
    let body = u64::from_le_bytes(bytes[4..12].try_into().map_err(other)?);
    if FRAME + body != bytes.len() as u64 {
        return Err(bad("its length does not match its frame"));
    }
    let trailer = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().map_err(other)?);
    if trailer != body {
        return Err(bad("its trailer does not match its frame"));
    }
    bytes.truncate(bytes.len() - 8);
    let mut body = bytes.split_off(12);
    let newline = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header: RecordHeader = serde_json::from_slice(&body[..newline]).map_err(other)?;
    let tables = body.split_off(newline + 1);
    Ok(LogRecord {
        header,
        tables,
        next: 0,
    })
}
