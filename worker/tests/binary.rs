//! The `xt-worker` process: flags it refuses with a message naming them.

use std::process::Command;

#[test]
fn bad_durations_are_refused_naming_the_flag() {
    for (flag, value) in [("--drain-secs", "-1"), ("--job-budget-secs", "NaN")] {
        let out = Command::new(env!("CARGO_BIN_EXE_xt-worker"))
            .args([
                "--coordinator",
                "http://127.0.0.1:9",
                &format!("{flag}={value}"),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag}: must be a finite number of seconds >= 0")),
            "{flag}: {err}"
        );
    }
}
