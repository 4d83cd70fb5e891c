"""An Optuna sweep's study: its candidates ranked by their paired effects, their Pareto front, and
Optuna's parameter importances.

With ``--search optuna`` one Optuna trial is a *candidate*: values of the tuned knobs, run on k seeds,
each seed's run paired with the study's EarlyBird baseline of that seed. In MLflow a candidate is a
variant like a grid's, so :func:`analysis.compare.compare` already gives each its paired effect
(candidate minus EarlyBird) on every metric, with its interval, its Holm family (all candidates of
the setting) and its seeds; this module ranks the candidates on the study's objectives, finds those
no other candidate beats on all of them, and reads the importances the study logged when it ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import cells, compare
from analysis.load import Sweep
from analysis.stats import MIN_PAIRS
from worm_tune.config import TRUNCATION_FIELDS
from worm_tune.tune.plan import IMPORTANCE
from worm_tune.tune.spaces import DEFAULT_OBJECTIVES, Objective

TITLE = "## The Optuna study: candidates on paired seeds"
CANDIDATES_CSV = "candidates.csv"
#: Per objective metric ``m``, the columns :func:`candidates` gives it (``m_diff``, ...), from these of compare's.
COLUMNS = {
    "diff_mean": "diff",
    "diff_lo": "lo",
    "diff_hi": "hi",
    "n_pairs": "pairs",
    "n_nonzero": "nonzero",
    "p_holm": "p_holm",
}


def objectives_of(sweep: Sweep) -> tuple[Objective, ...]:
    """The objectives the sweep logged; where it logged none, the report's headline metrics in their
    natural directions (``--search optuna``'s default objectives)."""
    return sweep.objectives or DEFAULT_OBJECTIVES


def candidates(comparisons: pd.DataFrame, methods: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """One row per candidate (a variant compared with EarlyBird, :func:`analysis.compare.compare`'s
    rows), best first within its setting by its mean paired effect on the first objective in that
    objective's direction; ties go to the next objectives, then to the label, and a candidate without
    pairs comes last.

    Columns: ``setting``, ``variant``, the knobs that differ between candidates (their values, from
    ``methods``: :func:`analysis.compare.per_method`), ``rank`` (1 = best, per setting), ``front``
    (on its setting's Pareto front over all objectives, :func:`pareto_front`), and per objective
    metric ``m``: ``m_diff``, ``m_lo``, ``m_hi`` (the mean paired difference and its interval),
    ``m_pairs``, ``m_nonzero`` and ``m_p_holm``; NaN where the metric is not compared.
    """
    keys = ["setting", "variant"]
    table = comparisons[keys].drop_duplicates().reset_index(drop=True)
    mine = methods.merge(table, on=keys)
    knobs = [k for k in TRUNCATION_FIELDS if k in mine.columns and mine[k].astype(str).nunique() > 1]
    table = table.merge(mine[keys + knobs], on=keys, how="left")
    for o in objectives:
        rows = comparisons[comparisons["metric"] == o.metric].set_index(keys)[list(COLUMNS)]
        table = table.join(rows.rename(columns={k: f"{o.metric}_{v}" for k, v in COLUMNS.items()}), on=keys)
    order = [f"_{i}" for i in range(len(objectives))]
    for name, o in zip(order, objectives, strict=True):
        table[name] = table[f"{o.metric}_diff"] * (1 if o.mode == "min" else -1)
    table = table.sort_values(["setting", *order, "variant"], na_position="last", kind="stable").drop(columns=order)
    table = table.reset_index(drop=True)
    table.insert(2, "rank", table.groupby("setting").cumcount() + 1)
    table["front"] = False
    for _, rows in table.groupby("setting"):
        points = rows[[f"{o.metric}_diff" for o in objectives]].to_numpy(float)
        table.loc[rows.index, "front"] = pareto_front(points, [o.mode for o in objectives])
    return table


def pareto_front(points: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Which points no other point dominates (at least as good on every objective and better on one),
    as a boolean mask; ``directions``: ``"min"`` or ``"max"`` per column. Equal points do not dominate
    each other, so a tie is on the front together or off it together. A point with a NaN is off the
    front and dominates nothing: its candidate has no paired effect yet."""
    if any(d not in ("min", "max") for d in directions):
        raise ValueError(f"directions are 'min' or 'max', not {list(directions)}")
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    cost = np.asarray(points, dtype=float).reshape(-1, len(directions)) * signs  # smaller is better in every column
    known = np.isfinite(cost).all(axis=1)
    rivals = cost[known]
    front = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(known):
        beaten = (rivals <= cost[i]).all(axis=1) & (rivals < cost[i]).any(axis=1)
        front[i] = not beaten.any()
    return front


def importances(logged: Mapping[str, float]) -> pd.DataFrame:
    """Optuna's fANOVA importances from a parent run's metrics, ``importance/<objective>/<param>``
    (other metrics are left out): columns ``objective``, ``param``, ``importance``, per objective
    (in name order) the most important parameter first."""
    rows = []
    for key, value in logged.items():
        objective, _, param = key.removeprefix(f"{IMPORTANCE}/").partition("/")
        if key.startswith(f"{IMPORTANCE}/") and objective and param:
            rows.append({"objective": objective, "param": param, "importance": float(value)})
    frame = pd.DataFrame(rows, columns=["objective", "param", "importance"])
    return frame.sort_values(["objective", "importance", "param"], ascending=[True, False, True], ignore_index=True)


# -- the Markdown ----------------------------------------------------------------------------


def section(
    sweep: Sweep,
    ranked: pd.DataFrame,
    comparisons: pd.DataFrame,
    paired: pd.DataFrame,
    objectives: Sequence[Objective],
) -> str:
    """The report's section on the study: the ranked candidates (:func:`candidates`), with each
    objective's paired difference shown as the report's other tables show it (its interval, or each
    seed's values below :data:`~analysis.stats.MIN_PAIRS` pairs: ``paired`` is
    :func:`analysis.compare.pairs`'s), the Pareto front, and the importances."""
    named = ", ".join(f"{_label(o.metric)} ({o.mode})" for o in objectives)
    parts = [
        f"{TITLE}\n",
        "Each Optuna trial is a candidate: values of the tuned knobs run on paired seeds, each seed's run beside "
        f"the study's {compare.EB} run of that seed and setting. Objectives: {named}, each as the paired "
        f"difference candidate minus {compare.EB}."
        + ("" if sweep.objectives else " (The parent run logs no objectives: these are `--search optuna`'s default.)")
        + "\n",
    ]
    if ranked.empty:
        parts.append(
            f"No candidate has an {compare.EB} run of the same setting to be paired with (a study run before "
            "candidates were paired, or none has started): there are no paired effects to rank.\n"
        )
        return "\n".join(parts)
    parts += [
        f"### Candidates, best first by {_label(objectives[0].metric)}\n",
        _ranked_table(ranked, comparisons, paired, objectives),
        "",
    ]
    parts += ["### The Pareto front\n", _front_text(ranked, objectives), ""]
    parts += ["### Parameter importances (fANOVA)\n", _importance_text(sweep, objectives), ""]
    parts.append(f"Every number of the ranking, unrounded: [`{CANDIDATES_CSV}`]({CANDIDATES_CSV}).\n")
    return "\n".join(parts)


def _ranked_table(
    ranked: pd.DataFrame, comparisons: pd.DataFrame, paired: pd.DataFrame, objectives: Sequence[Objective]
) -> str:
    by = comparisons.set_index(["setting", "variant", "metric"])
    several = ranked["setting"].nunique() > 1
    header = ["rank", *(["setting"] if several else []), "candidate"]
    for o in objectives:
        header += [f"{_label(o.metric)}: difference", "pairs", "Holm p"]
    header.append("Pareto front")
    rows = []
    for r in ranked.to_dict("records"):
        row = [str(r["rank"]), *([r["setting"]] if several else []), r["variant"]]
        for o in objectives:
            key = (r["setting"], r["variant"], o.metric)
            if key not in by.index:
                row += ["not compared", "-", "-"]
                continue
            c = by.loc[key].to_dict() | {"setting": r["setting"], "variant": r["variant"], "metric": o.metric}
            fmt = "+%" if compare.METRIC[o.metric].accuracy else "+.2f"
            row += [cells.difference(c, paired, fmt), cells.pair_count(c), cells.pvalue(c["p_holm"])]
        row.append("yes" if r["front"] else "")
        rows.append(row)
    first = objectives[0]
    best = "lowest" if first.mode == "min" else "highest"
    note = (
        f"Ranked by the mean paired difference in {_label(first.metric)} ({best} first; ties by the next "
        "objective). Differences are candidate minus "
        f"{compare.EB} over the seeds where both runs are in scope (accuracies in percentage points), with a "
        f"95% interval from {MIN_PAIRS} pairs on and each seed's {compare.EB} → candidate values below that; "
        f"Holm p: within the family of every candidate of the setting against {compare.EB} on that metric. The "
        "ranking is chosen on the same seeds that estimate it, so the top candidate's effect is biased in its "
        "favour (the best of many noisy estimates is partly luck): confirm it on fresh seeds with "
        f"`python -m worm_tune.final <sweep> --metric {first.metric} --top-k 1`."
    )
    return cells.table(header, rows) + "\n\n" + note


def _front_text(ranked: pd.DataFrame, objectives: Sequence[Objective]) -> str:
    """The candidates on the front, each with its mean effects, and how many had effects to compare."""
    if len(objectives) < 2:
        return "One objective: the front is the top of the ranking."
    known = ranked[[f"{o.metric}_diff" for o in objectives]].notna().all(axis=1)
    front = ranked[ranked["front"]]
    if front.empty:
        return "No candidate has a paired effect on every objective yet."
    lines = [
        f"{len(front)} of the {int(known.sum())} candidates with a paired effect on every objective lie on the front: "
        "no other candidate of their setting is at least as good on every objective and better on one (means "
        "of the paired differences; a tie is on the front together), drawn in the plot of the candidates below.\n"
    ]
    for r in front.to_dict("records"):
        effects = ", ".join(f"{_label(o.metric)} {_mean(r[f'{o.metric}_diff'], o.metric)}" for o in objectives)
        lines.append(f"- rank {r['rank']}, {r['variant']}: {effects}")
    return "\n".join(lines)


def _importance_text(sweep: Sweep, objectives: Sequence[Objective]) -> str:
    """Optuna's importances as a table of parameters by objective, or why there are none."""
    found = importances(sweep.importances)
    if found.empty:
        if sweep.running:
            return "None yet: the study is still running, and its importances are logged when it ends."
        return (
            "None logged: the study logs Optuna's fANOVA importances when it ends with at least 2 completed "
            "candidates, so this one was interrupted before its end or completed fewer than 2."
        )
    table = found.pivot(index="param", columns="objective", values="importance")
    order = [o.metric for o in objectives if o.metric in table.columns]
    table = table[order + sorted(set(table.columns) - set(order))]
    table = table.sort_values(table.columns[0], ascending=False)
    rows = [[param, *(f"{v:.2f}" if np.isfinite(v) else "-" for v in values)] for param, values in table.iterrows()]
    note = (
        "Optuna's fANOVA importance of each tuned parameter for each objective: the share of the objective's "
        "variance over the study's candidates that the parameter explains (per objective they sum to 1). It "
        "rests on the candidates the study completed, so with few of them it is a rough guide."
    )
    return cells.table(["parameter", *map(_label, table.columns)], rows) + "\n\n" + note


def _label(metric: str) -> str:
    return compare.METRIC[metric].label if metric in compare.METRIC else metric


def _mean(value: float, metric: str) -> str:
    """A mean paired difference as the tables show it: percentage points for accuracies."""
    if not np.isfinite(value):
        return "-"
    accuracy = metric in compare.METRIC and compare.METRIC[metric].accuracy
    return cells.value(value, "+%" if accuracy else "+.2f")
