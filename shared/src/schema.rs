//! The Arrow schemas of the four result tables (SEMANTICS section 9). Every
//! producer (the engine, the coordinator's aggregation) and every consumer
//! (downloads, Flight) uses these, so a table looks the same wherever it came from.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::spec::Table;

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

pub fn schema(table: Table) -> SchemaRef {
    match table {
        Table::Metrics => METRICS.clone(),
        Table::Trades => TRADES.clone(),
        Table::Equity => EQUITY.clone(),
        Table::Portfolio => PORTFOLIO.clone(),
    }
}
