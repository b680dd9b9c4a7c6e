"""A second implementation of the strategy language (SEMANTICS.md section 13), written from
the text with numpy, pandas and TA-Lib, to check the engine's signals bar by bar.

The source is parsed here with the same grammar (docs/strategy-language.md) into a tree and
evaluated by walking it over whole columns; nothing is passed to `eval`, and only the
functions in FUNCTIONS can be called. Position state (`entry_price`, `bars_held`, `cash`,
`at_entry`) is not implemented: the generated strategies this checks do not use it.

Usage: xts.py REQUEST.json, a list of {"source", "params": {...}, "data": csv,
       "start": date | null, "end": date | null}
Prints a list of {"entry": [0/1 per bar], "exit": [0/1 per bar], "fragile_entry": [...],
"fragile_exit": [...]}: a bar is fragile where the signal was decided by comparing two
numbers within 1e-9 of each other (or computed from such a decision), which two correct
implementations may round to opposite sides.
"""
import json
import math
import re
import sys

import numpy as np
import pandas as pd
import talib

NAN = float("nan")
TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+(?:\.(?!\.)\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|(?P<id>[A-Za-z_]\w*)"
    r"|(?P<sym><=|>=|==|!=|\.\.|[()+\-*/<>,:=]))"
)
COLUMNS = ("open", "high", "low", "close", "volume")


def tokens(line):
    out, at = [], 0
    line = line.split("#", 1)[0]
    while at < len(line.rstrip()):
        m = TOKEN.match(line, at)
        if not m or m.end() == at:
            raise SyntaxError(f"unexpected text {line[at:]!r}")
        at = m.end()
        kind = m.lastgroup
        out.append((kind, float(m.group(kind)) if kind == "num" else m.group(kind)))
    return out


