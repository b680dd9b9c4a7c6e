//! How a batch's capital is spread over its sleeves (SEMANTICS section 5).
//!
//! Without membership dates the portfolio is the plain sum of the sleeves' equity. Under
//! point-in-time membership it is rebalanced to the members at every change, as an index
//! fund is: the calendar is cut into segments at each date whose set of members differs
//! from the previous date's, and within a segment starting after `p`,
//! `E(t) = E(p) * sum over members i of (w_i / W) * equity_i[t] / equity_i[p]`.
//!
//! The sum is linear in the sleeves, so it is kept in the same order-independent
//! fixed-point sums as the plain one: each sleeve adds its term `(w_i / W) * equity_i[t] /
//! equity_i[p]` on every date of the calendar (0 outside its membership), and the chain of
//! segments is applied once, when the curve is read. A batch run in one process and on a
//! cluster therefore gives the same bits.

use crate::date::Date;
use crate::portfolio::PortfolioSum;

/// One job's share of the portfolio: its normalised weight and its membership intervals
/// (`[]`: always a member).
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    pub weight: f64,
    pub intervals: &'a [(Date, Date)],
}

/// How a batch's sleeves add up to its portfolio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Funding {
    /// `None` without membership dates: one segment, the plain sum.
    segments: Option<Segments>,
}

#[derive(Debug, Clone, PartialEq)]
struct Segments {
    /// Index in the calendar of each segment's first date (the first is 0).
    starts: Vec<usize>,
    /// Per job, per segment: `w_i / W(s)` while a member, else 0.
    shares: Vec<Vec<f64>>,
    /// Per segment: whether it has members (a segment without holds its value in cash).
    funded: Vec<bool>,
    /// Per job: `w_i / W(d_i)` on its first member date (`w_i` when it has none).
    first_share: Vec<f64>,
}

fn is_member(intervals: &[(Date, Date)], date: Date) -> bool {
    intervals.is_empty() || intervals.iter().any(|&(s, e)| s <= date && date <= e)
}

impl Funding {
    /// The funding of sleeves `holdings` (in job order) over `calendar` (ascending).
    pub fn new(calendar: &[Date], holdings: &[Holding]) -> Self {
        if holdings.iter().all(|h| h.intervals.is_empty()) {
            return Funding { segments: None };
        }
        let masks: Vec<Vec<bool>> = holdings
            .iter()
            .map(|h| {
                calendar
                    .iter()
                    .map(|&d| is_member(h.intervals, d))
                    .collect()
            })
            .collect();
        let mut starts = vec![0];
        for t in 1..calendar.len() {
            if masks.iter().any(|m| m[t] != m[t - 1]) {
                starts.push(t);
            }
        }
        // W(s), summed in job order so every process gets the same bits.
        let totals: Vec<f64> = starts
            .iter()
            .map(|&t| {
                holdings
                    .iter()
                    .zip(&masks)
                    .filter(|(_, m)| m[t])
                    .map(|(h, _)| h.weight)
                    .sum()
            })
            .collect();
        let shares = masks
            .iter()
            .zip(holdings)
            .map(|(m, h)| {
                starts
                    .iter()
                    .zip(&totals)
                    .map(|(&t, &w)| if m[t] { h.weight / w } else { 0.0 })
                    .collect()
            })
            .collect();
        let first_share = masks
            .iter()
            .zip(holdings)
            .map(|(m, h)| match m.iter().position(|&x| x) {
                Some(t) => {
                    let k = starts.partition_point(|&s| s <= t) - 1;
                    h.weight / totals[k]
                }
                None => h.weight,
            })
            .collect();
        Funding {
            segments: Some(Segments {
                starts,
                funded: totals.iter().map(|&w| w > 0.0).collect(),
                shares,
                first_share,
            }),
        }
    }

    /// Whether the batch has membership dates (its portfolio is funded by segments).
    pub fn point_in_time(&self) -> bool {
        self.segments.is_some()
    }

