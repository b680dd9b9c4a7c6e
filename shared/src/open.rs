//! Opening what a batch spec names: its bar source and its universe.

use std::path::Path;
use std::sync::Arc;

use crate::source::{BarSource, CsvDir, ParquetDir};
use crate::spec::{BatchSpec, DataSpec, SpecError, UniverseSpec};
use crate::synthetic::SyntheticMarket;
use crate::universe::Universe;

/// A universe file a data directory may carry; used when the spec names none.
pub const DEFAULT_UNIVERSE: &str = "universe.csv";

/// The bar source of `data`: a synthetic market, or a directory read as Parquet when it holds
/// `*.parquet` files and as CSV otherwise.
pub fn open_source(data: &DataSpec) -> Result<Arc<dyn BarSource>, SpecError> {
    let bad = |e: crate::DataError| SpecError::new("data", e.to_string());
    match data {
        DataSpec::Synthetic {
            symbols,
            years,
            seed,
        } => Ok(Arc::new(SyntheticMarket {
            symbols: *symbols,
            years: *years,
            seed: *seed,
        })),
        DataSpec::Dir(dir) => {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| SpecError::new("data", format!("{}: {e}", dir.display())))?;
            let parquet = entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "parquet"));
            if parquet {
                Ok(Arc::new(ParquetDir::open(dir).map_err(bad)?))
            } else {
                Ok(Arc::new(CsvDir::open(dir).map_err(bad)?))
            }
        }
    }
}

/// The universe of a batch: the symbols or file it names; else a synthetic market's own
/// universe, a data directory's `universe.csv`, or every symbol in the directory.
pub fn resolve_universe(
    spec: &BatchSpec,
    data: &DataSpec,
    source: &dyn BarSource,
) -> Result<Universe, SpecError> {
    let field = |f: &'static str| move |e: crate::UniverseError| SpecError::new(f, e.to_string());
    match (&spec.universe, data) {
        (Some(UniverseSpec::Symbols(s)), _) => {
            Universe::from_symbols(s).map_err(field("universe.symbols"))
        }
        (Some(UniverseSpec::File(path)), _) => {
            Universe::load(Path::new(path)).map_err(field("universe.file"))
        }
        (
            None,
            DataSpec::Synthetic {
                symbols,
                years,
                seed,
            },
        ) => Ok(SyntheticMarket {
            symbols: *symbols,
            years: *years,
            seed: *seed,
        }
        .universe()),
        (None, DataSpec::Dir(dir)) if dir.join(DEFAULT_UNIVERSE).is_file() => {
            Universe::load(&dir.join(DEFAULT_UNIVERSE)).map_err(field("universe"))
        }
        (None, DataSpec::Dir(_)) => {
            let symbols = source
                .symbols()
                .map_err(|e| SpecError::new("data", e.to_string()))?;
            Universe::from_symbols(&symbols).map_err(field("universe"))
        }
    }
}
