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

/// The directory of the running program's profile (`target/debug`): a test binary is in its
/// `deps/`, a program (the bench) in the directory itself.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary's path");
    let dir = exe.parent().expect("a binary in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    }
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

/// An etcd cluster of real `etcd` processes (Debian's `etcd-server`) on loopback ports, its
/// data in a scratch directory; stopped when dropped.
pub struct Etcd {
    pub members: Vec<Option<Proc>>,
    /// Each member's client URL.
    pub urls: Vec<String>,
    args: Vec<Vec<String>>,
}

/// A free loopback port (free when asked: etcd binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether tests may skip what needs etcd (not when `XT_REQUIRE_ETCD` is set, as in CI).
fn etcd_missing(why: &str) -> Option<Etcd> {
    if std::env::var_os("XT_REQUIRE_ETCD").is_some() {
        panic!("XT_REQUIRE_ETCD is set, but {why}");
    }
    eprintln!("skipped: {why} (install Debian's etcd-server, as .ci/run does)");
    None
}

impl Etcd {
    /// `n` members under the scratch directory `name`; `None` (the test skips, saying why)
    /// where no `etcd` binary is installed.
    pub fn start(name: &str, n: usize) -> Option<Etcd> {
        let bin = std::env::var("XT_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        if Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return etcd_missing("no etcd binary on PATH");
        }
        let dir = scratch(name);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members: Vec::new(),
            urls: Vec::new(),
            args: Vec::new(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let data = dir.join(format!("m{i}"));
            etcd.args.push(vec![
                bin.clone(),
                format!("--name=m{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={cluster}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=xt-test".into(),
                // Quick elections among members on loopback.
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
            ]);
            etcd.urls.push(client);
        }
        for i in 0..n {
            etcd.members.push(Some(etcd.spawn(i)));
        }
        for i in 0..n {
            etcd.wait_ready(i);
        }
        Some(etcd)
    }

    fn spawn(&self, i: usize) -> Proc {
        let args = &self.args[i];
        Proc(
            Command::new(&args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", args[0])),
        )
    }

    /// Waits until member `i` answers its health endpoint (a minute at most).
    pub fn wait_ready(&self, i: usize) {
        let addr = self.urls[i].trim_start_matches("http://").to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let req = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let mut reply = String::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_string(&mut reply).is_ok()
                    && reply.contains("\"health\":\"true\"")
                {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "etcd member {i} at {addr} not healthy within a minute"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.members[i] = None;
    }

    /// Starts member `i` again on its data (after [`Etcd::kill`]).
    pub fn restart(&mut self, i: usize) {
        self.members[i] = Some(self.spawn(i));
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.urls.join(",")
    }
}

/// An S3-compatible server on loopback: moto's server mode (`pip install 'moto[server]'`),
/// with one bucket; stopped when dropped.
pub struct Moto {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// A server with bucket `bucket`; `None` (the test skips, saying why) where
    /// `moto_server` is not installed, unless `XT_REQUIRE_S3` is set.
    pub fn start(bucket: &str) -> Option<Moto> {
        let bin = std::env::var("XT_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        if Command::new(&bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            let why = format!("no {bin} (pip install 'moto[server]', as .ci/run does)");
            assert!(
                std::env::var_os("XT_REQUIRE_S3").is_none(),
                "XT_REQUIRE_S3 is set, but {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        let port = free_port();
        let proc = Proc(
            Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin}: {e}")),
        );
        let addr = format!("127.0.0.1:{port}");
        // The bucket, made with a plain request once the server answers (a minute at most).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let req = format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let mut reply = String::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_string(&mut reply).is_ok()
                    && reply.starts_with("HTTP/1.1 200")
                {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto at {addr} did not create bucket {bucket} within a minute"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(Moto {
            proc,
            endpoint: format!("http://{addr}"),
        })
    }

    /// The object store client's options for this server.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

/// Writes a point-in-time market to `dir`: five synthetic symbols over four years as CSV
/// files, and a `universe.csv` with weights in which one symbol is always a member, one
/// joins late, one leaves, one leaves and comes back and one is a member for a while only.
/// Returns the first and last dates, ISO.
pub fn pit_market(dir: &Path) -> (String, String) {
    use xt_shared::date::format_date;
    use xt_shared::{BarSource, SyntheticMarket, source::write_csv};
    let synth = SyntheticMarket {
        symbols: 5,
        years: 4,
        seed: 21,
    };
    std::fs::create_dir_all(dir).expect("the market's directory");
    for s in synth.symbols().expect("synthetic symbols") {
        let bars = synth.load(&s).expect("synthetic bars");
        let file = std::fs::File::create(dir.join(format!("{s}.csv"))).expect("a CSV file");
        write_csv(&bars, file).expect("written");
    }
    let dates = synth.load("SYN00000").expect("synthetic bars").dates;
    let at = |k: usize| format_date(dates[k]);
    std::fs::write(
        dir.join("universe.csv"),
        format!(
            "symbol,weight,start_date,end_date\n\
             SYN00000,3,,\n\
             SYN00001,1,{},{}\n\
             SYN00001,1,{},\n\
             SYN00002,2,{},\n\
             SYN00003,1,,{}\n\
             SYN00004,0.5,{},{}\n",
            at(0),
            at(200),
            at(400),
            at(150),
            at(600),
            at(300),
            at(700),
        ),
    )
    .expect("universe.csv");
    (at(0), at(dates.len() - 1))
}
