"""Runs backtests in backtrader 1.9.78.123 under the rules of SEMANTICS.md, for trade-by-trade
comparison with the engine.

backtrader supplies the broker: cheat-on-open fills (a signal on bar t's close, an order
sized and filled at bar t+1's open), cash and position accounting, commission with a minimum
and stamp duty (a CommInfo below), percentage slippage. This harness adds what backtrader
has no notion of, written from SEMANTICS.md directly: A-share price limits in exact decimal
arithmetic, suspended days, cancelled entries and retried exits, point-in-time membership,
lot-multiple "all in" sizing and the turtle's risk sizing and stop. Indicators are TA-Lib's.

Usage: bt_harness.py CASES.json  (a list of cases; prints a list of results)
case: {"data": csv, "strategy": name | "written" (with "source", a strategy in the
       language, its signals from xts.py), "params": {...}, "market": "cn"|"us", "capital": x,
       "costs": {"commission_rate", "min_commission", "stamp_duty", "slippage"},
       "price_limit": x | null, "member": [bool per bar] | null, "start": "YYYY-MM-DD" | null,
       "end": ... | null, "symbol": name, "rules": [{"from": date | null, "symbols": [...],
       "price_limit": x, "stamp_duty": x}, ...] | null}
  With "rules" (SEMANTICS section 12), the limit and stamp duty of a fill are the ones in
  force on the fill's date; "price_limit" (a universe row's), when given, holds on every date.
result: {"fills": [[date, "buy"|"sell", price, qty], ...], "final_equity": x, "bars": n}
"""
import json
import math
import sys
from decimal import ROUND_HALF_UP, Decimal

import backtrader as bt
import numpy as np
import pandas as pd
import talib


class Commission(bt.CommInfoBase):
    """Commission `max(notional * rate, minimum)` on every fill, stamp duty on sells."""

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("rate", 0.0),
        ("minimum", 0.0),
        ("stamp", 0.0),
    )

    def _getcommission(self, size, price, pseudoexec):
        notional = abs(size) * price
        fee = max(notional * self.p.rate, self.p.minimum)
        if size < 0:
            fee += notional * self.p.stamp
        return fee


