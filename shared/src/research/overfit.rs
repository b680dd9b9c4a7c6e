//! Overfitting statistics over a grid's portfolio returns (SEMANTICS section 11): the
//! deflated Sharpe ratio of the best set and the probability of backtest overfitting by
//! combinatorially symmetric cross-validation (CSCV).

use rayon::prelude::*;
use serde::Serialize;

use super::stats::{Moments, normal_quantile};

/// Euler-Mascheroni constant, in the expected maximum of `N` standard normals.
const GAMMA: f64 = 0.5772156649015329;

/// The grid's deflated Sharpe ratio and what it is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Deflated {
    /// `N`: every parameter set, null ones included.
    pub trials: usize,
    /// `rho`: the mean pairwise correlation of the non-null sets' returns, clipped to [0, 1].
    pub mean_correlation: Option<f64>,
    /// `Ne = rho + (1 - rho) * N`.
    pub effective_trials: Option<f64>,
    /// The best set's index (highest per-period Sharpe, first in grid order on ties).
    pub best: Option<usize>,
    pub best_sharpe: Option<f64>,
    /// The expected maximum per-period Sharpe of `Ne` trials with no skill.
    pub sr0: Option<f64>,
    pub dsr: Option<f64>,
}

/// The deflated Sharpe ratio of the best of `columns` (the sets' returns in grid order,
/// all of one length) whose moments are `moments`.
pub fn deflated(columns: &[Vec<f64>], moments: &[Moments]) -> Deflated {
    let n = columns.len();
    let sharpes: Vec<Option<f64>> = moments.iter().map(Moments::sharpe).collect();
    let live: Vec<usize> = (0..n).filter(|&i| sharpes[i].is_some()).collect();
    let best = best_index(&sharpes);
    let mut out = Deflated {
        trials: n,
        best,
        best_sharpe: best.and_then(|b| sharpes[b]),
        ..Deflated::default()
    };
    if live.len() < 2 {
        return out;
    }
    let rho = mean_correlation(columns, &live).clamp(0.0, 1.0);
    let ne = rho + (1.0 - rho) * n as f64;
    let srs: Vec<f64> = live.iter().filter_map(|&i| sharpes[i]).collect();
    let m = srs.iter().sum::<f64>() / srs.len() as f64;
    let v = srs.iter().map(|s| (s - m) * (s - m)).sum::<f64>() / (srs.len() - 1) as f64;
    let sr0 = if ne < 2.0 {
        0.0
    } else {
        v.sqrt()
            * ((1.0 - GAMMA) * normal_quantile(1.0 - 1.0 / ne)
                + GAMMA * normal_quantile(1.0 - 1.0 / (ne * std::f64::consts::E)))
    };
    out.mean_correlation = Some(rho);
    out.effective_trials = Some(ne);
    out.sr0 = Some(sr0);
    out.dsr = best.and_then(|b| moments[b].psr(sr0));
    out
}