class Parser:
    """Precedence climbing over one statement's tokens: or < and < not < comparison <
    + - < * / < unary - < calls and atoms."""

    def __init__(self, toks):
        self.toks, self.i = toks, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, value=None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise SyntaxError(f"expected {value!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def expr(self):
        lhs = self.conj()
        while self.peek() == ("id", "or"):
            self.take()
            lhs = ("or", lhs, self.conj())
        return lhs

    def conj(self):
        lhs = self.neg()
        while self.peek() == ("id", "and"):
            self.take()
            lhs = ("and", lhs, self.neg())
        return lhs

    def neg(self):
        if self.peek() == ("id", "not"):
            self.take()
            return ("not", self.neg())
        return self.comparison()

    def comparison(self):
        lhs = self.additive()
        if self.peek()[1] in ("<", "<=", ">", ">=", "==", "!="):
            op = self.take()[1]
            return (op, lhs, self.additive())
        return lhs

    def additive(self):
        lhs = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            lhs = (op, lhs, self.term())
        return lhs

    def term(self):
        lhs = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            lhs = (op, lhs, self.unary())
        return lhs

    def unary(self):
        if self.peek()[1] == "-":
            self.take()
            return ("neg", self.unary())
        return self.atom()

    def atom(self):
        kind, value = self.take()
        if kind == "num":
            return ("num", value)
        if value == "(":
            e = self.expr()
            self.take(")")
            return e
        if kind == "id":
            if value in ("true", "false"):
                return ("num", 1.0 if value == "true" else 0.0)
            if self.peek()[1] == "(":
                self.take()
                args = []
                while self.peek()[1] != ")":
                    args.append(self.expr())
                    if self.peek()[1] == ",":
                        self.take()
                self.take(")")
                return ("call", value, args)
            return ("name", value)
        raise SyntaxError(f"unexpected {value!r}")


def parse(source):
    """(params with defaults, lets, entry, exit) of a source."""
    params, lets, entry, exit_ = {}, [], None, None
    for line in source.splitlines():
        toks = tokens(line)
        if not toks:
            continue
        head = toks[0][1]
        if head == "strategy":
            continue
        if head == "param":
            # param NAME : TYPE = [-] DEFAULT [in LOW .. HIGH]
            sign, at = (-1.0, 6) if toks[5][1] == "-" else (1.0, 5)
            params[toks[1][1]] = (toks[3][1], sign * toks[at][1])
            continue
        if head == "rule":
            continue
        if head == "let":
            p = Parser(toks[3:])
            lets.append((toks[1][1], p.expr()))
        elif head in ("entry", "exit"):
            p = Parser(toks[2:])
            if head == "entry":
                entry = p.expr()
            else:
                exit_ = p.expr()
        else:
            raise SyntaxError(f"unsupported statement {head!r}")
        if p.i != len(p.toks):
            raise SyntaxError(f"trailing tokens in {line!r}")
    return params, lets, entry, exit_


def finite(x):
    x = np.asarray(x, dtype=float)
    with np.errstate(all="ignore"):
        return np.where(np.isfinite(x), x, NAN)


def runs(x, kernel, *more):
    """A window kernel on each run of bars where every input is present."""
    inputs = [x, *more]
    missing = np.zeros(len(x), dtype=bool)
    for v in inputs:
        missing |= np.isnan(v)
    out = np.full(len(x), NAN)
    t, n = 0, len(x)
    while t < n:
        if missing[t]:
            t += 1
            continue
        s = t
        while t < n and not missing[t]:
            t += 1
        out[s:t] = kernel(*[v[s:t] for v in inputs])
    return out


def recursive(kernel, *inputs):
    """A recursive kernel from the first bar with every input present to the first later gap."""
    n = len(inputs[0])
    missing = np.zeros(n, dtype=bool)
    for v in inputs:
        missing |= np.isnan(v)
    out = np.full(n, NAN)
    present = np.flatnonzero(~missing)
    if len(present) == 0:
        return out
    s = present[0]
    gaps = np.flatnonzero(missing[s:])
    e = s + gaps[0] if len(gaps) else n
    out[s:e] = kernel(*[np.ascontiguousarray(v[s:e]) for v in inputs])
    return out


def talib_or_nan(f, x, *args):
    """TA-Lib's function, all missing when the input is shorter than its window."""
    try:
        return f(x, *args)
    except Exception:
        return np.full(len(x), NAN)


def arg_extreme(x, n, better):
    out = np.full(len(x), NAN)
    for t in range(n - 1, len(x)):
        best = t
        for i in range(t - 1, t - n, -1):
            if better(x[i], x[best]):
                best = i
        out[t] = t - best
    return out


def correl(x, y, n):
    out = talib_or_nan(talib.CORREL, x, y, n)
    # TA-Lib writes 0 where the variances' product is below 1e-8; the language says missing.
    return np.where(out == 0.0, NAN, out)


def cross(a, b, above):
    out = np.zeros(len(a), dtype=bool)
    with np.errstate(invalid="ignore"):
        if above:
            out[1:] = (a[1:] > b[1:]) & (a[:-1] <= b[:-1])
        else:
            out[1:] = (a[1:] < b[1:]) & (a[:-1] >= b[:-1])
    return out


def window(f):
    return lambda x, n: runs(x, lambda v: talib_or_nan(f, v, n))


FUNCTIONS = {
    "sum": window(talib.SUM),
    "mean": window(talib.SMA),
    "sma": window(talib.SMA),
    "bbands_middle": window(talib.SMA),
    "std": lambda x, n: runs(x, lambda v: talib_or_nan(lambda a, k: talib.STDDEV(a, k, 1.0), v, n)),
    "ts_min": window(talib.MIN),
    "ts_max": window(talib.MAX),
    "argmax": lambda x, n: runs(x, lambda v: arg_extreme(v, n, lambda a, b: a > b)),
    "argmin": lambda x, n: runs(x, lambda v: arg_extreme(v, n, lambda a, b: a < b)),
    "rank": lambda x, n: runs(x, lambda v: pd.Series(v).rolling(n).rank(pct=True).to_numpy()),
    "corr": lambda x, y, n: runs(x, lambda a, b: correl(a, b, n), y),
    "bbands_upper": lambda x, n, k: runs(x, lambda v: talib_or_nan(lambda a, m: talib.BBANDS(a, m, k, k, 0)[0], v, n)),
    "bbands_lower": lambda x, n, k: runs(x, lambda v: talib_or_nan(lambda a, m: talib.BBANDS(a, m, k, k, 0)[2], v, n)),
    "ema": lambda x, n: recursive(lambda v: talib_or_nan(talib.EMA, v, n), x),
    "rsi": lambda x, n: recursive(lambda v: talib_or_nan(talib.RSI, v, n), x),
    "atr": lambda h, l, c, n: recursive(lambda a, b, d: talib_or_nan(lambda p, q: talib.ATR(p, q, d, n), a, b), h, l, c),
    "macd": lambda x, f, s, g: recursive(lambda v: talib_or_nan(lambda a, k: talib.MACD(a, f, s, k)[0], v, g), x),
    "macd_signal": lambda x, f, s, g: recursive(lambda v: talib_or_nan(lambda a, k: talib.MACD(a, f, s, k)[1], v, g), x),
}
# How many leading arguments are series; the rest are fixed numbers.
SERIES_ARGS = {"corr": 2, "atr": 3}


# Two implementations of the same arithmetic may round differently in the last bits (TA-Lib's
# builds fuse some multiply-adds): a comparison whose sides are this close can go either way.
NEAR = 1e-9


class Evaluator:
    """Evaluates a tree over whole columns. Each value comes with the bars where it is
    fragile: decided by a comparison of two nearly equal numbers, or computed from such a
    decision (a window or recursion from the first fragile bar on)."""

    def __init__(self, params, lets, frame):
        self.n = len(frame)
        self.params, self.lets, self.frame = params, dict(lets), frame
        self.memo = {}

    def series(self, v):
        return np.full(self.n, float(v)) if np.ndim(v) == 0 else v

    def none(self):
        return np.zeros(self.n, dtype=bool)

    def onward(self, fragile):
        """Fragile from the first fragile bar on (what a window or recursion spreads)."""
        out = self.none()
        hits = np.flatnonzero(fragile)
        if len(hits):
            out[hits[0]:] = True
        return out

    def fixed(self, node):
        v, _ = self.eval(node)
        if np.ndim(v) != 0:
            raise ValueError("a window must be fixed for the run")
        return v

    def eval(self, node):
        kind = node[0]
        if kind == "num":
            return node[1], self.none()
        if kind == "name":
            name = node[1]
            if name in self.params:
                return self.params[name], self.none()
            if name in COLUMNS:
                return self.frame[name].to_numpy(dtype=float), self.none()
            if name not in self.memo:
                self.memo[name] = self.eval(self.lets[name])
            return self.memo[name]
        if kind == "neg":
            v, f = self.eval(node[1])
            return -v, f
        if kind == "not":
            v, f = self.eval(node[1])
            return np.logical_not(v), f
        if kind in ("and", "or"):
            (a, fa), (b, fb) = self.eval(node[1]), self.eval(node[2])
            return (np.logical_and(a, b) if kind == "and" else np.logical_or(a, b)), fa | fb
        if kind in ("+", "-", "*", "/"):
            (a, fa), (b, fb) = self.eval(node[1]), self.eval(node[2])
            with np.errstate(all="ignore"):
                a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
                v = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[kind](a, b)
            v = finite(v)
            return (float(v) if v.ndim == 0 else v), fa | fb
        if kind in ("<", "<=", ">", ">=", "==", "!="):
            (a, fa), (b, fb) = self.eval(node[1]), self.eval(node[2])
            a, b = np.asarray(a, float), np.asarray(b, float)
            with np.errstate(invalid="ignore"):
                near = np.abs(a - b) <= NEAR * np.maximum(np.abs(a), np.abs(b))
                if kind == "!=":
                    v = (a != b) & ~np.isnan(a) & ~np.isnan(b)
                else:
                    v = {"<": np.less, "<=": np.less_equal, ">": np.greater,
                         ">=": np.greater_equal, "==": np.equal}[kind](a, b)
            return v, fa | fb | (near & ~np.isnan(a) & ~np.isnan(b))
        if kind == "call":
            return self.call(node[1], node[2])
        raise ValueError(f"unknown node {kind}")

    def call(self, name, args):
        if name == "if":
            (c, fc), (a, fa), (b, fb) = (self.eval(x) for x in args)
            return np.where(c, a, b), fc | fa | fb
        if name in ("abs", "sign", "log"):
            x, f = self.eval(args[0])
            x = np.asarray(x, dtype=float)
            with np.errstate(all="ignore"):
                v = {"abs": np.abs, "sign": np.sign,
                     "log": lambda y: np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), NAN)}[name](x)
            # `sign` decides on a comparison with 0.
            if name == "sign":
                f = f | (np.abs(x) <= NEAR)
            return finite(v), f
        if name in ("pow", "min", "max"):
            (a, fa), (b, fb) = (self.eval(x) for x in args)
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            with np.errstate(all="ignore"):
                v = {"pow": np.power, "min": np.minimum, "max": np.maximum}[name](a, b)
            return finite(v), fa | fb
        if name == "defined":
            v, f = self.eval(args[0])
            return ~np.isnan(self.series(v)), f
        if name in ("cross_above", "cross_below"):
            (a, fa), (b, fb) = (self.eval(x) for x in args)
            a, b = self.series(a), self.series(b)
            with np.errstate(invalid="ignore"):
                near = np.abs(a - b) <= NEAR * np.maximum(np.abs(a), np.abs(b))
            f = fa | fb | near
            f[1:] |= f[:-1]
            return cross(a, b, name == "cross_above"), f
        fragile = self.none()
        if name in ("delay", "delta"):
            v, fragile = self.eval(args[0])
            x, k = self.series(v), int(self.fixed(args[1]))
            before = np.full(self.n, NAN)
            if k < self.n:
                before[k:] = x[: self.n - k]
            shifted = self.none()
            shifted[k:] = fragile[: self.n - k]
            return (before if name == "delay" else finite(x - before)), fragile | shifted
        count = SERIES_ARGS.get(name, 1)
        series = []
        for a in args[:count]:
            v, f = self.eval(a)
            series.append(np.ascontiguousarray(self.series(v), dtype=float))
            fragile |= f
        rest = [self.fixed(a) for a in args[count:]]
        rest = [int(v) if float(v).is_integer() else v for v in rest]
        out = FUNCTIONS[name](*series, *rest)
        # Ranks and extremes decide on comparisons inside their windows.
        if name in ("rank", "argmin", "argmax", "ts_min", "ts_max"):
            fragile = fragile | self.ties(series[0], int(rest[0]))
        return out, self.onward(fragile)

    def ties(self, x, n):
        """Bars whose window holds two nearly equal values."""
        out = self.none()
        for t in range(n - 1, self.n):
            w = np.sort(x[t - n + 1: t + 1])
            w = w[~np.isnan(w)]
            if len(w) > 1:
                gaps = np.diff(w)
                out[t] = bool(np.any((gaps > 0) & (gaps <= NEAR * np.maximum(np.abs(w[1:]), np.abs(w[:-1])))))
        return out


def signals(source, params, frame, fragile=False):
    declared, lets, entry, exit_ = parse(source)
    values = {}
    for name, (kind, default) in declared.items():
        v = float(params.get(name, default))
        values[name] = int(v) if kind == "int" else v
    ev = Evaluator(values, lets, frame)
    n = len(frame)

    def truth(v):
        v = np.asarray(v)
        return np.full(n, bool(v)) if v.ndim == 0 else v.astype(bool)

    (e, fe), (x, fx) = ev.eval(entry), ev.eval(exit_)
    if fragile:
        return truth(e), truth(x), fe, fx
    return truth(e), truth(x)


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = []
    for case in cases:
        frame = pd.read_csv(case["data"])
        if case.get("start"):
            frame = frame[frame["date"] >= case["start"]]
        if case.get("end"):
            frame = frame[frame["date"] <= case["end"]]
        frame = frame.reset_index(drop=True)
        entry, exit_, fe, fx = signals(case["source"], case.get("params", {}), frame, fragile=True)
        out.append({"entry": entry.astype(int).tolist(), "exit": exit_.astype(int).tolist(),
                    "fragile_entry": fe.astype(int).tolist(), "fragile_exit": fx.astype(int).tolist()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
