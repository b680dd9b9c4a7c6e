//! `xt`: the command line of the backtest cluster.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xt_api::local::{LocalArgs, render, run};

#[derive(Debug, Parser)]
#[command(
    name = "xt",
    version,
    about = "Batch backtests: run them, watch them, download the results."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one batch on this machine and write its tables to --out.
    Local(LocalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Local(args) => match run(&args) {
            Ok(summary) => {
                print!("{}", render(&summary));
                println!("tables and summary.json written to {}", args.out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xt local: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
