//! The whole-series kernels of the strategy language that the built-ins do not already
//! have, and the two ways SEMANTICS section 13 applies a kernel to a series with missing
//! values: window operators restart after a gap (a window needs `n` values that are not
//! missing), recursive ones start at the first value and stop for good at a gap.
//!
//! `sum`, `std` and `corr` follow TA-Lib's `SUM`, `STDDEV` and `CORREL` running sums
//! operation by operation, so on windows without gaps they give TA-Lib's values.

/// Below this a variance counts as zero, as TA-Lib's `TA_IS_ZERO_OR_NEG` does.
const ZERO_VARIANCE: f64 = 0.00000001;

fn undefined(n: usize) -> Vec<f64> {
    vec![f64::NAN; n]
}

/// Applies a window kernel to each run of values without a missing one.
pub fn by_runs(x: &[f64], kernel: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    if !x.iter().any(|v| v.is_nan()) {
        return kernel(x);
    }
    runs(x.len(), |t| x[t].is_nan(), |r| kernel(&x[r]))
}

/// Applies a two-input window kernel to each run where both inputs are present.
pub fn by_runs2(x: &[f64], y: &[f64], kernel: impl Fn(&[f64], &[f64]) -> Vec<f64>) -> Vec<f64> {
    runs(
        x.len(),
        |t| x[t].is_nan() || y[t].is_nan(),
        |r| kernel(&x[r.clone()], &y[r]),
    )
}

/// `kernel` over each maximal run of bars that are not `missing`, missing elsewhere.
fn runs(
    n: usize,
    missing: impl Fn(usize) -> bool,
    kernel: impl Fn(std::ops::Range<usize>) -> Vec<f64>,
) -> Vec<f64> {
    let mut out = undefined(n);
    let mut t = 0;
    while t < n {
        if missing(t) {
            t += 1;
            continue;
        }
        let start = t;
        while t < n && !missing(t) {
            t += 1;
        }
        out[start..t].copy_from_slice(&kernel(start..t));
    }
    out
}

/// Applies a recursive kernel from the first bar where every input is present; a missing
/// input after that makes that bar and every later one missing (TA-Lib after leading NaNs).
pub fn recursive(inputs: &[&[f64]], kernel: impl Fn(&[&[f64]]) -> Vec<f64>) -> Vec<f64> {
    let n = inputs.first().map_or(0, |x| x.len());
    let missing = |t: usize| inputs.iter().any(|x| x[t].is_nan());
    let Some(start) = (0..n).find(|&t| !missing(t)) else {
        return undefined(n);
    };
    let stop = (start..n).find(|&t| missing(t)).unwrap_or(n);
    if start == 0 && stop == n {
        return kernel(inputs);
    }
    let tail: Vec<&[f64]> = inputs.iter().map(|x| &x[start..]).collect();
    let mut out = undefined(n);
    out[start..].copy_from_slice(&kernel(&tail));
    out[stop..].fill(f64::NAN);
    out
}

/// TA-Lib's `SUM`: the running total, added before it is read and trimmed after.
pub fn sum(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    let mut total: f64 = x[..period - 1].iter().sum();
    for i in period - 1..n {
        total += x[i];
        out[i] = total;
        total -= x[i + 1 - period];
    }
    out
}

/// TA-Lib's `STDDEV(x, n, 1)`: population variance from running sums of values and
/// squares, and 0 where that variance is below 1e-8.
pub fn std(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    let p = period as f64;
    let (mut total1, mut total2) = (0.0, 0.0);
    for &v in &x[..period - 1] {
        total1 += v;
        total2 += v * v;
    }
    for i in period - 1..n {
        let v = x[i];
        total1 += v;
        total2 += v * v;
        let mean1 = total1 / p;
        let mean2 = total2 / p;
        let old = x[i + 1 - period];
        total1 -= old;
        total2 -= old * old;
        let variance = mean2 - mean1 * mean1;
        out[i] = if variance < ZERO_VARIANCE {
            0.0
        } else {
            variance.sqrt()
        };
    }
    out
}

/// TA-Lib's `CORREL`, missing where the product of the two variances is below 1e-8
/// (where TA-Lib writes 0: a correlation with a constant series is not defined).
pub fn corr(x: &[f64], y: &[f64], period: usize) -> Vec<f64> {
    let n = x.len().min(y.len());
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    let p = period as f64;
    let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let value = |sx: f64, sy: f64, sxx: f64, syy: f64, sxy: f64| {
        let product = (sxx - (sx * sx) / p) * (syy - (sy * sy) / p);
        if product < ZERO_VARIANCE {
            f64::NAN
        } else {
            (sxy - (sx * sy) / p) / product.sqrt()
        }
    };
    for t in 0..period {
        let (a, b) = (x[t], y[t]);
        sx += a;
        sxx += a * a;
        sxy += a * b;
        sy += b;
        syy += b * b;
    }
    out[period - 1] = value(sx, sy, sxx, syy, sxy);
    for t in period..n {
        let (a, b) = (x[t - period], y[t - period]);
        sx -= a;
        sxx -= a * a;
        sxy -= a * b;
        sy -= b;
        syy -= b * b;
        let (a, b) = (x[t], y[t]);
        sx += a;
        sxx += a * a;
        sxy += a * b;
        sy += b;
        syy += b * b;
        out[t] = value(sx, sy, sxx, syy, sxy);
    }
    out
}

