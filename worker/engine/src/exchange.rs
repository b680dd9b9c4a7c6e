//! The simulated venue (SEMANTICS sections 3 and 4): when an order at a bar's open can fill,
//! at what price, how many shares "all in" buys, and what each fill costs.
//!
//! What can fill depends only on the bars and the market, never on the strategy, so it is
//! worked out once per job (including the exact-decimal limit prices, which are the slow
//! part) and shared by every parameter combination.

use xt_shared::market::{Limit, limit_price};
use xt_shared::rules::{Steps, SymbolRules};
use xt_shared::{Bars, Costs, Market};

/// How many single steps `all_in` takes from its closed form to the exact boundary: the
/// floors are within a couple of counts of it, so this bound is never reached.
const SIZING_STEPS: usize = 8;

/// One symbol's venue for one batch.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub lot: f64,
    pub costs: Costs,
    /// `can_buy[t]`: a buy order may fill at bar `t`'s open (not suspended, open below the
    /// limit-up price from `close[t-1]`). Always false at `t = 0`, where no order can exist.
    can_buy: Vec<bool>,
    /// `can_sell[t]`: a sell may fill at bar `t`'s open (not suspended, open above limit-down).
    can_sell: Vec<bool>,
    /// The stamp duty on a sell at bar `t` (`costs.stamp_duty` is not read).
    stamp: Vec<f64>,
}

impl Exchange {
    /// Rules that hold on every date: `price_limit` is the symbol's own limit (its universe
    /// row) or the market's default, the stamp duty is `costs`'.
    pub fn new(bars: &Bars, market: Market, costs: Costs, price_limit: Option<f64>) -> Self {
        let limit = match market {
            Market::Cn => price_limit.or(market.default_price_limit()),
            Market::Us => None,
        };
        let rules = SymbolRules {
            price_limit: limit.map(Steps::constant).unwrap_or_default(),
            stamp_duty: Steps::constant(costs.stamp_duty),
        };
        Exchange::with_rules(bars, market, costs, &rules)
    }

    /// Rules by date (SEMANTICS section 12): the limit that applies to a fill at bar `t` is
    /// the one in force on `t`'s date, from `close[t-1]`; so is a sell's stamp duty.
    pub fn with_rules(bars: &Bars, market: Market, costs: Costs, rules: &SymbolRules) -> Self {
        let n = bars.len();
        let mut can_buy = vec![false; n];
        let mut can_sell = vec![false; n];
        for t in 1..n {
            if bars.volume[t] <= 0.0 {
                continue;
            }
            let (open, prev) = (bars.open[t], bars.close[t - 1]);
            match rules.price_limit.at(bars.dates[t]) {
                Some(l) => {
                    can_buy[t] = open < limit_price(prev, l, Limit::Up);
                    can_sell[t] = open > limit_price(prev, l, Limit::Down);
                }
                None => {
                    can_buy[t] = true;
                    can_sell[t] = true;
                }
            }
        }
        let stamp = bars
            .dates
            .iter()
            .map(|&d| rules.stamp_duty.at(d).unwrap_or(0.0))
            .collect();
        Exchange {
            lot: market.lot(),
            costs,
            can_buy,
            can_sell,
            stamp,
        }
    }

    #[inline]
    pub fn can_buy(&self, t: usize) -> bool {
        self.can_buy[t]
    }

    #[inline]
    pub fn can_sell(&self, t: usize) -> bool {
        self.can_sell[t]
    }

    #[inline]
    pub fn buy_price(&self, open: f64) -> f64 {
        open * (1.0 + self.costs.slippage)
    }

    #[inline]
    pub fn sell_price(&self, open: f64) -> f64 {
        open * (1.0 - self.costs.slippage)
    }

    /// Commission of a buy of `notional`.
    #[inline]
    pub fn buy_costs(&self, notional: f64) -> f64 {
        self.costs.commission(notional)
    }

