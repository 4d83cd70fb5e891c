"""A sweep's report: ``report.md`` with its tables and plots, the CSVs, and the PNGs, in one folder,
and the same files logged to the sweep's parent MLflow run (under ``report/``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import compare, paper, plots
from analysis.load import FINISHED, Sweep
from analysis.stats import ALPHA, LEVEL
from worm_tune.tune import store
from worm_tune.usage import format_table

REPORT, TRIALS_CSV, COMPARISONS_CSV, METHODS_CSV = "report.md", "trials.csv", "comparisons.csv", "methods.csv"
ARTIFACT_DIR = "report"


@dataclass
class Report:
    """What a report run wrote, and what it could not."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.folder / REPORT


def write(sweep: Sweep, out: Path, n_boot: int = 10_000, seed: int = 0, command: str = "") -> Report:
    """Compute every comparison of ``sweep`` and write the report folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    labelled = compare.label(sweep.trials)
    comparisons = compare.compare(labelled, n_boot, seed)
    methods = compare.per_method(labelled, n_boot, seed)
    for name, frame in ((TRIALS_CSV, labelled), (COMPARISONS_CSV, comparisons), (METHODS_CSV, methods)):
        frame.to_csv(out / name, index=False)
        report.files.append(out / name)

    figures: list[tuple[str, str, Callable[[Path], Path | None]]] = [
        ("mask_distance.png", "Mask distance per search epoch", partial(plots.mask_distance, labelled, sweep.curves)),
        (
            "search_epochs_vs_ratio.png",
            "Search epochs against the pruning ratio, pairs joined per seed",
            partial(plots.search_epochs_vs, labelled, "search.ratio"),
        ),
        (
            "search_epochs_vs_delta.png",
            "Search epochs against δ, pairs joined per seed",
            partial(plots.search_epochs_vs, labelled, "worm.delta"),
        ),
        ("recovery.png", "Accuracy recovery during retraining", partial(plots.recovery, labelled, sweep.curves)),
        ("pareto.png", "Search cost against final accuracy", partial(plots.pareto, labelled)),
    ]
    embedded = []
    for name, title, draw in figures:
        path = draw(out / name)
        if path is None:
            (out / name).unlink(missing_ok=True)  # a stale plot from an earlier run must not pass for this one
            embedded.append(f"### {title}\n\nNothing to plot yet for this sweep.\n")
        else:
            report.files.append(path)
            embedded.append(f"### {title}\n\n![{title}]({name})\n")

    text = markdown(sweep, labelled, comparisons, methods, embedded, n_boot, command)
    report.path.write_text(text)
    report.files.insert(0, report.path)
    return report


def log_to_mlflow(report: Report, uri: str, parent_run_id: str) -> None:
    """The report folder as artifacts of the sweep's parent run, so the MLflow UI shows it."""

    client = store.client(uri)
    for path in report.files:
        client.log_artifact(parent_run_id, str(path), ARTIFACT_DIR)


# -- the Markdown ----------------------------------------------------------------------------


