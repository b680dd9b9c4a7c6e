"""empyrical's metrics of equity curves, for comparison with the engine's (SEMANTICS section 8).

Usage: empyrical_check.py CURVES.json, a list of {"initial": x, "equity": [...]}.
Prints a list of {"sharpe", "sortino", "max_drawdown", "volatility", "cagr", "calmar"}
(null where empyrical gives NaN or infinity).
"""
import json
import math
import sys

import empyrical as ep
import numpy as np
import pandas as pd


def clean(v):
    v = float(v)
    return v if math.isfinite(v) else None


def main():
    with open(sys.argv[1]) as f:
        curves = json.load(f)
    out = []
    for c in curves:
        equity = np.asarray(c["equity"], dtype=float)
        prev = np.concatenate([[c["initial"]], equity[:-1]])
        r = pd.Series(equity / prev - 1.0)
        with np.errstate(all="ignore"):
            out.append({
                "sharpe": clean(ep.sharpe_ratio(r)),
                "sortino": clean(ep.sortino_ratio(r)),
                "max_drawdown": clean(ep.max_drawdown(r)),
                "volatility": clean(ep.annual_volatility(r)),
                "cagr": clean(ep.annual_return(r)),
                "calmar": clean(ep.calmar_ratio(r)),
            })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
