//! Technical indicators with TA-Lib's definitions (SEMANTICS section 6), and the per-job
//! cache that computes each series once however many parameter combinations read it.
//!
//! Every series has the input's length; a value is `NaN` exactly where TA-Lib returns
//! nothing (its lookback), and a rule that compares against `NaN` is false, which is the
//! "undefined reads as false" rule of SEMANTICS section 2 for free.
//!
//! Most kernels are our own rather than the `ta` crate's. `ta` 0.5 seeds its EMA with the
//! first value instead of the SMA of the first `n` values, so its EMA, MACD and RSI differ
//! from TA-Lib for hundreds of bars; its RSI smooths with `2/(n+1)` instead of Wilder's `1/n`;
//! its ATR is an EMA of true range, not Wilder's average; and its SMA emits partial-window
//! values during warm-up. Our kernels follow TA-Lib's C code operation by operation (the same
//! running sums in the same order), so results match TA-Lib to the last bits rather than merely
//! roughly: a moving-average cross on two equal-looking values must go the same way as in the
//! peers. SMA, EMA, MACD, MAX and MIN equal the `ta-lib` wheel's values bit for bit (the golden
//! test counts); RSI, ATR and BBANDS differ from it in the last bit or two now and then,
//! where that build's compiler reordered the same arithmetic, far inside SEMANTICS' 1e-9.
//! `ta`'s `Maximum`/`Minimum` agree with TA-Lib's MAX/MIN once the window is full
//! (a maximum has no rounding), so we use them and mask the warm-up.

use std::collections::HashMap;
use std::sync::Arc;

use ta::Next;
use ta::indicators::{Maximum, Minimum};
use xt_shared::Bars;

/// A computed series, shared between the parameter combinations that read it.
pub type Series = Arc<[f64]>;

/// Below this a BBANDS variance counts as zero (TA-Lib's `TA_IS_ZERO_OR_NEG`), which turns
/// the rounding noise of a flat window into exactly 0 rather than a tiny band.
const ZERO_VARIANCE: f64 = 0.00000001;

fn undefined(n: usize) -> Vec<f64> {
    vec![f64::NAN; n]
}

/// Simple moving average: TA-Lib's `TA_INT_SMA` running sum (add the new value, divide,
/// then drop the oldest).
pub fn sma(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    let mut total: f64 = x[..period - 1].iter().sum();
    for i in period - 1..n {
        total += x[i];
        let value = total;
        total -= x[i + 1 - period];
        out[i] = value / period as f64;
    }
    out
}

/// Exponential moving average with `k = 2 / (n + 1)`, seeded by the SMA of the first
/// `period` values (TA-Lib's default compatibility): first value at index `period - 1`.
pub fn ema(x: &[f64], period: usize) -> Vec<f64> {
    let mut out = undefined(x.len());
    ema_into(x, period, 0, period.saturating_sub(1), &mut out);
    out
}

/// TA-Lib's `TA_INT_EMA` starting its output at `start` (>= `from + period - 1`): the seed is
/// the SMA of the `period` values ending at `start`, and values before `from` are not read.
/// MACD relies on this: its fast EMA is seeded at the slow EMA's first index, not its own.
fn ema_into(x: &[f64], period: usize, from: usize, start: usize, out: &mut [f64]) {
    let n = x.len();
    if period == 0 || start >= n || start + 1 < from + period {
        return;
    }
    let k = 2.0 / (period as f64 + 1.0);
    let mut today = start + 1 - period;
    let mut total = 0.0;
    for _ in 0..period {
        total += x[today];
        today += 1;
    }
    let mut prev = total / period as f64;
    out[start] = prev;
    while today < n {
        // TA-Lib's `((x - prev) * k) + prev`, which its published builds compile to a fused
        // multiply-add; `mul_add` rounds once as they do, so our values are theirs bit for bit.
        prev = (x[today] - prev).mul_add(k, prev);
        out[today] = prev;
        today += 1;
    }
}

