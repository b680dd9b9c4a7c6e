//! Timings (median and spread of several runs, CPU time, peak memory) and the markdown
//! tables the benchmarks print and write to `bench/RESULTS.md`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// CPU seconds this process has used (user + system), to the microsecond (`getrusage`):
/// fine enough to time one batch's window, where `/proc`'s ticks of 10 ms are not.
pub fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes the struct it is given, which is plain data.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return process_cpu_seconds("self");
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(u.ru_utime) + seconds(u.ru_stime)
}

/// CPU seconds (user and system) of process `pid` (`self` for this one), from
/// `/proc/PID/stat`; 0 where it cannot be read.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the file (utime, stime), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` field in kB (`VmRSS:`, `VmHWM:`), 0 where there is none.
pub fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Median and spread of several runs of one measurement, with the mean CPU seconds of one.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub cpu: f64,
}

impl Timing {
    pub fn from_seconds(mut t: Vec<f64>, cpu: f64) -> Timing {
        assert!(!t.is_empty(), "a timing needs at least one run");
        t.sort_by(f64::total_cmp);
        Timing {
            median: t[t.len() / 2],
            min: t[0],
            max: t[t.len() - 1],
            cpu,
        }
    }

    /// The distribution-free 95% confidence interval of the median of `t` (sorted or not):
    /// the order statistics `(n - 1.96 sqrt n) / 2` and `1 + (n + 1.96 sqrt n) / 2` (1-based).
    /// Whatever the rounds' distribution, the true median lies between them about 95% of
    /// the time; with 10 or fewer values it is their whole range.
    pub fn median_interval(t: &[f64]) -> (f64, f64) {
        assert!(!t.is_empty(), "an interval needs at least one value");
        let mut t = t.to_vec();
        t.sort_by(f64::total_cmp);
        let n = t.len() as f64;
        let half = 1.96 * n.sqrt();
        let lo = ((n - half) / 2.0).floor().max(1.0) as usize;
        let hi = (1.0 + (n + half) / 2.0).ceil().min(n) as usize;
        (t[lo - 1], t[hi - 1])
    }

    /// `1.234 s (1.20-1.31)`.
    pub fn show(&self) -> String {
        if self.min == self.max {
            secs(self.median)
        } else {
            format!(
                "{} ({}-{})",
                secs(self.median),
                secs(self.min),
                secs(self.max)
            )
        }
    }
}

/// Runs `f` `runs` times (after `warmup` untimed runs).
pub fn timed(
    runs: usize,
    warmup: usize,
    mut f: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let cpu = cpu_seconds();
    let t = (0..runs.max(1))
        .map(|_| f().map(|d| d.as_secs_f64()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Timing::from_seconds(
        t,
        (cpu_seconds() - cpu) / runs.max(1) as f64,
    ))
}

/// Times one call of `f`.
pub fn stopwatch<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed()))
}

/// Seconds with three significant digits, down to microseconds.
pub fn secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// `12.3M`, `4.56k`, `789`.
pub fn count(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// One markdown table under a heading, with notes below it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub heading: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(heading: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            heading: heading.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "{}", self.heading);
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.heading);
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        s += &line(&self.columns);
        s += &line(&vec!["---".to_string(); self.columns.len()]);
        for r in &self.rows {
            s += &line(r);
        }
        for n in &self.notes {
            let _ = write!(s, "\n{n}\n");
        }
        s + "\n"
    }
}

/// Prints a table as soon as it is measured.
pub fn print(table: &Table) {
    println!("{}", table.markdown());
}

/// A number we must beat, and what this run measured.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Target {
    pub fn new(
        what: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        met: bool,
    ) -> Target {
        Target {
            what: what.into(),
            target: target.into(),
            measured: measured.into(),
            met,
        }
    }
}

/// The targets as the first table of a report.
pub fn targets_table(targets: &[Target]) -> Table {
    let mut t = Table::new("Targets", &["what", "target", "measured", "met"]);
    for x in targets {
        t.row(vec![
            x.what.clone(),
            x.target.clone(),
            x.measured.clone(),
            if x.met { "yes" } else { "**no**" }.into(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::Timing;

    #[test]
    fn the_medians_interval_is_the_order_statistics_around_it() {
        // n = 40: ranks 13 and 28 (1-based), whatever order the values come in.
        let values: Vec<f64> = (1..=40).rev().map(f64::from).collect();
        assert_eq!(Timing::median_interval(&values), (13.0, 28.0));
        // n = 100: ranks 40 and 61.
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Timing::median_interval(&values), (40.0, 61.0));
        // Few values: their whole range.
        assert_eq!(Timing::median_interval(&[3.0, 1.0, 2.0]), (1.0, 3.0));
        assert_eq!(Timing::median_interval(&[5.0]), (5.0, 5.0));
        let upto = |n: i32| (1..=n).map(f64::from).collect::<Vec<_>>();
        assert_eq!(Timing::median_interval(&upto(10)), (1.0, 10.0));
        // n = 11: the first that leaves out its ends, ranks 2 and 10.
        assert_eq!(Timing::median_interval(&upto(11)), (2.0, 10.0));
    }
}
