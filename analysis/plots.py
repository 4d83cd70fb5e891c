"""The report's figures: mask distances, search epochs, accuracy recovery, search cost against accuracy,
and an Optuna study's candidates against their Pareto front.

Every function takes the labelled trials (``setting`` and ``variant`` columns added to the trials
table), writes one PNG and returns its path, or writes nothing and returns None when the sweep holds
nothing to draw; a report of a sweep still running, or of EarlyBird alone, never fails on a figure.
Figures are plain :class:`~matplotlib.figure.Figure` objects: no pyplot, so no global backend state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.compare import EB, METRIC
from analysis.load import FINISHED
from worm_tune.ticket.methods import METHODS
from worm_tune.tune.spaces import Objective

#: Methods with a trigger at s + delta (gradclip truncates from the first step, greedy by d_avg).
USES_DELTA = tuple(m.name for m in METHODS.values() if "worm.delta" in m.knobs)
MAX_SETTINGS = 8
#: Up to this many candidates each get a label; beyond it only those on the front do.
MAX_LABELS = 12
PANEL = (5.0, 3.5)
DPI = 120
EB_COLOR = "tab:blue"
# tab10 without blue (EarlyBird's) and gray (reference lines and pair joins).
OTHER_COLORS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
BAND = "line: mean, band: min–max over seeds"
#: Characters of a panel title's line at fontsize 9 that fit a panel's width.
PANEL_TITLE_CHARS = 60
NOT_CONVERGED = "not converged (search budget)"


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """A color per variant: EarlyBird always blue, the others in sorted order, so that every figure
    drawn from the same trials colors a variant alike."""
    others = sorted(set(variants) - {EB})
    return {EB: EB_COLOR, **{v: OTHER_COLORS[i % len(OTHER_COLORS)] for i, v in enumerate(others)}}


# -- figures ---------------------------------------------------------------------------------


def mask_distance(trials: pd.DataFrame, curves: pd.DataFrame, path: str | Path) -> Path | None:
    """d_max and d_avg per search epoch, one row of panels per setting (the paper's Figure 1).

    Every trial with search epochs counts, finished or not: the curves show how the search behaves.
    None when no search epoch has a mask distance yet (windows not full).
    """
    keys = ("d_max", "d_avg")
    info = trials.drop_duplicates("trial_id").set_index("trial_id")[
        ["setting", "variant", "method", "search.threshold", "worm.delta"]
    ]
    search = curves[(curves["phase"] == "search") & curves["trial_id"].isin(info.index)]
    search = search[search[list(keys)].notna().any(axis=1)].join(info, on="trial_id")
    if search.empty:
        return None
    settings, note = _settings(search["setting"])
    colors = variant_colors(trials["variant"])
    fig = Figure(figsize=(2 * PANEL[0], PANEL[1] * len(settings)), layout="constrained")
    for row, setting in zip(fig.subplots(len(settings), 2, squeeze=False), settings, strict=True):
        mine = search[search["setting"] == setting]
        for variant in _ordered(mine["variant"]):
            runs = mine[mine["variant"] == variant]
            for ax, key in zip(row, keys, strict=True):
                table = runs.pivot_table(index="phase_epoch", columns="trial_id", values=key)
                _band(ax, table, colors[variant], variant)
        for s in sorted(mine["search.threshold"].dropna().unique()):
            for ax in row:
                ax.axhline(s, color="gray", lw=1, label="stop threshold s")
        triggers = mine[mine["method"].isin(USES_DELTA)].drop_duplicates(["variant", "search.threshold", "worm.delta"])
        levels = triggers["search.threshold"] + triggers["worm.delta"]
        for variant, level in zip(triggers["variant"], levels, strict=True):
            row[1].axhline(level, color=colors[variant], ls="--", lw=1, label=f"trigger s+δ={level:g}")
        row[0].set_title(_fit(f"{setting}\nd_max: the search stops once d_max < s"), fontsize=9)
        row[1].set_title(_fit(f"{setting}\nd_avg: WORM truncates once d_avg < s+δ"), fontsize=9)
        for ax, name in zip(row, ("max mask distance d_max", "mean mask distance d_avg"), strict=True):
            _style(ax, "search epoch", name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(row[1], row)
    fig.suptitle(f"Mask distance during the search ({BAND}){note}", wrap=True)
    return _save(fig, path)


def search_epochs_vs(trials: pd.DataFrame, key: str, path: str | Path) -> Path | None:
    """Search epochs of paired seeds against ``key``: ``"search.ratio"`` or ``"worm.delta"``.

    Only finished trials are drawn; a search that did not converge is a hollow marker at its
    budget, since its search epochs are a lower bound. None when nothing is paired with EarlyBird
    (ratio) or no trial uses delta (delta).
    """
    done = trials[trials["status"].isin(FINISHED) & trials["search_epochs"].notna()]
    if key == "search.ratio":
        return _by_ratio(done, variant_colors(trials["variant"]), path)
    if key == "worm.delta":
        return _by_delta(done, variant_colors(trials["variant"]), path)
    raise ValueError(f"search_epochs_vs draws against search.ratio or worm.delta, not {key!r}")


def recovery(trials: pd.DataFrame, curves: pd.DataFrame, path: str | Path) -> Path | None:
    """Test accuracy from before pruning through retraining, one panel per setting.

    x = "pre" is the accuracy before pruning, 0 right after pruning, then each retraining epoch;
    only finished trials. None when no finished trial has a retraining epoch.
    """
    done = trials[trials["status"].isin(FINISHED)].drop_duplicates("trial_id")
    retrain = curves[
        (curves["phase"] == "retrain") & curves["trial_id"].isin(done["trial_id"]) & curves["test_acc"].notna()
    ]
    if retrain.empty:
        return None
    acc = retrain.pivot_table(index="phase_epoch", columns="trial_id", values="test_acc")
    ends = done.set_index("trial_id")[["pre_prune_acc", "post_prune_acc"]].T.set_axis([-1, 0])
    acc = pd.concat([ends, acc]).sort_index()
    done = done[done["trial_id"].isin(retrain["trial_id"])]
    settings, note = _settings(done["setting"])
    colors = variant_colors(trials["variant"])
    last = int(acc.index.max())
    ticks = [-1, *range(0, last + 1, max(1, math.ceil(last / 10)))]
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings, strict=True):
        mine = done[done["setting"] == setting]
        for variant in _ordered(mine["variant"]):
            table = acc[mine.loc[mine["variant"] == variant, "trial_id"]]
            _band(ax, table.loc[:0], colors[variant], None, ls=":")
            _band(ax, table.loc[0:], colors[variant], variant)
        for target in sorted(mine["retrain.target_acc"].dropna().unique()):
            ax.axhline(target, color="black", ls=":", lw=1, label="target")
        ax.set_xticks(ticks, ["pre" if t == -1 else str(t) for t in ticks])
        ax.set_title(_fit(setting), fontsize=9)
        _style(ax, "retraining epoch (pre: before pruning, 0: right after)", "test accuracy")
        _legend(ax, [ax])
    fig.suptitle(f"Accuracy recovery after pruning ({BAND}){note}", wrap=True)
    return _save(fig, path)


def pareto(trials: pd.DataFrame, path: str | Path) -> Path | None:
    """Search cost against final accuracy per (setting, variant), with the Pareto front over them.

    Means over finished seeds, bars from min to max. None when no finished trial has both numbers.
    """
    done = trials[trials["status"].isin(FINISHED)]
    done = done[np.isfinite(done["search_flops"].astype(float)) & np.isfinite(done["final_acc"].astype(float))]
    if done.empty:
        return None
    points = (
        done.groupby(["setting", "variant"], sort=True)
        .agg(
            x=("search_flops", "mean"),
            x_lo=("search_flops", "min"),
            x_hi=("search_flops", "max"),
            y=("final_acc", "mean"),
            y_lo=("final_acc", "min"),
            y_hi=("final_acc", "max"),
        )
        .reset_index()
    )
    colors = variant_colors(trials["variant"])
    settings = sorted(points["setting"].unique())
    markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(settings)}
    fig = Figure(figsize=(PANEL[0] + 4, PANEL[1] + 1), layout="constrained")
    ax = fig.subplots()
    for p in points.itertuples():
        ax.errorbar(
            p.x,
            p.y,
            # Clipped at 0: a mean of equal floats can land a rounding error outside its min-max.
            xerr=[[max(p.x - p.x_lo, 0.0)], [max(p.x_hi - p.x, 0.0)]],
            yerr=[[max(p.y - p.y_lo, 0.0)], [max(p.y_hi - p.y, 0.0)]],
            fmt=markers[p.setting],
            color=colors[p.variant],
            ms=7,
            capsize=3,
        )
    front = _front(points[["x", "y"]].to_numpy(float))
    ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=1, marker="o", ms=13, mfc="none", zorder=0)
    if points["x_lo"].min() > 0 and points["x_hi"].max() > 10 * points["x_lo"].min():
        ax.set_xscale("log")
    _style(ax, "search cost (training FLOPs of the search)", "final test accuracy")
    handles = [Line2D([], [], color="black", lw=1, marker="o", ms=13, mfc="none", label="Pareto front")]
    handles += [_proxy(colors[v], v) for v in _ordered(points["variant"])]
    handles += [_proxy("gray", s, marker=markers[s]) for s in settings]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    ax.set_title("Search cost vs final accuracy\n(mean over finished seeds, bars: min–max; up and left is better)")
    return _save(fig, path)


def candidate_front(candidates: pd.DataFrame, objectives: Sequence[Objective], path: str | Path) -> Path | None:
    """An Optuna study's candidates at their paired effects on the first two objectives (candidate minus
    EarlyBird, means over paired seeds, bars: the intervals where there are enough pairs), the Pareto
    front ringed and joined, EarlyBird at zero on both axes.

    ``candidates``: :func:`analysis.study.candidates`'s table. None with fewer than two objectives or
    no candidate with both effects.
    """
    if len(objectives) < 2:
        return None
    (x, x_mode), (y, y_mode) = ((o.metric, o.mode) for o in objectives[:2])
    known = candidates[candidates[[f"{x}_diff", f"{y}_diff"]].notna().all(axis=1)]
    if known.empty:
        return None
    scale = {m: 100.0 if m in METRIC and METRIC[m].accuracy else 1.0 for m in (x, y)}
    settings = sorted(known["setting"].unique())
    markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(settings)}
    fig = Figure(figsize=(PANEL[0] + 4, PANEL[1] + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.axhline(0, color="gray", lw=1, ls="--")
    labels: dict[tuple[float, float], list[str]] = {}  # candidates at one point (a tie) share one label
    for r in known.to_dict("records"):
        px, py = r[f"{x}_diff"] * scale[x], r[f"{y}_diff"] * scale[y]
        color = OTHER_COLORS[0] if r["front"] else "gray"
        ax.errorbar(
            px,
            py,
            xerr=_interval(r, x, scale[x]),
            yerr=_interval(r, y, scale[y]),
            fmt=markers[r["setting"]],
            color=color,
            ms=7,
            capsize=3,
        )
        if len(known) <= MAX_LABELS or r["front"]:
            labels.setdefault((px, py), []).append(f"#{r['rank']} {r['variant'].split(' ', 1)[-1]}")
    for (px, py), names in labels.items():
        ax.annotate("\n".join(names), (px, py), xytext=(8, 4), textcoords="offset points", fontsize=7, va="bottom")
    for setting in settings:
        front = known[(known["setting"] == setting) & known["front"]]
        points = front[[f"{x}_diff", f"{y}_diff"]].to_numpy(float) * [scale[x], scale[y]]
        points = points[np.argsort(points[:, 0], kind="stable")]
        where = "post" if x_mode == "min" else "pre"  # the staircase that bounds the region the front dominates
        ax.step(points[:, 0], points[:, 1], where=where, color="black", lw=1, marker="o", ms=13, mfc="none", zorder=0)
    _style(ax, _effect_label(x), _effect_label(y))
    handles = [Line2D([], [], color="black", lw=1, marker="o", ms=13, mfc="none", label="Pareto front")]
    handles += [_proxy(OTHER_COLORS[0], "on the front"), _proxy("gray", "dominated")]
    handles.append(Line2D([], [], color="gray", lw=1, ls="--", label=f"{EB} (no difference)"))
    if len(settings) > 1:
        handles += [_proxy("gray", s, marker=markers[s]) for s in settings]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    better = f"better: {'left' if x_mode == 'min' else 'right'} and {'down' if y_mode == 'min' else 'up'}"
    ax.set_title(f"Optuna candidates against {EB}, paired by seed (#: rank)\n(means; bars: 95% CI; {better})")
    return _save(fig, path)


def _interval(row: dict, metric: str, scale: float) -> list[list[float]] | None:
    """Error bar lengths below and above a candidate's mean effect, from its interval; None without one."""
    mean, lo, hi = (row[f"{metric}_{k}"] * scale for k in ("diff", "lo", "hi"))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]]