/// MACD line and signal line, TA-Lib's `MACD(fast, slow, signal)`. Both EMAs start at
/// index `slow - 1` (the fast one seeded over the `fast` values ending there), the signal
/// line is the EMA of the MACD line from there, and TA-Lib reports both lines only from
/// `slow - 1 + signal - 1`.
pub fn macd(x: &[f64], fast: usize, slow: usize, signal: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    let (fast, slow) = if slow < fast {
        (slow, fast)
    } else {
        (fast, slow)
    };
    let mut line = undefined(n);
    let mut sig = undefined(n);
    if fast == 0 || signal == 0 || n < slow {
        return (line, sig);
    }
    let first = slow - 1;
    let mut fast_ema = undefined(n);
    let mut slow_ema = undefined(n);
    ema_into(x, fast, 0, first, &mut fast_ema);
    ema_into(x, slow, 0, first, &mut slow_ema);
    for i in first..n {
        line[i] = fast_ema[i] - slow_ema[i];
    }
    ema_into(&line, signal, first, first + signal - 1, &mut sig);
    for v in &mut line[..(first + signal - 1).min(n)] {
        *v = f64::NAN;
    }
    (line, sig)
}

/// Bollinger bands `(upper, middle, lower)`: SMA middle, population standard deviation
/// from the running sum of squares as TA-Lib's `TA_INT_stddev_using_precalc_ma` does it
/// (a variance below 1e-8 counts as zero there, so it does here).
pub fn bbands(x: &[f64], period: usize, k: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let middle = sma(x, period);
    let (upper, lower) = bands(x, &middle, period, k);
    (upper, middle, lower)
}

/// The upper and lower bands around an already computed SMA `middle`.
fn bands(x: &[f64], middle: &[f64], period: usize, k: f64) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    let mut upper = undefined(n);
    let mut lower = undefined(n);
    if period == 0 || n < period {
        return (upper, lower);
    }
    let mut total2 = 0.0;
    for v in &x[..period - 1] {
        total2 += v * v;
    }
    for i in period - 1..n {
        total2 += x[i] * x[i];
        let mut mean2 = total2 / period as f64;
        let old = x[i + 1 - period];
        total2 -= old * old;
        mean2 -= middle[i] * middle[i];
        let std = if mean2 < ZERO_VARIANCE {
            0.0
        } else {
            mean2.sqrt()
        };
        // TA-Lib special-cases a multiplier of exactly 1 (no multiplication at all).
        let dev = if k == 1.0 { std } else { k * std };
        upper[i] = middle[i] + dev;
        lower[i] = middle[i] - dev;
    }
    (upper, lower)
}

/// Wilder's RSI as TA-Lib computes it: averages of gains and losses over the first
/// `period` changes, then `avg = (avg * (n - 1) + change) / n`; first value at index `period`.
pub fn rsi(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n <= period {
        return out;
    }
    let p = period as f64;
    let value = |gain: f64, loss: f64| {
        let total = gain + loss;
        // Over a flat stretch (suspended days) both averages shrink by the same factor and
        // the ratio holds; the current TA-Lib keeps it however small they get and gives 0
        // only when both are 0 (0.4's 1e-8 band zeroed RSI after ~30 flat bars).
        if total == 0.0 {
            0.0
        } else {
            100.0 * (gain / total)
        }
    };
    let (mut gain, mut loss) = (0.0, 0.0);
    for i in 1..=period {
        let change = x[i] - x[i - 1];
        if change < 0.0 {
            loss -= change;
        } else {
            gain += change;
        }
    }
    loss /= p;
    gain /= p;
    out[period] = value(gain, loss);
    for i in period + 1..n {
        let change = x[i] - x[i - 1];
        loss *= p - 1.0;
        gain *= p - 1.0;
        if change < 0.0 {
            loss -= change;
        } else {
            gain += change;
        }
        loss /= p;
        gain /= p;
        out[i] = value(gain, loss);
    }
    out
}

/// True range from the second bar on (TA-Lib's `TRANGE`).
pub fn true_range(high: &[f64], low: &[f64], close: &[f64]) -> Vec<f64> {
    let n = close.len();
    let mut out = undefined(n);
    for i in 1..n {
        let mut greatest = high[i] - low[i];
        let up = (close[i - 1] - high[i]).abs();
        if up > greatest {
            greatest = up;
        }
        let down = (close[i - 1] - low[i]).abs();
        if down > greatest {
            greatest = down;
        }
        out[i] = greatest;
    }
    out
}

