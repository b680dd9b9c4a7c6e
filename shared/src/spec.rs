//! The batch spec: what a user asks the cluster to run. One type serves the JSON
//! API, `xt local` and the coordinator. Every omitted field has the default of
//! SEMANTICS; [`BatchSpec::check`] reports the first bad field by name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::date::{Date, parse_date};
use crate::market::{Costs, Market};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `file:///dir` (one CSV or Parquet file per symbol) or
    /// `synthetic://?symbols=N&years=Y&seed=S`.
    pub data: String,
    /// Omitted: every symbol of the data source, equal weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe: Option<UniverseSpec>,
    /// Inclusive, `YYYY-MM-DD`; omitted means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// A built-in's name (`sma_cross`), a saved strategy's name or hash (`sha256:...`), or
    /// a strategy's source in the strategy language, inline (any text with a line break,
    /// or starting with `strategy `; docs/strategy-language.md).
    pub strategy: String,
    /// One parameter set; omitted parameters take the strategy's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, Value>>,
    /// A parameter grid: every combination of the listed values is run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<BTreeMap<String, Vec<Value>>>,
    #[serde(default = "default_capital")]
    pub capital: f64,
    #[serde(default)]
    pub market: Market,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<CostsSpec>,
    /// The result tables to keep; omitted keeps every table the batch makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<Table>>,
    /// Walk-forward folds over the grid (SEMANTICS section 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_forward: Option<crate::research::WalkForward>,
    /// The market's rules by date (SEMANTICS section 12), replacing its built-in schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<crate::rules::RuleRow>>,
    /// CSCV's blocks `S` for the probability of backtest overfitting (SEMANTICS section
    /// 11): even, 2 to 20; 16 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbo_blocks: Option<usize>,
}

/// The largest batch capital: beyond any fund, with room for a thousandfold gain below
/// [`MAX_EQUITY`].
pub const MAX_CAPITAL: f64 = 1e12;

/// The largest equity a sleeve's curve may reach (an upload with more is refused as
/// broken); far below what the portfolio's fixed-point sums hold (about 1.4e20).
pub const MAX_EQUITY: f64 = 1e15;

/// The largest minimum commission per fill, in currency.
pub const MAX_MIN_COMMISSION: f64 = 1e6;

pub fn default_capital() -> f64 {
    1_000_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum UniverseSpec {
    /// A universe CSV file (see `Universe::read_csv`).
    File(String),
    /// Plain symbols, always members, equal weights.
    Symbols(Vec<String>),
}

/// Costs as the user gives them; each omitted field takes the market's default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CostsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_commission: Option<f64>,
    #[serde(
        default,
        alias = "stamp_duty_rate",
        skip_serializing_if = "Option::is_none"
    )]
    pub stamp_duty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slippage: Option<f64>,
}

/// The result tables of SEMANTICS section 9, and the research tables of sections 10 and
/// 11 (`grid` for a batch of two parameter sets or more, `folds` and `oos_equity` for one
/// that asks for walk-forward folds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Metrics,
    Trades,
    Equity,
    Portfolio,
    Grid,
    Folds,
    OosEquity,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Metrics,
        Table::Trades,
        Table::Equity,
        Table::Portfolio,
        Table::Grid,
        Table::Folds,
        Table::OosEquity,
    ];

    /// The tables every batch has.
    pub const BASIC: [Table; 4] = [
        Table::Metrics,
        Table::Trades,
        Table::Equity,
        Table::Portfolio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Metrics => "metrics",
            Table::Trades => "trades",
            Table::Equity => "equity",
            Table::Portfolio => "portfolio",
            Table::Grid => "grid",
            Table::Folds => "folds",
            Table::OosEquity => "oos_equity",
        }
    }

    /// Every table's name, for messages.
    pub fn names() -> String {
        Table::ALL.map(Table::name).join(", ")
    }

    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Where a batch's bars come from, parsed from [`BatchSpec::data`].
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    Dir(PathBuf),
    /// A prefix in an object store (`s3://bucket/prefix`) holding one object per symbol, as
    /// a directory holds files; read by the cluster's object reader (`xt-objects`).
    Object(String),
    Synthetic {
        symbols: usize,
        years: usize,
        seed: u64,
    },
}