def _effect_label(metric: str) -> str:
    name = METRIC[metric].label if metric in METRIC else metric
    unit = " (pp)" if metric in METRIC and METRIC[metric].accuracy else ""
    return f"{name}{unit}: candidate − {EB}"


# -- search epochs ---------------------------------------------------------------------------


def _by_ratio(done: pd.DataFrame, colors: dict[str, str], path: str | Path) -> Path | None:
    """One panel per variant and setting-but-the-ratio: EarlyBird left of each ratio, the variant
    right, a seed's two trials joined."""
    done = done.assign(base=[_without_ratio(s, r) for s, r in zip(done["setting"], done["search.ratio"], strict=True)])
    eb = done[done["variant"] == EB]
    others = done[done["variant"] != EB]
    paired = others.merge(eb[["setting", "seed"]], on=["setting", "seed"])
    if paired.empty:
        return None
    panels = sorted(set(zip(paired["base"], paired["variant"], strict=True)))
    note = f"\nfirst {MAX_SETTINGS} of {len(panels)} panels shown" if len(panels) > MAX_SETTINGS else ""
    ratios = sorted(done["search.ratio"].unique())
    offset = 0.15 * (min(np.diff(ratios)) if len(ratios) > 1 else 0.2)
    fig, axes = _panels(min(len(panels), MAX_SETTINGS))
    for ax, (base, variant) in zip(axes, panels, strict=False):
        mine = pd.concat([eb[eb["base"] == base], others[(others["base"] == base) & (others["variant"] == variant)]])
        shift = _jitter(mine["seed"], 0.8 * offset)
        mine = mine.assign(
            x=mine["search.ratio"] + np.where(mine["variant"] == EB, -offset, offset) + mine["seed"].map(shift)
        )
        for _, pair in mine.groupby(["setting", "seed"]):
            if len(pair) == 2:
                ax.plot(pair["x"], pair["search_epochs"], color="gray", lw=0.8, alpha=0.7, zorder=1)
        for name, variant_rows in mine.groupby("variant"):
            _points(ax, variant_rows, "x", colors[str(name)])
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.set_title(_fit(f"{variant} vs {EB}\n{base}"), fontsize=9)
        _style(ax, f"pruning ratio p ({EB} left, variant right)", "search epochs")
        _integer_y(ax, mine["search_epochs"])
        hollow = (mine["status"] == "not_converged").any()
        ax.legend(handles=_search_handles(colors, variant, hollow), fontsize=8)
    fig.suptitle(f"Search epochs by pruning ratio, paired by seed{note}", wrap=True)
    return _save(fig, path)


