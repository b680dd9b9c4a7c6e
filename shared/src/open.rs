//! Opening what a batch spec names: its bar source and its universe.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::LongDataset;
use crate::layout::{Format, Layout};
use crate::source::{BarSource, ColumnarDir, CsvDir};
use crate::spec::{BatchSpec, DataSpec, SpecError, UniverseSpec};
use crate::synthetic::SyntheticMarket;
use crate::universe::Universe;

/// A universe file a data directory may carry; used when the spec names none.
pub const DEFAULT_UNIVERSE: &str = "universe.csv";

/// The bar source of `data`: a synthetic market, or a directory laid out as
/// [`crate::layout::describe`] finds (or its manifest states): a long dataset in Parquet or
/// Arrow files, or one CSV, Parquet or Arrow file per symbol.
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
        DataSpec::Object(url) => Err(SpecError::new(
            "data",
            format!(
                "{url}: objects in a store are read by the cluster's object reader, which this program does not have"
            ),
        )),
        DataSpec::Dir(dir) => {
            let d = crate::layout::describe(dir).map_err(bad)?;
            let source: Arc<dyn BarSource> = match (d.layout, d.format) {
                (Layout::Long, format) => {
                    Arc::new(LongDataset::open_as(dir, format, d.columns).map_err(bad)?)
                }
                (Layout::PerSymbol, Format::Csv) => {
                    Arc::new(CsvDir::with_columns(dir, d.columns).map_err(bad)?)
                }
                (Layout::PerSymbol, format) => {
                    Arc::new(ColumnarDir::with_columns(dir, format, d.columns).map_err(bad)?)
                }
            };
            Ok(source)
        }
    }
}

/// The universe of a batch: the symbols or file it names; else a synthetic market's own
/// universe, a data directory's `universe.csv`, or every symbol in the directory. A symbol
/// the data source does not have is refused the same way whichever names it: a batch is
/// not accepted to end in rows of errors the submitter could have been told about now.
pub fn resolve_universe(
    spec: &BatchSpec,
    data: &DataSpec,
    source: &dyn BarSource,
) -> Result<Universe, SpecError> {
    let universe = universe_of(spec, data, source)?;
    let field = match &spec.universe {
        Some(UniverseSpec::Symbols(_)) => "universe.symbols",
        Some(UniverseSpec::File(_)) => "universe.file",
        None => "universe",
    };
    let known: std::collections::HashSet<String> = source
        .symbols()
        .map_err(|e| SpecError::new("data", e.to_string()))?
        .into_iter()
        .collect();
    let unknown: Vec<&str> = universe
        .members
        .iter()
        .map(|m| m.symbol.as_str())
        .filter(|s| !known.contains(*s))
        .collect();
    if let Some(first) = unknown.first() {
        const SHOWN: usize = 5;
        let mut named = unknown[..unknown.len().min(SHOWN)].join(", ");
        if unknown.len() > SHOWN {
            named += &format!(" and {} more", unknown.len() - SHOWN);
        }
        let message = if unknown.len() == 1 {
            format!("unknown symbol {first:?}: the data source has no such symbol")
        } else {
            format!(
                "{} symbols the data source does not have: {named}",
                unknown.len()
            )
        };
        return Err(SpecError::new(field, message));
    }
    Ok(universe)
}

fn universe_of(
    spec: &BatchSpec,
    data: &DataSpec,
    source: &dyn BarSource,
) -> Result<Universe, SpecError> {
    let field = |f: &'static str| move |e: crate::UniverseError| SpecError::new(f, e.to_string());
    match (&spec.universe, data) {
        (Some(UniverseSpec::Symbols(s)), _) => {
            Universe::from_symbols(s).map_err(field("universe.symbols"))
        }
        (Some(UniverseSpec::File(name)), DataSpec::Object(url)) => {
            let field = "universe.file";
            let bytes = source
                .side_file(name)
                .map_err(|e| SpecError::new(field, e.to_string()))?
                .ok_or_else(|| {
                    SpecError::new(field, format!("no universe file {name} in {url}"))
                })?;
            crate::universe::check_size(bytes.len())
                .and_then(|()| Universe::read_csv(bytes.as_slice()))
                .map_err(|e| SpecError::new(field, e.to_string()))
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
        (None, DataSpec::Object(_)) => match source
            .side_file(DEFAULT_UNIVERSE)
            .map_err(|e| SpecError::new("universe", e.to_string()))?
        {
            Some(bytes) => Universe::read_csv(bytes.as_slice()).map_err(field("universe")),
            None => {
                let symbols = source
                    .symbols()
                    .map_err(|e| SpecError::new("data", e.to_string()))?;
                Universe::from_symbols(&symbols).map_err(field("universe"))
            }
        },
        (None, DataSpec::Dir(_)) => {
            let symbols = source
                .symbols()
                .map_err(|e| SpecError::new("data", e.to_string()))?;
            Universe::from_symbols(&symbols).map_err(field("universe"))
        }
    }
}

/// Where a service's batches may read data: directories (canonical paths) and object-store
/// prefixes (`s3://bucket/prefix`, canonical as [`crate::spec::object_prefix`] makes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataRoots {
    pub dirs: Vec<std::path::PathBuf>,
    pub prefixes: Vec<String>,
}

