"""Pairing trials and comparing methods: the numbers behind every table of the report.

A *setting* is everything a pair of trials shares: every config field but the method, the seed,
WORM's own knobs (``worm.*``), which EarlyBird ignores, and where and how the arithmetic ran. A
*variant* is a method with its WORM knobs. Within a setting each truncating variant (worm, gradclip,
greedy) is paired with EarlyBird seed by seed: paired trials share the seed and so the initial
weights and data order.

Wall time is compared only over pairs that ran side by side on one node (:func:`ran_together`):
the same seed gives the same arithmetic, but not the same machine load.

Every test belongs to a *family*: one setting, one metric, all its variants against its EarlyBird
(:func:`compare`), or one setting, one knob, one metric, all pairs of variants that differ only in
that knob (:func:`versus`). Verdicts rest on Holm-adjusted p-values within the family, so a
conclusion drawn from four variants at once holds at the level one test would. Accuracy is also
compared at the same search epoch for both trials of a pair (``acc_at_matched_epoch``), since the
accuracy at each one's stop is read earlier for the one that stopped sooner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import FINISHED
from analysis.stats import (
    N_BOOT,
    Estimate,
    bootstrap_mean,
    bootstrap_ratio,
    equivalence,
    holm,
    nonzero,
    tost,
    verdict,
    wilcoxon_p,
)
from worm_tune import metrics
from worm_tune.config import PAIR_FREE_FIELDS, TRUNCATION_FIELDS, field_types
from worm_tune.ticket.methods import BASELINE, METHODS
from worm_tune.tune.plan import SYMBOLS, cell

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
    end, converged or not; ``reached``: the retraining reached the target accuracy. ``per_pair``:
    the value depends on both trials of a pair (the accuracy at the earlier of their two stops), so
    it exists for pairs only; ``accuracy``: a fraction compared within a margin when one is given.
    """

    key: str
    label: str
    scope: str
    speedup: bool = False  # report EarlyBird's mean over the variant's as a speed-up
    paired: bool = True  # False: only truncating methods have it, so there is no difference to EarlyBird
    accuracy: bool = False
    per_pair: bool = False

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
    Metric("pre_prune_acc", "acc. before pruning, at each stop (confounded by the stop)", "finished", accuracy=True),
    Metric("acc_at_matched_epoch", "dense acc. at the same epoch", "finished", accuracy=True, per_pair=True),
    Metric("post_prune_acc", "acc. right after pruning", "finished", accuracy=True),
    Metric("acc_after_1_retrain_epoch", "acc. after 1 retrain epoch", "finished", accuracy=True),
    Metric("epochs_to_target", "retrain epochs to target", "reached"),
    Metric("final_acc", "final acc.", "finished", accuracy=True),
    Metric("total_time", "total time (s)", "finished"),
)
METRIC = {m.key: m for m in METRICS}
#: What :func:`versus` compares between variants: the search cost and accuracy, like with like.
VERSUS_METRICS = ("search_epochs", "final_acc", "acc_at_matched_epoch")
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
        " · ".join(
            [
                *(f"{p}{cell(row[k])}" for k, p in LABELLED.items()),
                *(f"{k}={cell(row[k])}" for k in varying),
            ]
        )
        for _, row in out.iterrows()
    ]
    out["variant"] = [variant_label(row, worm_varying) for _, row in out.iterrows()]
    return out


def variant_label(row: Mapping[str, Any], worm_varying: Sequence[str] = ()) -> str:
    """A trial's method with its knobs, ``WORM δ=0.03 r=0.003`` (and any other WORM field the sweep
    varies), the name it is compared under."""
    method = row["method"]
    spec = METHODS.get(method)
    name = spec.label if spec else method
    if spec is None or not spec.truncates:
        return name
    knobs = [*spec.knobs, *(k for k in worm_varying if k not in ("worm.delta", "worm.factor"))]
    return " ".join([name, *(f"{knob_symbol(k)}={cell(row[k])}" for k in knobs)])


def knob_symbol(key: str) -> str:
    """A knob as labels name it: ``δ`` for ``worm.delta``, ``scope`` for ``worm.scope``."""
    return SYMBOLS.get(key, key.removeprefix("worm."))


# -- pairs -----------------------------------------------------------------------------------