def _by_delta(done: pd.DataFrame, colors: dict[str, str], path: str | Path) -> Path | None:
    """One panel per setting: EarlyBird, then each delta; a line per seed (and method and r) through
    EarlyBird's search epochs and the variant's at each delta."""
    worm = done[done["method"].isin(USES_DELTA)]
    if worm.empty:
        return None
    deltas = sorted(worm["worm.delta"].unique())
    position = {d: i + 1 for i, d in enumerate(deltas)}
    series = sorted(set(zip(worm["method"], worm["worm.factor"], strict=True)))
    styles = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(series)}
    settings, note = _settings(worm["setting"])
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings, strict=True):
        eb = done[(done["setting"] == setting) & (done["variant"] == EB)]
        mine = worm[worm["setting"] == setting]
        shift = _jitter([*eb["seed"], *mine["seed"]], 0.3)
        eb = eb.assign(x=eb["seed"].map(shift).astype(float))
        mine = mine.assign(x=mine["worm.delta"].map(position) + mine["seed"].map(shift))
        for (method, factor, seed), line in mine.groupby(["method", "worm.factor", "seed"], sort=True):
            line = pd.concat([eb[eb["seed"] == seed], line]).sort_values("x")
            ax.plot(line["x"], line["search_epochs"], color="gray", lw=0.8, ls=styles[(method, factor)], zorder=1)
        _points(ax, eb, "x", colors[EB])
        for name, variant_rows in mine.groupby("variant"):
            _points(ax, variant_rows, "x", colors[str(name)])
        ax.set_xticks(range(len(deltas) + 1), [EB] + [f"δ={d:g}" for d in deltas])
        ax.set_xlim(-0.5, len(deltas) + 0.5)
        ax.set_title(_fit(setting), fontsize=9)
        _style(ax, "WORM trigger margin δ", "search epochs")
        _integer_y(ax, pd.concat([eb["search_epochs"], mine["search_epochs"]]))
        handles = [_proxy(colors[v], v) for v in _ordered([EB, *mine["variant"]])]
        shown = sorted(set(zip(mine["method"], mine["worm.factor"], strict=True)))
        handles += [Line2D([], [], color="gray", lw=0.8, ls=styles[s], label=f"same seed, r={s[1]:g}") for s in shown]
        if pd.concat([eb["status"], mine["status"]]).eq("not_converged").any():
            handles.append(_proxy("black", NOT_CONVERGED, hollow=True))
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle(f"Search epochs by WORM's trigger margin δ, joined by seed{note}", wrap=True)
    return _save(fig, path)


