//! A batch over a long Parquet dataset gives the very tables the same bars give as one CSV
//! file per symbol: the layout changes how bars are found, never what a batch computes.

use std::sync::Arc;

use xt_shared::dataset::{ParquetDataset, write_long};
use xt_shared::spec::Table;
use xt_shared::{BarSource, BatchSpec, CsvDir, SyntheticMarket, Universe};

#[test]
fn a_long_dataset_gives_the_tables_of_per_symbol_files() {
    let root = xt_testkit::scratch("long-dataset");
    let (csv, long) = (root.join("csv"), root.join("long"));
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::create_dir_all(long.join("year=all")).unwrap();
    let market = SyntheticMarket::new(12, 3, 21);
    let bars: Vec<_> = market
        .symbols()
        .unwrap()
        .iter()
        .map(|s| market.load(s).unwrap())
        .collect();
    for b in &bars {
        let file = std::fs::File::create(csv.join(format!("{}.csv", b.symbol))).unwrap();
        xt_shared::source::write_csv(b, file).unwrap();
    }
    write_long(&bars, &long.join("year=all/bars.parquet"), 500).unwrap();

    let sources: [Arc<dyn BarSource>; 2] = [
        Arc::new(CsvDir::open(&csv).unwrap()),
        Arc::new(ParquetDataset::open(&long).unwrap()),
    ];
    let symbols: Vec<String> = bars.iter().map(|b| b.symbol.clone()).collect();
    let universe = Universe::from_symbols(&symbols).unwrap();
    let results: Vec<_> = sources
        .iter()
        .map(|source| {
            let mut spec = BatchSpec::new("synthetic://", "macd");
            spec.grid = Some(serde_json::from_str(r#"{"fast":[8,12],"slow":[26,30]}"#).unwrap());
            spec.tables = Some(vec![
                Table::Metrics,
                Table::Trades,
                Table::Equity,
                Table::Portfolio,
            ]);
            xt_worker::runner::run_batch(&spec, source.as_ref(), &universe).unwrap()
        })
        .collect();
    let (a, b) = (&results[0], &results[1]);
    assert_eq!(a.outcome.failed, 0);
    assert_eq!(a.metrics, b.metrics);
    assert_eq!(a.trades, b.trades);
    assert_eq!(a.equity, b.equity);
    assert_eq!(a.outcome.portfolio, b.outcome.portfolio);
    assert!(a.trades.as_ref().unwrap().num_rows() > 100);
}