/// The index of the highest value; nulls rank lowest; ties go to the first. Null only for
/// an empty list or one of nulls alone.
fn best_index(values: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = *v
            && best.is_none_or(|(_, b)| v > b)
        {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The mean pairwise Pearson correlation of the `live` columns, in O(N x T): with each
/// column standardised to mean 0 and norm 1, the pairs' correlations sum to
/// `(|sum of columns|^2 - N) / 2`.
fn mean_correlation(columns: &[Vec<f64>], live: &[usize]) -> f64 {
    let t = columns[live[0]].len();
    let mut sum = vec![0.0; t];
    for &i in live {
        let c = &columns[i];
        let mean = c.iter().sum::<f64>() / t as f64;
        let norm = c
            .iter()
            .map(|x| (x - mean) * (x - mean))
            .sum::<f64>()
            .sqrt();
        for (s, x) in sum.iter_mut().zip(c) {
            *s += (x - mean) / norm;
        }
    }
    let k = live.len() as f64;
    let squared: f64 = sum.iter().map(|s| s * s).sum();
    (squared - k) / 2.0 / (k * (k - 1.0) / 2.0)
}

/// The probability of backtest overfitting by CSCV, and what the splits show.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cscv {
    /// `S`.
    pub blocks: usize,
    /// Returns in each block (the first `T mod S` are left out).
    pub block_len: usize,
    /// `C(S, S/2)`.
    pub splits: usize,
    pub pbo: Option<f64>,
    /// Least-squares slope of the in-sample winner's out-of-sample Sharpe on its in-sample
    /// Sharpe, over the splits where both exist.
    pub degradation_slope: Option<f64>,
    /// Share of those splits where the winner's out-of-sample Sharpe is below 0.
    pub prob_oos_loss: Option<f64>,
}

/// A block of one column: its length, mean and sum of squared deviations, which combine
/// exactly into any union of blocks (Chan's parallel variance).
#[derive(Clone, Copy)]
struct Block {
    mean: f64,
    m2: f64,
}

/// CSCV over `columns` (the sets' returns in grid order) with `blocks` blocks (even, 2..=20,
/// checked by the batch spec). Null figures when a block would hold fewer than 2 returns.
pub fn cscv(columns: &[Vec<f64>], blocks: usize) -> Cscv {
    let t = columns.first().map_or(0, Vec::len);
    let len = t / blocks;
    let mut out = Cscv {
        blocks,
        block_len: len,
        ..Cscv::default()
    };
    if len < 2 || columns.len() < 2 {
        return out;
    }
    let skip = t % blocks;
    // stats[n * blocks + b]: column n's block b, read from per-block sums only.
    let stats: Vec<Block> = columns
        .iter()
        .flat_map(|c| {
            c[skip..].chunks_exact(len).map(|b| {
                let mean = b.iter().sum::<f64>() / len as f64;
                let m2 = b.iter().map(|x| (x - mean) * (x - mean)).sum();
                Block { mean, m2 }
            })
        })
        .collect();
    let splits = halves(blocks);
    out.splits = splits.len();
    let n = columns.len();
    let sharpe_over = |col: usize, chosen: &[usize]| -> Option<f64> {
        let b = &stats[col * blocks..(col + 1) * blocks];
        let k = chosen.len() as f64;
        let mean = chosen.iter().map(|&i| b[i].mean).sum::<f64>() / k;
        let m2: f64 = chosen
            .iter()
            .map(|&i| b[i].m2 + len as f64 * (b[i].mean - mean) * (b[i].mean - mean))
            .sum();
        let sd = (m2 / (k * len as f64 - 1.0)).sqrt();
        (sd > 0.0).then(|| mean / sd).filter(|s| s.is_finite())
    };
    // Per split: (lambda, the winner's in-sample and out-of-sample Sharpe).
    let outcomes: Vec<(f64, Option<f64>, Option<f64>)> = splits
        .par_iter()
        .map(|is| {
            let oos: Vec<usize> = (0..blocks).filter(|b| !is.contains(b)).collect();
            let in_sample: Vec<Option<f64>> = (0..n).map(|c| sharpe_over(c, is)).collect();
            let winner = best_index(&in_sample).unwrap_or(0);
            let out_sample: Vec<Option<f64>> = (0..n).map(|c| sharpe_over(c, &oos)).collect();
            let w = average_rank(&out_sample, winner);
            let w = w / (n as f64 + 1.0);
            ((w / (1.0 - w)).ln(), in_sample[winner], out_sample[winner])
        })
        .collect();
    out.pbo =
        Some(outcomes.iter().filter(|(l, _, _)| *l <= 0.0).count() as f64 / outcomes.len() as f64);
    let pairs: Vec<(f64, f64)> = outcomes
        .iter()
        .filter_map(|(_, a, b)| Some(((*a)?, (*b)?)))
        .collect();
    if !pairs.is_empty() {
        let k = pairs.len() as f64;
        out.prob_oos_loss = Some(pairs.iter().filter(|(_, y)| *y < 0.0).count() as f64 / k);
        let mx = pairs.iter().map(|p| p.0).sum::<f64>() / k;
        let my = pairs.iter().map(|p| p.1).sum::<f64>() / k;
        let sxx: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        out.degradation_slope = (sxx > 0.0).then(|| sxy / sxx).filter(|s| s.is_finite());
    }
    out
}

/// The ascending rank of `values[at]` among `values` (1 = lowest), ties averaged, nulls
/// lowest and tied with each other.
fn average_rank(values: &[Option<f64>], at: usize) -> f64 {
    let nulls = values.iter().filter(|v| v.is_none()).count() as f64;
    let (below, equal) = match values[at] {
        None => (0.0, nulls),
        Some(x) => (
            nulls + values.iter().filter(|v| v.is_some_and(|v| v < x)).count() as f64,
            values.iter().filter(|v| **v == Some(x)).count() as f64,
        ),
    };
    below + (equal + 1.0) / 2.0
}

/// Every choice of half of `0..s` (in lexicographic order).
fn halves(s: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, s: usize, left: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        for i in start..=s - left {
            cur.push(i);
            go(i + 1, s, left - 1, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, s, s / 2, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties_and_put_nulls_lowest() {
        let v = [Some(0.5), None, Some(0.1), Some(0.5), None];
        assert_eq!(average_rank(&v, 1), 1.5);
        assert_eq!(average_rank(&v, 2), 3.0);
        assert_eq!(average_rank(&v, 0), 4.5);
    }

    #[test]
    fn halves_count_the_binomial() {
        assert_eq!(halves(4).len(), 6);
        assert_eq!(halves(16).len(), 12_870);
        assert_eq!(halves(4)[0], vec![0, 1]);
    }

    #[test]
    fn mean_correlation_equals_the_pairwise_mean() {
        let cols = vec![
            vec![0.01, -0.02, 0.03, 0.0, 0.015],
            vec![0.02, -0.01, 0.01, 0.005, 0.0],
            vec![-0.01, 0.02, -0.02, 0.01, 0.003],
        ];
        let corr = |a: &[f64], b: &[f64]| {
            let (ma, mb) = (a.iter().sum::<f64>() / 5.0, b.iter().sum::<f64>() / 5.0);
            let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma) * (x - ma)).sum();
            let vb: f64 = b.iter().map(|y| (y - mb) * (y - mb)).sum();
            cov / (va * vb).sqrt()
        };
        let pairs =
            (corr(&cols[0], &cols[1]) + corr(&cols[0], &cols[2]) + corr(&cols[1], &cols[2])) / 3.0;
        assert!((mean_correlation(&cols, &[0, 1, 2]) - pairs).abs() < 1e-14);
    }

    /// CSCV from per-block sums against the definition applied literally (slicing the
    /// returns of every split), on 26 returns of three sets: the first 2 are left out and
    /// the rest cut into 4 blocks of 6.
    #[test]
    fn cscv_matches_the_definition_sliced() {
        let mut x: u64 = 12345;
        let mut noise = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let cols: Vec<Vec<f64>> = (0..3)
            .map(|n| (0..26).map(|_| 0.02 * noise() + 0.001 * n as f64).collect())
            .collect();
        let c = cscv(&cols, 4);
        assert_eq!((c.splits, c.block_len), (6, 6));
        let sliced = |col: &[f64], blocks: &[usize]| {
            let r: Vec<f64> = blocks
                .iter()
                .flat_map(|&k| col[2 + 6 * k..2 + 6 * k + 6].to_vec())
                .collect();
            Moments::of(&r).sharpe()
        };
        let (mut below, mut pairs) = (0, Vec::new());
        for is in halves(4) {
            let oos: Vec<usize> = (0..4).filter(|b| !is.contains(b)).collect();
            let ins: Vec<Option<f64>> = cols.iter().map(|c| sliced(c, &is)).collect();
            let w = best_index(&ins).unwrap();
            let outs: Vec<Option<f64>> = cols.iter().map(|c| sliced(c, &oos)).collect();
            // Rank among 3 (no ties here): lambda <= 0 when the rank is at most 2 (w' <= 1/2).
            let rank = 1 + outs.iter().filter(|o| **o < outs[w]).count();
            below += usize::from(rank <= 2);
            pairs.push((ins[w].unwrap(), outs[w].unwrap()));
        }
        assert_eq!(c.pbo, Some(below as f64 / 6.0));
        let losses = pairs.iter().filter(|p| p.1 < 0.0).count() as f64 / 6.0;
        assert_eq!(c.prob_oos_loss, Some(losses));
        let (mx, my) = (
            pairs.iter().map(|p| p.0).sum::<f64>() / 6.0,
            pairs.iter().map(|p| p.1).sum::<f64>() / 6.0,
        );
        let slope = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / pairs.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum::<f64>();
        assert!((c.degradation_slope.unwrap() - slope).abs() < 1e-9);
    }

    #[test]
    fn cscv_is_null_when_blocks_are_too_short() {
        let cols = vec![vec![0.01, 0.02, -0.01, 0.0, 0.03]; 2];
        let c = cscv(&cols, 4);
        assert_eq!((c.pbo, c.block_len), (None, 1));
    }

    #[test]
    fn deflating_one_strong_set_among_noise() {
        // Identical columns are one trial: rho = 1, Ne = 1, so SR0 = 0 and DSR = PSR(0).
        let col: Vec<f64> = (0..50)
            .map(|i| ((i * 7919) % 13) as f64 / 1000.0 - 0.005)
            .collect();
        let cols = vec![col.clone(), col.clone(), col];
        let m: Vec<Moments> = cols.iter().map(|c| Moments::of(c)).collect();
        let d = deflated(&cols, &m);
        assert!((d.mean_correlation.unwrap() - 1.0).abs() < 1e-12);
        assert!((d.effective_trials.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(d.sr0, Some(0.0));
        assert_eq!(d.best, Some(0));
        assert_eq!(d.dsr, m[0].psr(0.0));
    }
}