def _without_ratio(setting: str, ratio: float) -> str:
    """The setting's label without its ``p=`` part: what trials at different ratios share."""
    return " · ".join(part for part in setting.split(" · ") if part != f"p={ratio:g}")


def _jitter(seeds: Iterable[int], width: float) -> dict[int, float]:
    """An x shift per seed, spread evenly over ``width``, so that seeds with equal values stay apart."""
    order = sorted(set(seeds))
    if len(order) < 2:
        return dict.fromkeys(order, 0.0)
    return {s: width * (i / (len(order) - 1) - 0.5) for i, s in enumerate(order)}


def _points(ax: Axes, trials: pd.DataFrame, x: str, color: str) -> None:
    """Search epochs as markers: filled where the search converged, hollow where it hit its budget."""
    for hollow in (False, True):
        some = trials[(trials["status"] == "not_converged") == hollow]
        if len(some):
            mfc = "white" if hollow else color
            ax.plot(some[x], some["search_epochs"], ls="none", marker="o", ms=6, color=color, mfc=mfc, zorder=2)


def _integer_y(ax: Axes, epochs: pd.Series) -> None:
    """Whole-epoch y ticks, with at least one epoch of room either side so that equal values still get ticks."""
    lo, hi = epochs.min(), epochs.max()
    pad = max(1.0, 0.08 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _search_handles(colors: dict[str, str], variant: str, hollow: bool) -> list[Line2D]:
    handles = [_proxy(colors[EB], EB), _proxy(colors[variant], variant)]
    handles.append(Line2D([], [], color="gray", lw=0.8, label="same seed"))
    if hollow:
        handles.append(_proxy("black", NOT_CONVERGED, hollow=True))
    return handles


# -- helpers ---------------------------------------------------------------------------------


def _ordered(variants: Iterable[str]) -> list[str]:
    """EarlyBird first, then the other variants sorted: the order of every legend."""
    found = set(variants)
    return [EB] * (EB in found) + sorted(found - {EB})


def _settings(labels: Iterable[str]) -> tuple[list[str], str]:
    """The settings to draw (at most :data:`MAX_SETTINGS`, sorted) and a title note when some are left out."""
    found = sorted(set(labels))
    note = f"\nfirst {MAX_SETTINGS} of {len(found)} settings shown" if len(found) > MAX_SETTINGS else ""
    return found[:MAX_SETTINGS], note


def _fit(title: str, width: int = PANEL_TITLE_CHARS) -> str:
    """A panel's title broken between its `` · `` parts so that no line is wider than its panel
    (a setting of many varied fields ran into the next panel's title)."""
    lines = []
    for line in title.split("\n"):
        current = ""
        for part in line.split(" · "):
            if current and len(current) + 3 + len(part) > width:
                lines.append(current)
                current = part
            else:
                current = f"{current} · {part}" if current else part
        lines.append(current)
    return "\n".join(lines)


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    """A figure of ``n`` panels, up to three a row; the unused cells of the last row are hidden."""
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.5), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _band(ax: Axes, table: pd.DataFrame, color: str, label: str | None, ls: str = "-") -> None:
    """Mean line and min–max band over the columns (seeds) of ``table`` at every x where any seed has a value."""
    table = table.dropna(how="all")
    if table.empty:
        return
    x = table.index.to_numpy(float)
    ax.plot(x, table.mean(axis=1), color=color, ls=ls, marker="o", ms=3, label=label)
    ax.fill_between(x, table.min(axis=1), table.max(axis=1), color=color, alpha=0.2, lw=0)


