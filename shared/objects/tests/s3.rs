//! Market data in a real S3-compatible server (moto's, on loopback): read as the same
//! files in a directory read (CSV, Parquet, Arrow IPC, columns named by a manifest), cached
//! on disk and decoded in memory, never served stale.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use xt_objects::{DataAccess, DiskCache, ObjectDir, object_store_at};
use xt_shared::BarSource;
use xt_shared::cache::BarCache;
use xt_shared::source::{CsvDir, write_csv, write_ipc, write_parquet};
use xt_shared::spec::{BatchSpec, DataSpec, UniverseSpec};
use xt_shared::synthetic::SyntheticMarket;
use xt_testkit::{Moto, scratch};

fn options(moto: &Moto) -> Vec<(String, String)> {
    moto.options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn put(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>, path: &str, bytes: Vec<u8>) {
    let store = store.clone();
    let path = ObjectPath::from(path);
    rt.block_on(async move { store.put(&path, PutPayload::from(bytes)).await })
        .unwrap();
}

#[test]
fn bars_in_s3_read_as_the_same_files_on_disk_cached_and_never_stale() {
    let Some(moto) = Moto::start("bars") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, _) = object_store_at("s3://bars", options(&moto)).unwrap();
    // Five symbols as CSV under one prefix and as Parquet under another, the CSV also in a
    // local directory to compare with.
    let market = SyntheticMarket {
        symbols: 5,
        years: 3,
        seed: 7,
    };
    let local = scratch("objects-csv");
    for symbol in market.symbols().unwrap() {
        let bars = market.load(&symbol).unwrap();
        let mut csv = Vec::new();
        write_csv(&bars, &mut csv).unwrap();
        std::fs::write(local.join(format!("{symbol}.csv")), &csv).unwrap();
        put(&rt, &store, &format!("daily/csv/{symbol}.csv"), csv.clone());
        let mut parquet = Vec::new();
        write_parquet(&bars, &mut parquet).unwrap();
        put(&rt, &store, &format!("daily/pq/{symbol}.parquet"), parquet);
        let mut ipc = Vec::new();
        write_ipc(&bars, &mut ipc).unwrap();
        put(&rt, &store, &format!("daily/ipc/{symbol}.arrow"), ipc);
        let renamed = String::from_utf8(csv)
            .unwrap()
            .replacen("date,", "Stamp,", 1)
            .into_bytes();
        put(&rt, &store, &format!("daily/named/{symbol}.csv"), renamed);
    }
    put(
        &rt,
        &store,
        "daily/named/xt-dataset.json",
        br#"{"columns": {"date": "Stamp"}}"#.to_vec(),
    );
    let first = market.symbols().unwrap()[0].clone();
    // A universe file beside the bars, in both (listed as a symbol, as a directory lists it).
    let members = format!("symbol\n{first}\n").into_bytes();
    std::fs::write(local.join("members.csv"), &members).unwrap();
    put(&rt, &store, "daily/csv/members.csv", members);

    let access = DataAccess::new(&scratch("objects-cache"), 1 << 30, options(&moto));
    let csv = access
        .open(&DataSpec::parse("s3://bars/daily/csv").unwrap())
        .unwrap();
    let pq = access
        .open(&DataSpec::parse("s3://bars/daily/pq/").unwrap())
        .unwrap();
    let [ipc, named] = ["s3://bars/daily/ipc", "s3://bars/daily/named"]
        .map(|url| access.open(&DataSpec::parse(url).unwrap()).unwrap());
    let dir = CsvDir::open(&local).unwrap();
    assert_eq!(csv.symbols().unwrap(), dir.symbols().unwrap());
    assert_eq!(pq.symbols().unwrap(), market.symbols().unwrap());
    assert_eq!(ipc.symbols().unwrap(), market.symbols().unwrap());
    for symbol in market.symbols().unwrap() {
        let want = dir.load(&symbol).unwrap();
        assert_eq!(
            csv.load(&symbol).unwrap(),
            want,
            "{symbol} from CSV objects"
        );
        assert_eq!(
            pq.load(&symbol).unwrap(),
            want,
            "{symbol} from Parquet objects"
        );
        assert_eq!(
            ipc.load(&symbol).unwrap(),
            want,
            "{symbol} from Arrow objects"
        );
        assert_eq!(
            named.load(&symbol).unwrap(),
            want,
            "{symbol} from CSV objects with the manifest's column names"
        );
        assert_eq!(
            csv.dates(&symbol, None, None).unwrap(),
            want.dates,
            "{symbol}'s dates"
        );
    }
    // Read again: the decoded bars from the process's bar cache, the store asked only
    // whether each object changed; nothing fetched, not even from the disk cache.
    let (before, memory) = (access.cache_stats(), BarCache::global().stats());
    for symbol in market.symbols().unwrap() {
        csv.load(&symbol).unwrap();
    }
    let after = access.cache_stats();
    assert_eq!(after.misses, before.misses, "a second read fetches nothing");
    assert_eq!(after.hits, before.hits, "nor reads the disk cache");
    let now = BarCache::global().stats();
    assert_eq!(now.hits, memory.hits + 5, "{now:?}");
    assert_eq!(now.misses, memory.misses, "{now:?}");

    // A changed object is read changed, at once.
    let other = SyntheticMarket { seed: 8, ..market }.load(&first).unwrap();
    assert_ne!(other, market.load(&first).unwrap());
    let mut bytes = Vec::new();
    write_csv(&other, &mut bytes).unwrap();
    put(&rt, &store, &format!("daily/csv/{first}.csv"), bytes);
    assert_eq!(csv.load(&first).unwrap(), other);

    // The universe: a file under the prefix, resolved through the source.
    let data = DataSpec::parse("s3://bars/daily/csv").unwrap();
    let mut spec = BatchSpec::new("s3://bars/daily/csv", "macd");
    spec.universe = Some(UniverseSpec::File("members.csv".into()));
    let universe = xt_shared::open::resolve_universe(&spec, &data, csv.as_ref()).unwrap();
    assert_eq!(universe.len(), 1);
    spec.universe = Some(UniverseSpec::File("nope.csv".into()));
    let e = xt_shared::open::resolve_universe(&spec, &data, csv.as_ref()).unwrap_err();
    assert_eq!(e.field, "universe.file", "{e}");

    // Clear errors: an unknown symbol, a prefix with no bars.
    let e = csv.load("ZZZ").unwrap_err().to_string();
    assert!(
        e.contains("ZZZ") && e.contains("s3://bars/daily/csv/ZZZ.csv"),
        "{e}"
    );
    let e = access
        .open(&DataSpec::parse("s3://bars/nothing").unwrap())
        .err()
        .unwrap();
    assert_eq!(e.field, "data", "{e}");

    // A large object in ranges (here of 1 KiB), each of the version its size came from.
    let cache = Arc::new(DiskCache::open(&scratch("objects-ranges"), 1 << 30).unwrap());
    let (store, prefix) = object_store_at("s3://bars/daily/csv", options(&moto)).unwrap();
    let ranged = ObjectDir::open(
        "s3://bars/daily/csv".into(),
        store,
        prefix,
        cache.clone(),
        rt.handle().clone(),
    )
    .unwrap()
    .with_range(1024);
    let second = &market.symbols().unwrap()[1];
    assert_eq!(ranged.load(second).unwrap(), dir.load(second).unwrap());
    assert_eq!(cache.stats().misses, 1);
}
