"""A second implementation of a portfolio funded under point-in-time membership
(SEMANTICS.md section 5), written from the text with pandas and numpy, to check the engine's.

usage: pit_portfolio.py request.json

request: {"universe": path of the universe CSV (symbol, weight?, price_limit?, start_date?,
          end_date?), "initial": the batch's capital,
          "equity": path of a CSV of the batch's sleeves (symbol, params, date, cash, equity;
          every bar of every job in range)}

prints: {"capital": {symbol: its sleeve's capital},
         "portfolio": {params: {"dates": [ISO dates], "equity": [E(t)]}}}

Nothing here is shared with the engine: membership, segments, weights, sleeve capital and the
rebalancing are recomputed from the universe file and the sleeves' equity.
"""

import json
import sys

import numpy as np
import pandas as pd


def membership(universe: pd.DataFrame):
    """symbol -> (weight, [(start, end)]) with None for an open end; [] means always."""
    out = {}
    for row in universe.itertuples(index=False):
        row = row._asdict()
        weight = row.get("weight")
        weight = 1.0 if weight is None or pd.isna(weight) or weight == "" else float(weight)
        start = row.get("start_date")
        end = row.get("end_date")
        start = None if start is None or pd.isna(start) or start == "" else start
        end = None if end is None or pd.isna(end) or end == "" else end
        w, spells = out.setdefault(row["symbol"], (weight, []))
        if start is not None or end is not None:
            spells.append((start or "0000-01-01", end or "9999-12-31"))
    return out


def main():
    request = json.load(open(sys.argv[1]))
    initial = float(request["initial"])
    universe = pd.read_csv(request["universe"], dtype=str, keep_default_na=False)
    members = membership(universe)
    equity = pd.read_csv(request["equity"], dtype={"symbol": str, "params": str, "date": str})

    calendar = np.array(sorted(equity["date"].unique()))
    symbols = sorted(equity["symbol"].unique())
    raw = np.array([members[s][0] for s in symbols])
    w = raw / raw.sum()
    # member[i, t]: ISO dates compare as text.
    member = np.zeros((len(symbols), len(calendar)), dtype=bool)
    for i, s in enumerate(symbols):
        spells = members[s][1]
        if not spells:
            member[i, :] = True
        for a, b in spells:
            member[i, :] |= (calendar >= a) & (calendar <= b)

    starts = [0] + [
        t for t in range(1, len(calendar)) if (member[:, t] != member[:, t - 1]).any()
    ]
    bounds = list(zip(starts, starts[1:] + [len(calendar)]))

    # A sleeve's capital: initial * w_i / W(d_i), d_i its first member date.
    capital = np.empty(len(symbols))
    for i in range(len(symbols)):
        first = np.flatnonzero(member[i])
        d = first[0] if len(first) else None
        W = w[member[:, d]].sum() if d is not None else 1.0
        capital[i] = initial * w[i] / W

    result = {}
    for params, rows in equity.groupby("params"):
        # equity_i[t] on the calendar: carried over dates without a bar, cash before the first.
        grid = rows.pivot(index="symbol", columns="date", values="equity")
        grid = grid.reindex(index=symbols, columns=calendar).ffill(axis=1)
        values = grid.to_numpy(dtype=float, copy=True)
        for i in range(len(symbols)):
            values[i, np.isnan(values[i])] = capital[i]
        curve = np.empty(len(calendar))
        before_value = initial  # E(p)
        for a, b in bounds:
            m = member[:, a]
            W = w[m].sum()
            if W == 0:
                curve[a:b] = before_value
            else:
                base = values[:, a - 1] if a > 0 else capital
                v = before_value * w[m] / W
                curve[a:b] = (v[:, None] * values[m, a:b] / base[m, None]).sum(axis=0)
            before_value = curve[b - 1]
        result[params] = {"dates": list(calendar), "equity": curve.tolist()}

    print(json.dumps({
        "capital": dict(zip(symbols, capital.tolist())),
        "portfolio": result,
    }))


if __name__ == "__main__":
    main()
