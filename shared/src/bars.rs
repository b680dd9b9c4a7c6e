//! A symbol's daily bars, held as columns, and the validity rules of
//! SEMANTICS section 1. The engine only ever sees bars that passed [`Bars::validate`].

use crate::date::{Date, format_date};

/// One symbol's daily history as columns: index `t` of every column is bar `t`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    pub symbol: String,
    pub dates: Vec<Date>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
}

/// A bar that breaks a rule of SEMANTICS section 1: names the symbol, where, and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{symbol}: the bar of {date}: {rule}")]
pub struct BarsError {
    pub symbol: String,
    /// 0-based row of the bar in the symbol's history.
    pub row: usize,
    /// The bar's date, `YYYY-MM-DD`.
    pub date: String,
    pub rule: String,
}

impl Bars {
    /// A content hash of the bars: equal bars, equal hash, wherever and however they were
    /// read. Identifies the data a result was computed from (SEMANTICS section 9's
    /// provenance). One FNV-1a lane per column over whole 64-bit words (a date, a price's
    /// bits), the six lanes side by side in one loop and then hashed together with the
    /// length: a bytewise hash over one chain took a quarter of a warm batch's CPU.
    pub fn content_hash(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut lanes = [Fnv::default().0; 6];
        for t in 0..self.len() {
            let words = [
                u64::from(self.dates[t] as u32),
                self.open[t].to_bits(),
                self.high[t].to_bits(),
                self.low[t].to_bits(),
                self.close[t].to_bits(),
                self.volume[t].to_bits(),
            ];
            for (h, w) in lanes.iter_mut().zip(words) {
                *h = (*h ^ w).wrapping_mul(PRIME);
            }
        }
        let mut h = Fnv::default();
        h.write(&(self.len() as u64).to_le_bytes());
        for lane in lanes {
            h.write(&lane.to_le_bytes());
        }
        h.0
    }

    pub fn new(symbol: impl Into<String>) -> Self {
        Bars {
            symbol: symbol.into(),
            ..Bars::default()
        }
    }

