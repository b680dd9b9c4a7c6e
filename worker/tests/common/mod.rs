//! Helpers of the tests that compare the engine with its peers (TA-Lib, backtrader,
//! empyrical) and read the real market data beside the checkout.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use xt_shared::{BarSource, Bars, Costs, CsvDir, Market, Member, Universe};
use xt_worker::engine::strategy::{self, ParamSet};
use xt_worker::engine::{Exchange, Job, Never, SleeveRun, run_job};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("worker/ sits in the workspace")
        .to_path_buf()
}

/// `../shared/data` beside the checkout, or `None` with a message saying what is skipped.
pub fn shared_data(what: &str) -> Option<PathBuf> {
    let dir = workspace().join("../shared/data");
    if dir.join("cn-csi300").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping {what}: ../shared/data (the real market data beside the checkout) is absent"
        );
        None
    }
}

/// The Python interpreter with the peer packages (`peers/requirements.txt`): `XT_PYTHON`,
/// else `.venv/bin/python` in the workspace, else `python3`. When none can import them the
/// test is skipped with a message, unless `XT_REQUIRE_PEERS=1` (as in CI) makes it fail.
pub fn peer_python(what: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("XT_PYTHON").map(PathBuf::from),
        Some(workspace().join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python)
            .args(["-c", "import talib, backtrader, empyrical"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    if std::env::var("XT_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!(
            "{what}: no Python with talib, backtrader and empyrical (set XT_PYTHON or run .ci/run)"
        );
    }
    eprintln!(
        "skipping {what}: no Python with the peers installed (pip install -r peers/requirements.txt, or set XT_PYTHON)"
    );
    None
}

/// Runs `peers/<script> <input.json>` and parses its JSON output.
pub fn run_peer(python: &Path, script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new(python)
        .arg(workspace().join("peers").join(script))
        .args(args)
        .output()
        .expect("start python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("peer prints JSON")
}

pub fn load_csv(dir: &Path, symbol: &str) -> Bars {
    CsvDir::open(dir)
        .expect("data dir")
        .load(symbol)
        .expect("valid bars")
}

pub fn member_of(universe: &Path, symbol: &str) -> Member {
    let u = Universe::load(universe).expect("universe");
    u.members
        .into_iter()
        .find(|m| m.symbol == symbol)
        .expect("symbol in universe")
}

/// The market rules and money one sleeve trades with.
#[derive(Debug, Clone, Copy)]
pub struct Venue {
    pub market: Market,
    pub costs: Costs,
    pub price_limit: Option<f64>,
    pub capital: f64,
}

/// One sleeve of one parameter set, as the runner runs it.
pub fn run_one(
    bars: &Bars,
    member: &[bool],
    venue: Venue,
    strategy: &str,
    params: &serde_json::Value,
) -> SleeveRun {
    let Venue {
        market,
        costs,
        price_limit,
        capital,
    } = venue;
    let s = strategy::find(strategy).expect("strategy");
    let map = serde_json::from_value(params.clone()).expect("params object");
    let combos: Vec<ParamSet> = strategy::expand(s.def(), Some(&map), None).expect("valid params");
    let exchange = Exchange::new(bars, market, costs, price_limit);
    let job = Job {
        bars,
        member,
        exchange: &exchange,
        capital,
    };
    let mut out = SleeveRun::default();
    run_job(&job, s, &combos, &Never, |_, run, _| out = run.clone()).expect("never halted");
    out
}

pub fn rel_diff(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
    }
}
