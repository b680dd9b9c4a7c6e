"""The peers of the engine benchmark: the same strategies over the same CSV files, written the
way a user of each library writes them, timed inside the process (imports, numba compilation
and interpreter start are not counted; reading the CSV files is, as it is for the engine).

    peer_bench.py versions          -> {"python": ..., "backtrader": ..., "vectorbt": ..., ...}
    peer_bench.py run CASE.json     -> {"seconds": s, "bar_evaluations": n, "fills": {...}}

case: {"engine": "backtrader" | "vectorbt", "dir": path, "format": "csv" | "parquet", "symbols": [...],
       "strategy": "sma_cross" | "macd", "combos": [{"fast": 10, "slow": 30}, ...],
       "capital": cash per symbol, "commission_rate": r, "fills_of_first_combo": bool}

Both follow the contract where their own semantics allow (SEMANTICS.md of the shared
contract): the signal on bar t's close, the order sized "all in" (whole shares, commission
included) and filled at bar t+1's open, long only, commission `notional * rate` on every
fill. What they do not know: suspended days (volume 0), on which they fill where the engine
does not. The bench compares fills and names that cause where they differ.
"""
import json
import math
import sys
import time
from importlib import metadata

import numpy as np
import pandas as pd


def versions():
    out = {"python": sys.version.split()[0]}
    for name in ("backtrader", "vectorbt", "numba", "numpy", "pandas", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def read(case, symbol):
    """One symbol's bars as a user of pandas reads them: CSV (the default) or, with
    `"format": "parquet"`, the per-symbol Parquet file (through pyarrow)."""
    if case.get("format") == "parquet":
        return pd.read_parquet(f"{case['dir']}/{symbol}.parquet").set_index("date")
    return pd.read_csv(f"{case['dir']}/{symbol}.csv", parse_dates=["date"], index_col="date")


# backtrader -------------------------------------------------------------------------------

def backtrader_run(case):
    import backtrader as bt

    rate = case["commission_rate"]

    class Cross(bt.Strategy):
        """sma_cross or macd: signal in `next` (bar t closed), order in `next_open` (bar
        t+1, cheat-on-open: sized with the open it fills at)."""

        params = (("kind", "sma_cross"), ("fast", 10), ("slow", 30), ("signal", 9), ("record", False))

        def __init__(self):
            if self.p.kind == "sma_cross":
                a = bt.ind.SMA(self.data.close, period=self.p.fast)
                b = bt.ind.SMA(self.data.close, period=self.p.slow)
            else:
                m = bt.ind.MACD(self.data.close, period_me1=self.p.fast, period_me2=self.p.slow,
                                period_signal=self.p.signal)
                a, b = m.macd, m.signal
            self.cross = bt.ind.CrossOver(a, b)
            self.want = 0
            self.fills = []

        def next(self):
            if self.position.size == 0 and self.cross[0] > 0:
                self.want = 1
            elif self.position.size > 0 and self.cross[0] < 0:
                self.want = -1

        def next_open(self):
            if self.want > 0:
                price = self.data.open[0]
                size = math.floor(self.broker.getcash() / (price * (1 + rate)))
                if size > 0:
                    self.buy(size=size)
            elif self.want < 0:
                self.close()
            self.want = 0

        def notify_order(self, order):
            if self.p.record and order.status == order.Completed:
                day = bt.num2date(order.executed.dt).date().isoformat()
                side = "buy" if order.isbuy() else "sell"
                self.fills.append([day, side, order.executed.price, abs(order.executed.size)])

    fills, evaluations = {}, 0
    keys = sorted(case["combos"][0])
    for symbol in case["symbols"]:
        df = read(case, symbol)
        cerebro = bt.Cerebro(cheat_on_open=True, stdstats=False, maxcpus=1, optreturn=True)
        cerebro.adddata(bt.feeds.PandasData(dataname=df, openinterest=None))
        if len(case["combos"]) == 1:
            cerebro.addstrategy(Cross, kind=case["strategy"], record=case["fills_of_first_combo"],
                                **case["combos"][0])
        else:
            # A grid is a product of value lists: backtrader's own optimiser, on one core.
            values = {k: sorted({c[k] for c in case["combos"]}) for k in keys}
            cerebro.optstrategy(Cross, kind=case["strategy"], **values)
        cerebro.broker.setcash(case["capital"])
        cerebro.broker.set_checksubmit(False)
        cerebro.broker.setcommission(commission=rate)
        result = cerebro.run()
        if len(case["combos"]) == 1 and case["fills_of_first_combo"]:
            fills[symbol] = result[0].fills
        evaluations += len(df) * len(case["combos"])
    return evaluations, fills


# vectorbt ---------------------------------------------------------------------------------

def vectorbt_run(case, symbols):
    """Returns (bar evaluations, fills of the first combination, seconds): the seconds are
    those of reading and computing, not of turning the orders into the fill lists the bench
    compares."""
    import vectorbt as vbt

    fills, evaluations, seconds = {}, 0, 0.0
    combos = case["combos"]
    # Symbols in chunks, all parameter combinations at once per chunk: the vectorbt way,
    # with memory bounded (a 300-symbol x 100-combination frame of 2,500 rows is 600 MB
    # per float array).
    chunk = max(1, 3000 // len(combos))
    for i in range(0, len(symbols), chunk):
        started = time.perf_counter()
        frames = {s: read(case, s) for s in symbols[i:i + chunk]}
        close = pd.DataFrame({s: f["close"] for s, f in frames.items()})
        open_ = pd.DataFrame({s: f["open"] for s, f in frames.items()})
        if case["strategy"] == "sma_cross":
            fast = vbt.MA.run(close, [c["fast"] for c in combos], short_name="fast")
            slow = vbt.MA.run(close, [c["slow"] for c in combos], short_name="slow")
            entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
        else:
            macd = vbt.MACD.run(close, fast_window=[c["fast"] for c in combos],
                                slow_window=[c["slow"] for c in combos],
                                signal_window=[c["signal"] for c in combos],
                                macd_ewm=True, signal_ewm=True)
            entries, exits = macd.macd_crossed_above(macd.signal), macd.macd_crossed_below(macd.signal)
        # The signal of bar t fills at bar t+1's open.
        pf = vbt.Portfolio.from_signals(
            close, entries.vbt.fshift(1, fill_value=False), exits.vbt.fshift(1, fill_value=False),
            price=open_, size=np.inf, size_granularity=1, fees=case["commission_rate"],
            init_cash=case["capital"], direction="longonly", freq="1D")
        # The metrics of every combination, as the engine computes them.
        pf.total_return(), pf.sharpe_ratio(), pf.max_drawdown()
        seconds += time.perf_counter() - started
        evaluations += close.notna().to_numpy().sum() * len(combos)
        if case["fills_of_first_combo"]:
            # The first combination's columns come first, one per symbol.
            assert len(pf.wrapper.columns) == close.shape[1] * len(combos)
            records = pf.orders.values
            index = close.index
            for j, s in enumerate(close.columns):
                mine = records[records["col"] == j]
                fills[s] = [[index[r["idx"]].date().isoformat(), "buy" if r["side"] == 0 else "sell",
                             float(r["price"]), float(r["size"])] for r in mine]
    return evaluations, fills, seconds


def warm_up_vectorbt(case):
    """Compiles vectorbt's numba kernels on two symbols, untimed (a user's cache does this)."""
    small = dict(case, fills_of_first_combo=False)
    vectorbt_run(small, case["symbols"][:2])


def main():
    if sys.argv[1] == "versions":
        json.dump(versions(), sys.stdout)
        return
    with open(sys.argv[2]) as f:
        case = json.load(f)
    if case["engine"] == "vectorbt":
        warm_up_vectorbt(case)
        evaluations, fills, seconds = vectorbt_run(case, case["symbols"])
    else:
        t = time.perf_counter()
        evaluations, fills = backtrader_run(case)
        seconds = time.perf_counter() - t
    json.dump({"seconds": seconds, "bar_evaluations": int(evaluations), "fills": fills}, sys.stdout)


if __name__ == "__main__":
    main()
