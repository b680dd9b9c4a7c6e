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
            // Typed by hand, so a symbol the source does not have is a mistake to report
            // now (a universe file's former member without data becomes error rows instead).
            let known: std::collections::HashSet<String> = source
                .symbols()
                .map_err(|e| SpecError::new("data", e.to_string()))?
                .into_iter()
                .collect();
            if let Some(unknown) = s.iter().find(|sym| !known.contains(*sym)) {
                return Err(SpecError::new(
                    "universe.symbols",
                    format!("unknown symbol {unknown:?}: the data source has no such symbol"),
                ));
            }
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

/// Resolves a spec's data directory and universe file inside the data `roots` a service was
/// started with, and returns the spec with both as canonical absolute paths. A relative
/// data path is taken from the first root, a relative universe file from the data
/// directory (or the first root, for synthetic data). Symbolic links are followed before
/// the check, so neither `..` nor a link can reach outside. With no roots, only synthetic
/// data is served.
pub fn confine(spec: &BatchSpec, roots: &[std::path::PathBuf]) -> Result<BatchSpec, SpecError> {
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let mut out = spec.clone();
    let data = DataSpec::parse(&spec.data)?;
    let base = match &data {
        DataSpec::Synthetic { .. } => roots.first().cloned(),
        DataSpec::Dir(dir) => {
            let Some(first) = roots.first() else {
                return Err(SpecError::new(
                    "data",
                    "this service has no data roots; only synthetic:// data can be used",
                ));
            };
            let real = first.join(dir).canonicalize().map_err(|_| {
                SpecError::new("data", format!("no data directory {}", dir.display()))
            })?;
            if !inside(&real) || !real.is_dir() {
                return Err(SpecError::new(
                    "data",
                    format!(
                        "{} is not a directory inside the service's data roots",
                        dir.display()
                    ),
                ));
            }
            out.data = DataSpec::Dir(real.clone()).to_url();
            Some(real)
        }
    };
    if let Some(UniverseSpec::File(file)) = &spec.universe {
        let field = "universe.file";
        let base = base.ok_or_else(|| {
            SpecError::new(
                field,
                "this service has no data roots to read universe files from",
            )
        })?;
        // Relative to the data directory, else to a root (as `/v1/universes` lists them).
        let real = std::iter::once(&base)
            .chain(roots)
            .find_map(|b| b.join(file).canonicalize().ok())
            .ok_or_else(|| SpecError::new(field, format!("no universe file {file}")))?;
        if !inside(&real) || !real.is_file() {
            return Err(SpecError::new(
                field,
                format!("{file} is not a file inside the service's data roots"),
            ));
        }
        out.universe = Some(UniverseSpec::File(real.display().to_string()));
    }
    Ok(out)
}

/// The universe files under `roots`: every `*.csv` with a `symbol` header column, up to two
/// directory levels down, as paths relative to their root.
pub fn universe_files(roots: &[std::path::PathBuf]) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            // Listed only if it really lies inside the root, links resolved.
            if !path.canonicalize().is_ok_and(|p| p.starts_with(root)) {
                continue;
            }
            if path.is_dir() && depth < 2 {
                walk(root, &path, depth + 1, out);
            } else if path.extension().is_some_and(|x| x == "csv")
                && is_universe(&path)
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.display().to_string());
            }
        }
    }
    fn is_universe(path: &Path) -> bool {
        use std::io::BufRead;
        let Ok(f) = std::fs::File::open(path) else {
            return false;
        };
        let mut header = String::new();
        let _ = std::io::BufReader::new(f).read_line(&mut header);
        let columns: Vec<&str> = header.trim().split(',').map(str::trim).collect();
        columns.contains(&"symbol") && !columns.contains(&"close")
    }
    let mut out = Vec::new();
    for root in roots {
        walk(root, root, 0, &mut out);
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_universe_stay_inside_the_roots() {
        let base = std::env::temp_dir().join(format!("xt-confine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("cn")).unwrap();
        std::fs::create_dir_all(base.join("secret")).unwrap();
        std::fs::write(root.join("cn/members.csv"), "symbol\nAAA\n").unwrap();
        std::fs::write(base.join("secret/u.csv"), "symbol\nAAA\n").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("link")).unwrap();
        let roots = vec![root.canonicalize().unwrap()];
        let spec = |data: &str, universe: Option<&str>| {
            let mut s = BatchSpec::new(data, "macd");
            s.universe = universe.map(|u| UniverseSpec::File(u.into()));
            s
        };
        let ok = confine(&spec("file://cn", Some("members.csv")), &roots).unwrap();
        assert_eq!(
            confine(&spec("file://cn", Some("cn/members.csv")), &roots).unwrap(),
            ok,
            "as the universe listing names it"
        );
        assert_eq!(ok.data, format!("file://{}", roots[0].join("cn").display()));
        let abs = format!("file://{}", root.join("cn").display());
        assert!(confine(&spec(&abs, None), &roots).is_ok());
        for (data, universe, field) in [
            ("file://../secret", None, "data"),
            ("file:///etc", None, "data"),
            ("file://link", None, "data"),
            ("file://nope", None, "data"),
            ("file://cn", Some("../../secret/u.csv"), "universe.file"),
            ("file://cn", Some("/etc/passwd"), "universe.file"),
            ("file://cn", Some("../link/u.csv"), "universe.file"),
        ] {
            let e = confine(&spec(data, universe), &roots).unwrap_err();
            assert_eq!(e.field, field, "{data} {universe:?}: {e}");
        }
        assert_eq!(
            confine(&spec("file://cn", None), &[]).unwrap_err().field,
            "data"
        );
        assert!(confine(&spec("synthetic://?symbols=3", None), &[]).is_ok());
        assert_eq!(universe_files(&roots), vec!["cn/members.csv".to_string()]);
        let _ = std::fs::remove_dir_all(&base);
    }
}