    /// The capital of job `job`'s sleeve, `initial * w_i / W(d_i)`; `None` without
    /// membership dates, where it is `initial * w_i`.
    pub fn sleeve_capital(&self, job: usize, initial: f64) -> Option<f64> {
        let s = self.segments.as_ref()?;
        Some(initial * s.first_share[job])
    }

    /// Adds job `job`'s sleeve to curve `curve`: its cash `capital` before its first bar,
    /// its `equity` on its `dates`, carried forward over dates it has no bar on.
    pub fn add_sleeve(
        &self,
        sums: &mut PortfolioSum,
        job: usize,
        curve: usize,
        capital: f64,
        dates: &[Date],
        equity: &[f64],
    ) {
        match &self.segments {
            None => sums.add_sleeve(curve, capital, dates, equity),
            Some(s) => sums.add_row(curve, &s.terms(job, &sums.dates, capital, dates, equity)),
        }
    }

    /// Adds job `job`'s sleeve, in cash throughout (its data failed), to every curve.
    pub fn add_cash(&self, sums: &mut PortfolioSum, job: usize, capital: f64) {
        match &self.segments {
            None => sums.add_cash(capital),
            Some(s) => {
                let row = s.terms(job, &sums.dates, capital, &[], &[]);
                for curve in 0..sums.curves.len() {
                    sums.add_row(curve, &row);
                }
            }
        }
    }

    /// Curve `curve` of the portfolio, from its sums and the batch's `initial` capital.
    pub fn curve(&self, sums: &PortfolioSum, curve: usize, initial: f64) -> Vec<f64> {
        let Some(s) = &self.segments else {
            return sums.curve(curve);
        };
        let row = &sums.curves[curve];
        let mut out = Vec::with_capacity(row.len());
        let mut before = initial;
        for (k, &start) in s.starts.iter().enumerate() {
            let end = s.starts.get(k + 1).copied().unwrap_or(row.len());
            for sum in &row[start..end] {
                out.push(if s.funded[k] {
                    before * sum.value()
                } else {
                    before
                });
            }
            before = out.last().copied().unwrap_or(before);
        }
        out
    }
}

