"""A sequential sweep's stop (``--until``): why it stopped, and its anytime-valid intervals beside the classical ones.

The sweep's searcher looked at each variant's paired differences after every batch of seeds
(:func:`worm_tune.tune.until.look`). This recomputes those looks from the trials the store holds, in
the order the seeds were added, with the same function: the intervals the report shows are the
ones the sweep stopped on, and the seeds each variant needed are read from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import compare, plots
from analysis.cells import estimate, table
from analysis.load import Sweep
from worm_tune.confseq import betting_cs
from worm_tune.tune.until import ALPHA, METRIC, Look, Until, epoch_bounds, look, needed_text, seeds_needed

_KEY = "  "  # joins a setting and a variant into the one name a look knows a variant by


def differences(labelled: pd.DataFrame, order: list[int]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each (setting, variant)'s differences to EarlyBird in :data:`METRIC`, over every pair with both values
    (a search that hit its budget counts its budget), in the order the seeds were added; and the largest
    difference its search lengths allow."""
    rank = {seed: i for i, seed in enumerate(order)}
    done = labelled[labelled[METRIC].notna() & labelled["seed"].isin(rank)] if len(labelled) else labelled
    eb = {(r["setting_key"], r["seed"]): r[METRIC] for r in done[done["method"] == compare.BASELINE].to_dict("records")}
    diffs: dict[str, list[float]] = {}
    bounds: dict[str, float] = {}
    variants = labelled[labelled["method"].isin(compare.TRUNCATING)]
    for row in sorted(variants.to_dict("records"), key=lambda r: rank.get(r["seed"], len(rank))):
        key = f"{row['setting']}{_KEY}{row['variant']}"
        low, high = epoch_bounds(int(row["search.window"]), int(row["search.max_epochs"]), str(row["search.rules"]))
        bounds[key] = float(high - low)
        diffs.setdefault(key, [])
        partner = eb.get((row["setting_key"], row["seed"]))
        if row["seed"] in rank and pd.notna(row[METRIC]) and partner is not None:
            diffs[key].append(float(row[METRIC]) - float(partner))
    return diffs, bounds


def looks(sweep: Sweep, labelled: pd.DataFrame) -> list[Look]:
    """The sweep's looks, recomputed: one per number of paired seeds it looked at."""
    assert sweep.until is not None
    rule = Until.parse(sweep.until)
    out = []
    for seeds in sweep.looks:
        diffs, bounds = differences(labelled, list(sweep.seed_order[:seeds]))
        out.append(look(diffs, bounds, rule, seeds))
    return out


def section(sweep: Sweep, labelled: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The report's section on the stop: the rule, why the sweep stopped, and per variant its last
    anytime-valid interval beside the classical one and the paired seeds it needed."""
    assert sweep.until is not None
    rule = Until.parse(sweep.until)
    taken = looks(sweep, labelled) if sweep.looks else []
    head = (
        f"The sweep added paired seeds a batch at a time until {rule.describe()} (`--until {rule}`), looking after "
        f"{', '.join(str(n) for n in sweep.looks) or 'no'} paired seeds: "
        f"**{sweep.stop or 'it has not stopped (it is running, or was interrupted: --resume continues it)'}**."
    )
    if not taken:
        return f"## Sequential stop: anytime-valid intervals\n\n{head}\n"
    needed = seeds_needed(taken)
    k = len(taken[-1].intervals)
    epochs = comparisons[comparisons["metric"] == METRIC] if len(comparisons) else comparisons
    classical = {f"{r['setting']}{_KEY}{r['variant']}": r for r in epochs.to_dict("records")}
    header = ["setting", "variant", "pairs", "difference", "anytime-valid 95% (sequential)", "BCa 95% (fixed n)"]
    header += ["holds", "seeds needed"]
    rows = []
    shown = {key: i for i, key in enumerate(classical)}  # the order of the tables above
    for key, interval in sorted(taken[-1].intervals.items(), key=lambda item: shown.get(item[0], len(shown))):
        setting, variant = key.split(_KEY)
        bca = classical.get(key)
        rows.append(
            [
                setting,
                variant,
                str(interval.n),
                f"{interval.mean:+.2f}" if interval.n else "-",
                f"[{interval.low:+.2f}, {interval.high:+.2f}]",
                estimate(bca, "diff", "+.2f") if bca is not None else "-",
                "yes" if interval.holds else "no",
                needed_text(needed[key], taken[-1].seeds),
            ]
        )
    note = (
        f"Difference: the mean over every pair of its variant's search epochs minus {compare.EB}'s (a search that "
        "hit its budget counts its budget). Anytime-valid: the betting confidence sequence of Waudby-Smith and "
        'Ramdas ("Estimating means of bounded random variables by betting", JRSS-B 2024) for a mean bounded by '
        "what search lengths allow (from a full window to the budget, either way), running-intersected, at "
        f"{ALPHA:g} / {k} for each of the {k} variants (Bonferroni): all of them cover their means together with "
        "probability at least 95% at every look, so at the one the sweep stopped on, whichever that was. BCa "
        "(fixed n): the bootstrap interval of the tables above, over the pairs where both searches converged; it "
        "is valid for a number of seeds fixed in advance, not for one the data chose, and is shown for "
        "comparison only. Seeds needed: the paired seeds at the first look whose interval met the rule."
    )
    return f"## Sequential stop: anytime-valid intervals\n\n{head}\n\n{table(header, rows)}\n\n{note}\n"


#: The report's figure of the intervals over the seeds.
FIGURE = "sequential.png"


def plot(sweep: Sweep, labelled: pd.DataFrame, path: Path) -> Path | None:
    """Each variant's anytime-valid interval after every pair (as :func:`look` computes it at a look, at
    the same simultaneous level), with the sweep's looks marked."""
    assert sweep.until is not None
    rule = Until.parse(sweep.until)
    diffs, bounds = differences(labelled, list(sweep.seed_order))
    level = ALPHA / max(len(diffs), 1)
    paths = {}
    for key, values in sorted(diffs.items()):
        setting, variant = key.split(_KEY)
        frame = pd.DataFrame(
            {"n": np.arange(1, len(values) + 1), "mean": np.cumsum(values) / np.arange(1, len(values) + 1)}
        )
        if len(values):
            frame["low"], frame["high"] = betting_cs(values, -bounds[key], bounds[key], alpha=level)
        paths[f"{variant}\n{setting}"] = frame
    return plots.confidence_sequences(paths, sweep.looks, rule.value if rule.kind == "decided" else 0.0, path)
