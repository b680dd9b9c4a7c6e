//! The Python peers (backtrader, vectorbt) in a venv of the bench's own, and the CSV files
//! every engine of a comparison reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;
use xt_shared::SyntheticMarket;
use xt_shared::source::write_csv;

const REQUIREMENTS: &str = include_str!("../requirements.txt");

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Python with the peers installed, and the script that runs them.
#[derive(Debug, Clone)]
pub struct Peers {
    python: PathBuf,
    script: PathBuf,
    pub versions: Value,
}

impl Peers {
    /// `XT_BENCH_PYTHON` if set; else `bench/.venv`, made and filled from
    /// `bench/requirements.txt` the first time (and again when that file changes).
    pub fn setup() -> anyhow::Result<Peers> {
        let python = match std::env::var_os("XT_BENCH_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => venv()?,
        };
        let script = bench_dir().join("peers/peer_bench.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg("versions")
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !out.status.success() {
            bail!(
                "{} cannot run the peers: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let versions: Value = serde_json::from_slice(&out.stdout)?;
        for peer in ["backtrader", "vectorbt"] {
            if versions[peer].is_null() {
                bail!("{peer} is not installed for {}", python.display());
            }
        }
        Ok(Peers {
            python,
            script,
            versions,
        })
    }

    /// Runs one case (see `peer_bench.py`) and returns its JSON answer.
    pub fn run(&self, case: &Value) -> anyhow::Result<Value> {
        let file = std::env::temp_dir().join(format!("xt-bench-case-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_vec(case)?)?;
        let out = Command::new(&self.python)
            .arg(&self.script)
            .arg("run")
            .arg(&file)
            .output()?;
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            bail!(
                "{} failed on {}: {}",
                case["engine"],
                case["strategy"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

fn venv() -> anyhow::Result<PathBuf> {
    let dir = bench_dir().join(".venv");
    let python = dir.join("bin/python");
    let stamp = dir.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(REQUIREMENTS) {
        return Ok(python);
    }
    eprintln!(
        "Installing the peers into {} (once; bench/requirements.txt)...",
        dir.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("python3 is needed for the peers (or set XT_BENCH_PYTHON)")?;
    if !status.success() {
        bail!(
            "python3 -m venv {} failed (is python3-venv installed?)",
            dir.display()
        );
    }
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(bench_dir().join("requirements.txt"))
        .status()?;
    if !status.success() {
        bail!("pip could not install bench/requirements.txt");
    }
    std::fs::write(&stamp, REQUIREMENTS)?;
    Ok(python)
}

/// The synthetic market written as one CSV per symbol (cached in the temporary directory):
/// the files every engine of a comparison reads.
pub fn market_csv(market: &SyntheticMarket) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "xt-bench-data/syn-{}x{}-{}",
        market.symbols, market.years, market.seed
    ));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    for i in 0..market.symbols {
        let file = std::fs::File::create(dir.join(format!("{}.csv", market.symbol(i))))?;
        write_csv(&market.generate(i), file)?;
    }
    std::fs::write(&done, "")?;
    Ok(dir)
}

/// The bars of `symbol` in `dir`.
pub fn bars(dir: &Path, symbol: &str) -> anyhow::Result<xt_shared::Bars> {
    Ok(xt_shared::source::read_csv(
        symbol,
        std::fs::File::open(dir.join(format!("{symbol}.csv")))?,
    )?)
}
