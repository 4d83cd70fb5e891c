"""A ``final`` rerun's confirmation: the one pre-stated comparison of the sweep's pick with its
EarlyBird partner on fresh seeds, in words a reader takes as they are (``confirmed`` only for a
significant difference in the better direction; per-seed values where too few pairs differ to test).

One test, so no correction; anything else a rerun shows beside it is labelled exploratory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.compare import METRIC
from analysis.stats import ALPHA, MIN_PAIRS, bootstrap_mean, nonzero, wilcoxon_p
from worm_tune.tune.spaces import Objective

#: Shown beside the ranking metric when it is not the search length, WORM's point.
SECONDARY = "search_epochs"


def confirmation(
    pick: str,
    truncating: Mapping[int, Mapping[str, float]],
    partner_runs: Mapping[int, Mapping[str, float]],
    objective: Objective,
    sweep_seeds: set[int],
) -> list[str]:
    """The one pre-stated test of a ``final``: the pick (its summaries by seed) minus its EarlyBird
    partner on the ranking metric, paired by seed, a two-sided Wilcoxon test at :data:`ALPHA` with no
    correction (one test). Confirmed: significant, in the metric's better direction. Below
    :data:`MIN_PAIRS` non-zero differences (Wilcoxon drops zeros): per-seed values, no test. The
    search length, when not the ranking metric, follows as secondary (not part of the test)."""
    seeds, differences = paired(truncating, partner_runs, objective.metric)
    fresh = len(set(seeds) - sweep_seeds)
    where = (
        f"{len(seeds)} fresh seeds"
        if fresh == len(seeds)
        else f"{len(seeds)} seeds ({len(seeds) - fresh} of them the sweep's)"
    )
    head = f"confirmation on {where} (one pre-stated test): {pick} minus EarlyBird, "
    differing = nonzero(differences)
    if differing < MIN_PAIRS:
        values = per_seed(objective.metric, seeds, differences)
        lines = [
            f"{head}{objective.metric} per seed: {values}: too few pairs to test ({differing} non-zero < {MIN_PAIRS})"
        ]
    else:
        estimate, p = bootstrap_mean(differences), wilcoxon_p(differences)
        better = estimate.value > 0 if objective.mode == "max" else estimate.value < 0
        if p >= ALPHA:
            word = f"not confirmed (p={p:.2g})"
        else:
            word = "confirmed" if better else "not confirmed: EarlyBird is better"
        lines = [f"{head}{describe(objective.metric, estimate, p)}: {word}"]
    if objective.metric != SECONDARY:
        lines += [f"secondary: {line}" for line in comparison_lines(pick, truncating, partner_runs, SECONDARY)]
    return lines


def paired(
    a: Mapping[int, Mapping[str, float]], b: Mapping[int, Mapping[str, float]], metric: str
) -> tuple[list[int], list[float]]:
    """The seeds both sides have a finite ``metric`` for, and ``a - b`` on each."""
    seeds = sorted(s for s in a.keys() & b.keys() if all(math.isfinite(x[s].get(metric, math.nan)) for x in (a, b)))
    return seeds, [a[s][metric] - b[s][metric] for s in seeds]


def signed(metric: str, difference: float) -> str:
    """A difference as the report writes it: accuracies (fractions) in percentage points."""
    if metric in METRIC and METRIC[metric].accuracy:
        return f"{100 * difference:+.2f} pp"
    return f"{difference:+.3g}"


def per_seed(metric: str, seeds: Sequence[int], differences: Sequence[float]) -> str:
    return ", ".join(f"s{s} {signed(metric, d)}" for s, d in zip(seeds, differences, strict=True)) or "none"


def describe(metric: str, estimate: Any, p: float) -> str:
    interval = f"[{signed(metric, estimate.lo)}, {signed(metric, estimate.hi)}]"
    return f"{metric} {signed(metric, estimate.value)} {interval}, Wilcoxon p={p:.2g}"


def comparison_lines(
    name: str, a: Mapping[int, Mapping[str, float]], b: Mapping[int, Mapping[str, float]], metric: str
) -> list[str]:
    """``name`` minus EarlyBird on ``metric``: mean, interval and p, or per-seed values below the pairs a test needs."""
    seeds, differences = paired(a, b, metric)
    if nonzero(differences) < MIN_PAIRS:
        values = per_seed(metric, seeds, differences)
        return [f"{name} minus EarlyBird, {metric} per seed: {values} (too few non-zero pairs to test)"]
    return [f"{name} minus EarlyBird, {describe(metric, bootstrap_mean(differences), wilcoxon_p(differences))}"]
