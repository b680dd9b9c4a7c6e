//! `xt data import`: converts a CSV directory or Qlib's layout into one Arrow IPC (or
//! Parquet) file per symbol, with a progress bar and a report of every row left out.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use xt_shared::import::{Input, Report, import, write_rejected};
use xt_shared::layout::Format;

/// The report's file name in the destination when none is given.
pub const REPORT: &str = "xt-import-rejected.csv";

/// Runs the import, prints what it did, and fails when an input could not be read at all.
pub fn data_import(
    src: &Path,
    dst: &Path,
    format: &str,
    report_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let format = match format {
        "arrow" => Format::Arrow,
        "parquet" => Format::Parquet,
        other => anyhow::bail!("--format: {other:?} is not arrow or parquet"),
    };
    let input = Input::detect(src).with_context(|| format!("{}", src.display()))?;
    let kind = match &input {
        Input::Csv(..) => "CSV files",
        Input::Qlib(..) => "Qlib's binary layout",
    };
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} symbols {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("importing {kind}"));
    let report: Report = import(&input, dst, format, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!(
        "imported {} symbols, {} bars from {kind} into {} (one {} file per symbol)",
        report.symbols,
        report.bars,
        dst.display(),
        match format {
            Format::Parquet => "Parquet",
            _ => "Arrow IPC",
        }
    );
    let report_path = report_path.unwrap_or_else(|| dst.join(REPORT));
    if report.rejected.is_empty() {
        let _ = std::fs::remove_file(&report_path);
        println!("no row rejected");
    } else {
        write_rejected(&report.rejected, &report_path)
            .with_context(|| format!("writing {}", report_path.display()))?;
        let mut rules: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &report.rejected {
            // Counted by rule, its values (", got ...") aside.
            let rule = r.rule.split(", got ").next().unwrap_or(&r.rule);
            *rules.entry(rule.to_string()).or_default() += 1;
        }
        println!(
            "{} rows rejected (each with its rule in {}):",
            report.rejected.len(),
            report_path.display()
        );
        for (rule, n) in rules {
            println!("  {n:>8}  {rule}");
        }
    }
    if !report.failed.is_empty() {
        for (file, why) in &report.failed {
            eprintln!("{file}: {why}");
        }
        anyhow::bail!(
            "{} of the inputs could not be read (above); the others were imported",
            report.failed.len()
        );
    }
    Ok(())
}