/// Wilder's ATR as TA-Lib computes it: the SMA of the first `period` true ranges (bars
/// `1..=period`), then `atr = (atr * (n - 1) + tr) / n`; `ATR(1)` is the true range itself.
pub fn atr(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Vec<f64> {
    let n = close.len();
    let tr = true_range(high, low, close);
    if period <= 1 {
        return if period == 1 { tr } else { undefined(n) };
    }
    let mut out = undefined(n);
    if n <= period {
        return out;
    }
    let p = period as f64;
    let seed = sma(&tr[1..=period], period);
    let mut prev = seed[period - 1];
    out[period] = prev;
    for i in period + 1..n {
        prev *= p - 1.0;
        prev += tr[i];
        prev /= p;
        out[i] = prev;
    }
    out
}

/// Highest value of the last `period` bars, defined once the window is full.
pub fn max(x: &[f64], period: usize) -> Vec<f64> {
    let Ok(mut window) = Maximum::new(period) else {
        return undefined(x.len());
    };
    masked(x.iter().map(|&v| window.next(v)), period)
}

/// Lowest value of the last `period` bars, defined once the window is full.
pub fn min(x: &[f64], period: usize) -> Vec<f64> {
    let Ok(mut window) = Minimum::new(period) else {
        return undefined(x.len());
    };
    masked(x.iter().map(|&v| window.next(v)), period)
}

/// `ta`'s windows report partial-window values from the first bar; TA-Lib reports nothing.
fn masked(values: impl Iterator<Item = f64>, period: usize) -> Vec<f64> {
    values
        .enumerate()
        .map(|(i, v)| if i + 1 < period { f64::NAN } else { v })
        .collect()
}

/// The series a strategy can ask for; the key of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Sma(usize),
    Ema(usize),
    Macd(usize, usize, usize),
    MacdSignal(usize, usize, usize),
    BbUpper(usize, u64),
    BbLower(usize, u64),
    Rsi(usize),
    Atr(usize),
    MaxHigh(usize),
    MinLow(usize),
}

/// One job's bars and every indicator series computed on them so far. Parameter
/// combinations of a grid share it, so `SMA(30)` is computed once for all `fast` values.
pub struct Indicators<'a> {
    bars: &'a Bars,
    cache: HashMap<Key, Series>,
    /// A written strategy's operations, computed for one parameter set and kept for the rest.
    pub(crate) computed: crate::script::Computed,
}

impl<'a> Indicators<'a> {
    pub fn new(bars: &'a Bars) -> Self {
        Indicators {
            bars,
            cache: HashMap::new(),
            computed: Default::default(),
        }
    }