def markdown(
    sweep: Sweep,
    labelled: pd.DataFrame,
    comparisons: pd.DataFrame,
    methods: pd.DataFrame,
    figures: list[str],
    n_boot: int,
    command: str,
) -> str:
    finished = int(labelled["status"].isin((*FINISHED, "dense")).sum())
    parts = [f"# Sweep `{sweep.name}`: EarlyBird vs WORM\n"]
    where = f"{sweep.source}" + (f", parent run `{sweep.parent_run_id}`" if sweep.parent_run_id else "")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts.append(f"Read from {where} on {stamp}" + (f" by `{command}`" if command else "") + ".\n")
    if sweep.running or finished < len(labelled):
        parts.append(
            f"> **Partial report.** {finished} of {len(labelled)} trials have finished"
            + (f" and the sweep {sweep.driver or 'is still running'}" if sweep.running else "")
            + ". Unfinished trials are counted below but not compared; run the analysis again when the sweep ends.\n"
        )
    for note in sweep.notes:
        parts.append(f"> {note}\n")
    parts.append(
        f"Intervals are {LEVEL:.0%} percentile bootstrap intervals ({n_boot} resamples); p-values are two-sided "
        f"Wilcoxon signed-rank tests on paired seeds, called significant below {ALPHA}. With fewer than 6 pairs "
        "no difference can reach that level. Search cost counts converged trials only; accuracies count every "
        "finished trial; `n` is how many trials (or pairs) a figure rests on.\n"
    )
    parts += ["## Trials\n", trials_table(methods), ""]
    parts += ["## Search epochs and accuracy, per method (the shape of the paper's Tables 2 and 3)\n"]
    parts += [paper_table(labelled, methods), ""]
    parts += ["## Paired comparison of the search: variant minus EarlyBird, seed by seed\n"]
    parts += [search_table(comparisons), ""]
    compared = set(zip(comparisons["setting"], comparisons["variant"], strict=True))
    alone = [
        f"{r.variant} ({r.setting})"
        for r in methods.itertuples(index=False)
        if r.method in compare.WORM_FAMILY and (r.setting, r.variant) not in compared
    ]
    if alone:
        parts += [f"Not compared, no EarlyBird trial in their setting: {'; '.join(alone)}.\n"]
    parts += ["## Accuracy, paired: variant minus EarlyBird\n", accuracy_table(comparisons), ""]
    parts += ["## Plots\n", *figures]
    parts += [
        "## Files\n",
        f"- [`{TRIALS_CSV}`]({TRIALS_CSV}): one row per trial: its config, status and summary metrics.",
        f"- [`{METHODS_CSV}`]({METHODS_CSV}): per setting and method, every mean and interval, unrounded.",
        f"- [`{COMPARISONS_CSV}`]({COMPARISONS_CSV}): every paired comparison above, unrounded.",
        "",
    ]
    return "\n".join(parts)


def trials_table(methods: pd.DataFrame) -> str:
    if methods.empty:
        return "No trials."
    header = ["setting", "method", "trials", "converged", "not converged", "unfinished"]
    rows = [
        [r.setting, r.variant, str(r.trials), str(r.converged), str(r.not_converged), str(r.unfinished)]
        for r in methods.itertuples(index=False)
    ]
    note = "\n\nUnfinished: diverged, stopped early, failed, interrupted or still running."
    return table(header, rows) + note


def paper_table(labelled: pd.DataFrame, methods: pd.DataFrame) -> str:
    if methods.empty:
        return "No trials."
    header = ["setting", "method", "search epochs", "acc. before pruning", "acc. after 1 retrain epoch"]
    header += ["epochs to target", "final acc.", "total time (s)"]
    rows, matched = [], False
    for r in methods.to_dict("records"):
        reached = f" ({r['reached_target']}/{r['finished']} reached)" if r["method"] != "dense" else ""
        rows.append(
            [
                r["setting"],
                r["variant"],
                estimate(r, "search_epochs", ".2f"),
                estimate(r, "pre_prune_acc", "%"),
                estimate(r, "acc_after_1_retrain_epoch", "%"),
                estimate(r, "epochs_to_target", ".2f") + reached,
                estimate(r, "final_acc", "%"),
                estimate(r, "total_time", ".0f"),
            ]
        )
        first = labelled[(labelled["setting"] == r["setting"]) & (labelled["variant"] == r["variant"])].iloc[0]
        theirs = paper.paper_row(first.to_dict())
        if theirs is not None:
            matched = True
            rows.append(
                [
                    "",
                    f"↳ {paper.SOURCE}",
                    f"{theirs.search_epochs:g}",
                    f"{theirs.pre_prune_acc:.2%}",
                    f"{theirs.acc_after_1_retrain_epoch:.2%}",
                    f"{theirs.epochs_to_target:g}",
                    "-",
                    f"{theirs.total_time:g}",
                ]
            )
    note = (
        "The paper's rows appear under ours where the setting matches its protocol."
        if matched
        else "No setting of this sweep matches the paper's protocol (pretrained ResNet-18 or VGG-11 on CIFAR-10, "
        "batch 32, SGD lr 0.01, window 5, s = 0.1, δ = 0.05, r = 0.003, target 90%), so its figures are not shown."
    )
    return table(header, rows) + "\n\n" + note


