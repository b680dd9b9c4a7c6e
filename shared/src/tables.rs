//! Result rows of one job as Arrow record batches with the schemas of SEMANTICS section 9
//! (`schema`), and the portfolio table and metrics of a batch.

use std::sync::Arc;

use crate::Date;
use crate::funding::Funding;
use crate::metrics::{Metrics, PortfolioMetrics, portfolio_metrics};
use crate::portfolio::PortfolioSum;
use crate::schema;
use crate::sleeve::SleeveRun;
use crate::strategy::ParamSet;
use arrow::array::{ArrayRef, Date32Builder, Float64Builder, Int64Builder, StringBuilder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// One job's rows of the per-job tables; `trades`/`equity` are `None` when not requested.
#[derive(Debug, Clone)]
pub struct JobTables {
    pub metrics: RecordBatch,
    pub trades: Option<RecordBatch>,
    pub equity: Option<RecordBatch>,
}

struct TradeColumns {
    symbol: StringBuilder,
    params: StringBuilder,
    entry_date: Date32Builder,
    entry_price: Float64Builder,
    exit_date: Date32Builder,
    exit_price: Float64Builder,
    qty: Int64Builder,
    pnl: Float64Builder,
    costs: Float64Builder,
}

struct EquityColumns {
    symbol: StringBuilder,
    params: StringBuilder,
    date: Date32Builder,
    cash: Float64Builder,
    qty: Int64Builder,
    equity: Float64Builder,
}

/// Collects one job's rows, combination by combination.
pub struct TableWriter {
    symbol: String,
    keys: (StringBuilder, StringBuilder),
    metrics: Vec<Float64Builder>,
    trade_count: Int64Builder,
    bars: Int64Builder,
    error: StringBuilder,
    /// The trade statistics' columns, after `error`.
    trading: Vec<Float64Builder>,
    trades: Option<TradeColumns>,
    equity: Option<EquityColumns>,
}

impl TableWriter {
    pub fn new(symbol: &str, want_trades: bool, want_equity: bool) -> Self {
        // Arrow's `new()` builders reserve 1,024 rows each, and a finished array keeps that
        // allocation: 100 KB held per job for a one-row metrics table, 1 GB for a
        // 10,000-symbol batch. These start empty and grow with the rows pushed.
        TableWriter {
            symbol: symbol.to_string(),
            keys: (
                StringBuilder::with_capacity(0, 0),
                StringBuilder::with_capacity(0, 0),
            ),
            metrics: (0..11).map(|_| Float64Builder::with_capacity(0)).collect(),
            trade_count: Int64Builder::with_capacity(0),
            bars: Int64Builder::with_capacity(0),
            error: StringBuilder::with_capacity(0, 0),
            trading: crate::metrics::TRADE_STAT_COLUMNS
                .iter()
                .map(|_| Float64Builder::with_capacity(0))
                .collect(),
            trades: want_trades.then(|| TradeColumns {
                symbol: StringBuilder::with_capacity(0, 0),
                params: StringBuilder::with_capacity(0, 0),
                entry_date: Date32Builder::with_capacity(0),
                entry_price: Float64Builder::with_capacity(0),
                exit_date: Date32Builder::with_capacity(0),
                exit_price: Float64Builder::with_capacity(0),
                qty: Int64Builder::with_capacity(0),
                pnl: Float64Builder::with_capacity(0),
                costs: Float64Builder::with_capacity(0),
            }),
            equity: want_equity.then(|| EquityColumns {
                symbol: StringBuilder::with_capacity(0, 0),
                params: StringBuilder::with_capacity(0, 0),
                date: Date32Builder::with_capacity(0),
                cash: Float64Builder::with_capacity(0),
                qty: Int64Builder::with_capacity(0),
                equity: Float64Builder::with_capacity(0),
            }),
        }
    }

    /// The rows of one successful combination.
    pub fn push(&mut self, params: &str, dates: &[Date], run: &SleeveRun, m: &Metrics) {
        self.keys.0.append_value(&self.symbol);
        self.keys.1.append_value(params);
        let values = [
            m.final_equity,
            m.total_return,
            m.cagr,
            m.volatility,
            m.sharpe,
            m.sortino,
            m.max_drawdown,
            m.calmar,
            m.win_rate,
            m.profit_factor,
            m.exposure,
        ];
        for (b, v) in self.metrics.iter_mut().zip(values) {
            b.append_option(v);
        }
        self.trade_count.append_option(m.trades);
        self.bars.append_value(dates.len() as i64);
        self.error.append_null();
        for (b, v) in self.trading.iter_mut().zip(m.trading.values()) {
            b.append_option(v);
        }
        if let Some(t) = &mut self.trades {
            for trade in &run.trades {
                t.symbol.append_value(&self.symbol);
                t.params.append_value(params);
                t.entry_date.append_value(dates[trade.entry]);
                t.entry_price.append_value(trade.entry_price);
                t.exit_date.append_option(trade.exit.map(|i| dates[i]));
                t.exit_price.append_option(trade.exit_price);
                t.qty.append_value(trade.qty as i64);
                t.pnl.append_value(trade.pnl);
                t.costs.append_value(trade.entry_costs + trade.exit_costs);
            }
        }
        if let Some(e) = &mut self.equity {
            for _ in dates {
                e.symbol.append_value(&self.symbol);
                e.params.append_value(params);
            }
            e.date.append_slice(dates);
            e.cash.append_slice(&run.cash);
            for &q in &run.qty {
                e.qty.append_value(q as i64);
            }
            e.equity.append_slice(&run.equity);
        }
    }

    /// The metrics row of a combination whose job failed: only `symbol`, `params`, `error`.
    pub fn push_error(&mut self, params: &str, error: &str) {
        self.keys.0.append_value(&self.symbol);
        self.keys.1.append_value(params);
        for b in &mut self.metrics {
            b.append_null();
        }
        self.trade_count.append_null();
        self.bars.append_null();
        self.error.append_value(error);
        for b in &mut self.trading {
            b.append_null();
        }
    }

    pub fn finish(mut self) -> Result<JobTables, ArrowError> {
        let mut f = self
            .metrics
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.keys.0.finish()),
            Arc::new(self.keys.1.finish()),
        ];
        // Schema order: eight curve metrics, trades, win_rate, profit_factor, exposure.
        columns.extend(f.by_ref().take(8));
        columns.push(Arc::new(self.trade_count.finish()));
        columns.extend(f);
        columns.push(Arc::new(self.bars.finish()));
        columns.push(Arc::new(self.error.finish()));
        columns.extend(
            self.trading
                .into_iter()
                .map(|mut b| Arc::new(b.finish()) as ArrayRef),
        );
        let metrics = RecordBatch::try_new(schema::METRICS.clone(), columns)?;
        let trades = self
            .trades
            .map(|mut t| {
                RecordBatch::try_new(
                    schema::TRADES.clone(),
                    vec![
                        Arc::new(t.symbol.finish()),
                        Arc::new(t.params.finish()),
                        Arc::new(t.entry_date.finish()),
                        Arc::new(t.entry_price.finish()),
                        Arc::new(t.exit_date.finish()),
                        Arc::new(t.exit_price.finish()),
                        Arc::new(t.qty.finish()),
                        Arc::new(t.pnl.finish()),
                        Arc::new(t.costs.finish()),
                    ],
                )
            })
            .transpose()?;
        let equity = self
            .equity
            .map(|mut e| {
                RecordBatch::try_new(
                    schema::EQUITY.clone(),
                    vec![
                        Arc::new(e.symbol.finish()),
                        Arc::new(e.params.finish()),
                        Arc::new(e.date.finish()),
                        Arc::new(e.cash.finish()),
                        Arc::new(e.qty.finish()),
                        Arc::new(e.equity.finish()),
                    ],
                )
            })
            .transpose()?;
        Ok(JobTables {
            metrics,
            trades,
            equity,
        })
    }
}

