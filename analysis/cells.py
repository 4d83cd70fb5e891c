"""One cell of a report's tables: a paired difference with its interval (or each seed's values
below the pairs a test needs), pair counts, p-values, speed-ups, the table itself. The report and
the Optuna study's section both write their tables with these."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import compare
from analysis.stats import MIN_PAIRS
from worm_tune.usage import format_table


def pair_count(row: pd.Series | dict) -> str:
    """``20`` pairs, or ``20 (18 non-zero)`` when some tie: Wilcoxon counts only those that differ."""
    n, k = int(row["n_pairs"]), int(row["n_nonzero"])
    return str(n) if k == n else f"{n} ({k} non-zero)"


def family(row: pd.Series | dict) -> str:
    """How many tests the row's Holm correction spans."""
    size = int(row["family_size"])
    return "-" if size == 0 else f"{size} test" + ("s" if size > 1 else "")


def difference(row: pd.Series | dict, paired: pd.DataFrame, fmt: str) -> str:
    """The paired difference with its interval, or, below :data:`MIN_PAIRS` pairs, its mean and each
    seed's ``EarlyBird → variant`` values; from :data:`MIN_PAIRS` pairs on but below as many non-zero
    ones (no test), its interval and each seed's values (``fmt`` as for :func:`estimate`, its sign
    dropped for the values)."""
    n, k = int(row["n_pairs"]), int(row["n_nonzero"])
    if n == 0 or (n >= MIN_PAIRS and (k == 0 or k >= MIN_PAIRS)):  # all tied: the interval says it
        return estimate(row, "diff", fmt)
    mine = paired[(paired["setting"] == row["setting"]) & (paired["variant"] == row["variant"])]
    seeds, a, b, _ = compare.paired_values(mine, compare.METRIC[row["metric"]])
    one = fmt.lstrip("+")
    each = "; ".join(f"seed {s}: {value(x, one)} → {value(y, one)}" for s, x, y in zip(seeds, a, b, strict=True))
    return f"{estimate(row, 'diff', fmt)}: {each}"


def estimate(row: pd.Series | dict, prefix: str, fmt: str) -> str:
    """``mean [lo, hi] (n=k)``; ``-`` when nothing is known. ``%`` formats fractions as percent
    (``+%``: signed percentage points)."""
    mean, lo, hi, n = (row[f"{prefix}_{k}"] for k in ("mean", "lo", "hi", "n"))
    if not np.isfinite(mean):
        return "-"
    interval = f" [{value(lo, fmt)}, {value(hi, fmt)}]" if np.isfinite(lo) else ""
    return f"{value(mean, fmt)}{interval} (n={int(n)})"


def value(v: float, fmt: str) -> str:
    """One number: ``%`` as percent, ``+%`` as signed percentage points, else a format spec."""
    if fmt == "%":
        return f"{v:.2%}"
    return f"{100 * v:+.2f} pp" if fmt == "+%" else format(v, fmt)


def speedup(row: pd.Series | dict) -> str:
    if not np.isfinite(row["speedup"]):
        return "-"
    interval = f" [{row['speedup_lo']:.2f}, {row['speedup_hi']:.2f}]" if np.isfinite(row["speedup_lo"]) else ""
    return f"{row['speedup']:.2f}x{interval}"


def pvalue(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    return format_table(header, [[c.replace("|", "\\|") for c in row] for row in rows])