impl DataRoots {
    /// Roots from `--data-root` values: `s3://bucket/prefix`, or a directory (a path or
    /// `file://` URL), canonicalised so that a link cannot move it later.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<DataRoots, String> {
        let mut roots = DataRoots::default();
        for value in values {
            let value = value.as_ref();
            if let Some(rest) = value.strip_prefix("s3://") {
                roots.prefixes.push(crate::spec::object_prefix("s3", rest)?);
            } else if value.contains("://") && !value.starts_with("file://") {
                return Err(format!(
                    "data root {value}: a directory or s3://bucket/prefix"
                ));
            } else {
                let dir = Path::new(value.strip_prefix("file://").unwrap_or(value));
                let real = dir
                    .canonicalize()
                    .map_err(|e| format!("data root {}: {e}", dir.display()))?;
                roots.dirs.push(real);
            }
        }
        Ok(roots)
    }

    /// Splits a list of roots as `XT_DATA_ROOTS` gives it: separated by `,`, or by `:` as
    /// `PATH` is (a `:` that starts `://` separates nothing).
    pub fn split(list: &str) -> Vec<String> {
        let mut out = Vec::new();
        for part in list.split(',') {
            let mut current = String::new();
            let mut rest = part;
            while let Some(at) = rest.find(':') {
                if rest[at..].starts_with("://") {
                    current.push_str(&rest[..at + 3]);
                    rest = &rest[at + 3..];
                } else {
                    current.push_str(&rest[..at]);
                    out.push(std::mem::take(&mut current));
                    rest = &rest[at + 1..];
                }
            }
            current.push_str(rest);
            out.push(current);
        }
        out.retain(|r| !r.is_empty());
        out
    }
}

/// `spec` with object data at `url`: under one of `prefixes`, segment by segment, with a
/// universe file that is a plain key relative to it.
fn confine_object(spec: BatchSpec, url: &str, prefixes: &[String]) -> Result<BatchSpec, SpecError> {
    let under = |p: &String| url == p || url.starts_with(&format!("{p}/"));
    if !prefixes.iter().any(under) {
        return Err(SpecError::new(
            "data",
            format!("{url} is not under the service's object data roots"),
        ));
    }
    if let Some(UniverseSpec::File(file)) = &spec.universe {
        let field = "universe.file";
        if file.contains("://") || file.starts_with('/') {
            return Err(SpecError::new(
                field,
                format!("{file}: with object data, a universe file is a key relative to {url}"),
            ));
        }
        crate::spec::check_object_key(file)
            .map_err(|why| SpecError::new(field, format!("{file}: {why}")))?;
    }
    Ok(spec)
}

