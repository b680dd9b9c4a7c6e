//! A deterministic synthetic market: `N` symbols x `Y` years of daily bars from a
//! seed, realistic enough to exercise every rule of the engine: volatility that
//! clusters (GARCH(1,1)), overnight gaps, suspended days (volume 0, flat at the last
//! close), opens at the limit-up and limit-down price, prices on a 0.01 tick.
//!
//! The same seed gives the same bytes on every machine: the generator is our own
//! (SplitMix64 and Box-Muller with no platform-dependent maths beyond `ln`, `sqrt`,
//! `cos`, `exp`), not a crate whose stream could change between versions.

use crate::bars::{Bars, dates_in_range};
use crate::date::{Date, weekday, ymd};
use crate::market::{Limit, limit_price};
use crate::source::{BarSource, DataError};
use crate::universe::{Member, Universe};

/// Trading days a synthetic year has.
pub const DAYS_PER_YEAR: usize = 252;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticMarket {
    pub symbols: usize,
    pub years: usize,
    pub seed: u64,
}

/// SplitMix64: tiny, fast and fully specified.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn round_tick(x: f64) -> f64 {
    ((x * 100.0).round() / 100.0).max(0.01)
}

impl SyntheticMarket {
    pub fn new(symbols: usize, years: usize, seed: u64) -> Self {
        SyntheticMarket {
            symbols,
            years,
            seed,
        }
    }

    pub fn symbol(&self, i: usize) -> String {
        format!("SYN{i:05}")
    }

    /// Every fifth symbol trades under a 20% limit (like ChiNext and STAR), the rest 10%.
    pub fn price_limit(&self, i: usize) -> f64 {
        if i % 5 == 4 { 0.2 } else { 0.1 }
    }

    /// All symbols, always members, equal weights, with their price limits.
    pub fn universe(&self) -> Universe {
        Universe {
            members: (0..self.symbols)
                .map(|i| Member {
                    price_limit: (i % 5 == 4).then_some(0.2),
                    ..Member::always(self.symbol(i))
                })
                .collect(),
        }
    }

    /// Trading days: weekdays from Monday 2015-01-05, five a week. In closed form rather
    /// than by testing each day: every job's bars and every member's dates in planning
    /// start from it, and planning runs before any job can.
    fn calendar(&self) -> Vec<Date> {
        let monday = ymd(2015, 1, 5).expect("a valid date");
        debug_assert_eq!(weekday(monday), 0);
        (0..(self.years * DAYS_PER_YEAR) as Date)
            .map(|k| monday + 7 * (k / 5) + k % 5)
            .collect()
    }

    /// The bars of symbol `i`.
    pub fn generate(&self, i: usize) -> Bars {
        let dates = self.calendar();
        let mut rng = Rng(self.seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        for _ in 0..4 {
            rng.next_u64();
        }
        let limit = self.price_limit(i);
        let anchor = 5.0 * (1.0 + 40.0 * rng.uniform());
        let mut close = round_tick(anchor);
        let mut variance: f64 = 0.0004;
        let mut suspended_for = 0usize;
        let mut bars = Bars::with_capacity(self.symbol(i), dates.len());
        for &date in &dates {
            if suspended_for == 0 && rng.uniform() < 0.002 {
                suspended_for = 1 + (rng.uniform() * 8.0) as usize;
            }
            if suspended_for > 0 {
                suspended_for -= 1;
                bars.push(date, close, close, close, close, 0.0);
                continue;
            }
            // GARCH(1,1): yesterday's shock raises today's variance; long-run daily vol ~2%.
            let sigma = variance.sqrt();
            let up = limit_price(close, limit, Limit::Up);
            let down = limit_price(close, limit, Limit::Down);
            let drift = -0.002 * (close / anchor).ln();
            let roll = rng.uniform();
            let open = if roll < 0.004 {
                up
            } else if roll < 0.008 {
                down
            } else {
                let jump = if rng.uniform() < 0.01 {
                    rng.normal() * 0.05
                } else {
                    0.0
                };
                round_tick(close * (1.0 + drift + 0.4 * sigma * rng.normal() + jump))
                    .clamp(down, up)
            };
            let day = round_tick(open * (1.0 + sigma * rng.normal())).clamp(down, up);
            let ret = day / close - 1.0;
            variance = 0.000_02 + 0.10 * ret * ret + 0.85 * variance;
            let wick = sigma * 0.5;
            let high =
                round_tick(open.max(day) * (1.0 + wick * rng.normal().abs())).max(open.max(day));
            let low =
                round_tick(open.min(day) * (1.0 - wick * rng.normal().abs())).min(open.min(day));
            let volume = (1e6 * (1.0 + ret.abs() * 20.0) * (0.5 + rng.uniform()))
                .round()
                .max(100.0);
            bars.push(date, open, high, low, day, volume);
            close = day;
        }
        bars
    }
}

impl SyntheticMarket {
    fn index(&self, symbol: &str) -> Result<usize, DataError> {
        let unknown = || DataError::UnknownSymbol {
            symbol: symbol.to_string(),
            path: format!("synthetic market of {} symbols", self.symbols),
        };
        let i: usize = symbol
            .strip_prefix("SYN")
            .and_then(|s| s.parse().ok())
            .ok_or_else(unknown)?;
        if i >= self.symbols || symbol != self.symbol(i) {
            return Err(unknown());
        }
        Ok(i)
    }
}

impl BarSource for SyntheticMarket {
    fn read(&self, symbol: &str) -> Result<Bars, DataError> {
        Ok(self.generate(self.index(symbol)?))
    }