def _front(points: np.ndarray) -> np.ndarray:
    """The non-dominated points (no other point is at most as costly and more accurate), by cost."""
    front: list[np.ndarray] = []
    for point in points[np.lexsort((-points[:, 1], points[:, 0]))]:
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return np.array(front)


def _proxy(color: str, label: str, marker: str = "o", hollow: bool = False) -> Line2D:
    return Line2D([], [], ls="none", marker=marker, ms=6, color=color, mfc="white" if hollow else color, label=label)


def _style(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _legend(ax: Axes, axes: Iterable[Axes]) -> None:
    """One legend on ``ax`` for the labelled artists of ``axes``, each label once."""
    entries: dict[str, object] = {}
    for other in axes:
        for handle, text in zip(*other.get_legend_handles_labels(), strict=True):
            entries.setdefault(text, handle)
    if entries:
        ax.legend(list(entries.values()), list(entries), fontsize=8)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def confidence_sequences(
    paths: dict[str, pd.DataFrame], looks: Sequence[int], margin: float, path: str | Path
) -> Path | None:
    """A sequential sweep's anytime-valid intervals on each variant's paired difference as its seeds came in:
    one panel per variant (``paths``: a frame of n, mean, low, high), the looks as dotted lines, 0 and the
    equivalence margin (if any) as references. None when no variant has a pair."""
    shown = {name: frame for name, frame in paths.items() if len(frame)}
    if not shown:
        return None
    fig, axes = _panels(len(shown))
    colors = variant_colors(name.split("\n")[0] for name in shown)
    for ax, (name, frame) in zip(axes, shown.items(), strict=True):
        color = colors[name.split("\n")[0]]
        ax.fill_between(
            frame["n"], frame["low"], frame["high"], color=color, alpha=0.25, step="post", label="anytime-valid 95%"
        )
        ax.step(frame["n"], frame["mean"], where="post", color=color, lw=1.5, label="mean difference")
        ax.axhline(0, color="black", lw=0.8)
        if margin:
            ax.axhspan(-margin, margin, color="gray", alpha=0.15, label=f"±{margin:g} (equivalence)")
        for n in looks:
            ax.axvline(n, color="gray", lw=0.8, ls=":")
        ax.set_title(_fit(name), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax, "paired seeds", "variant − EarlyBird (search epochs)")
    _legend(axes[0], axes)
    fig.suptitle("Anytime-valid intervals as the seeds came in (dotted: the sweep's looks)", wrap=True)
    return _save(fig, path)
