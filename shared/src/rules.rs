//! Market rules that change by date (SEMANTICS section 12): price-limit bands and stamp
//! duty as schedules of `(from date, symbols, rule)` rows. For each kind of rule and each
//! symbol, the latest matching row whose date is on or before the bar's date applies.

use serde::{Deserialize, Serialize};

use crate::date::{Date, format_date, parse_date};
use crate::market::Market;
use crate::spec::SpecError;

/// One row of a schedule, as a batch's `rules` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleRow {
    /// First date in force, `YYYY-MM-DD`; omitted: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Which symbols: `all`, a prefix ending in `*` (`688*`), or a symbol.
    pub symbols: Vec<String>,
    /// Price-limit band, a fraction of the previous close (0.1 is 10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_limit: Option<f64>,
    /// Stamp duty on sells, a fraction of the notional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp_duty: Option<f64>,
}

/// The most rows a batch's schedule may have.
pub const MAX_RULES: usize = 1_000;

fn row(
    from: Option<&str>,
    symbols: &[&str],
    price_limit: Option<f64>,
    stamp: Option<f64>,
) -> RuleRow {
    RuleRow {
        from: from.map(str::to_string),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        price_limit,
        stamp_duty: stamp,
    }
}

/// A market's built-in schedule: for `cn`, the history of SEMANTICS section 12's table;
/// `us` has neither price limits nor stamp duty.
pub fn builtin(market: Market) -> Vec<RuleRow> {
    match market {
        Market::Cn => vec![
            row(None, &["all"], Some(0.10), None),
            // STAR market: 20% since it opened.
            row(Some("2019-07-22"), &["688*"], Some(0.20), None),
            // ChiNext's registration reform.
            row(Some("2020-08-24"), &["300*", "301*"], Some(0.20), None),
            row(None, &["all"], None, Some(0.001)),
            // Stamp duty on sales halved.
            row(Some("2023-08-28"), &["all"], None, Some(0.0005)),
        ],
        Market::Us => Vec::new(),
    }
}

