"""Pairing trials and comparing methods: the numbers behind every table of the report.

A *setting* is everything a pair of trials shares: every config field but the method, the seed,
WORM's own knobs (``worm.*``), which EarlyBird ignores, and where and how the arithmetic ran. A
*variant* is a method with its WORM knobs. Within a setting each truncating variant (worm, gradclip,
greedy) is paired with EarlyBird seed by seed: paired trials share the seed and so the initial
weights and data order.

Wall time is compared only over pairs that ran side by side on one node (:func:`ran_together`):
the same seed gives the same arithmetic, but not the same machine load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import FINISHED
from analysis.stats import N_BOOT, Estimate, bootstrap_mean, bootstrap_ratio, verdict, wilcoxon_p
from worm_tune import metrics
from worm_tune.config import PAIR_FREE_FIELDS, TRUNCATION_FIELDS, field_types
from worm_tune.ticket.methods import BASELINE, METHODS

EB = METHODS[BASELINE].label
#: The methods compared with their EarlyBird pair: those that truncate gradients.
TRUNCATING = tuple(m.name for m in METHODS.values() if m.truncates)

#: Config fields that do not define a setting: what a pair may differ in, and what pairs it (the seed).
NOT_SETTING = PAIR_FREE_FIELDS | {"seed"}
#: Always named in a setting's label, in this order; other fields only when the sweep varies them.
LABELLED = {"model.arch": "", "data.dataset": "", "search.ratio": "p=", "search.threshold": "s="}
#: A pair ran side by side when its trials shared a node for at least this fraction of the longer
#: trial's run. Then both saw the same machine load (other trials, memory bandwidth, clocks) for most
#: of their time, and their wall times differ by the method; trials run one after the other, or on
#: different machines, can differ in wall time by more than any method does. Half is the least
#: overlap at which the shared time outweighs the time either ran under a load the other did not see.
MIN_OVERLAP = 0.5


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
    paired: bool = True  # False: only truncating methods have it, so there is no difference to EarlyBird

    @property
    def timing(self) -> bool:
        """Wall time: compared over pairs that ran side by side only."""
        return self.key in metrics.TIMING


#: Search cost first in epochs and FLOPs, the deterministic measures; wall time after them.
METRICS = (
    Metric("search_epochs", "search epochs", "converged", speedup=True),
    Metric("search_flops", "search FLOPs", "converged", speedup=True),
    Metric("search_time", "search time (s)", "converged", speedup=True),
    Metric("trigger_epoch", "trigger epoch", "finished", paired=False),
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
    return [k for k in field_types() if k in trials.columns and k not in NOT_SETTING]


def label(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with ``setting`` and ``variant`` labels (and the keys they stand for) added."""
    out = trials.copy()
    fields = setting_fields(out)
    varying = [k for k in fields if out[k].astype(str).nunique() > 1 and k not in LABELLED]
    worm_varying = [k for k in TRUNCATION_FIELDS if k in out.columns and out[k].astype(str).nunique() > 1]
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
    return " ".join([name, *(f"{symbols.get(k, k.removeprefix('worm.'))}={_fmt(row[k])}" for k in knobs)])


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- pairs -----------------------------------------------------------------------------------