/// Resolves a spec's data directory and universe file inside the data `roots` a service was
/// started with, and returns the spec with both as canonical absolute paths. A relative
/// data path is looked up in every root, in order; a relative universe file in the data
/// directory, then in every root. Symbolic links are followed before the check, so neither
/// `..` nor a link can reach outside; a path outside the roots and one that does not exist
/// get the same answer, so a client cannot probe the host's paths. With no roots, only
/// synthetic data is served.
/// Object data (`s3://`) must lie under one of the roots' prefixes, segment by segment, and
/// its universe file is a plain relative key under it.
pub fn confine(spec: &BatchSpec, data_roots: &DataRoots) -> Result<BatchSpec, SpecError> {
    let roots = &data_roots.dirs;
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let mut out = spec.clone();
    let data = DataSpec::parse(&spec.data)?;
    let base = match &data {
        DataSpec::Object(url) => return confine_object(out, url, &data_roots.prefixes),
        DataSpec::Synthetic { .. } => roots.first().cloned(),
        DataSpec::Dir(dir) => {
            if roots.is_empty() {
                return Err(SpecError::new(
                    "data",
                    "this service has no data roots; only synthetic:// data can be used",
                ));
            }
            let real = roots
                .iter()
                .filter_map(|r| r.join(dir).canonicalize().ok())
                .find(|p| inside(p) && p.is_dir())
                .ok_or_else(|| {
                    SpecError::new(
                        "data",
                        format!(
                            "no data directory {} inside the service's data roots",
                            dir.display()
                        ),
                    )
                })?;
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
            .filter_map(|b| b.join(file).canonicalize().ok())
            .find(|p| inside(p) && p.is_file())
            .ok_or_else(|| {
                SpecError::new(
                    field,
                    format!("no universe file {file} inside the service's data roots"),
                )
            })?;
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
        let roots = DataRoots::parse(&[root.display().to_string()]).unwrap();
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
        assert_eq!(
            ok.data,
            format!("file://{}", roots.dirs[0].join("cn").display())
        );
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
        // Outside the roots and not there at all read the same: nothing to probe with.
        let message = |data: &str, universe: Option<&str>| {
            confine(&spec(data, universe), &roots)
                .unwrap_err()
                .message
                .replace(data.trim_start_matches("file://"), "X")
                .replace(universe.unwrap_or("-"), "X")
        };
        assert_eq!(message("file:///etc", None), message("file://nope", None));
        assert_eq!(
            message("file://cn", Some("/etc/passwd")),
            message("file://cn", Some("nope.csv"))
        );
        // Every root is looked in, in order.
        let second = base.join("second");
        std::fs::create_dir_all(second.join("us")).unwrap();
        std::fs::write(second.join("us.csv"), "symbol\nAAA\n").unwrap();
        let both =
            DataRoots::parse(&[root.display().to_string(), second.display().to_string()]).unwrap();
        let found = confine(&spec("file://us", Some("us.csv")), &both).unwrap();
        assert_eq!(
            found.data,
            format!("file://{}", both.dirs[1].join("us").display())
        );
        assert_eq!(
            confine(&spec("file://cn", None), &DataRoots::default())
                .unwrap_err()
                .field,
            "data"
        );
        assert!(confine(&spec("synthetic://?symbols=3", None), &DataRoots::default()).is_ok());
        assert_eq!(
            universe_files(&roots.dirs),
            vec!["cn/members.csv".to_string()]
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn object_data_stays_under_the_prefixes() {
        let roots = DataRoots::parse(&["s3://bars/cn/", "s3://bars/us"]).unwrap();
        assert_eq!(roots.prefixes, ["s3://bars/cn", "s3://bars/us"]);
        let spec = |data: &str, universe: Option<&str>| {
            let mut s = BatchSpec::new(data, "macd");
            s.universe = universe.map(|u| UniverseSpec::File(u.into()));
            s
        };
        for data in ["s3://bars/cn", "s3://bars/cn/daily", "s3://bars/us/sp500/"] {
            assert!(
                confine(&spec(data, Some("u/members.csv")), &roots).is_ok(),
                "{data}"
            );
        }
        for (data, universe, field) in [
            ("s3://bars/cnx", None, "data"),
            ("s3://bars", None, "data"),
            ("s3://other/cn", None, "data"),
            ("s3://bars/cn/../secret", None, "data"),
            ("s3://bars/cn//x", None, "data"),
            ("s3://bars/cn/%2e%2e", None, "data"),
            ("s3://bars/cn", Some("../u.csv"), "universe.file"),
            ("s3://bars/cn", Some("/u.csv"), "universe.file"),
            ("s3://bars/cn", Some("s3://other/u.csv"), "universe.file"),
        ] {
            let e = confine(&spec(data, universe), &roots).unwrap_err();
            assert_eq!(e.field, field, "{data} {universe:?}: {e}");
        }
        assert_eq!(
            confine(&spec("s3://bars/cn", None), &DataRoots::default())
                .unwrap_err()
                .field,
            "data"
        );
        assert_eq!(
            DataRoots::split("/data/a:s3://bars/cn,/data/b"),
            ["/data/a", "s3://bars/cn", "/data/b"]
        );
        assert!(DataRoots::parse(&["gs://x"]).is_err());
    }
}
