//! What the tests of every crate share: child processes that die with the test, scratch
//! directories under the target directory, the cluster's binaries, a coordinator process,
//! Parquet tables read back.
//!
//! The binaries are the ones cargo built beside the test: `cargo test --workspace` builds
//! every package's binaries before it runs any test (a package's binaries are built for its
//! own integration tests); a test run of one package alone uses what the last build left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A child process killed when the test ends, whatever happens.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The directory of the running test's profile (`target/debug`): the test binary is in its
/// `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary under target/<profile>/deps")
        .to_path_buf()
}

/// The path of the workspace binary `name` built with the running test's profile.
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`, or `cargo build --bins` first",
        path.display()
    );
    path
}

/// Where the scratch directories are: the target directory's `tmp/`.
pub fn scratch_root() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target/<profile>")
        .join("tmp")
}

/// A fresh, empty directory for test `name` under [`scratch_root`].
pub fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Starts `bin` with `args` and `envs`, and reads the `prefix ADDR` lines it prints first, in
/// order: the addresses it bound.
pub fn start(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    prefixes: &[&str],
) -> (Proc, Vec<String>) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut addrs = Vec::new();
    for prefix in prefixes {
        let mut line = String::new();
        out.read_line(&mut line).expect("a line of output");
        let addr = line
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{} printed {line:?}, not {prefix:?}", bin.display()));
        addrs.push(addr.trim().to_string());
    }
    (Proc(child), addrs)
}

/// An `xt-coordinator` process on `listen` (`127.0.0.1:0` for any port) with its state in
/// `state` and `extra` flags, and its URL.
pub fn coordinator(state: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "--listen",
        listen,
        "--state",
        state.to_str().expect("UTF-8"),
    ];
    args.extend_from_slice(extra);
    let (proc, addrs) = start(&bin("xt-coordinator"), &args, &[], &["listening on "]);
    (proc, format!("http://{}", addrs[0]))
}

/// A Parquet file's rows as one record batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("a record batch")).collect();
    arrow::compute::concat_batches(&schema, &batches).expect("one schema")
}
