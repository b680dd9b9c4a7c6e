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

/// `(x * 2^60) as i128`: the product is exact (a power of two) and truncated toward zero,
/// saturating like `as`. Written out because the compiler's f64 -> i128 conversion is a
/// library call that cost 7% of a batch's CPU; this is a few shifts.
#[inline]
pub fn to_fixed(x: f64) -> i128 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let negative = bits >> 63 == 1;
    if exponent == 0x7ff {
        // NaN is 0, infinities saturate, as `as` does.
        return if x.is_nan() {
            0
        } else if negative {
            i128::MIN
        } else {
            i128::MAX
        };
    }
    if exponent == 0 {
        // Zero and subnormals: |x| * 2^60 < 1.
        return 0;
    }
    let mantissa = ((bits & ((1u64 << 52) - 1)) | (1u64 << 52)) as i128;
    // x = mantissa * 2^(exponent - 1075), so x * 2^60 = mantissa * 2^(exponent - 1015).
    let shift = exponent - 1015;
    let magnitude = if shift >= 0 {
        // The mantissa has 53 bits: beyond 74 places it leaves i128.
        if shift > 74 {
            return if negative { i128::MIN } else { i128::MAX };
        }
        mantissa << shift
    } else if shift > -64 {
        mantissa >> -shift
    } else {
        0
    };
    if negative { -magnitude } else { magnitude }
}

impl FixedSum {
    #[inline]
    pub fn add(&mut self, value: f64) {
        self.0 += to_fixed(value);
    }

    #[inline]
    pub fn merge(&mut self, other: FixedSum) {
        self.0 += other.0;
    }

    pub fn value(self) -> f64 {
        self.0 as f64 / SCALE
    }

    /// The sum in 2^-60 units, as it goes over the wire.
    pub fn raw(self) -> i128 {
        self.0
    }

    pub fn from_raw(raw: i128) -> Self {
        FixedSum(raw)
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

    /// Adds a value on every date of the calendar to curve `curve`.
    pub fn add_row(&mut self, curve: usize, row: &[f64]) {
        debug_assert_eq!(row.len(), self.dates.len(), "a value a date");
        for (sum, &v) in self.curves[curve].iter_mut().zip(row) {
            sum.add(v);
        }
    }

    /// Adds a sleeve that stays in cash throughout (a failed job) to every curve.
    pub fn add_cash(&mut self, capital: f64) {
        for row in &mut self.curves {
            row.iter_mut().for_each(|s| s.add(capital));
        }
    }

    /// Adds a part: sleeves summed on a calendar of their own (`part`, holding every date
    /// of theirs; `before`, each curve's value before its first date: their capital),
    /// carried forward over this calendar's other dates. Exactly what adding each of its
    /// sleeves here would give: on any date, each sleeve's last date up to it is in the
    /// part's calendar.
    pub fn add_part(&mut self, part: &PortfolioSum, before: &[FixedSum]) {
        for ((row, sums), &before) in self.curves.iter_mut().zip(&part.curves).zip(before) {
            let mut value = before;
            let mut j = 0;
            for (i, &d) in self.dates.iter().enumerate() {
                while j < part.dates.len() && part.dates[j] <= d {
                    value = sums[j];
                    j += 1;
                }
                row[i].merge(value);
            }
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
///
/// Calendars are ascending, and most of a universe's are the same exchange calendar: each is
/// compared with the union so far and merged in only where it differs, a linear pass where
/// sorting every date of a 300-symbol batch was 5% of its CPU.
pub fn union_dates<'a>(calendars: impl Iterator<Item = &'a [Date]>) -> Vec<Date> {
    let mut union: Vec<Date> = Vec::new();
    for calendar in calendars {
        debug_assert!(calendar.windows(2).all(|w| w[0] < w[1]), "ascending dates");
        if calendar == union.as_slice() {
            continue;
        }
        let mut merged = Vec::with_capacity(union.len().max(calendar.len()));
        let (mut i, mut j) = (0, 0);
        while i < union.len() || j < calendar.len() {
            let next = match (union.get(i), calendar.get(j)) {
                (Some(&a), Some(&b)) if a == b => {
                    i += 1;
                    j += 1;
                    a
                }
                (Some(&a), Some(&b)) if a < b => {
                    i += 1;
                    a
                }
                (Some(&a), None) => {
                    i += 1;
                    a
                }
                (_, Some(&b)) => {
                    j += 1;
                    b
                }
                (None, None) => unreachable!("the loop condition"),
            };
            merged.push(next);
        }
        union = merged;
    }
    union
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_part_adds_exactly_what_its_sleeves_would() {
        use super::{FixedSum, PortfolioSum, union_dates};
        // Sleeves with gaps, late starts and no bar at all, on a longer calendar.
        let sleeves: Vec<(f64, Vec<i32>, Vec<f64>)> = vec![
            (
                1000.0,
                vec![2, 3, 5, 9],
                vec![1001.5, 998.25, 1010.0, 1003.125],
            ),
            (250.5, vec![5, 6, 12], vec![251.0, 249.75, 260.0]),
            (333.3, vec![], vec![]),
            (10.0, vec![1, 12], vec![10.1, 9.9]),
        ];
        let calendar: Vec<i32> = (0..15).collect();
        let curves = 2;
        let mut each = PortfolioSum::new(calendar.clone(), curves);
        for (capital, dates, equity) in &sleeves {
            for c in 0..curves {
                let scaled: Vec<f64> = equity.iter().map(|e| e * (c + 1) as f64).collect();
                each.add_sleeve(c, *capital, dates, &scaled);
            }
        }
        for split in 0..=sleeves.len() {
            let mut parted = PortfolioSum::new(calendar.clone(), curves);
            for group in [&sleeves[..split], &sleeves[split..]] {
                let dates = union_dates(group.iter().map(|(_, d, _)| d.as_slice()));
                let mut part = PortfolioSum::new(dates, curves);
                let mut before = FixedSum::default();
                for (capital, dates, equity) in group {
                    before.add(*capital);
                    for c in 0..curves {
                        let scaled: Vec<f64> = equity.iter().map(|e| e * (c + 1) as f64).collect();
                        part.add_sleeve(c, *capital, dates, &scaled);
                    }
                }
                parted.add_part(&part, &[before; 2]);
            }
            assert_eq!(parted, each, "split after {split}");
        }
    }

    #[test]
    fn union_of_calendars_is_sorted_and_distinct() {
        use super::union_dates;
        let cals: Vec<Vec<i32>> = vec![
            vec![3, 5, 8],
            vec![3, 5, 8],
            vec![1, 5, 9, 12],
            vec![],
            vec![2, 3, 12, 20],
            (0..40).step_by(7).collect(),
        ];
        let mut want: Vec<i32> = cals.iter().flatten().copied().collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(union_dates(cals.iter().map(|c| c.as_slice())), want);
        assert!(union_dates(std::iter::empty()).is_empty());
    }

    #[test]
    fn to_fixed_is_the_truncating_cast() {
        use super::{SCALE, to_fixed};
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1e-18,
            -1e-18,
            1e-19,
            3e-19,
            1e6,
            -2.5e9,
            1e20,
            1.5e22,
            -1.5e22,
            1e300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MAX,
            f64::MIN,
        ];
        for _ in 0..100_000 {
            // xorshift64*: random bit patterns over every exponent
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            values.push(f64::from_bits(x.wrapping_mul(0x2545_F491_4F6C_DD1D)));
            values.push((x % 1_000_000_000) as f64 / 97.0);
        }
        for v in values {
            assert_eq!(to_fixed(v), (v * SCALE) as i128, "{v:e}");
        }
    }

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