/// The `portfolio` table: one row per parameter set and date.
pub fn portfolio_table(
    params: &[String],
    dates: &[Date],
    curves: &[Vec<f64>],
    benchmark: &[f64],
) -> Result<RecordBatch, ArrowError> {
    let mut p = StringBuilder::new();
    let mut d = Date32Builder::new();
    let mut e = Float64Builder::new();
    let mut b = Float64Builder::new();
    for (name, curve) in params.iter().zip(curves) {
        for _ in dates {
            p.append_value(name);
        }
        d.append_slice(dates);
        e.append_slice(curve);
        b.append_slice(benchmark);
    }
    RecordBatch::try_new(
        schema::PORTFOLIO.clone(),
        vec![
            Arc::new(p.finish()),
            Arc::new(d.finish()),
            Arc::new(e.finish()),
            Arc::new(b.finish()),
        ],
    )
}

/// A batch's portfolio: its table, each parameter set's metrics and equity curve.
pub struct FinishedPortfolio {
    pub table: RecordBatch,
    pub metrics: Vec<(String, PortfolioMetrics)>,
    /// Per parameter set (in the order of its combinations), the portfolio's equity.
    pub curves: Vec<Vec<f64>>,
}

/// The portfolio table, metrics and curves from summed sleeves (curve `i` per combination,
/// the last one the benchmark), funded as `funding` says: the in-process runner and the
/// coordinator finish a batch alike.
pub fn finish_portfolio(
    combos: &[ParamSet],
    capital: f64,
    sums: &PortfolioSum,
    funding: &Funding,
) -> Result<FinishedPortfolio, ArrowError> {
    let curves: Vec<Vec<f64>> = (0..combos.len())
        .map(|i| funding.curve(sums, i, capital))
        .collect();
    let bench = funding.curve(sums, combos.len(), capital);
    let names: Vec<String> = combos.iter().map(|p| p.json().to_string()).collect();
    let table = portfolio_table(&names, &sums.dates, &curves, &bench)?;
    let metrics = names
        .iter()
        .cloned()
        .zip(curves.iter().map(|c| portfolio_metrics(capital, c, &bench)))
        .collect();
    Ok(FinishedPortfolio {
        table,
        metrics,
        curves,
    })
}
