//! The portfolio of a batch: the sum of its sleeves' equity over the union of their dates
//! (SEMANTICS section 5), per parameter set, and the benchmark beside it.
//!
//! Sums are kept in 128-bit fixed point (2^-60 units): each addend is truncated to that grid
//! (an error below 1e-18 of a currency unit) and integer addition is exact, so the total does
//! not depend on the order jobs finish in. A batch run on one machine and on a cluster of
//! fifty gives the same bits.

use crate::date::Date;

const SCALE: f64 = (1u128 << 60) as f64;

/// An order-independent sum of equity values (up to about 1e20 in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FixedSum(i128);

impl FixedSum {
    #[inline]
    pub fn add(&mut self, value: f64) {
        // Multiplying by a power of two is exact; the cast truncates toward zero.
        self.0 += (value * SCALE) as i128;
    }

    #[inline]
    pub fn merge(&mut self, other: FixedSum) {
        self.0 += other.0;
    }

    pub fn value(self) -> f64 {
        self.0 as f64 / SCALE
    }
}

/// Equity of many sleeves on a shared calendar, one row of sums per curve (parameter set).
#[derive(Debug, Clone, PartialEq)]
pub struct PortfolioSum {
    pub dates: Vec<Date>,
    pub curves: Vec<Vec<FixedSum>>,
}

impl PortfolioSum {
    /// `dates` is the union of every sleeve's dates, ascending.
    pub fn new(dates: Vec<Date>, curves: usize) -> Self {
        let n = dates.len();
        PortfolioSum {
            dates,
            curves: vec![vec![FixedSum::default(); n]; curves],
        }
    }

    /// Adds one sleeve to curve `curve`: its cash before its first bar, its equity on its
    /// dates, its last equity carried forward over dates it has no bar on.
    pub fn add_sleeve(&mut self, curve: usize, capital: f64, dates: &[Date], equity: &[f64]) {
        let row = &mut self.curves[curve];
        let mut value = capital;
        let mut j = 0;
        for (i, &d) in self.dates.iter().enumerate() {
            while j < dates.len() && dates[j] <= d {
                value = equity[j];
                j += 1;
            }
            row[i].add(value);
        }
    }

    /// Adds a sleeve that stays in cash throughout (a failed job) to every curve.
    pub fn add_cash(&mut self, capital: f64) {
        for row in &mut self.curves {
            row.iter_mut().for_each(|s| s.add(capital));
        }
    }

    pub fn merge(&mut self, other: &PortfolioSum) {
        for (a, b) in self.curves.iter_mut().zip(&other.curves) {
            a.iter_mut().zip(b).for_each(|(x, y)| x.merge(*y));
        }
    }

    pub fn curve(&self, curve: usize) -> Vec<f64> {
        self.curves[curve].iter().map(|s| s.value()).collect()
    }
}

/// The sorted union of several calendars.
pub fn union_dates<'a>(calendars: impl Iterator<Item = &'a [Date]>) -> Vec<Date> {
    let mut all: Vec<Date> = calendars.flat_map(|c| c.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_forward_and_starts_in_cash() {
        let mut p = PortfolioSum::new(union_dates([&[1, 2, 4][..], &[2, 3][..]].into_iter()), 1);
        p.add_sleeve(0, 100.0, &[1, 2, 4], &[101.0, 102.0, 104.0]);
        p.add_sleeve(0, 50.0, &[2, 3], &[51.0, 53.0]);
        assert_eq!(p.dates, [1, 2, 3, 4]);
        assert_eq!(p.curve(0), [151.0, 153.0, 155.0, 157.0]);
    }

    #[test]
    fn sum_does_not_depend_on_order() {
        let values = [0.1, 1e9 + 0.3, 2.0 / 3.0, 12345.678901, 1e-7];
        let mut a = FixedSum::default();
        values.iter().for_each(|&v| a.add(v));
        let mut b = FixedSum::default();
        values.iter().rev().for_each(|&v| b.add(v));
        assert_eq!(a, b);
        assert!((a.value() - values.iter().sum::<f64>()).abs() < 1e-6);
    }
}