/// Checks a batch's `rules`: dates, patterns and values.
pub fn check(rows: &[RuleRow]) -> Result<(), SpecError> {
    if rows.len() > MAX_RULES {
        return Err(SpecError::new(
            "rules",
            format!("{} rows; at most {MAX_RULES}", rows.len()),
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if let Some(d) = &r.from
            && parse_date(d).is_none()
        {
            return Err(SpecError::new(
                field("from"),
                format!("{d:?} is not a date YYYY-MM-DD"),
            ));
        }
        if r.symbols.is_empty() || r.symbols.iter().any(|s| s.is_empty() || s.len() > 64) {
            return Err(SpecError::new(
                field("symbols"),
                "name `all`, prefixes ending in `*` or symbols (1 to 64 characters each)",
            ));
        }
        if r.price_limit.is_none() && r.stamp_duty.is_none() {
            return Err(SpecError::new(
                field("price_limit"),
                "a row sets price_limit or stamp_duty",
            ));
        }
        for (name, v, range) in [
            ("price_limit", r.price_limit, 0.0..=1.0),
            ("stamp_duty", r.stamp_duty, 0.0..=0.1),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && range.contains(&v) && (name != "price_limit" || v > 0.0))
            {
                return Err(SpecError::new(
                    field(name),
                    format!(
                        "must be a finite number in ({}, {}], got {v}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn matches(patterns: &[String], symbol: &str) -> bool {
    patterns.iter().any(|p| match p.as_str() {
        "all" => true,
        p => match p.strip_suffix('*') {
            Some(prefix) => symbol.starts_with(prefix),
            None => symbol == p,
        },
    })
}

/// A rule's value over time: `(from, value)` by date, `Date::MIN` for always.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Steps(pub Vec<(Date, f64)>);

impl Steps {
    /// One value on every date.
    pub fn constant(v: f64) -> Steps {
        Steps(vec![(Date::MIN, v)])
    }

    /// The value in force on `date`, if any row applies yet.
    pub fn at(&self, date: Date) -> Option<f64> {
        let k = self.0.partition_point(|(from, _)| *from <= date);
        k.checked_sub(1).map(|i| self.0[i].1)
    }
}

/// One symbol's rules over time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SymbolRules {
    pub price_limit: Steps,
    pub stamp_duty: Steps,
}

/// The steps of one kind of rule for `symbol`: each row that matches replaces what was in
/// force from its date (rows in order; a later row of the same date wins).
fn steps(rows: &[RuleRow], symbol: &str, pick: impl Fn(&RuleRow) -> Option<f64>) -> Steps {
    let mut v: Vec<(Date, f64)> = rows
        .iter()
        .filter(|r| matches(&r.symbols, symbol))
        .filter_map(|r| {
            let from = r.from.as_deref().and_then(parse_date).unwrap_or(Date::MIN);
            pick(r).map(|x| (from, x))
        })
        .collect();
    // A stable sort keeps the rows' order within a date; the last of each date stands.
    v.sort_by_key(|(d, _)| *d);
    let mut out: Vec<(Date, f64)> = Vec::with_capacity(v.len());
    for (d, x) in v {
        match out.last_mut() {
            Some(last) if last.0 == d => last.1 = x,
            _ => out.push((d, x)),
        }
    }
    Steps(out)
}

/// `symbol`'s rules from `schedule`, with the overrides SEMANTICS section 12 names: its
/// universe row's `price_limit` and the batch's explicit `stamp_duty` hold on every date.
/// Without any stamp-duty row, `default_stamp` holds.
pub fn for_symbol(
    schedule: &[RuleRow],
    symbol: &str,
    price_limit: Option<f64>,
    stamp_duty: Option<f64>,
    default_stamp: f64,
) -> SymbolRules {
    let stamp = match stamp_duty {
        Some(v) => Steps::constant(v),
        None => {
            let s = steps(schedule, symbol, |r| r.stamp_duty);
            if s.0.is_empty() {
                Steps::constant(default_stamp)
            } else {
                s
            }
        }
    };
    SymbolRules {
        price_limit: match price_limit {
            Some(v) => Steps::constant(v),
            None => steps(schedule, symbol, |r| r.price_limit),
        },
        stamp_duty: stamp,
    }
}

/// A schedule as the summary states it: each row with its date written out.
pub fn describe(rows: &[RuleRow]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(d) = r.from.as_deref().and_then(parse_date) {
                    v["from"] = format_date(d).into();
                }
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn the_cn_history_by_board() {
        let cn = builtin(Market::Cn);
        check(&cn).unwrap();
        let chinext = for_symbol(&cn, "300750.SZ", None, None, 0.0);
        assert_eq!(chinext.price_limit.at(d("2020-08-21")), Some(0.10));
        assert_eq!(chinext.price_limit.at(d("2020-08-24")), Some(0.20));
        let star = for_symbol(&cn, "688981.SH", None, None, 0.0);
        assert_eq!(star.price_limit.at(d("2019-07-22")), Some(0.20));
        let main = for_symbol(&cn, "600519.SH", None, None, 0.0);
        assert_eq!(main.price_limit.at(d("2024-01-02")), Some(0.10));
        assert_eq!(main.stamp_duty.at(d("2023-08-25")), Some(0.001));
        assert_eq!(main.stamp_duty.at(d("2023-08-28")), Some(0.0005));
        assert_ne!(
            main.stamp_duty.at(d("2023-01-01")),
            main.stamp_duty.at(d("2023-12-31"))
        );
        // A universe row's limit and an explicit stamp duty hold on every date.
        let fixed = for_symbol(&cn, "300750.SZ", Some(0.05), Some(0.002), 0.0);
        assert_eq!(fixed.price_limit, Steps::constant(0.05));
        assert_eq!(fixed.stamp_duty, Steps::constant(0.002));
        let us = for_symbol(&builtin(Market::Us), "AAPL", None, None, 0.0);
        assert_eq!(
            (us.price_limit.at(d("2020-01-01")), us.stamp_duty.at(0)),
            (None, Some(0.0))
        );
    }

    #[test]
    fn bad_rows_name_the_field() {
        let bad = |r: RuleRow| check(&[r]).unwrap_err().field;
        assert_eq!(
            bad(row(Some("2020-13-01"), &["all"], Some(0.1), None)),
            "rules[0].from"
        );
        assert_eq!(bad(row(None, &[], Some(0.1), None)), "rules[0].symbols");
        assert_eq!(
            bad(row(None, &["all"], Some(1.5), None)),
            "rules[0].price_limit"
        );
        assert_eq!(
            bad(row(None, &["all"], Some(0.0), None)),
            "rules[0].price_limit"
        );
        assert_eq!(
            bad(row(None, &["all"], None, Some(-0.1))),
            "rules[0].stamp_duty"
        );
        assert_eq!(bad(row(None, &["all"], None, None)), "rules[0].price_limit");
    }
}
