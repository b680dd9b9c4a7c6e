//! What the API crate's tests share: the `xt` binary and its output directories, the
//! peers' Python, and what the tests of the distributed mode with an S3 server need.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs the `xt` binary (with no `XT_OUT` from the environment).
pub fn xt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xt"))
        .args(args)
        .env_remove("XT_OUT")
        .output()
        .expect("run xt")
}

/// An empty output directory's path, `name` under the target's scratch directory.
pub fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The peers' Python with `imports` (`XT_PYTHON`, else the checkout's `.venv`), or `None`
/// with a message; `XT_REQUIRE_PEERS=1` makes its absence a failure.
pub fn peers_python(imports: &str) -> Option<String> {
    let candidates = [
        std::env::var("XT_PYTHON").ok(),
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_string()),
    ];
    for p in candidates.into_iter().flatten() {
        let ok = Command::new(&p)
            .args(["-c", &format!("import {imports}")])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    assert!(
        std::env::var("XT_REQUIRE_PEERS").is_err(),
        "XT_REQUIRE_PEERS is set but no Python with {imports} was found"
    );
    eprintln!("skipping: no Python with {imports} (set XT_PYTHON)");
    None
}