/// Bars since the window's most extreme value (`better(candidate, best)` picks it), 0
/// when it is the current bar; on ties the most recent.
fn arg_extreme(x: &[f64], period: usize, better: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    for (t, slot) in out.iter_mut().enumerate().skip(period - 1) {
        let mut best = t;
        for i in (t + 1 - period..t).rev() {
            if better(x[i], x[best]) {
                best = i;
            }
        }
        *slot = (t - best) as f64;
    }
    out
}

pub fn argmax(x: &[f64], period: usize) -> Vec<f64> {
    arg_extreme(x, period, |a, b| a > b)
}

pub fn argmin(x: &[f64], period: usize) -> Vec<f64> {
    arg_extreme(x, period, |a, b| a < b)
}

/// The current value's rank in its window, ties averaged, as a fraction of the window
/// (pandas' `rolling(n).rank(pct=True)`).
pub fn rank(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if period == 0 || n < period {
        return out;
    }
    for t in period - 1..n {
        let (mut less, mut equal) = (0usize, 0usize);
        for &v in &x[t + 1 - period..=t] {
            if v < x[t] {
                less += 1;
            } else if v == x[t] {
                equal += 1;
            }
        }
        out[t] = (less as f64 + (equal as f64 + 1.0) / 2.0) / period as f64;
    }
    out
}

/// `x[t - k]`.
pub fn delay(x: &[f64], k: usize) -> Vec<f64> {
    let n = x.len();
    let mut out = undefined(n);
    if k < n {
        out[k..].copy_from_slice(&x[..n - k]);
    }
    out
}

/// `cross_above(a, b)` (SEMANTICS section 2), false where any of the four is missing.
pub fn cross_above(a: &[f64], b: &[f64]) -> Vec<bool> {
    let mut out = vec![false; a.len()];
    crate::strategy::cross_above(a, b, &mut out);
    out
}

pub fn cross_below(a: &[f64], b: &[f64]) -> Vec<bool> {
    let mut out = vec![false; a.len()];
    crate::strategy::cross_below(a, b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        let x = [1.0, 3.0, 2.0, 2.0, 5.0];
        assert_eq!(sum(&x, 2)[1..], [4.0, 5.0, 4.0, 7.0]);
        assert_eq!(std(&[1.0, 3.0, 1.0, 3.0], 2)[1..], [1.0, 1.0, 1.0]);
        assert_eq!(argmax(&x, 3)[2..], [1.0, 2.0, 0.0]);
        // Ties go to the most recent bar.
        assert_eq!(argmax(&[2.0, 2.0, 1.0], 3)[2], 1.0);
        assert_eq!(argmin(&x, 3)[2..], [2.0, 0.0, 1.0]);
        // Window [3, 2, 2]: the last 2 ties with one other: rank (0 + 1.5) / 3.
        assert_eq!(rank(&x, 3)[3], 0.5);
        assert_eq!(rank(&x, 3)[4], 1.0);
        assert_eq!(delay(&x, 2)[2..], [1.0, 3.0, 2.0]);
        let y = [2.0, 6.0, 4.0, 4.0, 10.0];
        assert!((corr(&x, &y, 3)[4] - 1.0).abs() < 1e-12);
        assert!(corr(&x, &[1.0; 5], 3)[4].is_nan());
    }

    #[test]
    fn gaps_restart_windows_and_stop_recursions() {
        let x = [1.0, 2.0, f64::NAN, 3.0, 4.0, 5.0];
        let s = by_runs(&x, |r| sum(r, 2));
        assert!(s[0].is_nan() && s[2].is_nan() && s[3].is_nan());
        assert_eq!((s[1], s[4], s[5]), (3.0, 7.0, 9.0));
        let lead = [f64::NAN, 1.0, 2.0, 3.0, f64::NAN, 4.0];
        let r = recursive(&[&lead], |x| crate::indicators::ema(x[0], 2));
        assert!(r[1].is_nan());
        assert_eq!((r[2], r[3]), (1.5, 2.5));
        assert!(r[4].is_nan() && r[5].is_nan());
    }
}