    pub fn with_capacity(symbol: impl Into<String>, n: usize) -> Self {
        Bars {
            symbol: symbol.into(),
            dates: Vec::with_capacity(n),
            open: Vec::with_capacity(n),
            high: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.dates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }

    pub fn push(&mut self, date: Date, open: f64, high: f64, low: f64, close: f64, volume: f64) {
        self.dates.push(date);
        self.open.push(open);
        self.high.push(high);
        self.low.push(low);
        self.close.push(close);
        self.volume.push(volume);
    }

    /// Checks every rule of SEMANTICS section 1 and reports the first broken one.
    pub fn validate(&self) -> Result<(), BarsError> {
        self.check_dates()?;
        (0..self.len()).try_for_each(|t| self.check_bar(t))
    }

    /// The bars inside `[start, end]`, validated. The range is applied before the price
    /// rules (SEMANTICS section 1), so a broken bar outside it does not fail the job; the
    /// dates of the whole file must still ascend, or there is no range to speak of. The
    /// columns are cut where they are, into no new vectors: a job reads its bars once, and
    /// copying them into range-cut ones took four times as long in `xt local`'s profile as
    /// in process (fresh pages each time).
    pub fn validated_range(
        mut self,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Bars, BarsError> {
        let (lo, hi) = self.checked_range(start, end)?;
        fn cut<T>(v: &mut Vec<T>, lo: usize, hi: usize) {
            v.truncate(hi);
            v.drain(..lo);
        }
        cut(&mut self.dates, lo, hi);
        cut(&mut self.open, lo, hi);
        cut(&mut self.high, lo, hi);
        cut(&mut self.low, lo, hi);
        cut(&mut self.close, lo, hi);
        cut(&mut self.volume, lo, hi);
        Ok(self)
    }

    /// [`Bars::validated_range`] of borrowed bars: only the range is copied (a job's bars
    /// out of the whole history a cache keeps).
    pub fn validated_slice(
        &self,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Bars, BarsError> {
        let (lo, hi) = self.checked_range(start, end)?;
        Ok(Bars {
            symbol: self.symbol.clone(),
            dates: self.dates[lo..hi].to_vec(),
            open: self.open[lo..hi].to_vec(),
            high: self.high[lo..hi].to_vec(),
            low: self.low[lo..hi].to_vec(),
            close: self.close[lo..hi].to_vec(),
            volume: self.volume[lo..hi].to_vec(),
        })
    }

    /// The bars' indices inside `[start, end]`, once the dates of the whole history and the
    /// bars in range are checked.
    fn checked_range(
        &self,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<(usize, usize), BarsError> {
        self.check_dates()?;
        let (lo, hi) = self.range(start, end);
        for t in lo..hi {
            self.check_bar(t)?;
        }
        Ok((lo, hi))
    }

    fn check_dates(&self) -> Result<(), BarsError> {
        let n = self.dates.len();
        for (name, len) in [
            ("open", self.open.len()),
            ("high", self.high.len()),
            ("low", self.low.len()),
            ("close", self.close.len()),
            ("volume", self.volume.len()),
        ] {
            if len != n {
                return Err(self.error(
                    len.min(n),
                    format!("column {name} has {len} values but there are {n} dates"),
                ));
            }
        }
        check_ascending(&self.symbol, &self.dates)
    }

    fn check_bar(&self, t: usize) -> Result<(), BarsError> {
        match broken_rule(
            self.open[t],
            self.high[t],
            self.low[t],
            self.close[t],
            self.volume[t],
        ) {
            Some(rule) => Err(self.error(t, rule)),
            None => Ok(()),
        }
    }

    fn error(&self, row: usize, rule: String) -> BarsError {
        BarsError {
            symbol: self.symbol.clone(),
            row,
            date: self
                .dates
                .get(row)
                .map(|&d| format_date(d))
                .unwrap_or_else(|| "no date".into()),
            rule,
        }
    }

    /// The rows `lo..hi` whose dates lie in `[start, end]` (inclusive; `None` is unbounded).
    fn range(&self, start: Option<Date>, end: Option<Date>) -> (usize, usize) {
        let lo = start.map_or(0, |s| self.dates.partition_point(|&d| d < s));
        let hi = end.map_or(self.len(), |e| self.dates.partition_point(|&d| d <= e));
        (lo, hi.max(lo))
    }

    /// The bars whose dates lie in `[start, end]` (inclusive; `None` is unbounded).
    pub fn in_range(&self, start: Option<Date>, end: Option<Date>) -> Bars {
        let (lo, hi) = self.range(start, end);
        Bars {
            symbol: self.symbol.clone(),
            dates: self.dates[lo..hi].to_vec(),
            open: self.open[lo..hi].to_vec(),
            high: self.high[lo..hi].to_vec(),
            low: self.low[lo..hi].to_vec(),
            close: self.close[lo..hi].to_vec(),
            volume: self.volume[lo..hi].to_vec(),
        }
    }
}

/// The SEMANTICS section 1 rule a bar's values break, if any, as `RULE, got VALUES`: prices
/// finite and > 0, low at most and high at least the open and close, volume finite and
/// >= 0.
pub fn broken_rule(o: f64, h: f64, l: f64, c: f64, v: f64) -> Option<String> {
    for (name, p) in [("open", o), ("high", h), ("low", l), ("close", c)] {
        if !(p.is_finite() && p > 0.0) {
            return Some(format!("{name} must be finite and > 0, got {p}"));
        }
    }
    if l > o.min(c) {
        return Some(format!(
            "low must be <= min(open, close), got low {l}, open {o}, close {c}"
        ));
    }
    if h < o.max(c) {
        return Some(format!(
            "high must be >= max(open, close), got high {h}, open {o}, close {c}"
        ));
    }
    if !(v.is_finite() && v >= 0.0) {
        return Some(format!("volume must be finite and >= 0, got {v}"));
    }
    None
}

/// Fails on the first date that does not strictly follow the one before it.
pub fn check_ascending(symbol: &str, dates: &[Date]) -> Result<(), BarsError> {
    for t in 1..dates.len() {
        if dates[t] <= dates[t - 1] {
            let rule = if dates[t] == dates[t - 1] {
                "duplicate date".to_string()
            } else {
                format!(
                    "dates must strictly ascend, but it follows {}",
                    format_date(dates[t - 1])
                )
            };
            return Err(BarsError {
                symbol: symbol.to_string(),
                row: t,
                date: format_date(dates[t]),
                rule,
            });
        }
    }
    Ok(())
}

/// The dates inside `[start, end]` of a history whose dates must strictly ascend.
pub fn dates_in_range(
    symbol: &str,
    dates: &[Date],
    start: Option<Date>,
    end: Option<Date>,
) -> Result<Vec<Date>, BarsError> {
    check_ascending(symbol, dates)?;
    let lo = start.map_or(0, |s| dates.partition_point(|&d| d < s));
    let hi = end.map_or(dates.len(), |e| dates.partition_point(|&d| d <= e));
    Ok(dates[lo..hi.max(lo)].to_vec())
}

/// FNV-1a, 64 bits: stable across versions and platforms (unlike `std`'s hasher), which a
/// hash recorded in results must be.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::parse_date;

    #[test]
    fn the_content_hash_tells_any_change_apart() {
        let bars = crate::SyntheticMarket::new(1, 2, 5).generate(0);
        let h = bars.content_hash();
        assert_eq!(bars.clone().content_hash(), h);
        let mut other = bars.clone();
        other.volume[100] = f64::from_bits(other.volume[100].to_bits() ^ 1);
        assert_ne!(other.content_hash(), h, "the lowest bit of one volume");
        let mut other = bars.clone();
        other.close.swap(3, 4);
        assert_ne!(other.content_hash(), h, "two closes swapped");
        let mut other = bars.clone();
        (other.open[7], other.close[7]) = (other.close[7], other.open[7]);
        assert_ne!(other.content_hash(), h, "a bar's open and close swapped");
        let mut other = bars.clone();
        other.dates[9] += 1;
        assert_ne!(other.content_hash(), h, "a date");
        assert_ne!(bars.in_range(None, Some(bars.dates[500])).content_hash(), h);
    }

    fn bars() -> Bars {
        let mut b = Bars::new("AAA");
        b.push(
            parse_date("2024-01-02").unwrap(),
            10.0,
            11.0,
            9.5,
            10.5,
            100.0,
        );
        b.push(
            parse_date("2024-01-03").unwrap(),
            10.5,
            10.8,
            10.1,
            10.2,
            0.0,
        );
        b.push(
            parse_date("2024-01-04").unwrap(),
            10.2,
            10.4,
            9.9,
            10.0,
            50.0,
        );
        b
    }

    #[test]
    fn range_is_applied_before_the_price_rules() {
        let mut b = bars();
        b.high[0] = 1.0;
        let jan3 = parse_date("2024-01-03");
        let cut = b.clone().validated_range(jan3, None).unwrap();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut, b.in_range(jan3, None));
        let jan4 = parse_date("2024-01-04");
        assert_eq!(
            b.clone().validated_range(jan3, jan4).unwrap(),
            b.in_range(jan3, jan4)
        );
        b.high[2] = 1.0;
        // Row numbers stay those of the whole file.
        assert_eq!(b.clone().validated_range(jan3, None).unwrap_err().row, 2);
        b.dates.swap(0, 1);
        assert!(
            b.validated_range(jan3, None)
                .unwrap_err()
                .rule
                .starts_with("dates must strictly ascend")
        );
    }

    #[test]
    fn valid_bars_pass() {
        assert_eq!(bars().validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_named_with_symbol_and_date() {
        let mut b = bars();
        b.dates[2] = b.dates[1];
        let e = b.validate().unwrap_err();
        assert_eq!(
            (e.row, e.date.as_str(), e.rule.as_str()),
            (2, "2024-01-03", "duplicate date")
        );
        assert!(
            e.to_string()
                .starts_with("AAA: the bar of 2024-01-03: duplicate date")
        );

        let mut b = bars();
        b.close[1] = f64::NAN;
        assert!(
            b.validate()
                .unwrap_err()
                .rule
                .contains("close must be finite")
        );
        let mut b = bars();
        b.open[0] = 0.0;
        assert!(
            b.validate()
                .unwrap_err()
                .rule
                .contains("open must be finite and > 0")
        );
        let mut b = bars();
        b.low[0] = 10.1;
        assert!(b.validate().unwrap_err().rule.starts_with("low must be <="));
        let mut b = bars();
        b.high[2] = 10.1;
        assert!(
            b.validate()
                .unwrap_err()
                .rule
                .starts_with("high must be >=")
        );
        let mut b = bars();
        b.volume[2] = -1.0;
        assert!(b.validate().unwrap_err().rule.starts_with("volume must be"));
        let mut b = bars();
        b.dates.swap(0, 1);
        assert!(
            b.validate()
                .unwrap_err()
                .rule
                .starts_with("dates must strictly ascend")
        );
    }

    #[test]
    fn range_is_inclusive() {
        let b = bars();
        let r = b.in_range(parse_date("2024-01-03"), parse_date("2024-01-04"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.close, vec![10.2, 10.0]);
        assert!(b.in_range(parse_date("2025-01-01"), None).is_empty());
        assert_eq!(b.in_range(None, None), b);
    }
}
