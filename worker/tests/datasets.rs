//! A batch over each layout (Parquet or Arrow files per symbol, long datasets in Parquet or
//! Arrow) gives the very tables the same bars give as one CSV file per symbol: the layout
//! changes how bars are found, never what a batch computes.

use std::sync::Arc;

use xt_shared::dataset::{write_long, write_long_ipc};
use xt_shared::spec::DataSpec;
use xt_shared::spec::Table;
use xt_shared::{BarSource, BatchSpec, CsvDir, SyntheticMarket, Universe};

#[test]
fn a_long_dataset_gives_the_tables_of_per_symbol_files() {
    let root = xt_testkit::scratch("long-dataset");
    let dirs = ["csv", "parquet", "arrow", "long", "long-arrow"].map(|d| root.join(d));
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let [csv, parquet, arrow, long, long_arrow] = &dirs;
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
        let file = std::fs::File::create(parquet.join(format!("{}.parquet", b.symbol))).unwrap();
        xt_shared::source::write_parquet(b, file).unwrap();
        let file = std::fs::File::create(arrow.join(format!("{}.feather", b.symbol))).unwrap();
        xt_shared::source::write_ipc(b, file).unwrap();
    }
    write_long(&bars, &long.join("year=all/bars.parquet"), 500).unwrap();
    write_long_ipc(&bars, &long_arrow.join("bars.arrow")).unwrap();

    // Each opened as a batch's `data` names it: the layout detected.
    let mut sources: Vec<Arc<dyn BarSource>> = vec![Arc::new(CsvDir::open(csv).unwrap())];
    for d in &dirs[1..] {
        sources.push(xt_shared::open::open_source(&DataSpec::Dir(d.clone())).unwrap());
    }
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
    let a = &results[0];
    assert_eq!(a.outcome.failed, 0);
    for (b, dir) in results[1..].iter().zip(&dirs[1..]) {
        let dir = dir.display();
        assert_eq!(a.metrics, b.metrics, "{dir}");
        assert_eq!(a.trades, b.trades, "{dir}");
        assert_eq!(a.equity, b.equity, "{dir}");
        assert_eq!(a.outcome.portfolio, b.outcome.portfolio, "{dir}");
    }
    assert!(a.trades.as_ref().unwrap().num_rows() > 100);
}
