//! The statistics the overfitting figures are made of (SEMANTICS section 11): the normal
//! distribution, a return series' per-period Sharpe ratio and moments, and the
//! probabilistic Sharpe ratio.

/// The standard normal distribution function, from `erfc` (accurate in both tails, where
/// `1 - erf` would cancel).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The standard normal quantile for `0 < p < 1`: Acklam's rational approximation (relative
/// error 1.2e-9), refined by one Halley step on `normal_cdf` to full double precision.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    if p.is_nan() || p <= 0.0 || p >= 1.0 {
        return match p {
            0.0 => f64::NEG_INFINITY,
            1.0 => f64::INFINITY,
            _ => f64::NAN,
        };
    }
    let tail = |q: f64| {
        let q = (-2.0 * q.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// A return series' figures for section 11.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (ddof = 1).
    pub sd: f64,
    /// Population skewness `m3 / m2^1.5`; NaN when `m2` is 0.
    pub skew: f64,
    /// Raw (not excess) population kurtosis `m4 / m2^2`; NaN when `m2` is 0.
    pub kurtosis: f64,
}

impl Moments {
    pub fn of(r: &[f64]) -> Moments {
        let n = r.len();
        let nf = n as f64;
        let mean = r.iter().sum::<f64>() / nf;
        let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
        for &x in r {
            let d = x - mean;
            let d2 = d * d;
            m2 += d2;
            m3 += d2 * d;
            m4 += d2 * d2;
        }
        let sd = if n >= 2 {
            (m2 / (nf - 1.0)).sqrt()
        } else {
            f64::NAN
        };
        let (m2, m3, m4) = (m2 / nf, m3 / nf, m4 / nf);
        Moments {
            n,
            mean,
            sd,
            skew: m3 / m2.powf(1.5),
            kurtosis: m4 / (m2 * m2),
        }
    }

    /// The per-period Sharpe ratio `mean / sd`; null when the deviation is 0 (or there are
    /// fewer than two returns).
    pub fn sharpe(&self) -> Option<f64> {
        (self.sd > 0.0 && self.sd.is_finite())
            .then(|| self.mean / self.sd)
            .filter(|s| s.is_finite())
    }

    /// The probabilistic Sharpe ratio against `threshold`: the probability that the true
    /// per-period Sharpe ratio exceeds it, given `n` returns with these moments. Null
    /// without a Sharpe ratio or when the variance term is not positive.
    pub fn psr(&self, threshold: f64) -> Option<f64> {
        let sr = self.sharpe()?;
        let var = 1.0 - self.skew * sr + (self.kurtosis - 1.0) / 4.0 * sr * sr;
        if var.is_nan() || var <= 0.0 || self.n < 2 {
            return None;
        }
        let z = (sr - threshold) * ((self.n - 1) as f64).sqrt() / var.sqrt();
        Some(normal_cdf(z)).filter(|p| p.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-15);
        assert!((normal_cdf(-8.0) - 6.22096057427178e-16).abs() < 1e-28);
        for p in [1e-12, 1e-6, 0.01, 0.02425, 0.3, 0.5, 0.9, 0.975, 1.0 - 1e-9] {
            let x = normal_quantile(p);
            assert!(
                (normal_cdf(x) - p).abs() <= 1e-14 * p.min(1.0 - p) + 2.0 * f64::EPSILON,
                "p {p}: x {x}"
            );
        }
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-14);
    }

    #[test]
    fn moments_of_a_small_series_by_hand() {
        // r = 1, 2, 3, 10: mean 4, deviations -3 -2 -1 6, m2 = 50/4, m3 = 180/4, m4 = 1394/4.
        let m = Moments::of(&[1.0, 2.0, 3.0, 10.0]);
        assert_eq!(m.mean, 4.0);
        assert!((m.sd - (50.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((m.skew - 45.0 / 12.5f64.powf(1.5)).abs() < 1e-14);
        assert!((m.kurtosis - 348.5 / 156.25).abs() < 1e-14);
        let sr = 4.0 / (50.0f64 / 3.0).sqrt();
        assert!((m.sharpe().unwrap() - sr).abs() < 1e-15);
        let z = sr * 3f64.sqrt() / (1.0 - m.skew * sr + (m.kurtosis - 1.0) / 4.0 * sr * sr).sqrt();
        assert!((m.psr(0.0).unwrap() - normal_cdf(z)).abs() < 1e-15);
    }

    #[test]
    fn a_constant_series_has_no_sharpe() {
        let m = Moments::of(&[0.25; 10]);
        assert_eq!(m.sharpe(), None);
        assert_eq!(m.psr(0.0), None);
    }
}
