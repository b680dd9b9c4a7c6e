//! What the tests of the distributed mode with an S3 server share.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::Path;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use xt_shared::source::write_csv;
use xt_shared::{BarSource, SyntheticMarket};
use xt_testkit::Moto;

/// The object store client's options for `moto`, as the cluster's programs take them.
pub fn aws(moto: &Moto) -> Vec<(String, String)> {
    moto.options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// `market`'s bars as CSV objects under `url` (`s3://bucket/prefix`), and as files in
/// `local` for the in-process run to compare with.
pub async fn put_market(
    aws: &[(String, String)],
    url: &str,
    market: &SyntheticMarket,
    local: &Path,
) {
    let (store, prefix) = xt_objects::object_store_at(url, aws.to_vec()).unwrap();
    std::fs::create_dir_all(local).unwrap();
    let mut puts = Vec::new();
    for symbol in market.symbols().unwrap() {
        let mut csv = Vec::new();
        write_csv(&market.load(&symbol).unwrap(), &mut csv).unwrap();
        std::fs::write(local.join(format!("{symbol}.csv")), &csv).unwrap();
        let (store, path) = (store.clone(), prefix.clone().join(format!("{symbol}.csv")));
        puts.push(async move { store.put(&path, PutPayload::from(csv)).await });
    }
    for put in futures::future::join_all(puts).await {
        put.unwrap();
    }
}

/// Puts `bytes` as object `key` of `url`'s store.
pub async fn put(aws: &[(String, String)], url: &str, key: &str, bytes: Vec<u8>) {
    let (store, _) = xt_objects::object_store_at(url, aws.to_vec()).unwrap();
    store
        .put(&ObjectPath::from(key), PutPayload::from(bytes))
        .await
        .unwrap();
}
