"""TA-Lib's values for the indicators the engine computes (SEMANTICS section 6).

Usage: talib_golden.py BARS.csv REQUESTS.json
REQUESTS is a list of {"name": "SMA" | "EMA" | "MACD" | "BBANDS" | "RSI" | "ATR" | "MAX" | "MIN",
"params": [...]}. Prints a JSON list, one entry per request, each a list of output series
(NaN as null): MACD gives [macd, signal], BBANDS [upper, middle, lower], MAX/MIN run on high/low.
"""
import json
import sys

import numpy as np
import pandas as pd
import talib


def series(v):
    return [None if np.isnan(x) else float(x) for x in v]


def compute(bars, name, p):
    close, high, low = (bars[c].to_numpy(dtype=float) for c in ("close", "high", "low"))
    if name == "SMA":
        return [talib.SMA(close, timeperiod=p[0])]
    if name == "EMA":
        return [talib.EMA(close, timeperiod=p[0])]
    if name == "MACD":
        macd, signal, _hist = talib.MACD(close, fastperiod=p[0], slowperiod=p[1], signalperiod=p[2])
        return [macd, signal]
    if name == "BBANDS":
        return list(talib.BBANDS(close, timeperiod=p[0], nbdevup=p[1], nbdevdn=p[1], matype=0))
    if name == "RSI":
        return [talib.RSI(close, timeperiod=p[0])]
    if name == "ATR":
        return [talib.ATR(high, low, close, timeperiod=p[0])]
    if name == "MAX":
        return [talib.MAX(high, timeperiod=p[0])]
    if name == "MIN":
        return [talib.MIN(low, timeperiod=p[0])]
    raise SystemExit(f"unknown indicator {name}")


def main():
    bars = pd.read_csv(sys.argv[1])
    with open(sys.argv[2]) as f:
        requests = json.load(f)
    out = [[series(s) for s in compute(bars, r["name"], r["params"])] for r in requests]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
