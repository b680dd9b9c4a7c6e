//! The cluster store's end of a batch's results: compacting a finished batch (its jobs'
//! uploaded tables dropped, their records kept in one object named by the batch's finished
//! entry) and deleting a batch whole.

use etcd_client::DeleteOptions;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::*;

impl ClusterStore {
    pub(super) fn compact_results(&self, id: u64, jobs: usize) -> io::Result<()> {
        let Some(mut entry) = lock(&self.finished).get(&id).cloned() else {
            return Err(other(format!("batch {id} has not finished")));
        };
        if entry.done.is_some() {
            return Ok(());
        }
        let records: Vec<Option<JobRecord>> = {
            let index = lock(&self.index);
            let stored = index.get(&id);
            (0..jobs as u32)
                .map(|j| stored.and_then(|m| m.get(&j)).map(|l| l.record.clone()))
                .collect()
        };
        let done = format!("batches/{id}/done-{}.json", self.leader_tag());
        self.put_new(&done, serde_json::to_vec(&records).map_err(other)?)?;
        entry.done = Some(done);
        // The records' new home and the index's end in one write: a restart sees one or
        // the other, never neither.
        let results = key(&["results", &format!("{id:020}/")]);
        self.fenced(
            vec![],
            vec![
                TxnOp::put(
                    batch_key("finished", id),
                    serde_json::to_vec(&entry).map_err(other)?,
                    None,
                ),
                TxnOp::delete(results, Some(DeleteOptions::new().with_prefix())),
            ],
        )?;
        lock(&self.finished).insert(id, entry);
        lock(&self.index).remove(&id);
        lock(&self.read).retain(|(name, _, _)| !name.starts_with(&format!("batches/{id}/")));
        self.delete_objects(&format!("batches/{id}/groups"))
    }

    pub(super) fn delete_all(&self, id: u64) -> io::Result<()> {
        let with_prefix = || Some(DeleteOptions::new().with_prefix());
        self.fenced(
            vec![],
            vec![
                TxnOp::delete(batch_key("batches", id), None),
                TxnOp::delete(batch_key("finished", id), None),
                TxnOp::delete(batch_key("cancelled", id), None),
                TxnOp::delete(key(&["results", &format!("{id:020}/")]), with_prefix()),
            ],
        )?;
        lock(&self.finished).remove(&id);
        lock(&self.index).remove(&id);
        self.delete_objects(&format!("batches/{id}"))
    }

    /// Deletes every object under `prefix` (after the keys that named them are gone: an
    /// object left by a crash here is named by nothing).
    fn delete_objects(&self, prefix: &str) -> io::Result<()> {
        let (objects, prefix) = (self.objects.clone(), self.object(prefix));
        self.run(async move {
            let listed: Vec<_> = objects
                .list(Some(&prefix))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| other(format!("listing {prefix}: {e}")))?;
            for meta in listed {
                match objects.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(other(format!("deleting {}: {e}", meta.location))),
                }
            }
            Ok(())
        })
    }
}