    /// Commission and stamp duty of a sell of `notional` at bar `t`.
    #[inline]
    pub fn sell_costs(&self, t: usize, notional: f64) -> f64 {
        self.costs.commission(notional) + notional * self.stamp[t]
    }

    fn affordable(&self, lots: f64, price: f64, cash: f64) -> bool {
        let notional = lots * self.lot * price;
        notional + self.buy_costs(notional) <= cash
    }

    /// The "all in" quantity: the largest multiple of the lot with
    /// `qty * price + commission(qty * price) <= cash` (0 when not even one lot fits).
    pub fn all_in(&self, cash: f64, price: f64) -> f64 {
        self.all_in_lots(cash, price) * self.lot
    }

    /// `all_in` in lots.
    fn all_in_lots(&self, cash: f64, price: f64) -> f64 {
        if !(cash > 0.0 && price > 0.0 && cash.is_finite() && price.is_finite()) {
            return 0.0;
        }
        // `commission = max(rate * notional, minimum)`, so a count fits exactly when both
        // `notional * (1 + rate) <= cash` and `notional + minimum <= cash`: the closed form
        // is the smaller of the two floors. Rounding can leave it a step off the exact test,
        // which a few steps mend. A walk from an estimate is not enough on its own: past
        // 2^53 lots `lots + 1.0 == lots` and it never ends, and a large minimum commission
        // made it walk for as many lots as the minimum buys.
        let per_lot = self.lot * price;
        let by_rate = cash / (per_lot * (1.0 + self.costs.commission_rate));
        let by_minimum = (cash - self.costs.min_commission) / per_lot;
        let mut lots = by_rate.min(by_minimum).floor().max(0.0);
        if !lots.is_finite() {
            return 0.0;
        }
        // One representable count up or down: past 2^53 the neighbours are further apart
        // than 1, and `lots + 1.0` would round back to `lots`.
        let up = |l: f64| (l + 1.0).max(l.next_up());
        let down = |l: f64| (l - 1.0).min(l.next_down()).max(0.0);
        for _ in 0..SIZING_STEPS {
            if !self.affordable(up(lots), price, cash) {
                break;
            }
            lots = up(lots);
        }
        for _ in 0..SIZING_STEPS {
            if lots == 0.0 || self.affordable(lots, price, cash) {
                break;
            }
            lots = down(lots);
        }
        if lots > 0.0 && !self.affordable(lots, price, cash) {
            // Unreachable for finite inputs (the floors are within an ulp or two of the
            // boundary); never buy what does not fit.
            return 0.0;
        }
        lots
    }

    /// Risk-based size `lot * floor(cash * risk / atr / lot)`, capped by the all-in size.
    /// A zero ATR puts no risk bound on the size.
    /// A quantity rule's size: `qty` rounded down to whole lots and capped by "all in"; a
    /// missing or non-positive `qty` buys nothing (SEMANTICS section 13).
    pub fn sized(&self, cash: f64, price: f64, qty: f64) -> f64 {
        if !(qty.is_finite() && qty > 0.0) {
            return 0.0;
        }
        (self.lot * (qty / self.lot).floor()).min(self.all_in(cash, price))
    }

