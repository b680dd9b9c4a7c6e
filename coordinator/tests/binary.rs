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
    assert!(
        !addrs[0].ends_with(":0"),
        "the port it bound, not the one asked: {}",
        addrs[0]
    );
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

/// Another address works, with a warning naming the risk on stderr; SIGTERM stops it.
#[test]
fn another_address_is_served_with_a_warning_and_sigterm_stops_it() {
    let state = scratch("coordinator-bin-any");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xt-coordinator"))
        .args(["--state", state.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not loopback") && err.contains("takes no token"),
        "{err}"
    );
}
