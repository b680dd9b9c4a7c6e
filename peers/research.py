"""A second implementation of SEMANTICS sections 10 and 11, written from the text and the
papers' formulas (Bailey and Lopez de Prado 2014; Bailey, Borwein, Lopez de Prado and Zhu
2015) with numpy and scipy, by the most direct route: every split's returns sliced anew,
every pair's correlation computed.

Reads a request (JSON): {"portfolio": path to portfolio.parquet, "capital": initial,
"blocks": S, "walk_forward": {...} or null}; prints the figures as JSON on stdout.
"""

import itertools
import json
import math
import sys

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

GAMMA = 0.5772156649015329


def grid_key(params):
    p = json.loads(params)
    return [float(p[k]) for k in sorted(p)]


def sharpe(r):
    if len(r) < 2:
        return None
    sd = np.std(r, ddof=1)
    return None if sd == 0 or not np.isfinite(sd) else float(np.mean(r) / sd)


def psr(r, threshold):
    sr = sharpe(r)
    if sr is None:
        return None
    g3 = stats.skew(r, bias=True)
    g4 = stats.kurtosis(r, fisher=False, bias=True)
    var = 1 - g3 * sr + (g4 - 1) / 4 * sr * sr
    if not var > 0:
        return None
    return float(stats.norm.cdf((sr - threshold) * math.sqrt(len(r) - 1) / math.sqrt(var)))


def window(curve, capital, a, b):
    """Section 8's metrics over the returns r[t], t in [a, b)."""
    start = capital if a == 0 else curve[a - 1]
    eq = np.asarray(curve[a:b])
    prev = np.concatenate([[start], eq[:-1]])
    r = eq / prev - 1
    n = len(r)
    out = {}
    growth = eq[-1] / start
    out["total_return"] = growth - 1
    out["cagr"] = growth ** (252 / n) - 1
    sd = np.std(r, ddof=1) if n >= 2 else float("nan")
    out["sharpe"] = float(np.mean(r) / sd * math.sqrt(252)) if sd > 0 else None
    down = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    out["sortino"] = float(np.mean(r) / down * math.sqrt(252)) if down > 0 else None
    peak = np.maximum.accumulate(np.concatenate([[start], eq]))[1:]
    mdd = float(np.min(eq / peak - 1))
    out["max_drawdown"] = mdd
    out["calmar"] = out["cagr"] / abs(mdd) if mdd < 0 else None
    return out, r


def walk_forward(wf, names, curves, dates, capital):
    length = len(dates)
    step = wf.get("step") or wf["oos"]
    metric = wf.get("metric", "sharpe")
    folds, k = [], 0
    while True:
        b = wf["is"] + k * step
        a = 0 if wf.get("anchored") else k * step
        o0 = b + wf.get("purge", 0)
        o1 = min(o0 + wf["oos"], length)
        if o0 >= length or o1 - o0 < 2:
            break
        folds.append((a, b, o0, o1))
        k += 1
    rows, chosen, pooled = [], [], []
    for k, (a, b, o0, o1) in enumerate(folds):
        scores = [window(c, capital, a, b)[0][metric] for c in curves]
        best = 0
        for n, v in enumerate(scores):
            if v is not None and (scores[best] is None or v > scores[best]):
                best = n
        is_m, is_r = window(curves[best], capital, a, b)
        oos_m, _ = window(curves[best], capital, o0, o1)
        pooled.extend(is_r)
        chosen.append(best)
        rows.append({"fold": k, "is_start": dates[a], "is_end": dates[b - 1],
                     "oos_start": dates[o0], "oos_end": dates[o1 - 1], "params": names[best],
                     "is_metric": is_m[metric], "oos_metric": oos_m[metric],
                     "is_sharpe": is_m["sharpe"], "oos_sharpe": oos_m["sharpe"],
                     "oos_total_return": oos_m["total_return"]})
    owner = {}
    for k, (_, _, o0, o1) in enumerate(folds):
        for t in range(o0, o1):
            owner[t] = k
    equity, stitched, rets = capital, [], []
    for t in sorted(owner):
        c = curves[chosen[owner[t]]]
        r = c[t] / (capital if t == 0 else c[t - 1]) - 1
        rets.append(r)
        equity *= 1 + r
        stitched.append({"date": dates[t], "fold": owner[t],
                         "params": names[chosen[owner[t]]], "equity": equity})
    is_mean = float(np.mean(pooled))
    efficiency = float(np.mean(rets)) / is_mean if is_mean > 0 else None
    return {"folds": rows, "oos_equity": stitched, "efficiency": efficiency}