    pub fn risk_sized(&self, cash: f64, price: f64, risk: f64, atr: f64) -> f64 {
        let all_in = self.all_in(cash, price);
        if atr <= 0.0 {
            return all_in;
        }
        let by_risk = self.lot * (cash * risk / atr / self.lot).floor();
        by_risk.min(all_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(rows: &[(f64, f64, f64)]) -> Bars {
        let mut b = Bars::new("X");
        for (i, &(open, close, volume)) in rows.iter().enumerate() {
            b.push(
                i as i32,
                open,
                open.max(close),
                open.min(close),
                close,
                volume,
            );
        }
        b
    }

    #[test]
    fn limits_and_suspensions_block_fills() {
        let b = bars(&[
            (10.0, 10.0, 1.0),
            (11.0, 11.0, 1.0),
            (9.90, 9.9, 1.0),
            (9.9, 9.9, 0.0),
            (10.0, 10.0, 1.0),
        ]);
        let cn = Exchange::new(&b, Market::Cn, Market::Cn.default_costs(), None);
        // Bar 1 opens at limit-up 11.00: no buy; a sell is fine.
        assert!(!cn.can_buy(1) && cn.can_sell(1));
        // Bar 2 opens at limit-down 9.90 from 11.00: no sell.
        assert!(cn.can_buy(2) && !cn.can_sell(2));
        // Bar 3 is suspended.
        assert!(!cn.can_buy(3) && !cn.can_sell(3));
        let star = Exchange::new(&b, Market::Cn, Market::Cn.default_costs(), Some(0.2));
        assert!(star.can_buy(1));
        let us = Exchange::new(&b, Market::Us, Costs::default(), None);
        assert!(us.can_buy(1) && us.can_sell(2) && !us.can_buy(3));
        assert!(!us.can_buy(0));
    }

    #[test]
    fn all_in_is_the_largest_lot_multiple_that_fits() {
        let b = bars(&[(10.0, 10.0, 1.0)]);
        let cn = Exchange::new(&b, Market::Cn, Market::Cn.default_costs(), None);
        // 100_000 / 10 = 10_000 shares would need 100_030 with commission: 9_900 fit.
        assert_eq!(cn.all_in(100_000.0, 10.0), 9_900.0);
        // Minimum commission: 1_005 buys exactly one lot at 10.
        assert_eq!(cn.all_in(1_005.0, 10.0), 100.0);
        assert_eq!(cn.all_in(1_004.99, 10.0), 0.0);
        let heavy = Exchange::new(
            &b,
            Market::Us,
            Costs {
                commission_rate: 0.1,
                ..Costs::default()
            },
            None,
        );
        assert_eq!(heavy.all_in(1_100.0, 1.0), 1_000.0);
        // A minimum commission that dominates: (10_000 - 5_000) / 10 = 500 shares.
        let minimum = Exchange::new(
            &b,
            Market::Us,
            Costs {
                min_commission: 5_000.0,
                ..Costs::default()
            },
            None,
        );
        assert_eq!(minimum.all_in(10_000.0, 10.0), 500.0);
        assert_eq!(cn.risk_sized(100_000.0, 10.0, 0.01, 0.5), 2_000.0);
        assert_eq!(cn.risk_sized(100_000.0, 10.0, 1.0, 0.01), 9_900.0);
    }

    /// Sizing ends and is exact at every magnitude: the lot count it gives fits, and the
    /// next representable count does not (past 2^53 lots the old walk never ended).
    #[test]
    fn all_in_is_exact_and_ends_at_every_magnitude() {
        let b = bars(&[(10.0, 10.0, 1.0)]);
        let markets = [
            (Market::Cn, Market::Cn.default_costs()),
            (Market::Us, Costs::default()),
            (
                Market::Us,
                Costs {
                    commission_rate: 0.001,
                    min_commission: 1.0,
                    ..Costs::default()
                },
            ),
        ];
        for (market, costs) in markets {
            let ex = Exchange::new(&b, market, costs, None);
            for cash in [1.0, 1e3, 1e6, 1e9, 1e12, 1e15, 1e16, 1e18, 1e20, 1e300] {
                for price in [1e-4, 0.01, 0.37, 10.0, 1234.5, 1e7] {
                    let lots = ex.all_in_lots(cash, price);
                    assert_eq!(lots, lots.floor(), "{market:?} {cash} {price}");
                    if lots > 0.0 {
                        assert!(ex.affordable(lots, price, cash), "{cash} {price}");
                    }
                    let next = (lots + 1.0).max(lots.next_up());
                    assert!(!ex.affordable(next, price, cash), "{cash} {price}: {lots}");
                }
            }
            assert_eq!(ex.all_in(f64::INFINITY, 10.0), 0.0);
            assert_eq!(ex.all_in(1e6, f64::NAN), 0.0);
        }
    }
}
