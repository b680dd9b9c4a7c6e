//! Market rules that do not depend on a strategy: lot size, price limits and the
//! default costs of each market (SEMANTICS sections 3 and 4).

use serde::{Deserialize, Serialize};

/// The market whose rules a batch trades under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Market {
    /// China A-shares: lots of 100, daily price limits, stamp duty on sells.
    #[default]
    Cn,
    /// US equities: single shares, no price limits, no default costs.
    Us,
}

impl Market {
    pub fn lot(self) -> f64 {
        match self {
            Market::Cn => 100.0,
            Market::Us => 1.0,
        }
    }

    /// The daily price limit a symbol has unless its universe row overrides it.
    pub fn default_price_limit(self) -> Option<f64> {
        match self {
            Market::Cn => Some(0.10),
            Market::Us => None,
        }
    }

    pub fn default_costs(self) -> Costs {
        match self {
            Market::Cn => Costs {
                commission_rate: 0.0003,
                min_commission: 5.0,
                stamp_duty: 0.0005,
                slippage: 0.0,
            },
            Market::Us => Costs::default(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Market::Cn => "cn",
            Market::Us => "us",
        }
    }
}

/// Trading costs, all as fractions of notional except `min_commission` (currency).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Costs {
    pub commission_rate: f64,
    pub min_commission: f64,
    /// Charged on sells only.
    pub stamp_duty: f64,
    /// A fraction of the open price, against the trader on both sides.
    pub slippage: f64,
}

impl Costs {
    /// `max(notional * rate, minimum)`, charged on every fill.
    #[inline]
    pub fn commission(&self, notional: f64) -> f64 {
        (notional * self.commission_rate).max(self.min_commission)
    }
}

/// Which way a price limit binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Up,
    Down,
}

/// The exchange's limit price from the previous close: `close * (1 ± limit)` rounded half up
/// to 0.01 in exact decimal arithmetic, as the exchanges compute it. Both numbers are taken at
/// their shortest decimal form (the digits a data file or a user wrote), so `1.15 * 1.1`
/// is `1.265` and rounds to `1.27`, where rounding the binary product would give `1.26`.
pub fn limit_price(close: f64, limit: f64, side: Limit) -> f64 {
    // Fast path for the usual case, a price in whole cents and a limit in whole basis
    // points: the same exact integer arithmetic without formatting the numbers.
    // (`+ 0.5` and a cast round these positive values without a libm call; the equality
    // checks below reject anything that was not whole cents and basis points.)
    if close > 0.0 && close < 1e11 && (0.0..=1.0).contains(&limit) {
        let cents = (close * 100.0 + 0.5) as i64;
        let bp = (limit * 10_000.0 + 0.5) as i64;
        if cents as f64 / 100.0 == close && bp as f64 / 10_000.0 == limit {
            let factor = match side {
                Limit::Up => 10_000 + bp,
                Limit::Down => 10_000 - bp,
            };
            // cents * factor is in units of 1e-6; half up to whole cents.
            return ((cents * factor + 5_000) / 10_000) as f64 / 100.0;
        }
    }
    limit_price_decimal(close, limit, side)
}

/// The general path: both numbers at their shortest decimal form, exact integer product.
fn limit_price_decimal(close: f64, limit: f64, side: Limit) -> f64 {
    let (c, cs) = decimal(close);
    let (l, ls) = decimal(limit);
    let one = 10i128.pow(ls);
    let factor = match side {
        Limit::Up => one + l,
        Limit::Down => one - l,
    };
    let (product, scale) = (c * factor, cs + ls);
    let cents = if scale <= 2 {
        product * 10i128.pow(2 - scale)
    } else {
        let div = 10i128.pow(scale - 2);
        // Half up for non-negative values: add half the divisor, then truncate.
        (product + div / 2).div_euclid(div)
    };
    cents as f64 / 100.0
}

/// The shortest decimal form of a finite, non-negative `f64` as `(digits, scale)`,
/// meaning `digits / 10^scale`. Rust prints `f64` in its shortest round-trip form and
/// never in exponent notation, so the text holds every digit.
fn decimal(x: f64) -> (i128, u32) {
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    // Prices and limits have at most ~17 significant digits; beyond i128 is not a price.
    let frac = &frac[..frac.len().min(20)];
    let digits = format!("{int}{frac}").parse::<i128>().unwrap_or(0);
    (digits, frac.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_up_in_decimal() {
        assert_eq!(limit_price(1.15, 0.1, Limit::Up), 1.27);
        assert!(
            ((1.15f64 * 1.1 * 100.0).round() / 100.0 - 1.26).abs() < 1e-12,
            "binary rounding differs"
        );
        assert_eq!(limit_price(10.0, 0.1, Limit::Up), 11.0);
        assert_eq!(limit_price(10.0, 0.1, Limit::Down), 9.0);
        assert_eq!(limit_price(10.05, 0.1, Limit::Down), 9.05); // 9.045 -> 9.05
        assert_eq!(limit_price(3.33, 0.2, Limit::Up), 4.0); // 3.996
        assert_eq!(limit_price(0.54, 0.05, Limit::Down), 0.51); // 0.513
        assert_eq!(limit_price(1234.56, 0.1, Limit::Up), 1358.02); // 1358.016
        // Off the fast path: more than two decimals.
        assert_eq!(limit_price(1.115, 0.1, Limit::Up), 1.23); // 1.2265
        assert_eq!(limit_price(2.345678, 0.1, Limit::Down), 2.11); // 2.1111102
    }

    #[test]
    fn fast_path_equals_the_decimal_path() {
        for cents in (1..200_000).step_by(7) {
            let close = cents as f64 / 100.0;
            for limit in [0.05, 0.1, 0.2, 0.3] {
                for side in [Limit::Up, Limit::Down] {
                    let slow = limit_price_decimal(close, limit, side);
                    assert_eq!(
                        limit_price(close, limit, side),
                        slow,
                        "{close} {limit} {side:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn commission_has_a_floor() {
        let c = Market::Cn.default_costs();
        assert_eq!(c.commission(1000.0), 5.0);
        assert_eq!(c.commission(100_000.0), 100_000.0 * 0.0003);
        assert!(c.commission(100_000.0) > 5.0);
    }
}
