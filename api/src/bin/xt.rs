//! `xt`: the command line of the backtest cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xt_api::client::{self, Remote, ServeArgs, TokenArgs};
use xt_api::local::{LocalArgs, run};
use xt_api::summary::{check_failures, render};

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
    /// Submit a batch spec (JSON) to the API.
    Submit {
        spec: PathBuf,
        /// Follow it to the end with a progress bar, then print its summary.
        #[arg(long)]
        wait: bool,
        /// With --wait: exit with an error when more than this share of the jobs fail.
        #[arg(long, env = "XT_MAX_FAILED", default_value_t = xt_api::summary::MAX_FAILED, value_parser = xt_api::local::share)]
        max_failed: f64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Your batches, newest first.
    List {
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// One batch's state, counts and, when done, summary.
    Status {
        id: u64,
        /// The API's JSON instead of the summary for people.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a batch with a progress bar until it ends.
    Watch {
        id: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a batch.
    Cancel {
        id: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Download a finished batch's table.
    Download {
        id: u64,
        /// metrics, trades, equity or portfolio.
        #[arg(long, default_value = "metrics")]
        table: String,
        /// parquet, arrow, csv or json.
        #[arg(long, default_value = "parquet")]
        format: String,
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// Only this symbol's rows.
        #[arg(long)]
        symbol: Option<String>,
        /// Only this parameter set's rows (its canonical JSON).
        #[arg(long)]
        params: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Market data: convert it to the layout batches read fastest.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Strategies written in the strategy language.
    Strategy {
        #[command(subcommand)]
        command: StrategyCommand,
    },
    /// Mint a bearer token from the service's secret (for operators).
    Token(TokenArgs),
    /// Run the HTTP API in front of a coordinator.
    Serve(ServeArgs),
    /// Make a development CA and the certificates of the cluster's mutual TLS (the
    /// coordinator's, and one for workers and the API) in --out.
    DevCa {
        #[arg(long)]
        out: PathBuf,
        /// Names the coordinator is reached by (comma-separated), besides localhost and
        /// 127.0.0.1.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Convert SRC (a directory of CSV files, one per symbol, or Qlib's binary layout) into
    /// DST, one file per symbol in the layout read fastest; rows that are not valid bars are
    /// left out and listed, each with its rule, in the report.
    Import {
        src: PathBuf,
        dst: PathBuf,
        /// arrow (Arrow IPC, read fastest) or parquet (smaller when prices compress).
        #[arg(long, default_value = "arrow")]
        format: String,
        /// Where the rejected rows go (CSV: file, at, date, rule); default
        /// DST/xt-import-rejected.csv.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StrategyCommand {
    /// Compile FILE and check every parameter set of its grid (as a submission does),
    /// printing each set's longest lookback; exits 2 on the first error.
    Check {
        file: PathBuf,
        /// One parameter set as JSON, e.g. '{"fast":12}'.
        #[arg(long, conflicts_with = "grid")]
        params: Option<String>,
        /// A grid as JSON, a list of values per parameter.
        #[arg(long)]
        grid: Option<String>,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Local(args) => match run(&args) {
            Ok(summary) => {
                print!("{}", render(&summary));
                println!("tables and summary.json written to {}", args.out.display());
                check_failures(&summary, args.max_failed)
            }
            Err(e) => Err(e.context("xt local")),
        },
        Command::Submit {
            spec,
            wait,
            max_failed,
            remote,
        } => runtime().block_on(client::submit(&remote, &spec, wait, max_failed)),
        Command::List {
            offset,
            limit,
            remote,
        } => runtime().block_on(client::list(&remote, offset, limit)),
        Command::Status { id, json, remote } => {
            runtime().block_on(client::status(&remote, id, json))
        }
        Command::Watch { id, remote } => runtime().block_on(client::watch(&remote, id)).map(drop),
        Command::Cancel { id, remote } => runtime().block_on(client::cancel(&remote, id)),
        Command::Download {
            id,
            table,
            format,
            out,
            symbol,
            params,
            remote,
        } => runtime().block_on(client::download(
            &remote,
            id,
            &table,
            &format,
            &out,
            symbol.as_deref(),
            params.as_deref(),
        )),
        Command::Data {
            command:
                DataCommand::Import {
                    src,
                    dst,
                    format,
                    report,
                },
        } => xt_api::import::data_import(&src, &dst, &format, report),
        Command::Strategy {
            command: StrategyCommand::Check { file, params, grid },
        } => xt_api::strategy::check(&file, params.as_deref(), grid.as_deref())
            .map(|report| print!("{report}")),
        Command::Token(args) => client::token(&args).map(|t| println!("{t}")),
        Command::Serve(args) => runtime().block_on(client::serve(&args)),
        Command::DevCa { out, hosts, days } => {
            xt_api::certs::dev_ca(&out, &hosts, days).map(|files| {
                for f in files {
                    println!("{f}");
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xt: {e:#}");
            ExitCode::from(2)
        }
    }
}