impl Segments {
    /// A sleeve's term on every date of `calendar`: `share * equity[t] / equity[p]` within
    /// each segment it is a member in (`p` the date before the segment), 0 elsewhere.
    fn terms(
        &self,
        job: usize,
        calendar: &[Date],
        capital: f64,
        dates: &[Date],
        equity: &[f64],
    ) -> Vec<f64> {
        let mut row = vec![0.0; calendar.len()];
        let (mut value, mut j) = (capital, 0);
        for (k, &start) in self.starts.iter().enumerate() {
            let end = self.starts.get(k + 1).copied().unwrap_or(calendar.len());
            // The sleeve's value at the close before the segment: what its part grows from.
            let base = value;
            let share = self.shares[job][k];
            for t in start..end {
                while j < dates.len() && dates[j] <= calendar[t] {
                    value = equity[j];
                    j += 1;
                }
                // A sleeve worth nothing at the segment's start can grow no part of it.
                if share > 0.0 && base > 0.0 {
                    row[t] = share * (value / base);
                }
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(
        calendar: &[Date],
        funding: &Funding,
        sleeves: &[(f64, Vec<Date>, Vec<f64>)],
    ) -> PortfolioSum {
        let mut p = PortfolioSum::new(calendar.to_vec(), 1);
        for (job, (capital, dates, equity)) in sleeves.iter().enumerate() {
            funding.add_sleeve(&mut p, job, 0, *capital, dates, equity);
        }
        p
    }

    #[test]
    fn without_membership_dates_it_is_the_plain_sum() {
        let calendar = [1, 2, 3];
        let funding = Funding::new(
            &calendar,
            &[
                Holding {
                    weight: 0.5,
                    intervals: &[],
                },
                Holding {
                    weight: 0.5,
                    intervals: &[],
                },
            ],
        );
        assert!(!funding.point_in_time());
        assert_eq!(funding.sleeve_capital(0, 100.0), None);
        let p = sums(
            &calendar,
            &funding,
            &[
                (50.0, vec![1, 3], vec![55.0, 60.0]),
                (50.0, vec![2], vec![40.0]),
            ],
        );
        assert_eq!(funding.curve(&p, 0, 100.0), [105.0, 95.0, 100.0]);
    }

    /// Two members, then a third joins and the first leaves, computed by hand.
    #[test]
    fn rebalances_to_the_members_at_each_change() {
        let calendar = [1, 2, 3, 4];
        // a: member on 1-2; b: always; c: member from 3.
        let funding = Funding::new(
            &calendar,
            &[
                Holding {
                    weight: 0.25,
                    intervals: &[(1, 2)],
                },
                Holding {
                    weight: 0.5,
                    intervals: &[],
                },
                Holding {
                    weight: 0.25,
                    intervals: &[(3, 9)],
                },
            ],
        );
        // Sleeve capitals: each weight over W on its first member date, 0.75 for all three
        // (a and b on day 1, b and c on day 3).
        let capital: Vec<f64> = (0..3)
            .map(|j| funding.sleeve_capital(j, 1000.0).unwrap())
            .collect();
        assert!((capital[0] - 1000.0 / 3.0).abs() < 1e-9);
        assert!((capital[1] - 2000.0 / 3.0).abs() < 1e-9);
        assert!((capital[2] - 1000.0 / 3.0).abs() < 1e-9);
        // a doubles on day 2; b gains 10% a day; c is flat then gains 50% on day 4.
        let p = sums(
            &calendar,
            &funding,
            &[
                (
                    capital[0],
                    vec![1, 2, 3, 4],
                    vec![capital[0], 2.0 * capital[0], 5.0, 5.0],
                ),
                (
                    capital[1],
                    vec![1, 2, 3, 4],
                    vec![
                        1.1 * capital[1],
                        1.21 * capital[1],
                        1.331 * capital[1],
                        1.4641 * capital[1],
                    ],
                ),
                (capital[2], vec![3, 4], vec![capital[2], 1.5 * capital[2]]),
            ],
        );
        let curve = funding.curve(&p, 0, 1000.0);
        // Segment 1 (days 1-2): a 1/3 and b 2/3 of 1000.
        let e1 = 1000.0 / 3.0 + 2000.0 / 3.0 * 1.1;
        let e2 = 1000.0 / 3.0 * 2.0 + 2000.0 / 3.0 * 1.21;
        // Segment 2 (days 3-4): b 2/3 and c 1/3 of E(2); b grows 10% a day from day 2.
        let e3 = e2 * (2.0 / 3.0 * 1.1 + 1.0 / 3.0);
        let e4 = e2 * (2.0 / 3.0 * 1.21 + 1.0 / 3.0 * 1.5);
        for (got, want) in curve.iter().zip([e1, e2, e3, e4]) {
            assert!((got - want).abs() < 1e-9, "{curve:?}");
        }
    }

    #[test]
    fn a_segment_without_members_holds_cash_and_a_failed_sleeve_holds_its_share() {
        let calendar = [1, 2, 3, 4];
        let funding = Funding::new(
            &calendar,
            &[
                Holding {
                    weight: 1.0,
                    intervals: &[(1, 1)],
                },
                Holding {
                    weight: 1.0,
                    intervals: &[(1, 1), (3, 4)],
                },
            ],
        );
        let mut p = PortfolioSum::new(calendar.to_vec(), 1);
        funding.add_sleeve(&mut p, 0, 0, 50.0, &[1, 2, 3, 4], &[60.0, 70.0, 80.0, 90.0]);
        funding.add_cash(&mut p, 1, 50.0);
        // Day 1: 50 * 1.2 + 50; day 2: nobody is a member; days 3-4: all in the cash sleeve.
        let curve = funding.curve(&p, 0, 100.0);
        assert!(curve.iter().all(|e| (e - 110.0).abs() < 1e-9), "{curve:?}");
    }
}
