//! The `xt-coordinator` process: where it listens by default, and flags it refuses.

use std::process::Command;

use xt_testkit::{scratch, start};

/// Its port is for workers and the API, unauthenticated: loopback unless an operator says.
#[test]
fn its_default_address_is_loopback_and_it_prints_what_it_bound() {
    let state = scratch("coordinator-bin-default");
    let (proc, addrs) = start(
        std::path::Path::new(env!("CARGO_BIN_EXE_xt-coordinator")),
        &[
            "--state",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        &["listening on "],
    );
    assert!(addrs[0].starts_with("127.0.0.1:"), "{}", addrs[0]);
    drop(proc);
    let help = Command::new(env!("CARGO_BIN_EXE_xt-coordinator"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:50051]"), "{help}");
}

#[test]
fn a_data_root_that_does_not_exist_is_refused_at_start() {
    let state = scratch("coordinator-bin-root");
    let out = Command::new(env!("CARGO_BIN_EXE_xt-coordinator"))
        .args([
            "--state",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-root",
            "/nonexistent/xt-data",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data root /nonexistent/xt-data"), "{err}");
}