def pairs(labelled: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (setting, variant, seed) that has both an EarlyBird and a variant trial, in that order.

    Columns: ``setting``, ``variant``, ``seed``, ``eb_trial``, ``v_trial``, the two statuses,
    ``concurrent`` (the two ran side by side, :func:`ran_together`), and for each metric
    ``eb_<key>`` and ``v_<key>`` (NaN where the trial is outside the metric's scope; the
    matched-epoch accuracy is NaN without ``curves``). A setting's EarlyBird trial is the partner
    of every variant's trial of its seed.
    """
    acc = search_accuracy(curves)
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
            row[f"eb_{m.key}"], row[f"v_{m.key}"] = pair_values(partner, v, m, acc)
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


def search_accuracy(curves: pd.DataFrame | None) -> dict[tuple[str, int], float]:
    """``(trial_id, search epoch) -> test_acc`` from the per-epoch history (empty without one)."""
    if curves is None or curves.empty or "test_acc" not in curves.columns:
        return {}
    search = curves[curves["phase"] == "search"]
    keys = zip(search["trial_id"], search["phase_epoch"].astype(int), strict=True)
    return dict(zip(keys, search["test_acc"].astype(float), strict=True))


def pair_values(
    a: dict[str, Any], b: dict[str, Any], metric: Metric, acc: dict[tuple[str, int], float]
) -> tuple[float, float]:
    """Two paired trials' values of a metric (NaN outside its scope). For the matched-epoch accuracy:
    both trials' dense test accuracy at e, the earlier of their last search epochs, read from the
    history ``acc`` (:func:`search_accuracy`), so both are read after the same training."""
    if not metric.per_pair:
        return _scoped(a, metric), _scoped(b, metric)
    if a["status"] not in FINISHED or b["status"] not in FINISHED:
        return math.nan, math.nan
    e = min(float(a["search_epochs"]), float(b["search_epochs"]))
    if not math.isfinite(e):
        return math.nan, math.nan
    return acc.get((a["trial_id"], int(e)), math.nan), acc.get((b["trial_id"], int(e)), math.nan)


def _scoped(trial: dict[str, Any], metric: Metric) -> float:
    """The trial's value of the metric, or NaN when the metric is undefined for it."""
    status = trial["status"]
    if status not in FINISHED or (metric.scope == "converged" and status != "converged"):
        return math.nan
    return float(trial[metric.key])


# -- comparisons -----------------------------------------------------------------------------


def compare(
    labelled: pd.DataFrame,
    n_boot: int = N_BOOT,
    seed: int = 0,
    margin: float | None = None,
    curves: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (setting, variant, metric): each method's mean and CI, the paired difference
    (variant minus EarlyBird) with its CI and Wilcoxon p, the Holm-adjusted p within its family,
    the speed-up, and the counts behind them.

    Each method's mean is over all its trials in scope (not only paired ones; over the pairs for the
    matched-epoch accuracy, which ``curves`` gives); the difference, p-value and speed-up are over
    the pairs where both trials are in scope (``n_in_scope``) and, for wall time, ran side by side
    (``n_pairs``), of which ``n_nonzero`` differ. Intervals need :data:`~analysis.stats.MIN_PAIRS`
    pairs and p-values as many non-zero ones; below that they are NaN. ``family`` names the test's
    family (this setting and metric, every variant against EarlyBird), ``family_size`` how many
    tests with a p it holds, and ``verdict`` rests on ``p_holm``. With a ``margin`` (a fraction:
    0.01 is 1 pp), accuracy rows get TOST: ``tost_p`` (the larger one-sided p) and ``equivalence``.
    A metric only the variant has (``trigger_epoch``) gets its mean and no comparison. A variant
    whose setting has no EarlyBird trial gets no rows.
    """
    paired = pairs(labelled, curves)
    rows, diffs = [], []
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
            eb_est = v_est = diff = speed = NO_ESTIMATE
            a, b, p, in_scope = np.array([]), np.array([]), math.nan, 0
            if m.paired:
                _, a, b, in_scope = paired_values(mine, m)
                p = wilcoxon_p(b - a)
                diff = bootstrap_mean(b - a, n_boot, seed)
                speed = bootstrap_ratio(a, b, n_boot, seed) if m.speedup else NO_ESTIMATE
            if m.per_pair:  # no trial has it alone: each side's mean over the pairs
                eb_est, v_est = bootstrap_mean(a, n_boot, seed), bootstrap_mean(b, n_boot, seed)
            else:
                v_est = bootstrap_mean([_scoped(t, m) for t in trials.to_dict("records")], n_boot, seed)
                if m.paired:
                    eb_est = bootstrap_mean([_scoped(t, m) for t in eb.to_dict("records")], n_boot, seed)
            d = b - a
            rows.append(
                {
                    "setting": setting,
                    "variant": variant,
                    "metric": m.key,
                    **_columns("eb", eb_est),
                    **_columns("v", v_est),
                    "n_pairs": len(d),
                    "n_nonzero": nonzero(d),
                    "n_in_scope": in_scope,
                    **_columns("diff", diff),
                    "p": p,
                    "family": f"{setting} · {m.label} vs {EB}",
                    "speedup": speed.value,
                    "speedup_lo": speed.lo,
                    "speedup_hi": speed.hi,
                    **counts,
                }
            )
            diffs.append(d)
    columns = ["setting", "variant", "metric", "eb_mean", "eb_lo", "eb_hi", "eb_n", "v_mean", "v_lo", "v_hi", "v_n"]
    columns += ["n_pairs", "n_nonzero", "n_in_scope", "diff_mean", "diff_lo", "diff_hi", "diff_n", "p", "family"]
    columns += ["speedup", "speedup_lo", "speedup_hi", "eb_trials", "v_trials", "eb_not_converged"]
    columns += ["v_not_converged", "eb_unfinished", "v_unfinished", "seeds_paired"]
    return _families(pd.DataFrame(rows, columns=columns), diffs, margin)


def versus(
    labelled: pd.DataFrame,
    n_boot: int = N_BOOT,
    seed: int = 0,
    margin: float | None = None,
    curves: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Variant against variant: within each setting, for each knob a sweep varies among the
    truncating variants (a :data:`TRUNCATION_FIELDS` field with more than one value), every pair of
    variants of one method that differ only in that knob, compared seed by seed on their shared
    seeds: ``b`` minus ``a``, ``a`` the smaller knob value, on each of :data:`VERSUS_METRICS`.

    Columns: ``setting``, ``knob``, ``a``, ``b`` (variant labels), ``a_value``, ``b_value`` (the
    knob's), ``metric``, ``n_pairs``, ``n_nonzero``, the difference with its CI (``diff_*``), ``p``,
    and as in :func:`compare` ``family`` (setting, knob, metric), ``family_size``, ``p_holm``,
    ``verdict`` and, for accuracies with a ``margin``, ``tost_p`` and ``equivalence``.
    """
    acc = search_accuracy(curves)
    knobs = [k for k in TRUNCATION_FIELDS if k in labelled.columns]
    truncating = labelled[labelled["method"].isin(TRUNCATING)]
    rows, diffs = [], []
    for _, trials in truncating.groupby("setting_key", sort=True):
        for knob in (k for k in knobs if trials[k].astype(str).nunique() > 1):
            others = ["method", *(k for k in knobs if k != knob)]
            for _, group in trials.groupby(trials[others].astype(str).agg("|".join, axis=1), sort=True):
                for low, high in combinations(sorted(group[knob].unique()), 2):
                    a_trials = group[group[knob] == low].drop_duplicates("seed").set_index("seed")
                    b_trials = group[group[knob] == high].drop_duplicates("seed").set_index("seed")
                    head = {"setting": trials["setting"].iloc[0], "knob": knob, "a": a_trials["variant"].iloc[0]}
                    head |= {"b": b_trials["variant"].iloc[0], "a_value": low, "b_value": high}
                    if head["a"] == head["b"]:
                        continue  # a knob this method ignores: the two are one variant
                    shared = sorted(set(a_trials.index) & set(b_trials.index))
                    pair = [(a_trials.loc[s].to_dict(), b_trials.loc[s].to_dict()) for s in shared]
                    for key in VERSUS_METRICS:
                        m = METRIC[key]
                        both = np.array([pair_values(x, y, m, acc) for x, y in pair]).reshape(-1, 2)
                        d = both[:, 1] - both[:, 0]
                        d = d[np.isfinite(d)]
                        rows.append(
                            head
                            | {
                                "metric": key,
                                "n_pairs": len(d),
                                "n_nonzero": nonzero(d),
                                **_columns("diff", bootstrap_mean(d, n_boot, seed)),
                                "p": wilcoxon_p(d),
                                "family": f"{head['setting']} · {knob_symbol(knob)} · {m.label}",
                            }
                        )
                        diffs.append(d)
    columns = ["setting", "knob", "a", "b", "a_value", "b_value", "metric", "n_pairs", "n_nonzero"]
    columns += ["diff_mean", "diff_lo", "diff_hi", "diff_n", "p", "family"]
    return _families(pd.DataFrame(rows, columns=columns), diffs, margin)


def _families(frame: pd.DataFrame, diffs: list[np.ndarray], margin: float | None) -> pd.DataFrame:
    """Holm's correction within each ``family``, then each row's verdict on its adjusted p and, for
    accuracies with a margin, its TOST p and equivalence verdict (``diffs``: each row's differences)."""
    out = frame.copy()
    out.insert(out.columns.get_loc("p") + 1, "p_holm", math.nan)
    out.insert(out.columns.get_loc("family") + 1, "family_size", 0)
    for _, index in out.groupby("family", sort=False).groups.items():
        p = out.loc[index, "p"].to_numpy(float)
        out.loc[index, "p_holm"] = holm(p)
        out.loc[index, "family_size"] = int(np.isfinite(p).sum())
    words, tost_p, equivalent = [], [], []
    for r, d in zip(out.to_dict("records"), diffs, strict=True):
        m = METRIC[r["metric"]]
        words.append(verdict(len(d), d, r["p_holm"]) if m.paired else f"not paired: {EB} has none")
        test = margin is not None and m.accuracy and len(d) > 0
        tost_p.append(float(np.max(tost(d, margin))) if test else math.nan)  # NaN if a side has no test
        equivalent.append(equivalence(d, margin, r["p_holm"], shown=margin_text(margin)) if test else "")
    out["verdict"], out["tost_p"], out["equivalence"] = words, tost_p, equivalent
    return out


def margin_text(margin: float) -> str:
    """An accuracy margin as the report reads it: 0.01 is "1 pp"."""
    return f"{100 * margin:g} pp"


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
            values = [] if m.per_pair else [_scoped_dense(t, m) for t in trials.to_dict("records")]
            row.update(_columns(m.key, bootstrap_mean(values, n_boot, seed)))
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
