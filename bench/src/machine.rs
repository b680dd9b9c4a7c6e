//! The machine a run was measured on, for the head of `bench/RESULTS.md`.

fn first_value(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Cores rayon and tokio see.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `CPU model, N cores, M GiB, kernel, rustc` as markdown lines.
pub fn describe() -> Vec<String> {
    let cpu = first_value("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem_kb: f64 = first_value("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0);
    vec![
        format!("- CPU: {cpu}, {} cores available to this process", cores()),
        format!("- Memory: {:.1} GiB", mem_kb / (1024.0 * 1024.0)),
        format!(
            "- OS: {}",
            command("uname", &["-sr"]).unwrap_or_else(|| "unknown".into())
        ),
        format!(
            "- Rust: {}, release profile",
            command("rustc", &["-V"]).unwrap_or_else(|| "unknown".into())
        ),
    ]
}