    /// Every symbol trades (or is suspended with a bar) on every day of one calendar.
    fn dates(
        &self,
        symbol: &str,
        start: Option<Date>,
        end: Option<Date>,
    ) -> Result<Vec<Date>, DataError> {
        self.index(symbol)?;
        Ok(dates_in_range(symbol, &self.calendar(), start, end)?)
    }

    fn symbols(&self) -> Result<Vec<String>, DataError> {
        Ok((0..self.symbols).map(|i| self.symbol(i)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_is_every_weekday_from_its_first_monday() {
        let m = SyntheticMarket::new(1, 3, 1);
        let mut expected = Vec::new();
        let mut d = ymd(2015, 1, 5).unwrap();
        while expected.len() < 3 * DAYS_PER_YEAR {
            if weekday(d) < 5 {
                expected.push(d);
            }
            d += 1;
        }
        assert_eq!(m.calendar(), expected);
    }

    #[test]
    fn same_seed_same_bars_and_every_rule_exercised() {
        let m = SyntheticMarket::new(20, 4, 11);
        assert_eq!(m.generate(3), m.generate(3));
        assert_ne!(
            m.generate(3).close,
            SyntheticMarket::new(20, 4, 12).generate(3).close
        );
        let (mut suspended, mut limit_up, mut limit_down) = (0, 0, 0);
        for i in 0..m.symbols {
            let b = m.load(&m.symbol(i)).expect("synthetic bars are valid");
            assert_eq!(b.len(), 4 * DAYS_PER_YEAR);
            suspended += b.volume.iter().filter(|&&v| v == 0.0).count();
            for t in 1..b.len() {
                if b.volume[t] > 0.0
                    && b.open[t] >= limit_price(b.close[t - 1], m.price_limit(i), Limit::Up)
                {
                    limit_up += 1;
                }
                if b.volume[t] > 0.0
                    && b.open[t] <= limit_price(b.close[t - 1], m.price_limit(i), Limit::Down)
                {
                    limit_down += 1;
                }
            }
        }
        assert!(suspended > 20, "suspended {suspended}");
        assert!(
            limit_up > 20 && limit_down > 20,
            "limit-up {limit_up}, limit-down {limit_down}"
        );
        assert!(matches!(
            m.load("SYN00020"),
            Err(DataError::UnknownSymbol { .. })
        ));
        // Planning reads only dates: they must be the bars' own.
        let (start, end) = (ymd(2016, 3, 1), ymd(2017, 6, 30));
        for i in [0, 7] {
            let symbol = m.symbol(i);
            assert_eq!(
                m.dates(&symbol, start, end).unwrap(),
                m.load_range(&symbol, start, end).unwrap().dates
            );
        }
        assert!(m.dates("SYN00020", None, None).is_err());
        assert!(matches!(
            m.load("SYN3"),
            Err(DataError::UnknownSymbol { .. })
        ));
    }
}