/// A bad field of a batch spec: which field and which rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest batch name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A name people read in lists and terminals: bounded, and without control or
/// bidirectional-formatting characters (which could make a line say something else).
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_NAME_CHARS} characters, got {chars}"
        ));
    }
    if let Some(c) = name.chars().find(|&c| misleading(c)) {
        return Err(format!(
            "must not contain control or bidirectional-formatting characters (found {})",
            c.escape_unicode()
        ));
    }
    Ok(())
}

/// A control or bidirectional-formatting character: one that can make printed text say
/// something other than what it holds.
pub fn misleading(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Largest synthetic market a spec may ask for.
pub const MAX_SYNTHETIC_SYMBOLS: usize = 100_000;
pub const MAX_SYNTHETIC_YEARS: usize = 100;

impl DataSpec {
    pub fn parse(text: &str) -> Result<DataSpec, SpecError> {
        let bad = |m: String| SpecError::new("data", m);
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("file:// needs a directory path".into()));
            }
            return Ok(DataSpec::Dir(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            return object_prefix("s3", rest).map(DataSpec::Object).map_err(bad);
        }
        if let Some(query) = text.strip_prefix("synthetic://") {
            let query = query.trim_start_matches('?');
            let (mut symbols, mut years, mut seed) = (300usize, 10usize, 42u64);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("{k}={v:?} is not a whole number")))?;
                match k {
                    "symbols" => symbols = n as usize,
                    "years" => years = n as usize,
                    "seed" => seed = n,
                    _ => {
                        return Err(bad(format!(
                            "unknown synthetic parameter {k:?} (symbols, years, seed)"
                        )));
                    }
                }
            }
            if symbols == 0 || symbols > MAX_SYNTHETIC_SYMBOLS {
                return Err(bad(format!(
                    "symbols must be 1..={MAX_SYNTHETIC_SYMBOLS}, got {symbols}"
                )));
            }
            if years == 0 || years > MAX_SYNTHETIC_YEARS {
                return Err(bad(format!(
                    "years must be 1..={MAX_SYNTHETIC_YEARS}, got {years}"
                )));
            }
            return Ok(DataSpec::Synthetic {
                symbols,
                years,
                seed,
            });
        }
        Err(bad(format!(
            "{text:?} is not a data source (file:///dir, s3://bucket/prefix or synthetic://?symbols=N&years=Y&seed=S)"
        )))
    }

    pub fn to_url(&self) -> String {
        match self {
            DataSpec::Dir(p) => format!("file://{}", p.display()),
            DataSpec::Object(url) => url.clone(),
            DataSpec::Synthetic {
                symbols,
                years,
                seed,
            } => format!("synthetic://?symbols={symbols}&years={years}&seed={seed}"),
        }
    }
}

/// `scheme://bucket/key/...` made canonical (no trailing `/`), or why it cannot name a
/// prefix: every segment a plain name, so that no `.`, `..`, empty segment or escape can
/// reach beside the prefixes an operator allows.
pub fn object_prefix(scheme: &str, rest: &str) -> Result<String, String> {
    let rest = rest.trim_end_matches('/');
    let bucket = rest.split('/').next().unwrap_or_default();
    if bucket.is_empty() {
        return Err(format!(
            "{scheme}:// needs a bucket: {scheme}://bucket/prefix"
        ));
    }
    check_object_key(rest).map_err(|why| format!("{scheme}://{rest}: {why}"))?;
    Ok(format!("{scheme}://{rest}"))
}

/// An object key (or a part of one) of plain names separated by `/`, or why not: the
/// segment that is not and its rule.
pub fn check_object_key(key: &str) -> Result<(), String> {
    for segment in key.split('/') {
        check_object_segment(segment).map_err(|why| format!("segment {segment:?} {why}"))?;
    }
    Ok(())
}

