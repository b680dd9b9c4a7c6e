//! Saved strategies: each tenant's written strategies, immutable versions addressed by the
//! hash of their source, stored durably and kept in memory. A batch that names one (by
//! name, its newest version; or by hash) is stored with that version's source inline, so
//! it records exactly what it ran, whatever is saved or deleted later.

use super::*;
use crate::store::SavedStrategy;

/// The most saved versions one tenant may keep.
pub const MAX_SAVED: usize = 1_000;

/// Every tenant's saved strategies.
#[derive(Debug, Default)]
pub(super) struct Library {
    by_tenant: HashMap<String, Vec<SavedStrategy>>,
}

impl Library {
    pub(super) fn restore(saved: Vec<SavedStrategy>) -> Self {
        let mut lib = Library::default();
        for s in saved {
            lib.by_tenant.entry(s.tenant.clone()).or_default().push(s);
        }
        lib
    }

    /// The versions a reference names: a hash names one, a name every version of it
    /// (newest first).
    fn find(&self, tenant: &str, reference: &str) -> Vec<&SavedStrategy> {
        let mut found: Vec<&SavedStrategy> = self
            .by_tenant
            .get(tenant)
            .into_iter()
            .flatten()
            .filter(|s| s.hash == reference || s.name == reference)
            .collect();
        found.sort_by(|a, b| b.saved_ms.cmp(&a.saved_ms).then(b.hash.cmp(&a.hash)));
        found
    }
}

fn not_found(reference: &str) -> CoordinatorError {
    CoordinatorError::NotFound(format!("no saved strategy {reference:?}"))
}

impl Coordinator {
    fn library(&self) -> std::sync::MutexGuard<'_, Library> {
        // Each change is one push or retain; a poisoned lock still holds good data.
        self.library.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compiles `source` and saves it for `tenant`; saving a version already saved returns it.
    pub fn save_strategy(
        &self,
        tenant: &str,
        owner: &str,
        source: &str,
    ) -> Result<SavedStrategy, CoordinatorError> {
        let script = xt_shared::lang::Script::compile(source).map_err(|e| {
            CoordinatorError::Spec(xt_shared::SpecError::new("source", e.to_string()))
        })?;
        let hash = script.hash().to_string();
        if let Some(s) = self.library().find(tenant, &hash).first() {
            return Ok((*s).clone());
        }
        if self.library().by_tenant.get(tenant).map_or(0, Vec::len) >= MAX_SAVED {
            return Err(CoordinatorError::Spec(xt_shared::SpecError::new(
                "source",
                format!("the tenant keeps {MAX_SAVED} saved versions already; delete some first"),
            )));
        }
        let saved = SavedStrategy {
            tenant: tenant.to_string(),
            name: script.name.clone(),
            hash,
            source: source.to_string(),
            owner: owner.to_string(),
            saved_ms: now_ms(),
        };
        self.store
            .save_strategy(&saved)
            .map_err(|e| CoordinatorError::Unavailable(format!("storing the strategy: {e}")))?;
        let mut lib = self.library();
        lib.by_tenant
            .entry(tenant.to_string())
            .or_default()
            .push(saved.clone());
        Ok(saved)
    }

    /// The tenant's saved versions, by name, newest first within a name.
    pub fn saved_strategies(&self, tenant: &str) -> Vec<SavedStrategy> {
        let lib = self.library();
        let mut all: Vec<SavedStrategy> = lib.by_tenant.get(tenant).cloned().unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(b.saved_ms.cmp(&a.saved_ms)));
        all
    }

    /// The version `reference` names: the newest of a name, or the one with a hash.
    pub fn saved_strategy(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<SavedStrategy, CoordinatorError> {
        self.library()
            .find(tenant, reference)
            .first()
            .map(|s| (*s).clone())
            .ok_or_else(|| not_found(reference))
    }

    /// Deletes what `reference` names (one version by hash, every version by name);
    /// returns how many versions went.
    pub fn delete_strategy(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<usize, CoordinatorError> {
        let hashes: Vec<String> = self
            .library()
            .find(tenant, reference)
            .iter()
            .map(|s| s.hash.clone())
            .collect();
        if hashes.is_empty() {
            return Err(not_found(reference));
        }
        for hash in &hashes {
            self.store.delete_strategy(tenant, hash).map_err(|e| {
                CoordinatorError::Unavailable(format!("deleting the strategy: {e}"))
            })?;
        }
        if let Some(list) = self.library().by_tenant.get_mut(tenant) {
            list.retain(|s| !hashes.contains(&s.hash));
        }
        Ok(hashes.len())
    }

    /// A spec whose `strategy` names a saved strategy of `tenant`, with that version's
    /// source in its place; a built-in's name or a source is left as it is.
    pub(super) fn with_saved_source(
        &self,
        mut spec: BatchSpec,
        tenant: &str,
    ) -> Result<BatchSpec, CoordinatorError> {
        let name = spec.strategy.trim();
        if xt_shared::lang::is_source(&spec.strategy) || xt_shared::strategy::find(name).is_some() {
            return Ok(spec);
        }
        match self.library().find(tenant, name).first() {
            Some(saved) => spec.strategy = saved.source.clone(),
            // Left for the usual error, which lists the built-ins.
            None => return Ok(spec),
        }
        Ok(spec)
    }
}
