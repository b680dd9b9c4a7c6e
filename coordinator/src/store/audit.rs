//! The cluster store's audit log: one immutable object per record under `audit/`, named so
//! that names sort as the records were written (the time, then the leader and a sequence).

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::*;

impl ClusterStore {
    pub(super) fn put_audit(&self, record: &serde_json::Value) -> io::Result<()> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("audit/{ms:016}-{}-{seq:08}.json", self.leader_tag());
        self.put_new(&name, serde_json::to_vec(record).map_err(other)?)
    }

    pub(super) fn read_audit(&self) -> io::Result<Vec<serde_json::Value>> {
        let (objects, prefix) = (self.objects.clone(), self.object("audit"));
        self.run(async move {
            let mut listed: Vec<_> = objects
                .list(Some(&prefix))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| other(format!("listing {prefix}: {e}")))?;
            listed.sort_by(|a, b| a.location.cmp(&b.location));
            let mut records = Vec::with_capacity(listed.len());
            for meta in listed {
                let bytes = objects
                    .get(&meta.location)
                    .await
                    .map_err(|e| other(format!("reading {}: {e}", meta.location)))?
                    .bytes()
                    .await
                    .map_err(|e| other(format!("reading {}: {e}", meta.location)))?;
                records.push(serde_json::from_slice(&bytes).map_err(other)?);
            }
            Ok(records)
        })
    }
}
