//! The cluster store's batches read back at election: every batch's record, its jobs'
//! records (from the `results/` index, or a compacted batch's done object), its summary
//! and whether it was cancelled; the index and finished entries are kept for what follows.

use super::*;

impl ClusterStore {
    pub(super) fn restore_all(&self) -> io::Result<Vec<RestoredBatch>> {
        let cancelled: std::collections::HashSet<u64> = self
            .scan(&key(&["cancelled/"]))?
            .iter()
            .filter_map(|(k, _)| id_of(k, "cancelled"))
            .collect();
        let mut finished = HashMap::new();
        for (k, v) in self.scan(&key(&["finished/"]))? {
            if let Some(id) = id_of(&k, "finished") {
                finished.insert(
                    id,
                    serde_json::from_slice::<FinishedEntry>(&v).map_err(other)?,
                );
            }
        }
        let mut index: HashMap<u64, HashMap<u32, Located>> = HashMap::new();
        for (k, v) in self.scan(&key(&["results/"]))? {
            let Some(id) = id_of(&k, "results") else {
                continue;
            };
            let entry: GroupEntry = serde_json::from_slice(&v).map_err(other)?;
            let jobs = index.entry(id).or_default();
            for (job, k, record) in entry.jobs {
                jobs.entry(job).or_insert(Located {
                    object: entry.object.clone(),
                    k,
                    record,
                });
            }
        }
        let mut out = Vec::new();
        for (k, v) in self.scan(&key(&["batches/"]))? {
            let Some(id) = id_of(&k, "batches") else {
                continue;
            };
            let entry: BatchEntry = serde_json::from_slice(&v).map_err(other)?;
            let bytes = self
                .get(&entry.accepted)?
                .ok_or_else(|| other(format!("batch {id}: {} is missing", entry.accepted)))?;
            let record: AcceptedBatch = serde_json::from_slice(&bytes).map_err(other)?;
            let jobs = index.get(&id);
            let compacted = finished.get(&id).and_then(|f| f.done.as_ref());
            let done = match compacted {
                Some(name) => {
                    let bytes = self
                        .get(name)?
                        .ok_or_else(|| other(format!("batch {id}: {name} is missing")))?;
                    serde_json::from_slice(&bytes).map_err(other)?
                }
                None => (0..record.jobs.len() as u32)
                    .map(|j| jobs.and_then(|m| m.get(&j)).map(|l| l.record.clone()))
                    .collect(),
            };
            let summary = match finished.get(&id) {
                Some(f) => match self.get(&f.summary)? {
                    Some(b) => Some(serde_json::from_slice(&b).map_err(other)?),
                    None => None,
                },
                None => None,
            };
            out.push(RestoredBatch {
                id,
                record,
                done,
                summary,
                cancelled: cancelled.contains(&id),
            });
        }
        *lock(&self.index) = index;
        *lock(&self.finished) = finished;
        Ok(out)
    }
}