def pairs(labelled: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, variant, seed) that has both an EarlyBird and a variant trial, in that order.

    Columns: ``setting``, ``variant``, ``seed``, ``eb_trial``, ``v_trial``, the two statuses,
    ``concurrent`` (the two ran side by side, :func:`ran_together`), and for each metric
    ``eb_<key>`` and ``v_<key>`` (NaN where the trial is outside the metric's scope). A setting's
    EarlyBird trial is the partner of every variant's trial of its seed.
    """
    rows = []
    eb = labelled[labelled["method"] == BASELINE].drop_duplicates(["setting_key", "seed"])
    eb_by = {(r["setting_key"], r["seed"]): r for r in eb.to_dict("records")}
    others = labelled[labelled["method"].isin(TRUNCATING)].drop_duplicates(["setting_key", "variant", "seed"])
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
            "concurrent": ran_together(partner, v),
        }
        for m in METRICS:
            row[f"eb_{m.key}"] = _scoped(partner, m)
            row[f"v_{m.key}"] = _scoped(v, m)
        rows.append(row)
    columns = ["setting", "variant", "seed", "eb_trial", "v_trial", "eb_status", "v_status", "concurrent"]
    columns += [f"{side}_{m.key}" for m in METRICS for side in ("eb", "v")]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["setting", "variant", "seed"], kind="stable").reset_index(drop=True)


def ran_together(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two trials ran on the same (known) node with their runs, ``[started_at, ended_at]``,
    overlapping for at least :data:`MIN_OVERLAP` of the longer one."""
    node = a.get("node_id")
    if not isinstance(node, str) or not node or node != b.get("node_id"):
        return False
    times = [float(t.get(k, math.nan)) for t in (a, b) for k in ("started_at", "ended_at")]
    if not all(math.isfinite(t) for t in times):
        return False
    start_a, end_a, start_b, end_b = times
    longer = max(end_a - start_a, end_b - start_b)
    return longer > 0 and min(end_a, end_b) - max(start_a, start_b) >= MIN_OVERLAP * longer


def paired_values(mine: pd.DataFrame, metric: Metric) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The pairs of ``mine`` (rows of :func:`pairs`) a metric compares: their seeds, EarlyBird's and the
    variant's values, and how many pairs had both trials in scope before the side-by-side rule
    (equal to the number compared except for wall time)."""
    a, b = mine[f"eb_{metric.key}"].to_numpy(float), mine[f"v_{metric.key}"].to_numpy(float)
    both = np.isfinite(a) & np.isfinite(b)
    in_scope = int(both.sum())
    if metric.timing:
        both &= mine["concurrent"].to_numpy(bool)
    return mine["seed"].to_numpy()[both], a[both], b[both], in_scope


def _scoped(trial: dict[str, Any], metric: Metric) -> float:
    """The trial's value of the metric, or NaN when the metric is undefined for it."""
    status = trial["status"]
    if status not in FINISHED or (metric.scope == "converged" and status != "converged"):
        return math.nan
    return float(trial[metric.key])


# -- comparisons -----------------------------------------------------------------------------


def compare(labelled: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (setting, variant, metric): each method's mean and CI, the paired difference
    (variant minus EarlyBird) with its CI and Wilcoxon p, the speed-up, and the counts behind them.

    Each method's mean is over all its trials in scope (not only paired ones); the difference,
    p-value and speed-up are over the pairs where both trials are in scope (``n_in_scope``) and, for
    wall time, ran side by side (``n_pairs``). Intervals and p-values need
    :data:`~analysis.stats.MIN_PAIRS` values; below that they are NaN. A metric only the variant
    has (``trigger_epoch``) gets its mean and no comparison. A variant whose setting has no
    EarlyBird trial gets no rows.
    """
    paired = pairs(labelled)
    rows = []
    for (setting, variant), trials in labelled[labelled["method"].isin(TRUNCATING)].groupby(
        ["setting", "variant"], sort=True
    ):
        eb = labelled[(labelled["setting_key"] == trials["setting_key"].iloc[0]) & (labelled["method"] == BASELINE)]
        if eb.empty:
            continue  # nothing to compare with (an Optuna search over WORM, say): the report lists it
        mine = paired[(paired["setting"] == setting) & (paired["variant"] == variant)]
        counts = {
            "eb_trials": len(eb),
            "v_trials": len(trials),
            "eb_not_converged": int((eb["status"] == "not_converged").sum()),
            "v_not_converged": int((trials["status"] == "not_converged").sum()),
            "eb_unfinished": int((~eb["status"].isin(FINISHED)).sum()),
            "v_unfinished": int((~trials["status"].isin(FINISHED)).sum()),
            "seeds_paired": len(mine),
        }
        for m in METRICS:
            v_est = bootstrap_mean([_scoped(t, m) for t in trials.to_dict("records")], n_boot, seed)
            eb_est, diff, speed, p, d, in_scope = NO_ESTIMATE, NO_ESTIMATE, NO_ESTIMATE, math.nan, np.array([]), 0
            word = f"not paired: {EB} has none"
            if m.paired:
                _, a, b, in_scope = paired_values(mine, m)
                d = b - a
                p = wilcoxon_p(d)
                word = verdict(len(d), d, p)
                eb_est = bootstrap_mean([_scoped(t, m) for t in eb.to_dict("records")], n_boot, seed)
                diff = bootstrap_mean(d, n_boot, seed)
                speed = bootstrap_ratio(a, b, n_boot, seed) if m.speedup else NO_ESTIMATE
            rows.append(
                {
                    "setting": setting,
                    "variant": variant,
                    "metric": m.key,
                    **_columns("eb", eb_est),
                    **_columns("v", v_est),
                    "n_pairs": len(d),
                    "n_in_scope": in_scope,
                    **_columns("diff", diff),
                    "p": p,
                    "verdict": word,
                    "speedup": speed.value,
                    "speedup_lo": speed.lo,
                    "speedup_hi": speed.hi,
                    **counts,
                }
            )
    columns = ["setting", "variant", "metric", "eb_mean", "eb_lo", "eb_hi", "eb_n", "v_mean", "v_lo", "v_hi", "v_n"]
    columns += ["n_pairs", "n_in_scope", "diff_mean", "diff_lo", "diff_hi", "diff_n", "p", "verdict", "speedup"]
    columns += ["speedup_lo", "speedup_hi", "eb_trials", "v_trials", "eb_not_converged", "v_not_converged"]
    columns += ["eb_unfinished", "v_unfinished", "seeds_paired"]
    return pd.DataFrame(rows, columns=columns)


def _columns(prefix: str, est: Estimate) -> dict[str, float]:
    return {f"{prefix}_mean": est.value, f"{prefix}_lo": est.lo, f"{prefix}_hi": est.hi, f"{prefix}_n": est.n}


def per_method(labelled: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (setting, variant): how its trials ended, and each metric's mean and CI over its trials in
    scope (the rows of the paper-style table; dense baselines included)."""
    rows = []
    for (setting, variant), trials in labelled.groupby(["setting", "variant"], sort=True):
        row = {
            "setting": setting,
            "variant": variant,
            "method": trials["method"].iloc[0],
            "trials": len(trials),
            "converged": int((trials["status"] == "converged").sum()),
            "not_converged": int((trials["status"] == "not_converged").sum()),
            "finished": int(trials["status"].isin((*FINISHED, "dense")).sum()),
            "reached_target": int(np.isfinite(trials["epochs_to_target"].to_numpy(float)).sum()),
        }
        row["unfinished"] = row["trials"] - row["finished"]
        for m in METRICS:
            est = bootstrap_mean([_scoped_dense(t, m) for t in trials.to_dict("records")], n_boot, seed)
            row.update(_columns(m.key, est))
        first = trials.iloc[0]
        row.update({k: first[k] for k in setting_fields(labelled)})
        row.update({k: first[k] for k in TRUNCATION_FIELDS if k in labelled.columns})
        rows.append(row)
    return pd.DataFrame(rows)


def _scoped_dense(trial: dict[str, Any], metric: Metric) -> float:
    """As :func:`_scoped`, where a dense trial (no search, so no search cost) counts as finished."""
    if trial["status"] == "dense":
        return math.nan if metric.scope == "converged" else float(trial[metric.key])
    return _scoped(trial, metric)