def main():
    req = json.load(open(sys.argv[1]))
    capital = req["capital"]
    t = pq.read_table(req["portfolio"]).to_pandas()
    names = sorted(t["params"].unique(), key=grid_key)
    dates = sorted(str(d) for d in t["date"].unique())
    curves = [t[t["params"] == n].sort_values("date")["equity"].to_numpy() for n in names]
    out = {}
    if req.get("walk_forward"):
        out["walk_forward"] = walk_forward(req["walk_forward"], names, curves, dates, capital)
    rets = [c / np.concatenate([[capital], c[:-1]]) - 1 for c in curves]
    M = np.column_stack(rets)
    T, N = M.shape
    srs = [sharpe(M[:, n]) for n in range(N)]
    out["grid"] = [{"params": names[n], "sharpe_per_period": srs[n],
                    "psr": psr(M[:, n], 0.0)} for n in range(N)]
    live = [n for n in range(N) if srs[n] is not None]
    best = max(live, key=lambda n: (srs[n], -n))
    corr = np.corrcoef(M[:, live], rowvar=False)
    pairs = [corr[i, j] for i in range(len(live)) for j in range(i + 1, len(live))]
    rho = min(max(float(np.mean(pairs)), 0.0), 1.0)
    ne = rho + (1 - rho) * N
    v = np.var([srs[n] for n in live], ddof=1)
    sr0 = 0.0 if ne < 2 else math.sqrt(v) * (
        (1 - GAMMA) * stats.norm.ppf(1 - 1 / ne) + GAMMA * stats.norm.ppf(1 - 1 / (ne * math.e)))
    out["overfitting"] = {"trials": N, "mean_correlation": rho, "effective_trials": ne,
                          "best_params": names[best], "sr0": sr0, "dsr": psr(M[:, best], sr0)}
    S = req["blocks"]
    L = T // S
    X = M[T % S:]
    lambdas, pairs_sr = [], []
    for is_blocks in itertools.combinations(range(S), S // 2):
        oos_blocks = [b for b in range(S) if b not in is_blocks]
        IS = np.concatenate([X[b * L:(b + 1) * L] for b in is_blocks])
        OOS = np.concatenate([X[b * L:(b + 1) * L] for b in oos_blocks])
        is_sr = [sharpe(IS[:, n]) for n in range(N)]
        oos_sr = [sharpe(OOS[:, n]) for n in range(N)]
        star = max(range(N), key=lambda n: (-math.inf if is_sr[n] is None else is_sr[n], -n))
        ranks = stats.rankdata([-math.inf if s is None else s for s in oos_sr], method="average")
        w = ranks[star] / (N + 1)
        lambdas.append(math.log(w / (1 - w)))
        if is_sr[star] is not None and oos_sr[star] is not None:
            pairs_sr.append((is_sr[star], oos_sr[star]))
    x = np.array([p[0] for p in pairs_sr])
    y = np.array([p[1] for p in pairs_sr])
    out["overfitting"].update({
        "pbo": float(np.mean(np.array(lambdas) <= 0)),
        "splits": len(lambdas),
        "degradation_slope": float(np.polyfit(x, y, 1)[0]),
        "prob_oos_loss": float(np.mean(y < 0)),
    })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
