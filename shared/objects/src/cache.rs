//! A bounded cache of objects on local disk, keyed by the object's location and checked
//! against its ETag on every use, so a changed object is never served stale.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Objects' bytes in files under one directory, at most `capacity` bytes of them; the least
/// recently used go first. Each process has a directory of its own under the one it is
/// given (a worker and a coordinator on one machine share nothing), and clears those of
/// processes that have exited.
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
    files: u64,
    stats: CacheStats,
}

struct Entry {
    file: PathBuf,
    e_tag: String,
    size: u64,
    used: u64,
}

/// What a cache has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from disk after the store said the object had not changed.
    pub hits: u64,
    /// Reads that fetched the object (first read, changed, or evicted).
    pub misses: u64,
    /// Bytes and objects held now.
    pub bytes: u64,
    pub entries: u64,
}

impl DiskCache {
    pub fn open(dir: &Path, capacity: u64) -> io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        clear_exited(dir);
        let dir = dir.join(format!("p{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache {
            dir,
            capacity,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change completes under the lock: a poisoned one is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ETag `key` was cached with, if it is cached.
    pub fn e_tag(&self, key: &str) -> Option<String> {
        self.lock().entries.get(key).map(|e| e.e_tag.clone())
    }

    /// The cached bytes of `key`, when the store has said they are still its bytes; `None`
    /// when they are gone (evicted meanwhile), and the caller fetches them.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        let file = {
            let mut s = self.lock();
            s.clock += 1;
            let clock = s.clock;
            let entry = s.entries.get_mut(key)?;
            entry.used = clock;
            entry.file.clone()
        };
        let bytes = std::fs::read(file).ok()?;
        self.lock().stats.hits += 1;
        Some(bytes)
    }

    /// Keeps `bytes` as `key`'s at `e_tag`, evicting the least recently used past the
    /// bound; an object larger than the whole bound is not kept. Counts a miss.
    pub fn insert(&self, key: &str, e_tag: Option<&str>, bytes: &[u8]) {
        let size = bytes.len() as u64;
        let file = {
            let mut s = self.lock();
            s.stats.misses += 1;
            s.files += 1;
            self.dir.join(format!("{}.obj", s.files))
        };
        self.remove(key);
        // Without an ETag there is nothing to check a copy against: it is not kept.
        let Some(e_tag) = e_tag else { return };
        if size > self.capacity || std::fs::write(&file, bytes).is_err() {
            let _ = std::fs::remove_file(&file);
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut s = self.lock();
            s.clock += 1;
            let used = s.clock;
            s.bytes += size;
            if let Some(old) = s.entries.insert(
                key.to_string(),
                Entry {
                    file,
                    e_tag: e_tag.to_string(),
                    size,
                    used,
                },
            ) {
                // Another thread cached it meanwhile.
                s.bytes -= old.size;
                evicted.push(old.file);
            }
            while s.bytes > self.capacity {
                let Some(oldest) = s
                    .entries
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                let entry = s.entries.remove(&oldest).expect("just found");
                s.bytes -= entry.size;
                evicted.push(entry.file);
            }
        }
        for file in evicted {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Forgets `key` (the object is gone from the store).
    pub fn remove(&self, key: &str) {
        let entry = {
            let mut s = self.lock();
            let entry = s.entries.remove(key);
            if let Some(e) = &entry {
                s.bytes -= e.size;
            }
            entry
        };
        if let Some(e) = entry {
            let _ = std::fs::remove_file(e.file);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            bytes: s.bytes,
            entries: s.entries.len() as u64,
            ..s.stats
        }
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the directories of caches whose process has exited (where `/proc` says so).
fn clear_exited(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix('p')) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_go_first_and_the_bound_holds() {
        let dir = xt_testkit::scratch("disk-cache");
        let cache = DiskCache::open(&dir, 250).unwrap();
        cache.insert("a", Some("1"), &[1; 100]);
        cache.insert("b", Some("1"), &[2; 100]);
        assert_eq!(cache.read("a").unwrap(), vec![1; 100]);
        // Over the bound: "b", used least recently, goes.
        cache.insert("c", Some("1"), &[3; 100]);
        assert!(cache.read("b").is_none());
        assert_eq!(cache.e_tag("a").as_deref(), Some("1"));
        let stats = cache.stats();
        assert_eq!(
            (stats.bytes, stats.entries, stats.hits, stats.misses),
            (200, 2, 1, 3)
        );
        // A new version replaces the old; one larger than the bound is not kept.
        cache.insert("a", Some("2"), &[4; 50]);
        assert_eq!(cache.e_tag("a").as_deref(), Some("2"));
        cache.insert("d", Some("1"), &[5; 300]);
        assert!(cache.e_tag("d").is_none());
        // Nothing without an ETag is kept: it could not be checked.
        cache.insert("e", None, &[6; 10]);
        assert!(cache.e_tag("e").is_none());
        let files = std::fs::read_dir(&cache.dir).unwrap().count() as u64;
        assert_eq!(files, cache.stats().entries, "no file outlives its entry");
    }
}