/// A path segment of an object key: a plain name.
fn check_object_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        Err("is empty (a doubled '/')")
    } else if segment == "." || segment == ".." {
        Err("is a relative step")
    } else if segment
        .chars()
        .any(|c| c.is_control() || matches!(c, '%' | '?' | '#' | '\\' | '*'))
    {
        Err("holds a character a key may not use here (%, ?, #, \\, *, control)")
    } else {
        Ok(())
    }
}

impl BatchSpec {
    /// A spec with every optional field at its default.
    pub fn new(data: impl Into<String>, strategy: impl Into<String>) -> Self {
        BatchSpec {
            name: None,
            data: data.into(),
            universe: None,
            start: None,
            end: None,
            strategy: strategy.into(),
            params: None,
            grid: None,
            capital: default_capital(),
            market: Market::default(),
            costs: None,
            tables: None,
            walk_forward: None,
            rules: None,
            pbo_blocks: None,
        }
    }

    /// Checks what can be checked without the strategy catalog or the data: dates, capital,
    /// costs, the data URL, params versus grid. Strategy parameters are checked by the engine.
    pub fn check(&self) -> Result<(), SpecError> {
        DataSpec::parse(&self.data)?;
        let (start, end) = self.range()?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(SpecError::new(
                "start",
                format!(
                    "start {} is after end {}",
                    self.start.as_deref().unwrap_or(""),
                    self.end.as_deref().unwrap_or("")
                ),
            ));
        }
        if !(self.capital.is_finite() && self.capital > 0.0 && self.capital <= MAX_CAPITAL) {
            return Err(SpecError::new(
                "capital",
                format!(
                    "must be a finite number > 0 and <= {MAX_CAPITAL:e}, got {}",
                    self.capital
                ),
            ));
        }
        if self.params.is_some() && self.grid.is_some() {
            return Err(SpecError::new("grid", "give params or grid, not both"));
        }
        if let Some(name) = &self.name {
            check_name(name).map_err(|why| SpecError::new("name", why))?;
        }
        if let Some(c) = &self.costs {
            for (field, v, max) in [
                ("costs.commission_rate", c.commission_rate, 0.1),
                ("costs.min_commission", c.min_commission, MAX_MIN_COMMISSION),
                ("costs.stamp_duty", c.stamp_duty, 0.1),
                ("costs.slippage", c.slippage, 0.1),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && (0.0..=max).contains(&v))
                {
                    return Err(SpecError::new(
                        field,
                        format!("must be a finite number in [0, {max}], got {v}"),
                    ));
                }
            }
        }
        if let Some(UniverseSpec::Symbols(s)) = &self.universe
            && s.is_empty()
        {
            return Err(SpecError::new("universe.symbols", "the universe is empty"));
        }
        if let Some(t) = &self.tables
            && t.is_empty()
        {
            return Err(SpecError::new("tables", "name at least one table"));
        }
        if let Some(wf) = &self.walk_forward {
            wf.check()?;
        }
        if let Some(rows) = &self.rules {
            crate::rules::check(rows)?;
        }
        if let Some(s) = self.pbo_blocks
            && !(s % 2 == 0 && (2..=20).contains(&s))
        {
            return Err(SpecError::new(
                "pbo_blocks",
                format!("must be an even number from 2 to 20, got {s}"),
            ));
        }
        Ok(())
    }

    /// The inclusive date range.
    pub fn range(&self) -> Result<(Option<Date>, Option<Date>), SpecError> {
        let parse = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    parse_date(s).ok_or_else(|| {
                        SpecError::new(field, format!("{s:?} is not a date YYYY-MM-DD"))
                    })
                })
                .transpose()
        };
        Ok((parse("start", &self.start)?, parse("end", &self.end)?))
    }

    /// The schedule of market rules in force: the batch's own, or its market's built-in.
    pub fn schedule(&self) -> Vec<crate::rules::RuleRow> {
        self.rules
            .clone()
            .unwrap_or_else(|| crate::rules::builtin(self.market))
    }

    /// The costs in force: the market's defaults overridden by what the spec gives.
    pub fn resolved_costs(&self) -> Costs {
        let d = self.market.default_costs();
        let c = self.costs.unwrap_or_default();
        Costs {
            commission_rate: c.commission_rate.unwrap_or(d.commission_rate),
            min_commission: c.min_commission.unwrap_or(d.min_commission),
            stamp_duty: c.stamp_duty.unwrap_or(d.stamp_duty),
            slippage: c.slippage.unwrap_or(d.slippage),
        }
    }

    pub fn wants(&self, table: Table) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(&table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let spec: BatchSpec = serde_json::from_str(
            r#"{"name": "macd csi300", "data": "file:///data/cn", "universe": {"file": "csi300.csv"},
             "start": "2015-01-01", "end": "2024-12-31", "strategy": "macd",
             "grid": {"fast": [8, 10, 12], "slow": [26, 30], "signal": [9]},
             "capital": 10000000, "market": "cn",
             "costs": {"commission_rate": 0.0003, "min_commission": 5, "stamp_duty": 0.0005, "slippage": 0}}"#,
        )
        .unwrap();
        assert_eq!(spec.check(), Ok(()));
        assert_eq!(spec.universe, Some(UniverseSpec::File("csi300.csv".into())));
        assert_eq!(spec.resolved_costs(), Market::Cn.default_costs());
        assert!(spec.wants(Table::Equity));
    }

    #[test]
    fn rejects_unknown_fields_and_names_bad_ones() {
        let e = serde_json::from_str::<BatchSpec>(
            r#"{"data": "synthetic://", "strategy": "macd", "colour": 1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let mut spec = BatchSpec::new("synthetic://", "macd");
        spec.start = Some("2024-01-01".into());
        spec.end = Some("2023-01-01".into());
        assert_eq!(spec.check().unwrap_err().field, "start");
        let mut spec = BatchSpec::new("ftp://x", "macd");
        assert_eq!(spec.check().unwrap_err().field, "data");
        spec.data = "synthetic://?symbols=0".into();
        assert!(
            spec.check()
                .unwrap_err()
                .message
                .contains("symbols must be")
        );
        spec.data = "synthetic://?symbols=3&years=2&seed=9".into();
        assert_eq!(
            DataSpec::parse(&spec.data),
            Ok(DataSpec::Synthetic {
                symbols: 3,
                years: 2,
                seed: 9
            })
        );
        for capital in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e16, 1e20] {
            spec.capital = capital;
            assert_eq!(spec.check().unwrap_err().field, "capital", "{capital}");
        }
        spec.capital = MAX_CAPITAL;
        spec.check().unwrap();
        for name in [
            "x".repeat(MAX_NAME_CHARS + 1),
            "tab\there".into(),
            "evil\u{202E}txt.exe".into(),
            "bell\u{7}".into(),
        ] {
            spec.name = Some(name.clone());
            assert_eq!(spec.check().unwrap_err().field, "name", "{name:?}");
        }
        spec.name = Some("沪深300 MACD (fast 8-16)".into());
        spec.check().unwrap();
        spec.name = None;
        spec.costs = Some(CostsSpec {
            min_commission: Some(1e7),
            ..Default::default()
        });
        assert_eq!(spec.check().unwrap_err().field, "costs.min_commission");
        spec.capital = 1.0;
        spec.costs = Some(CostsSpec {
            slippage: Some(-0.1),
            ..Default::default()
        });
        assert_eq!(spec.check().unwrap_err().field, "costs.slippage");
    }

    #[test]
    fn us_market_has_no_default_costs() {
        let mut spec = BatchSpec::new("synthetic://", "sma_cross");
        spec.market = Market::Us;
        spec.costs = Some(CostsSpec {
            commission_rate: Some(0.001),
            ..Default::default()
        });
        assert_eq!(
            spec.resolved_costs(),
            Costs {
                commission_rate: 0.001,
                ..Costs::default()
            }
        );
    }
}