def search_table(comparisons: pd.DataFrame) -> str:
    if comparisons.empty:
        return "No pairs: the sweep has no WORM-family trial with an EarlyBird trial of the same seed and setting."
    header = ["setting", "variant", "pairs", "EarlyBird", "variant", "difference", "p", "verdict"]
    header += ["speed-up: epochs", "wall time", "FLOPs", "not converged (EB / variant)"]
    rows = []
    for setting, variant in comparisons[["setting", "variant"]].drop_duplicates().itertuples(index=False):
        by = comparisons[(comparisons["setting"] == setting) & (comparisons["variant"] == variant)]
        by = by.set_index("metric")
        epochs = by.loc["search_epochs"]
        rows.append(
            [
                setting,
                variant,
                str(int(epochs["n_pairs"])),
                estimate(epochs, "eb", ".2f"),
                estimate(epochs, "v", ".2f"),
                estimate(epochs, "diff", "+.2f"),
                pvalue(epochs["p"]),
                epochs["verdict"],
                speedup(by.loc["search_epochs"]),
                speedup(by.loc["search_time"]),
                speedup(by.loc["search_flops"]),
                f"{int(epochs['eb_not_converged'])} / {int(epochs['v_not_converged'])}",
            ]
        )
    note = (
        "Search epochs: mean [95% CI] over each method's converged trials; the difference, p and speed-ups are "
        "over the pairs where both trials converged (speed-up = EarlyBird's mean cost over the variant's; "
        "above 1 means the variant found its ticket sooner). A trial that did not converge used the whole "
        "search budget and is counted in the last column, not compared."
    )
    return table(header, rows) + "\n\n" + note


def accuracy_table(comparisons: pd.DataFrame) -> str:
    if comparisons.empty:
        return "No pairs to compare."
    keys = ("pre_prune_acc", "post_prune_acc", "acc_after_1_retrain_epoch", "epochs_to_target", "final_acc")
    header = ["setting", "variant", "metric", "EarlyBird", "variant", "difference", "p", "pairs", "verdict"]
    rows = []
    for r in comparisons[comparisons["metric"].isin(keys)].to_dict("records"):
        fmt = ".2f" if r["metric"] == "epochs_to_target" else "%"
        rows.append(
            [
                r["setting"],
                r["variant"],
                compare.METRIC[r["metric"]].label,
                estimate(r, "eb", fmt),
                estimate(r, "v", fmt),
                estimate(r, "diff", "+.2f" if fmt != "%" else "+%"),
                pvalue(r["p"]),
                str(int(r["n_pairs"])),
                r["verdict"],
            ]
        )
    return table(header, rows) + "\n\nAccuracy differences are in percentage points."


# -- formatting ------------------------------------------------------------------------------


def estimate(row: pd.Series | dict, prefix: str, fmt: str) -> str:
    """``mean [lo, hi] (n=k)``; ``-`` when nothing is known. ``%`` formats fractions as percent
    (``+%``: signed percentage points)."""
    value, lo, hi, n = (row[f"{prefix}_{k}"] for k in ("mean", "lo", "hi", "n"))
    if not np.isfinite(value):
        return "-"
    one = {"%": lambda v: f"{v:.2%}", "+%": lambda v: f"{100 * v:+.2f} pp"}.get(fmt, lambda v: format(v, fmt))
    interval = f" [{one(lo)}, {one(hi)}]" if np.isfinite(lo) else ""
    return f"{one(value)}{interval} (n={int(n)})"


def speedup(row: pd.Series) -> str:
    if not np.isfinite(row["speedup"]):
        return "-"
    interval = f" [{row['speedup_lo']:.2f}, {row['speedup_hi']:.2f}]" if np.isfinite(row["speedup_lo"]) else ""
    return f"{row['speedup']:.2f}x{interval}"


def pvalue(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:

    return format_table(header, [[c.replace("|", "\\|") for c in row] for row in rows])
