//! The Arrow schemas of the result tables (SEMANTICS sections 9 to 11). Every
//! producer (the engine, the coordinator's aggregation) and every consumer
//! (downloads, Flight) uses these, so a table looks the same wherever it came from.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::spec::Table;

/// The schema metadata key under which a downloaded table carries its batch's provenance
/// (SEMANTICS section 9), as JSON.
pub const PROVENANCE_KEY: &str = "xtrading.provenance";

/// The metric columns of the `metrics` table, in order, after `symbol` and `params`.
pub const METRIC_COLUMNS: [&str; 12] = [
    "final_equity",
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "win_rate",
    "profit_factor",
    "exposure",
];

fn key_fields() -> Vec<Field> {
    vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("params", DataType::Utf8, false),
    ]
}

pub static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = key_fields();
    for name in METRIC_COLUMNS {
        let ty = if name == "trades" {
            DataType::Int64
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, ty, true));
    }
    fields.push(Field::new("bars", DataType::Int64, true));
    fields.push(Field::new("error", DataType::Utf8, true));
    for name in crate::metrics::TRADE_STAT_COLUMNS {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
});

pub static TRADES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = key_fields();
    fields.extend([
        Field::new("entry_date", DataType::Date32, false),
        Field::new("entry_price", DataType::Float64, false),
        Field::new("exit_date", DataType::Date32, true),
        Field::new("exit_price", DataType::Float64, true),
        Field::new("qty", DataType::Int64, false),
        Field::new("pnl", DataType::Float64, false),
        // Commission and stamp duty of the trade's entry and exit (so far).
        Field::new("costs", DataType::Float64, false),
    ]);
    Arc::new(Schema::new(fields))
});

pub static EQUITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = key_fields();
    fields.extend([
        Field::new("date", DataType::Date32, false),
        Field::new("cash", DataType::Float64, false),
        Field::new("qty", DataType::Int64, false),
        Field::new("equity", DataType::Float64, false),
    ]);
    Arc::new(Schema::new(fields))
});

pub static PORTFOLIO: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("params", DataType::Utf8, false),
        Field::new("date", DataType::Date32, false),
        Field::new("equity", DataType::Float64, false),
        Field::new("benchmark_equity", DataType::Float64, false),
    ]))
});

/// One row per parameter set of a grid (SEMANTICS section 11), in grid order.
pub static GRID: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![Field::new("params", DataType::Utf8, false)];
    for name in [
        "sharpe_per_period",
        "skew",
        "kurtosis",
        "psr",
        "neighbour_sharpe_mean",
        "neighbour_sharpe_min",
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
});

/// One row per walk-forward fold (SEMANTICS section 10), dates inclusive.
pub static FOLDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![Field::new("fold", DataType::Int64, false)];
    for name in ["is_start", "is_end", "oos_start", "oos_end"] {
        fields.push(Field::new(name, DataType::Date32, false));
    }
    fields.push(Field::new("params", DataType::Utf8, false));
    for name in [
        "is_metric",
        "oos_metric",
        "is_sharpe",
        "oos_sharpe",
        "oos_total_return",
    ] {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
});

/// The stitched out-of-sample curve of a walk-forward, one row per date.
pub static OOS_EQUITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("fold", DataType::Int64, false),
        Field::new("params", DataType::Utf8, false),
        Field::new("equity", DataType::Float64, false),
    ]))
});

pub fn schema(table: Table) -> SchemaRef {
    match table {
        Table::Metrics => METRICS.clone(),
        Table::Trades => TRADES.clone(),
        Table::Equity => EQUITY.clone(),
        Table::Portfolio => PORTFOLIO.clone(),
        Table::Grid => GRID.clone(),
        Table::Folds => FOLDS.clone(),
        Table::OosEquity => OOS_EQUITY.clone(),
    }
}
