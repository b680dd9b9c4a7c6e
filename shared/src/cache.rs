//! The bar cache: recently read symbols' bars kept in memory, bounded in bytes, keyed by
//! the identity of what they were read from (a file's path, with its size and modification
//! time as its version). A second batch over the same data reads nothing; a file changed
//! since is read again, never served stale. One cache serves a process: the workers' jobs
//! and the coordinator's planning (which in `xt local` warms it for the workers).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::bars::{Bars, dates_in_range};
use crate::date::Date;
use crate::source::{BarSource, DataError};

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BarCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to stay within the bound.
    pub evictions: u64,
    pub entries: u64,
    pub bytes: u64,
}

struct Entry {
    version: String,
    bars: Arc<Bars>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    /// Last use -> key: the least recently used first.
    order: BTreeMap<u64, String>,
    bytes: u64,
    clock: u64,
}

/// Bars in memory, at most `capacity` bytes of them.
pub struct BarCache {
    capacity: u64,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

static GLOBAL: OnceLock<Arc<BarCache>> = OnceLock::new();

/// The memory one bar takes in the cache: a date and five numbers.
const BAR_BYTES: u64 = 4 + 5 * 8;

impl BarCache {
    pub fn new(capacity: u64) -> Arc<BarCache> {
        Arc::new(BarCache {
            capacity,
            lru: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// Sets the bound of the process's cache before its first use (a flag of the binary);
    /// false when it was in use already.
    pub fn init_global(capacity: u64) -> bool {
        GLOBAL.set(BarCache::new(capacity)).is_ok()
    }

    /// The process's cache, bounded by [`BarCache::init_global`], else `XT_BAR_CACHE_BYTES`,
    /// else [`default_capacity`].
    pub fn global() -> Arc<BarCache> {
        GLOBAL
            .get_or_init(|| {
                let bytes = std::env::var("XT_BAR_CACHE_BYTES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(default_capacity);
                BarCache::new(bytes)
            })
            .clone()
    }

    /// Drops every entry (the bench's cold runs).
    pub fn clear(&self) {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let clock = lru.clock;
        *lru = Lru {
            clock,
            ..Lru::default()
        };
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn stats(&self) -> BarCacheStats {
        let lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        BarCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: lru.entries.len() as u64,
            bytes: lru.bytes,
        }
    }

    /// The bars stored at `key` in `version`: from memory when they are there in that
    /// version, else from `read` (and kept, if they fit). A read that fails is not kept.
    pub fn get_or_read(
        &self,
        key: &str,
        version: &str,
        read: impl FnOnce() -> Result<Bars, DataError>,
    ) -> Result<Arc<Bars>, DataError> {
        {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            let lru = &mut *lru;
            lru.clock += 1;
            let now = lru.clock;
            if let Some(e) = lru.entries.get_mut(key)
                && e.version == version
            {
                lru.order.remove(&e.used);
                e.used = now;
                lru.order.insert(now, key.to_string());
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(e.bars.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Read without the lock: other symbols' hits go on meanwhile.
        let bars = Arc::new(read()?);
        let bytes = bars.len() as u64 * BAR_BYTES + (key.len() + version.len()) as u64;
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = lru.entries.remove(key) {
            lru.order.remove(&old.used);
            lru.bytes -= old.bytes;
        }
        if bytes > self.capacity {
            return Ok(bars);
        }
        while lru.bytes + bytes > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.entries.remove(&oldest) {
                lru.bytes -= e.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        lru.clock += 1;
        let now = lru.clock;
        lru.order.insert(now, key.to_string());
        lru.bytes += bytes;
        lru.entries.insert(
            key.to_string(),
            Entry {
                version: version.to_string(),
                bars: bars.clone(),
                bytes,
                used: now,
            },
        );
        Ok(bars)
    }
}

/// An eighth of the machine's memory (from `/proc/meminfo`), or 1 GiB where that cannot be
/// read: ten years of daily bars of 3,000 symbols take about 330 MB.
pub fn default_capacity() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 8)
        })
        .unwrap_or(1 << 30)
}

/// A source read through a [`BarCache`]: symbols whose source can say what identifies
/// their stored bars ([`BarSource::identity`]) are read once per version.
pub struct Cached {
    inner: Arc<dyn BarSource>,
    cache: Arc<BarCache>,
}

impl Cached {
    pub fn new(inner: Arc<dyn BarSource>, cache: Arc<BarCache>) -> Cached {
        Cached { inner, cache }
    }
}

impl Cached {
    /// `symbol`'s whole bars through the cache; `None` when its source cannot say what
    /// identifies them (they are read every time, as the source reads them).
    fn cached(&self, symbol: &str) -> Option<Result<Arc<Bars>, DataError>> {
        let (key, version) = self.inner.identity(symbol)?;
        Some(
            self.cache
                .get_or_read(&key, &version, || self.inner.read(symbol)),
        )
    }
}

impl BarSource for Cached {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        match self.cached(symbol) {
            Some(bars) => bars.map(|b| (*b).clone()),
            None => self.inner.read(symbol),
        }
    }

    /// The range is cut from the cached bars: only what the job needs is copied.
    fn load_range(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Bars, DataError> {
        match self.cached(symbol) {
            Some(bars) => Ok(bars?.validated_slice(start, end)?),
            None => self.inner.load_range(symbol, start, end),
        }
    }

    /// Planning reads the whole bars into the cache, not only their dates: the jobs that
    /// follow (in this process, or in the next batch) read them from there.
    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        match self.cached(symbol) {
            Some(bars) => Ok(dates_in_range(symbol, &bars?.dates, start, end)?),
            None => self.inner.dates(symbol, start, end),
        }
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        self.inner.symbols()
    }

    fn side_file(&self, name: &str) -> Result<Option<Vec<u8>>, DataError> {
        self.inner.side_file(name)
    }

    fn identity(&self, symbol: &str) -> Option<(String, String)> {
        self.inner.identity(symbol)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::source::{CsvDir, write_csv};
    use crate::synthetic::SyntheticMarket;

    /// A real directory of CSV files, whose reads are counted.
    struct Counted {
        dir: CsvDir,
        reads: AtomicUsize,
    }

    impl BarSource for Counted {
        fn read(&self, symbol: &str) -> Result<Bars, DataError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.dir.read(symbol)
        }
        fn symbols(&self) -> Result<Vec<String>, DataError> {
            self.dir.symbols()
        }
        fn identity(&self, symbol: &str) -> Option<(String, String)> {
            self.dir.identity(symbol)
        }
    }

    /// Writes `bars` as a CSV file last modified `age` ago (older than the racy window, so
    /// its size and time identify it).
    fn write(dir: &std::path::Path, bars: &Bars, age: u64) {
        let path = dir.join(format!("{}.csv", bars.symbol));
        write_csv(bars, std::fs::File::create(&path).unwrap()).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn market(dir: &std::path::Path, symbols: usize) -> Vec<Bars> {
        let m = SyntheticMarket {
            symbols,
            years: 1,
            seed: 3,
        };
        m.symbols()
            .unwrap()
            .iter()
            .map(|s| {
                let bars = m.load(s).unwrap();
                write(dir, &bars, 60);
                bars
            })
            .collect()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xt-bar-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_read_is_served_from_memory_and_a_changed_file_is_read_again() {
        let dir = scratch("changed");
        let bars = market(&dir, 2);
        let inner = Arc::new(Counted {
            dir: CsvDir::open(&dir).unwrap(),
            reads: AtomicUsize::new(0),
        });
        let cache = BarCache::new(1 << 30);
        let source = Cached::new(inner.clone(), cache.clone());
        let s = bars[0].symbol.clone();
        let first = source.load_range(&s, None, None).unwrap();
        let dates = source.dates(&s, None, None).unwrap();
        let second = source.load(&s).unwrap();
        assert_eq!(inner.reads.load(Ordering::Relaxed), 1);
        assert_eq!(
            (first.close.clone(), dates),
            (second.close.clone(), second.dates.clone())
        );
        assert_eq!(first.close, bars[0].close);
        assert_eq!(cache.stats().hits, 2);

        // Rewritten: another close on one bar (a size change or a new modification time).
        let mut changed = bars[0].clone();
        changed.close[10] = if changed.close[10] == changed.low[10] {
            changed.high[10]
        } else {
            changed.low[10]
        };
        write(&dir, &changed, 30);
        let third = source.load_range(&s, None, None).unwrap();
        assert_eq!(inner.reads.load(Ordering::Relaxed), 2);
        assert_eq!(third.close[10], changed.close[10]);
        assert_ne!(third.close[10], first.close[10]);
        // Just written (inside the racy window): read every time, never kept.
        write_csv(
            &changed,
            std::fs::File::create(dir.join(format!("{s}.csv"))).unwrap(),
        )
        .unwrap();
        source.load(&s).unwrap();
        source.load(&s).unwrap();
        assert_eq!(inner.reads.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_byte_bound_holds_and_the_least_recent_goes_first() {
        let dir = scratch("bound");
        let bars = market(&dir, 4);
        let inner = Arc::new(Counted {
            dir: CsvDir::open(&dir).unwrap(),
            reads: AtomicUsize::new(0),
        });
        // Room for two symbols' bars, not three.
        let one = bars[0].len() as u64 * BAR_BYTES + 400;
        let cache = BarCache::new(2 * one + one / 2);
        let source = Cached::new(inner.clone(), cache.clone());
        let names: Vec<String> = bars.iter().map(|b| b.symbol.clone()).collect();
        for s in [&names[0], &names[1], &names[0], &names[2]] {
            source.load(s).unwrap();
        }
        let st = cache.stats();
        assert!(st.bytes <= cache.capacity(), "{st:?}");
        assert_eq!((st.entries, st.evictions, st.hits, st.misses), (2, 1, 1, 3));
        // names[1] was the least recently used: it went; names[0] stayed.
        source.load(&names[0]).unwrap();
        assert_eq!(inner.reads.load(Ordering::Relaxed), 3);
        source.load(&names[1]).unwrap();
        assert_eq!(inner.reads.load(Ordering::Relaxed), 4);
        // Bars bigger than the whole cache are read and not kept.
        let tiny = BarCache::new(100);
        let source = Cached::new(inner.clone(), tiny.clone());
        source.load(&names[3]).unwrap();
        source.load(&names[3]).unwrap();
        assert_eq!((tiny.stats().entries, tiny.stats().hits), (0, 0));
    }
}
