//! How a data directory is laid out: one file per symbol or one long table with a symbol
//! column, in CSV, Parquet or Arrow IPC, with its columns under our names or the names an
//! export gave them. Detected from the files, or stated by the directory's owner in a
//! manifest beside them ([`MANIFEST`]), which every batch over the directory then obeys.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::source::DataError;

/// The manifest a data directory may carry: `{"layout": "per_symbol" | "long", "format":
/// "csv" | "parquet" | "arrow", "columns": {"date": "Date", "volume": "vol"}}`, each field
/// optional.
pub const MANIFEST: &str = "xt-dataset.json";

/// Our column names, in the order bars are made of (the symbol column only in long tables).
pub const COLUMNS: [&str; 7] = ["symbol", "date", "open", "high", "low", "close", "volume"];

/// The names a column goes by in the exports users have, lower case; the first is ours.
/// Matched case aside, when the manifest does not name the column.
const ALIASES: [&[&str]; 7] = [
    &[
        "symbol",
        "ts_code",
        "ticker",
        "code",
        "instrument",
        "sec_code",
    ],
    &["date", "trade_date", "datetime", "timestamp", "day", "time"],
    &["open"],
    &["high"],
    &["low"],
    &["close"],
    &["volume", "vol"],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    PerSymbol,
    Long,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Parquet,
    /// The Arrow IPC file format (Feather v2), uncompressed or LZ4/ZSTD.
    Arrow,
}

impl Format {
    /// The file extensions of the format.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Csv => &["csv"],
            Format::Parquet => &["parquet"],
            Format::Arrow => &["arrow", "feather", "ipc"],
        }
    }

    /// Formats in the order detection prefers them when a directory has files of several.
    pub const PREFERRED: [Format; 3] = [Format::Parquet, Format::Arrow, Format::Csv];

    /// The format of a file named `path`, by its extension.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        Self::PREFERRED
            .into_iter()
            .find(|f| f.extensions().contains(&ext))
    }

    /// The first of the format's extensions that one of the file `names` has.
    pub fn extension_among<'a>(
        self,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<&'static str> {
        self.extensions().iter().copied().find(|ext| {
            names
                .clone()
                .any(|n| n.strip_suffix(ext).is_some_and(|s| s.ends_with('.')))
        })
    }

    /// The preferred format among the file `names`, and its extension found there.
    pub fn among<'a>(
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<(Format, &'static str)> {
        Self::PREFERRED
            .into_iter()
            .find_map(|f| Some((f, f.extension_among(names.clone())?)))
    }
}

/// Which of a file's columns is each of ours: the manifest's names where it gives them,
/// else [`ALIASES`]; case is ignored either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ColumnMap(BTreeMap<String, String>);

impl ColumnMap {
    /// A map of our column names to a file's; an unknown name of ours is an error.
    pub fn new(pairs: BTreeMap<String, String>) -> Result<ColumnMap, String> {
        if let Some(bad) = pairs.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
            return Err(format!(
                "columns: {bad:?} is not a column of bars (one of {})",
                COLUMNS.join(", ")
            ));
        }
        Ok(ColumnMap(pairs))
    }

    /// The index among `names` of our column `ours`.
    pub fn find<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
        ours: &str,
    ) -> Option<usize> {
        if let Some(theirs) = self.0.get(ours) {
            return names.clone().position(|n| n.eq_ignore_ascii_case(theirs));
        }
        let k = COLUMNS.iter().position(|c| *c == ours)?;
        ALIASES[k]
            .iter()
            .find_map(|a| names.clone().position(|n| n.eq_ignore_ascii_case(a)))
    }

    /// The index among `names` of our column `ours`, or the error naming what was looked
    /// for (`symbol`'s bars being read).
    pub fn require<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
        ours: &'static str,
        symbol: &str,
    ) -> Result<usize, DataError> {
        self.find(names, ours)
            .ok_or_else(|| DataError::MissingColumn {
                symbol: symbol.to_string(),
                column: ours,
                looked_for: self.looked_for(ours),
            })
    }

    /// What a missing column was looked for as, for errors.
    pub fn looked_for(&self, ours: &str) -> String {
        if let Some(theirs) = self.0.get(ours) {
            return format!("{theirs:?} (the manifest's name for {ours})");
        }
        let k = COLUMNS.iter().position(|c| *c == ours).unwrap_or(0);
        ALIASES[k].join(" or ")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    layout: Option<Layout>,
    format: Option<Format>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
}

