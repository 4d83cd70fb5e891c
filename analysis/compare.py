"""Pairing trials and comparing methods: the numbers behind every table of the report.

A *setting* is everything a pair of trials shares: every config field but the method, the seed
and WORM's own knobs (``worm.*``), which EarlyBird ignores. A *variant* is a method with its WORM
knobs. Within a setting each WORM-family variant (worm, gradclip, greedy) is paired with
EarlyBird seed by seed: paired trials share the seed and so the initial weights and data order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import FINISHED
from analysis.stats import Estimate, bootstrap_mean, bootstrap_ratio, verdict, wilcoxon_p
from worm_tune.config import RUNTIME_FIELDS, field_types
from worm_tune.ticket.methods import BASELINE, METHODS

EB = METHODS[BASELINE].label
#: The methods compared with their EarlyBird pair: those that truncate gradients.
WORM_FAMILY = tuple(m.name for m in METHODS.values() if m.truncates)

#: Config fields that do not define a setting: what differs within a pair, and where a trial ran.
NOT_SETTING = frozenset({"method", "seed", "speed.loader", "speed.precision", "speed.channels_last", "speed.compile"})
#: Always named in a setting's label, in this order; other fields only when the sweep varies them.
LABELLED = {"model.arch": "", "data.dataset": "", "search.ratio": "p=", "search.threshold": "s="}


@dataclass(frozen=True)
class Metric:
    """A summary metric compared between methods, and which trials it is defined for.

    ``converged``: the search found its ticket (search cost); ``finished``: the trial ran to the
    end, converged or not; ``reached``: the retraining reached the target accuracy.
    """

    key: str
    label: str
    scope: str
    speedup: bool = False  # report EarlyBird's mean over the variant's as a speed-up


METRICS = (
    Metric("search_epochs", "search epochs", "converged", speedup=True),
    Metric("search_time", "search time (s)", "converged", speedup=True),
    Metric("search_flops", "search FLOPs", "converged", speedup=True),
    Metric("pre_prune_acc", "acc. before pruning", "finished"),
    Metric("post_prune_acc", "acc. right after pruning", "finished"),
    Metric("acc_after_1_retrain_epoch", "acc. after 1 retrain epoch", "finished"),
    Metric("epochs_to_target", "retrain epochs to target", "reached"),
    Metric("final_acc", "final acc.", "finished"),
    Metric("total_time", "total time (s)", "finished"),
)
METRIC = {m.key: m for m in METRICS}
NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)


def setting_fields(trials: pd.DataFrame) -> list[str]:
    """The config fields that define a setting (see the module docstring)."""
    return [
        k
        for k in field_types()
        if k in trials.columns and k not in NOT_SETTING and k not in RUNTIME_FIELDS and not k.startswith("worm.")
    ]


def label(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with ``setting`` and ``variant`` labels (and the keys they stand for) added."""
    out = trials.copy()
    fields = setting_fields(out)
    varying = [k for k in fields if out[k].astype(str).nunique() > 1 and k not in LABELLED]
    worm_varying = [k for k in out.columns if k.startswith("worm.") and out[k].astype(str).nunique() > 1]
    out["setting_key"] = out[fields].astype(str).agg("|".join, axis=1) if len(out) else pd.Series(dtype=str)
    out["setting"] = [
        " · ".join([*(f"{p}{_fmt(row[k])}" for k, p in LABELLED.items()), *(f"{k}={_fmt(row[k])}" for k in varying)])
        for _, row in out.iterrows()
    ]
    out["variant"] = [_variant(row, worm_varying) for _, row in out.iterrows()]
    return out


def _variant(row: pd.Series, worm_varying: Sequence[str]) -> str:
    method = row["method"]
    spec = METHODS.get(method)
    name = spec.label if spec else method
    if spec is None or not spec.truncates:
        return name
    knobs = [*spec.knobs, *(k for k in worm_varying if k not in ("worm.delta", "worm.factor"))]
    symbols = {"worm.delta": "δ", "worm.factor": "r"}
    return " ".join([name, *(f"{symbols.get(k, k)}={_fmt(row[k])}" for k in knobs)])


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- pairs -----------------------------------------------------------------------------------


