//! Scaling: the same batch on 1, 2, ... all cores (rayon threads of the in-process runner)
//! and on 1, 2, 4 worker processes of one slot each; efficiency against linear.

use crate::cluster::{batch_spec, in_process, through_processes};
use crate::report::{Table, Target, Timing, timed};

pub struct Scaling {
    pub table: Table,
    pub target: Target,
}

/// A row: the time of `n` workers against `one`, the time of one.
fn row(table: &mut Table, name: String, n: usize, t: &Timing, one: f64) {
    let speedup = one / t.median;
    let cores = crate::machine::cores();
    table.row(vec![
        name,
        t.show(),
        format!("{speedup:.2}x"),
        format!("{:.0}%", 100.0 * speedup / n.min(cores) as f64),
    ]);
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    symbols: usize,
    years: usize,
    runs: usize,
) -> anyhow::Result<Scaling> {
    let spec = batch_spec(symbols, years, "macd", None)?;
    let cores = crate::machine::cores();
    let mut table = Table::new(
        format!(
            "Scaling: {symbols} symbols x {years} years, macd, on this machine's {cores} cores"
        ),
        &[
            "run on",
            "seconds (median, spread)",
            "speed-up",
            "efficiency vs linear",
        ],
    );
    let mut threads: Vec<usize> = (0..).map(|i| 1 << i).take_while(|&n| n < cores).collect();
    threads.push(cores);
    let (mut one_thread, mut all) = (0.0, 0.0);
    for &n in &threads {
        let t = in_process(&spec, n, runs, false)?;
        if n == 1 {
            one_thread = t.median;
        }
        all = t.median;
        row(
            &mut table,
            format!("in-process runner, {n} rayon thread(s)"),
            n,
            &t,
            one_thread,
        );
    }
    let mut one_process = None;
    for processes in [1, 2, 4] {
        let t = timed(runs, 1, || {
            runtime.block_on(through_processes(&spec, processes, 1))
        })?;
        let one = *one_process.get_or_insert(t.median);
        row(
            &mut table,
            format!("coordinator + {processes} worker process(es) of 1 slot"),
            processes,
            &t,
            one,
        );
    }
    table.note(format!(
        "Efficiency is speed-up / min(workers, cores): {cores} cores here, so 4 processes are measured against 2x (the extra processes show the cost of oversubscription, not more hardware)."
    ));
    let efficiency = one_thread / all / cores as f64;
    Ok(Scaling {
        table,
        target: Target::new(
            format!("scaling, 1 to {cores} cores (in-process)"),
            ">= 85% of linear",
            format!("{:.0}%", efficiency * 100.0),
            efficiency >= 0.85,
        ),
    })
}