    pub fn bars(&self) -> &'a Bars {
        self.bars
    }

    fn get(&mut self, key: Key, compute: impl FnOnce(&Bars) -> Vec<f64>) -> Series {
        let bars = self.bars;
        self.cache
            .entry(key)
            .or_insert_with(|| compute(bars).into())
            .clone()
    }

    /// Computes a multi-output indicator once, storing every output under its key.
    fn get_many<const N: usize>(
        &mut self,
        keys: [Key; N],
        compute: impl FnOnce(&Bars) -> [Vec<f64>; N],
    ) -> [Series; N] {
        if keys.iter().all(|k| self.cache.contains_key(k)) {
            return keys.map(|k| self.cache[&k].clone());
        }
        let values = compute(self.bars).map(Series::from);
        for (k, v) in keys.iter().zip(&values) {
            self.cache.insert(*k, v.clone());
        }
        values
    }

    pub fn sma(&mut self, period: usize) -> Series {
        self.get(Key::Sma(period), |b| sma(&b.close, period))
    }

    pub fn ema(&mut self, period: usize) -> Series {
        self.get(Key::Ema(period), |b| ema(&b.close, period))
    }

    /// `(macd line, signal line)`.
    pub fn macd(&mut self, fast: usize, slow: usize, signal: usize) -> (Series, Series) {
        let [line, sig] = self.get_many(
            [
                Key::Macd(fast, slow, signal),
                Key::MacdSignal(fast, slow, signal),
            ],
            |b| {
                let (l, s) = macd(&b.close, fast, slow, signal);
                [l, s]
            },
        );
        (line, sig)
    }

    /// `(upper, middle, lower)`; the middle band is the SMA and shared with `sma(period)`.
    pub fn bbands(&mut self, period: usize, k: f64) -> (Series, Series, Series) {
        let kb = k.to_bits();
        let middle = self.sma(period);
        let [upper, lower] =
            self.get_many([Key::BbUpper(period, kb), Key::BbLower(period, kb)], |b| {
                let (u, l) = bands(&b.close, &middle, period, k);
                [u, l]
            });
        (upper, middle, lower)
    }

    pub fn rsi(&mut self, period: usize) -> Series {
        self.get(Key::Rsi(period), |b| rsi(&b.close, period))
    }

    pub fn atr(&mut self, period: usize) -> Series {
        self.get(Key::Atr(period), |b| atr(&b.high, &b.low, &b.close, period))
    }

    /// `MAX(high, period)`.
    pub fn max_high(&mut self, period: usize) -> Series {
        self.get(Key::MaxHigh(period), |b| max(&b.high, period))
    }

    /// `MIN(low, period)`.
    pub fn min_low(&mut self, period: usize) -> Series {
        self.get(Key::MinLow(period), |b| min(&b.low, period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined_from(v: &[f64]) -> usize {
        v.iter().position(|x| !x.is_nan()).unwrap_or(v.len())
    }

    #[test]
    fn lookbacks_match_ta_lib() {
        let x: Vec<f64> = (0..100).map(|i| 10.0 + (i as f64 * 0.7).sin()).collect();
        assert_eq!(defined_from(&sma(&x, 10)), 9);
        assert_eq!(defined_from(&ema(&x, 10)), 9);
        let (line, sig) = macd(&x, 12, 26, 9);
        assert_eq!((defined_from(&line), defined_from(&sig)), (33, 33));
        assert_eq!(defined_from(&bbands(&x, 20, 2.0).0), 19);
        assert_eq!(defined_from(&rsi(&x, 14)), 14);
        assert_eq!(defined_from(&atr(&x, &x, &x, 14)), 14);
        assert_eq!(defined_from(&max(&x, 20)), 19);
        assert_eq!(defined_from(&min(&x, 1)), 0);
    }

    #[test]
    fn hand_computed_values() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(sma(&x, 3)[2..], [2.0, 3.0, 4.0]);
        // Seed 2.0 at index 2, then k = 0.5: 3.0, 4.0.
        assert_eq!(ema(&x, 3)[2..], [2.0, 3.0, 4.0]);
        assert_eq!(max(&x, 2)[1..], [2.0, 3.0, 4.0, 5.0]);
        assert_eq!(min(&[3.0, 1.0, 2.0], 2)[1..], [1.0, 1.0]);
        // Only gains: RSI 100. Flat: TA-Lib's zero-denominator rule gives 0.
        assert_eq!(rsi(&x, 2)[2..], [100.0, 100.0, 100.0]);
        assert_eq!(rsi(&[1.0; 5], 2)[2..], [0.0, 0.0, 0.0]);
        let (u, m, l) = bbands(&[1.0, 3.0, 1.0, 3.0], 2, 2.0);
        assert_eq!((u[1], m[1], l[1]), (4.0, 2.0, 0.0));
    }

    #[test]
    fn too_short_is_all_undefined() {
        let x = [1.0, 2.0];
        assert!(sma(&x, 3).iter().all(|v| v.is_nan()));
        assert!(rsi(&x, 2).iter().all(|v| v.is_nan()));
        assert!(macd(&x, 1, 3, 1).0.iter().all(|v| v.is_nan()));
        assert!(atr(&x, &x, &x, 2).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn cache_computes_once_and_shares_the_middle_band() {
        let mut bars = Bars::new("X");
        for i in 0..50 {
            let c = 10.0 + i as f64 % 7.0;
            bars.push(i, c, c + 1.0, c - 1.0, c, 100.0);
        }
        let mut ind = Indicators::new(&bars);
        let a = ind.sma(20);
        let (_, middle, _) = ind.bbands(20, 2.0);
        assert!(Arc::ptr_eq(&a, &middle));
        assert!(Arc::ptr_eq(&ind.macd(12, 26, 9).1, &ind.macd(12, 26, 9).1));
    }
}