def pairs(labelled: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, variant, seed) that has both an EarlyBird and a variant trial.

    Columns: ``setting``, ``variant``, ``seed``, ``eb_trial``, ``v_trial``, and for each metric
    ``eb_<key>`` and ``v_<key>`` (NaN where the trial is outside the metric's scope), plus the
    two statuses. A setting's EarlyBird trial is the partner of every variant's trial of its seed.
    """
    rows = []
    eb = labelled[labelled["method"] == BASELINE].drop_duplicates(["setting_key", "seed"])
    eb_by = {(r["setting_key"], r["seed"]): r for r in eb.to_dict("records")}
    others = labelled[labelled["method"].isin(WORM_FAMILY)].drop_duplicates(["setting_key", "variant", "seed"])
    for v in others.to_dict("records"):
        partner = eb_by.get((v["setting_key"], v["seed"]))
        if partner is None:
            continue
        row = {
            "setting": v["setting"],
            "variant": v["variant"],
            "seed": v["seed"],
            "eb_trial": partner["trial_id"],
            "v_trial": v["trial_id"],
            "eb_status": partner["status"],
            "v_status": v["status"],
        }
        for m in METRICS:
            row[f"eb_{m.key}"] = _scoped(partner, m)
            row[f"v_{m.key}"] = _scoped(v, m)
        rows.append(row)
    columns = ["setting", "variant", "seed", "eb_trial", "v_trial", "eb_status", "v_status"]
    columns += [f"{side}_{m.key}" for m in METRICS for side in ("eb", "v")]
    return pd.DataFrame(rows, columns=columns)


def _scoped(trial: dict[str, Any], metric: Metric) -> float:
    """The trial's value of the metric, or NaN when the metric is undefined for it."""
    status = trial["status"]
    if status not in FINISHED or (metric.scope == "converged" and status != "converged"):
        return math.nan
    return float(trial[metric.key])


# -- comparisons -----------------------------------------------------------------------------


def compare(labelled: pd.DataFrame, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per (setting, variant, metric): each method's mean and CI, the paired difference
    (variant minus EarlyBird) with its CI and Wilcoxon p, the speed-up, and the counts behind them.

    Each method's mean is over all its trials in scope (not only paired ones); the difference,
    p-value and speed-up are over the pairs where both trials are in scope. A variant whose setting
    has no EarlyBird trial gets no rows.
    """
    paired = pairs(labelled)
    rows = []
    for (setting, variant), group in labelled[labelled["method"].isin(WORM_FAMILY)].groupby(
        ["setting", "variant"], sort=True
    ):
        eb = labelled[(labelled["setting_key"] == group["setting_key"].iloc[0]) & (labelled["method"] == BASELINE)]
        if eb.empty:
            continue  # nothing to compare with (an Optuna search over WORM, say): the report lists it
        mine = paired[(paired["setting"] == setting) & (paired["variant"] == variant)]
        counts = {
            "eb_trials": len(eb),
            "v_trials": len(group),
            "eb_not_converged": int((eb["status"] == "not_converged").sum()),
            "v_not_converged": int((group["status"] == "not_converged").sum()),
            "eb_unfinished": int((~eb["status"].isin(FINISHED)).sum()),
            "v_unfinished": int((~group["status"].isin(FINISHED)).sum()),
            "seeds_paired": len(mine),
        }
        for m in METRICS:
            a, b = mine[f"eb_{m.key}"].to_numpy(float), mine[f"v_{m.key}"].to_numpy(float)
            both = np.isfinite(a) & np.isfinite(b)
            d = b[both] - a[both]
            diff = bootstrap_mean(d, n_boot, seed)
            p = wilcoxon_p(d)
            eb_est = bootstrap_mean([_scoped(t, m) for t in eb.to_dict("records")], n_boot, seed)
            v_est = bootstrap_mean([_scoped(t, m) for t in group.to_dict("records")], n_boot, seed)
            speed = bootstrap_ratio(a[both], b[both], n_boot, seed) if m.speedup else NO_ESTIMATE
            rows.append(
                {
                    "setting": setting,
                    "variant": variant,
                    "metric": m.key,
                    **_columns("eb", eb_est),
                    **_columns("v", v_est),
                    "n_pairs": int(both.sum()),
                    **_columns("diff", diff),
                    "p": p,
                    "verdict": verdict(int(both.sum()), d, p),
                    "speedup": speed.value,
                    "speedup_lo": speed.lo,
                    "speedup_hi": speed.hi,
                    **counts,
                }
            )
    columns = ["setting", "variant", "metric", "eb_mean", "eb_lo", "eb_hi", "eb_n", "v_mean", "v_lo", "v_hi", "v_n"]
    columns += ["n_pairs", "diff_mean", "diff_lo", "diff_hi", "diff_n", "p", "verdict", "speedup", "speedup_lo"]
    columns += ["speedup_hi", "eb_trials", "v_trials", "eb_not_converged", "v_not_converged", "eb_unfinished"]
    columns += ["v_unfinished", "seeds_paired"]
    return pd.DataFrame(rows, columns=columns)


def _columns(prefix: str, est: Estimate) -> dict[str, float]:
    return {f"{prefix}_mean": est.value, f"{prefix}_lo": est.lo, f"{prefix}_hi": est.hi, f"{prefix}_n": est.n}


def per_method(labelled: pd.DataFrame, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per (setting, variant): how its trials ended, and each metric's mean and CI over its trials in
    scope (the rows of the paper-style table; dense baselines included)."""
    rows = []
    for (setting, variant), group in labelled.groupby(["setting", "variant"], sort=True):
        row = {
            "setting": setting,
            "variant": variant,
            "method": group["method"].iloc[0],
            "trials": len(group),
            "converged": int((group["status"] == "converged").sum()),
            "not_converged": int((group["status"] == "not_converged").sum()),
            "finished": int(group["status"].isin((*FINISHED, "dense")).sum()),
            "reached_target": int(np.isfinite(group["epochs_to_target"].to_numpy(float)).sum()),
        }
        row["unfinished"] = row["trials"] - row["finished"]
        for m in METRICS:
            est = bootstrap_mean([_scoped_dense(t, m) for t in group.to_dict("records")], n_boot, seed)
            row.update(_columns(m.key, est))
        first = group.iloc[0]
        row.update({k: first[k] for k in setting_fields(labelled)})
        row.update({k: first[k] for k in labelled.columns if k.startswith("worm.")})
        rows.append(row)
    return pd.DataFrame(rows)


def _scoped_dense(trial: dict[str, Any], metric: Metric) -> float:
    """As :func:`_scoped`, where a dense trial (no search, so no search cost) counts as finished."""
    if trial["status"] == "dense":
        return math.nan if metric.scope == "converged" else float(trial[metric.key])
    return _scoped(trial, metric)