def limit_price(close, limit, up):
    """close * (1 +- limit), half up to 0.01 in exact decimal arithmetic, from the shortest
    decimal form of both numbers."""
    c, l = Decimal(repr(float(close))), Decimal(repr(float(limit)))
    v = c * (1 + l if up else 1 - l)
    return float(v.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def schedule(rows, symbol, kind):
    """[(from, value)] of one kind of rule for `symbol`: the rows that match, in date order
    (rows of the same date: the later row stands); None from is "always"."""
    def matches(pattern):
        if pattern == "all":
            return True
        if pattern.endswith("*"):
            return symbol.startswith(pattern[:-1])
        return symbol == pattern
    steps = {}
    for r in rows:
        if r.get(kind) is not None and any(matches(p) for p in r["symbols"]):
            steps[r.get("from") or "0000-00-00"] = r[kind]
    return sorted(steps.items())


def in_force(steps, day):
    """The value of the latest step whose date is <= day, or None."""
    value = None
    for start, v in steps:
        if start <= day:
            value = v
    return value


def rules(strategy, p, o, h, l, c):
    """Per-bar enter/exit flags (NaN comparisons are False, as undefined reads must be)."""
    n = len(c)
    enter = np.zeros(n, dtype=bool)
    exit_ = np.zeros(n, dtype=bool)
    atr = None

    def cross(a, b, above):
        out = np.zeros(n, dtype=bool)
        with np.errstate(invalid="ignore"):
            if above:
                out[1:] = (a[1:] > b[1:]) & (a[:-1] <= b[:-1])
            else:
                out[1:] = (a[1:] < b[1:]) & (a[:-1] >= b[:-1])
        return out

    with np.errstate(invalid="ignore"):
        if strategy == "buy_and_hold":
            enter[:] = True
        elif strategy == "sma_cross":
            f, s = talib.SMA(c, p["fast"]), talib.SMA(c, p["slow"])
            enter, exit_ = cross(f, s, True), cross(f, s, False)
        elif strategy == "macd":
            m, sig, _ = talib.MACD(c, p["fast"], p["slow"], p["signal"])
            enter, exit_ = cross(m, sig, True), cross(m, sig, False)
        elif strategy == "bollinger":
            up, mid, low = talib.BBANDS(c, p["period"], p["k"], p["k"], 0)
            enter, exit_ = c < low, c > mid
        elif strategy == "rsi":
            r = talib.RSI(c, p["period"])
            enter, exit_ = r < p["lower"], r > p["upper"]
        elif strategy == "turtle":
            hi = talib.MAX(h, p["entry"])
            lo = talib.MIN(l, p["exit"])
            atr = talib.ATR(h, l, c, p["atr"])
            enter[1:] = (c[1:] > hi[:-1]) & ~np.isnan(atr[1:])
            exit_[1:] = c[1:] < lo[:-1]
        else:
            raise SystemExit(f"unknown strategy {strategy}")
    return enter, exit_, atr


class Harness(bt.Strategy):
    params = (("case", None), ("frame", None))

    def __init__(self):
        case, df = self.p.case, self.p.frame
        self.case = case
        self.o, self.h, self.l, self.c, self.v = (df[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close", "volume"))
        self.n = len(self.c)
        self.member = case.get("member") or [True] * self.n
        self.lot = 100.0 if case["market"] == "cn" else 1.0
        self.days = [d.date().isoformat() for d in df.index]
        self.limits = [None] * self.n
        self.stamps = [case["costs"]["stamp_duty"]] * self.n
        if case.get("rules") is not None:
            lim = schedule(case["rules"], case["symbol"], "price_limit")
            stamp = schedule(case["rules"], case["symbol"], "stamp_duty")
            fixed = case.get("price_limit")
            self.limits = [fixed if fixed is not None else in_force(lim, d) for d in self.days]
            if stamp:
                self.stamps = [in_force(stamp, d) or 0.0 for d in self.days]
        elif case["market"] == "cn":
            self.limits = [case.get("price_limit") or 0.10] * self.n
        self.costs = case["costs"]
        if case["strategy"] == "written":
            # A strategy in the language: its signals from the second implementation.
            import xts

            self.enter, self.exit = xts.signals(case["source"], case.get("params", {}), df)
            self.atr = None
        else:
            self.enter, self.exit, self.atr = rules(case["strategy"], case.get("params", {}), self.o, self.h, self.l, self.c)
        self.pending_entry = None  # signal bar of an entry to place at the next open
        self.pending_exit = False
        self.stop_level = -math.inf
        self.fills = []

    def commission(self, notional):
        return max(notional * self.costs["commission_rate"], self.costs["min_commission"])

    def all_in(self, cash, price):
        lots = math.floor(cash / (self.lot * price))
        while lots > 0:
            notional = lots * self.lot * price
            if notional + self.commission(notional) <= cash:
                break
            lots -= 1
        return lots * self.lot

    def can_fill(self, i, buy):
        if i == 0 or self.v[i] <= 0:
            return False
        limit = self.limits[i]
        if limit is None:
            return True
        if buy:
            return self.o[i] < limit_price(self.c[i - 1], limit, True)
        return self.o[i] > limit_price(self.c[i - 1], limit, False)

    def next_open(self):
        i = len(self.data) - 1
        if self.pending_entry is not None:
            signal, self.pending_entry = self.pending_entry, None
            if self.can_fill(i, True):
                price = self.o[i] * (1 + self.costs["slippage"])
                cash = self.broker.getcash()
                size = self.all_in(cash, price)
                if self.atr is not None and self.atr[signal] > 0:
                    p = self.case["params"]
                    size = min(size, self.lot * math.floor(cash * p["risk"] / self.atr[signal] / self.lot))
                if size > 0:
                    self.buy(size=size, exectype=bt.Order.Market)
                    if self.atr is not None:
                        self.stop_level = price - self.case["params"]["stop_atr"] * self.atr[signal]
        elif self.pending_exit and self.can_fill(i, False):
            self.pending_exit = False
            # The stamp duty in force on the day of this fill.
            self.broker.getcommissioninfo(self.data).p.stamp = self.stamps[i]
            self.sell(size=self.position.size, exectype=bt.Order.Market)
            self.stop_level = -math.inf

    def next(self):
        i = len(self.data) - 1
        if i + 1 >= self.n:
            return
        if self.position.size > 0:
            leaves = self.member[i] and not self.member[i + 1]
            if not self.pending_exit and (self.exit[i] or self.c[i] < self.stop_level or leaves):
                self.pending_exit = True
        elif self.enter[i] and self.member[i + 1]:
            self.pending_entry = i

    def notify_order(self, order):
        if order.status == order.Completed:
            side = "buy" if order.isbuy() else "sell"
            day = bt.num2date(order.executed.dt).date().isoformat()
            self.fills.append([day, side, order.executed.price, abs(order.executed.size), order.executed.comm])
        elif order.status in (order.Margin, order.Rejected, order.Canceled):
            raise RuntimeError(f"order {order.getstatusname()} on bar {len(self.data) - 1}")


def run(case):
    df = pd.read_csv(case["data"], parse_dates=["date"]).set_index("date")
    if case.get("start"):
        df = df[df.index >= pd.Timestamp(case["start"])]
    if case.get("end"):
        df = df[df.index <= pd.Timestamp(case["end"])]
    cerebro = bt.Cerebro(cheat_on_open=True, stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df, openinterest=None))
    cerebro.addstrategy(Harness, case=case, frame=df)
    broker = cerebro.broker
    broker.setcash(case["capital"])
    broker.set_checksubmit(False)
    costs = case["costs"]
    broker.addcommissioninfo(Commission(rate=costs["commission_rate"], minimum=costs["min_commission"], stamp=costs["stamp_duty"]))
    if costs["slippage"] > 0:
        broker.set_slippage_perc(costs["slippage"], slip_open=True, slip_limit=True, slip_match=True, slip_out=True)
    strat = cerebro.run()[0]
    return {"fills": strat.fills, "final_equity": broker.getvalue(), "bars": len(df)}


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    json.dump([run(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