/// What a [`MANIFEST`] states; what it leaves out is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub layout: Option<Layout>,
    pub format: Option<Format>,
    pub columns: ColumnMap,
}

impl Manifest {
    /// Parses a manifest's bytes; an unknown field, layout, format or column of ours is an
    /// error naming it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, DataError> {
        let bad = |message: String| DataError::Io {
            path: MANIFEST.into(),
            message,
        };
        let file: ManifestFile = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("{e} (fields: layout, format, columns)")))?;
        Ok(Manifest {
            layout: file.layout,
            format: file.format,
            columns: ColumnMap::new(file.columns).map_err(bad)?,
        })
    }
}

/// A data directory's layout, format and columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Described {
    pub layout: Layout,
    pub format: Format,
    pub columns: ColumnMap,
}

/// Reads `dir`'s manifest (none: all detected) and detects what it leaves out: a directory
/// of `k=v` partitions is long; else the format with files (Parquet before Arrow before
/// CSV), long when its first file has a symbol column.
pub fn describe(dir: &Path) -> Result<Described, DataError> {
    let manifest = match std::fs::read(dir.join(MANIFEST)) {
        Ok(bytes) => Manifest::parse(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
        Err(e) => {
            return Err(DataError::Io {
                path: MANIFEST.into(),
                message: e.to_string(),
            });
        }
    };
    let columns = manifest.columns.clone();
    let io = |e: std::io::Error| DataError::Io {
        path: dir.display().to_string(),
        message: format!("cannot open data directory: {e}"),
    };
    let mut partitioned = false;
    // The first file of each format, by the format's place in `Format::PREFERRED`.
    let mut firsts: BTreeMap<usize, (Format, std::path::PathBuf)> = BTreeMap::new();
    let mut note = |path: std::path::PathBuf| {
        if let Some(f) = Format::of(&path) {
            let rank = Format::PREFERRED.iter().position(|p| *p == f).unwrap_or(0);
            firsts.entry(rank).or_insert((f, path));
        }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && name.contains('=') {
            partitioned = true;
            if let Some(f) = first_file_under(&p, 0) {
                note(f);
            }
        } else if p.is_file() {
            note(p);
        }
    }
    let found = firsts.into_values().next();
    let format = match (manifest.format, &found) {
        (Some(f), _) => f,
        (None, Some((f, _))) => *f,
        (None, None) => Format::Csv,
    };
    let layout = match manifest.layout {
        Some(l) => l,
        None if partitioned => Layout::Long,
        None => match found.filter(|(f, _)| *f == format) {
            Some((Format::Parquet | Format::Arrow, path)) => {
                if has_symbol_column(&path, format, &columns) {
                    Layout::Long
                } else {
                    Layout::PerSymbol
                }
            }
            _ => Layout::PerSymbol,
        },
    };
    if layout == Layout::Long && format == Format::Csv {
        return Err(DataError::Io {
            path: dir.display().to_string(),
            message: "a long dataset is read from Parquet or Arrow files, not CSV (`xt data import` converts CSV)".into(),
        });
    }
    Ok(Described {
        layout,
        format,
        columns,
    })
}

fn first_file_under(dir: &Path, depth: usize) -> Option<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_file() && Format::of(&p).is_some() {
            return Some(p);
        }
        if p.is_dir()
            && depth < 4
            && let Some(f) = first_file_under(&p, depth + 1)
        {
            return Some(f);
        }
    }
    None
}

/// Whether the file at `path` has a symbol column (its schema read, not its rows).
fn has_symbol_column(path: &Path, format: Format, columns: &ColumnMap) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let schema = match format {
        Format::Parquet => {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map(|b| b.schema().clone())
                .ok()
        }
        Format::Arrow => arrow::ipc::reader::FileReader::try_new(file, None)
            .map(|r| r.schema())
            .ok(),
        Format::Csv => None,
    };
    schema.is_some_and(|s| {
        columns
            .find(s.fields().iter().map(|f| f.name().as_str()), "symbol")
            .is_some()
    })
}
