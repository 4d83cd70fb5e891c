"""A sweep's report: ``report.md`` with its tables and plots, the same as a self-contained
``report.html``, the CSVs, and the PNGs, in one folder; the same files logged to the sweep's parent
MLflow run (under ``report/``), with the headline paired differences as the run's metrics."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import compare, paper, plots, sequential, study, tickets
from analysis.cells import difference, estimate, family, pair_count, pvalue, speedup, table
from analysis.load import FINISHED, Sweep
from analysis.page import to_html
from analysis.stats import ALPHA, LEVEL, MIN_PAIRS, N_BOOT, WILCOXON_METHOD
from worm_tune.tune import store
from worm_tune.tune.plan import cell

REPORT, TRIALS_CSV, COMPARISONS_CSV, METHODS_CSV = "report.md", "trials.csv", "comparisons.csv", "methods.csv"
VERSUS_CSV = "versus.csv"
CANDIDATE_FRONT = "candidate_front.png"
#: How many of an Optuna study's candidates (its best) the per-variant plots show beside EarlyBird.
PLOTTED_CANDIDATES = 3
#: The accuracy table's rows, in order: the at-the-stop one beside its like-with-like counterpart.
ACCURACY = ("pre_prune_acc", "acc_at_matched_epoch", "post_prune_acc", "acc_after_1_retrain_epoch")
ACCURACY += ("epochs_to_target", "final_acc")
HTML = "report.html"
ARTIFACT_DIR = "report"
#: The comparisons whose paired mean difference and pair count the parent run carries as metrics.
HEADLINE = ("search_epochs", "final_acc")
#: MLflow's limit on a metric name, less the longest ``/<metric>_pairs`` ending.
MAX_PREFIX = 250 - len("/search_epochs_pairs")


@dataclass
class Report:
    """What a report run wrote, and what it could not."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The parent run's headline metrics (:func:`headline_metrics`), logged with the files.
    headline: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / REPORT


def write(
    sweep: Sweep,
    out: Path,
    n_boot: int = N_BOOT,
    seed: int = 0,
    command: str = "",
    margin: float | None = None,
) -> Report:
    """Compute every comparison of ``sweep`` and write the report folder ``out``.

    ``margin``: the equivalence margin of accuracies (a fraction: 0.01 is 1 pp), or None for no
    TOST. Tickets are compared when the sweep was read from MLflow, where they are artifacts.
    """
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    labelled = compare.label(sweep.trials)
    comparisons = compare.compare(labelled, n_boot, seed, margin, sweep.curves)
    versus = compare.versus(labelled, n_boot, seed, margin, sweep.curves)
    methods = compare.per_method(labelled, n_boot, seed)
    frames = [(TRIALS_CSV, labelled), (COMPARISONS_CSV, comparisons), (VERSUS_CSV, versus), (METHODS_CSV, methods)]
    optuna = sweep.search == "optuna"  # its candidates ranked on its objectives, with their own section and plot
    objectives = study.objectives_of(sweep)
    ranked = study.candidates(comparisons, methods, objectives) if optuna else pd.DataFrame()
    if optuna:
        frames.append((study.CANDIDATES_CSV, ranked))
    else:  # an earlier report's study files (read from MLflow, this one from Ray) must not pass for this one's
        for name in (study.CANDIDATES_CSV, CANDIDATE_FRONT):
            (out / name).unlink(missing_ok=True)
    for name, frame in frames:
        frame.to_csv(out / name, index=False)
        report.files.append(out / name)

    # A study's per-variant plots show EarlyBird and its best candidates: sixteen lines in one panel show none.
    shown, of = labelled, ""
    if optuna and ranked["variant"].nunique() > PLOTTED_CANDIDATES:
        best = ranked.sort_values("rank")["variant"].drop_duplicates().head(PLOTTED_CANDIDATES)
        shown = labelled[labelled["variant"].isin([compare.EB, *best])]
        of = f" ({compare.EB} and the {PLOTTED_CANDIDATES} best candidates)"
    figures: list[tuple[str, str, Callable[[Path], Path | None]]] = [
        ("mask_distance.png", f"Mask distance per search epoch{of}", partial(plots.mask_distance, shown, sweep.curves)),
        (
            "search_epochs_vs_ratio.png",
            f"Search epochs against the pruning ratio, pairs joined per seed{of}",
            partial(plots.search_epochs_vs, shown, "search.ratio"),
        ),
        (
            "search_epochs_vs_delta.png",
            f"Search epochs against δ, pairs joined per seed{of}",
            partial(plots.search_epochs_vs, shown, "worm.delta"),
        ),
        ("recovery.png", f"Accuracy recovery during retraining{of}", partial(plots.recovery, shown, sweep.curves)),
        ("pareto.png", f"Search cost against final accuracy{of}", partial(plots.pareto, shown)),
    ]
    if sweep.until is not None:
        title = "Anytime-valid intervals as the seeds came in"
        figures.insert(0, (sequential.FIGURE, title, partial(sequential.plot, sweep, labelled)))
    if optuna:
        draw = partial(plots.candidate_front, ranked, objectives)
        figures.append((CANDIDATE_FRONT, "The Optuna candidates' paired effects and their Pareto front", draw))
    embedded = []
    for name, title, draw in figures:
        path = draw(out / name)
        if path is None:
            (out / name).unlink(missing_ok=True)  # a stale plot from an earlier run must not pass for this one
            embedded.append(f"### {title}\n\nNothing to plot yet for this sweep.\n")
        else:
            report.files.append(path)
            embedded.append(f"### {title}\n\n![{title}]({name})\n")

    from_mlflow = sweep.tracking_uri is not None and sweep.source.startswith("MLflow")
    found = tickets.load_tickets(sweep.tracking_uri, sweep.trials) if from_mlflow else {}
    sections = [tickets.section(labelled, found, n_boot, seed)]
    if sweep.until is not None:  # beside the search's comparison: the intervals the sweep stopped on
        sections.insert(0, sequential.section(sweep, labelled, comparisons))
    if optuna:
        sections.append(study.section(sweep, ranked, comparisons, compare.pairs(labelled, sweep.curves), objectives))
    text = markdown(sweep, labelled, comparisons, methods, embedded, n_boot, command, margin, versus, sections)
    report.path.write_text(text)
    (out / HTML).write_text(to_html(text, out), encoding="utf-8")
    report.files[:0] = [report.path, out / HTML]
    report.headline = headline_metrics(comparisons)
    return report


def log_to_mlflow(report: Report, uri: str, parent_run_id: str) -> None:
    """The report folder as artifacts of the sweep's parent run, so the MLflow UI shows it, and the
    headline differences as the run's metrics, so runs can be compared and charted on them."""
    from mlflow.entities import Metric

    client = store.client(uri)
    files = [Path(path).resolve() for path in report.files]  # before at_store changes the working directory
    with store.at_store(uri):
        for path in files:
            client.log_artifact(parent_run_id, str(path), ARTIFACT_DIR)
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in report.headline.items()]
    client.log_batch(parent_run_id, metrics=metrics)


def headline_metrics(comparisons: pd.DataFrame) -> dict[str, float]:
    """Per setting and variant, ``headline/<setting>/<variant>/<metric>_diff`` (the mean paired
    difference, variant minus EarlyBird; left out when no pair has one) and ``..._pairs``, for each
    :data:`HEADLINE` metric. Names are ASCII that MLflow accepts, at most 250 characters, and unique."""
    out: dict[str, float] = {}
    taken: set[str] = set()
    for (setting, variant), rows in comparisons.groupby(["setting", "variant"], sort=True):
        prefix = _metric_prefix(str(setting), str(variant), taken)
        taken.add(prefix)
        by = rows.set_index("metric")
        for key in HEADLINE:
            out[f"{prefix}/{key}_pairs"] = float(by.at[key, "n_pairs"])
            if math.isfinite(diff := float(by.at[key, "diff_mean"])):
                out[f"{prefix}/{key}_diff"] = diff
    return out


def _metric_prefix(setting: str, variant: str, taken: set[str]) -> str:
    """``headline/<setting>/<variant>`` in MLflow's metric alphabet; a hash of the two labels
    replaces its tail when it is too long or another label pair already cleaned to it."""
    prefix = f"headline/{_metric_part(setting)}/{_metric_part(variant)}"
    if len(prefix) > MAX_PREFIX or prefix in taken:
        digest = hashlib.sha1(f"{setting}\n{variant}".encode()).hexdigest()[:8]
        prefix = f"{prefix[: MAX_PREFIX - len(digest) - 1]}-{digest}"
    return prefix


def _metric_part(label: str) -> str:
    """A setting or variant label as one path component of a metric name: ASCII letters, digits,
    ``_ - .`` and single spaces (``δ=0.05`` becomes ``delta_0.05``)."""
    text = label.replace("δ", "delta").replace("·", " ").replace("=", "_")
    text = " ".join(re.sub(r"[^A-Za-z0-9_.\- ]", "_", text).split())
    return text if text.strip(".") else "_"  # "." or ".." would be read as a path


# -- the Markdown ----------------------------------------------------------------------------


def markdown(
    sweep: Sweep,
    labelled: pd.DataFrame,
    comparisons: pd.DataFrame,
    methods: pd.DataFrame,
    figures: list[str],
    n_boot: int,
    command: str,
    margin: float | None = None,
    versus: pd.DataFrame | None = None,
    extra_sections: Sequence[str] = (),
) -> str:
    """The report's Markdown. ``versus``: :func:`analysis.compare.versus`'s table (none: no section
    rows); ``extra_sections`` go before the plots."""
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
        f"Intervals are {LEVEL:.0%} BCa bootstrap intervals (bias-corrected and accelerated, {n_boot} resamples); "
        "p-values are two-sided Wilcoxon signed-rank tests on paired seeds, called significant when their "
        f"Holm-adjusted value is below {ALPHA}. "
        f"A figure resting on fewer than {MIN_PAIRS} values (pairs, for a difference) gets no interval and no "
        f"p-value, and its rows show each seed's values instead: with so few a bootstrap interval covers far less "
        f"than {LEVEL:.0%}, and no Wilcoxon test on fewer than {MIN_PAIRS} pairs can reach {ALPHA}. Search cost "
        "counts converged trials only and is measured first in epochs and FLOPs, which do not depend on the "
        f"machine; wall time is compared only over pairs whose two trials ran side by side on one node (overlapping "
        f"for at least {compare.MIN_OVERLAP:.0%} of the longer one's run), since trials run at other times or "
        "on other machines differ in wall time by the machine's load. Accuracies count every finished trial; "
        "`n` is how many trials (or pairs) a figure rests on.\n"
    )
    parts.append(
        f"The test is the {WILCOXON_METHOD}. Since it drops zero differences, the {MIN_PAIRS}-pair minimum for a "
        "p-value counts non-zero pairs: a row of 20 pairs of which 2 differ shows its seeds, not a test. "
        "Verdicts use Holm's correction within families: a family is one setting and one metric, with every "
        f"variant compared with that setting's EarlyBird (or, in the variant-against-variant tables, one setting, "
        "one knob and one metric, with every pair of variants that differ only in that knob); each table shows "
        "the raw p, the Holm-adjusted p the verdict rests on, and how many tests its family holds. Holm keeps "
        f"the chance of calling any test of a family significant when none is at {ALPHA}, whatever the family's "
        "size.\n"
    )
    if margin is not None:
        m = compare.margin_text(margin)
        parts.append(
            f"Equivalence within ±{m} (TOST): for each accuracy comparison two one-sided Wilcoxon tests, of "
            f'"the difference is at or below -{m}" and of "at or above +{m}". Both rejected at {ALPHA}: '
            f'"equivalent within ±{m}"; significantly below -{m} (with the difference itself significant): '
            f'"worse"; above +{m}: "better"; else "undecided": the data cannot tell a difference within '
            "the margin from one beyond it. Not significant alone never means no difference.\n"
        )
    paired = compare.pairs(labelled, sweep.curves)
    parts += ["## Trials\n", trials_table(methods), ""]
    parts += ["## Search epochs and accuracy, per method (the shape of the paper's Tables 2 and 3)\n"]
    parts += [paper_table(labelled, methods), ""]
    parts += ["## Paired comparison of the search: variant minus EarlyBird, seed by seed\n"]
    parts += [search_table(comparisons, paired), ""]
    parts += ["## WORM's trigger epoch\n", trigger_table(labelled, methods), ""]
    parts += ["## Wall time, paired: only pairs that ran side by side\n", wall_time_table(comparisons, paired), ""]
    compared = set(zip(comparisons["setting"], comparisons["variant"], strict=True))
    alone = [
        f"{r.variant} ({r.setting})"
        for r in methods.itertuples(index=False)
        if r.method in compare.TRUNCATING and (r.setting, r.variant) not in compared
    ]
    if alone:
        parts += [f"Not compared, no EarlyBird trial in their setting: {'; '.join(alone)}.\n"]
    parts += ["## Accuracy, paired: variant minus EarlyBird (exploratory)\n"]
    parts += [accuracy_table(comparisons, paired, margin), ""]
    parts += ["## Variant against variant\n", versus_tables(versus, margin), ""]
    # The hook for sections computed elsewhere (ticket overlap): each a whole "## " section.
    parts += [section.rstrip("\n") + "\n" for section in extra_sections]
    parts += ["## Plots\n", *figures]
    parts += [
        "## Files\n",
        f"- [`{TRIALS_CSV}`]({TRIALS_CSV}): one row per trial: its config, status and summary metrics.",
        f"- [`{METHODS_CSV}`]({METHODS_CSV}): per setting and method, every mean and interval, unrounded.",
        f"- [`{COMPARISONS_CSV}`]({COMPARISONS_CSV}): every paired comparison above, unrounded.",
        f"- [`{VERSUS_CSV}`]({VERSUS_CSV}): every comparison of variant against variant, unrounded.",
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
                    f"↳ {paper.SOURCE}, training-set accuracy",
                    f"{theirs.search_epochs:g}",
                    f"{theirs.pre_prune_acc:.2%}",
                    f"{theirs.acc_after_1_retrain_epoch:.2%}",
                    f"{theirs.epochs_to_target:g}",
                    "-",
                    f"{theirs.total_time:g}",
                ]
            )
    note = (
        "The paper's rows (↳) appear under ours where the setting matches its protocol in every field it fixes. "
        + paper.CAVEAT
        if matched
        else f"No setting of this sweep matches the paper's protocol ({paper.PROTOCOL_TEXT}), "
        "so its figures are not shown."
    )
    if not matched and (closest := paper.closest(labelled.to_dict("records"))):
        note += f" The closest setting of the paper's models and methods differs in: {closest}."
    return table(header, rows) + "\n\n" + note


def search_table(comparisons: pd.DataFrame, paired: pd.DataFrame) -> str:
    if comparisons.empty:
        return (
            "No pairs: the sweep has no trial of a truncating method with an EarlyBird trial of the same seed "
            "and setting."
        )
    header = ["setting", "variant", "pairs", "EarlyBird", "variant", "difference", "p", "Holm p", "family"]
    header += ["verdict", "speed-up: epochs", "FLOPs", "not converged (EB / variant)"]
    rows = []
    for setting, variant in comparisons[["setting", "variant"]].drop_duplicates().itertuples(index=False):
        mine = comparisons[(comparisons["setting"] == setting) & (comparisons["variant"] == variant)]
        by = {r["metric"]: r for r in mine.to_dict("records")}
        epochs = by["search_epochs"]
        rows.append(
            [
                setting,
                variant,
                pair_count(epochs),
                estimate(epochs, "eb", ".2f"),
                estimate(epochs, "v", ".2f"),
                difference(epochs, paired, "+.2f"),
                pvalue(epochs["p"]),
                pvalue(epochs["p_holm"]),
                family(epochs),
                epochs["verdict"],
                speedup(by["search_epochs"]),
                speedup(by["search_flops"]),
                f"{int(epochs['eb_not_converged'])} / {int(epochs['v_not_converged'])}",
            ]
        )
    note = (
        "Search epochs: mean [95% CI] over each method's converged trials; the difference, p and speed-ups are "
        "over the pairs where both trials converged (speed-up = EarlyBird's mean cost over the variant's; "
        "above 1 means the variant found its ticket sooner). A trial that did not converge used the whole "
        "search budget and is counted in the last column, not compared. Wall time is in its own table below. "
        "Pairs: how many, and how many of them differ when some tie; family: the tests Holm's correction "
        f"spans (this setting's variants, each against {compare.EB}); the verdict rests on the Holm p."
    )
    return table(header, rows) + "\n\n" + note + _few_pairs_note(comparisons, ("search_epochs",))


def trigger_table(labelled: pd.DataFrame, methods: pd.DataFrame) -> str:
    """When each truncating variant began truncating: the search epoch at which ``d_avg < s + δ``,
    which moves with δ (EarlyBird never truncates, so it has no row)."""
    truncating = methods[methods["method"].isin(compare.TRUNCATING)] if not methods.empty else methods
    if truncating.empty:
        return "No trials of a truncating method."
    header = ["setting", "variant", "trigger epoch", "triggered", "per seed"]
    rows = []
    for r in truncating.to_dict("records"):
        mine = labelled[(labelled["setting"] == r["setting"]) & (labelled["variant"] == r["variant"])]
        done = mine[mine["status"].isin(FINISHED)].sort_values("seed")
        epochs = done["trigger_epoch"].to_numpy(float)
        by_seed = zip(done["seed"], epochs, strict=True)
        seeds = ", ".join(f"{s}: {e:g}" if np.isfinite(e) else f"{s}: never" for s, e in by_seed)
        triggered = f"{int(np.isfinite(epochs).sum())} of {len(done)}"
        rows.append([r["setting"], r["variant"], estimate(r, "trigger_epoch", ".2f"), triggered, seeds or "-"])
    note = (
        "Trigger epoch: the search epoch at whose end WORM began truncating (mean over the finished trials that "
        "triggered); triggered: how many finished trials did; per seed: each finished trial's, by seed."
    )
    return table(header, rows) + "\n\n" + note


def wall_time_table(comparisons: pd.DataFrame, paired: pd.DataFrame) -> str:
    """Wall-time differences over the pairs that ran side by side on one node; machine load makes
    any other pair's wall times incomparable."""
    keys = tuple(m.key for m in compare.METRICS if m.timing)
    timing = comparisons[comparisons["metric"].isin(keys)]
    if timing.empty:
        return "No pairs to compare."
    header = ["setting", "variant", "metric", "pairs", "difference", "p", "Holm p", "verdict", "speed-up"]
    rows = []
    for r in timing.to_dict("records"):
        k, m = int(r["n_pairs"]), int(r["n_in_scope"])
        metric = compare.METRIC[r["metric"]]
        cells = [r["setting"], r["variant"], metric.label, f"concurrent pairs only, n={k} of {m}" if m else "no pairs"]
        if k == 0:
            diff, word = ("no pair ran side by side on one node", "not compared") if m else ("-", "no pairs")
            rows.append([*cells, diff, "-", "-", word, "-"])
        else:
            speed = speedup(r) if metric.speedup else "-"
            p = [pvalue(r["p"]), pvalue(r["p_holm"])]
            rows.append([*cells, difference(r, paired, "+.1f"), *p, r["verdict"], speed])
    note = (
        "Seconds, variant minus EarlyBird, over the pairs whose trials ran on the same node and overlapped for at "
        f"least {compare.MIN_OVERLAP:.0%} of the longer one's run (n=k of m: k such pairs of the m with both "
        "trials in scope). Search time counts converged pairs, total time finished ones."
    )
    return table(header, rows) + "\n\n" + note + _few_pairs_note(timing, keys)


def accuracy_table(comparisons: pd.DataFrame, paired: pd.DataFrame, margin: float | None = None) -> str:
    """Accuracy at every point of a trial, each point its own family of tests, so the table as a
    whole is exploratory; with a margin, each accuracy row's TOST verdict beside its difference test."""
    if comparisons.empty:
        return "No pairs to compare."
    header = ["setting", "variant", "metric", "EarlyBird", "variant", "difference", "p", "Holm p", "family", "pairs"]
    header += ["verdict"]
    if margin is not None:
        header += [f"equivalence (±{compare.margin_text(margin)})"]
    rows = []
    for r in comparisons[comparisons["metric"].isin(ACCURACY)].to_dict("records"):
        fmt = ".2f" if r["metric"] == "epochs_to_target" else "%"
        row = [
            r["setting"],
            r["variant"],
            compare.METRIC[r["metric"]].label,
            estimate(r, "eb", fmt),
            estimate(r, "v", fmt),
            difference(r, paired, "+.2f" if fmt != "%" else "+%"),
            pvalue(r["p"]),
            pvalue(r["p_holm"]),
            family(r),
            pair_count(r),
            r["verdict"],
        ]
        if margin is not None:
            row.append(r["equivalence"] or "-")
        rows.append(row)
    note = (
        "\n\nExploratory: accuracy is compared at several points of a trial, each its own family of tests, so one "
        "significant row among them is weaker evidence than a single pre-stated comparison. Accuracy differences "
        "are in percentage points. Acc. before pruning is read when each search stops, earlier for the method that "
        "stopped sooner, so its difference mixes the method's effect with less training: it is confounded by the "
        "stop. Dense acc. at the same epoch compares like with like: both networks of a pair at the earlier of "
        "their two stops, read from the per-epoch history."
    )
    return table(header, rows) + note + _few_pairs_note(comparisons, ACCURACY)


def versus_tables(versus: pd.DataFrame | None, margin: float | None = None) -> str:
    """One table per knob a sweep varies: each pair of variants that differ only in it, on their shared
    seeds (the larger value minus the smaller), in families of (setting, knob, metric)."""
    if versus is None or versus.empty:
        return (
            "No knob of the truncating methods varies within a setting of this sweep: no variants to compare "
            "with each other."
        )
    parts = []
    for knob, mine in versus.groupby("knob", sort=False):
        header = ["setting", "pair", "metric", "pairs", "difference", "p", "Holm p", "family", "verdict"]
        if margin is not None:
            header += [f"equivalence (±{compare.margin_text(margin)})"]
        rows = []
        for r in mine.to_dict("records"):
            metric = compare.METRIC[r["metric"]]
            row = [r["setting"], versus_label(r), metric.label, pair_count(r)]
            row += [estimate(r, "diff", "+%" if metric.accuracy else "+.2f"), pvalue(r["p"]), pvalue(r["p_holm"])]
            row += [family(r), r["verdict"]]
            if margin is not None:
                row.append(r["equivalence"] or "-")
            rows.append(row)
        parts.append(f"### {compare.knob_symbol(str(knob))} ({knob})\n\n{table(header, rows)}\n")
    note = (
        "Each pair of variants that differ only in the knob, compared seed by seed on the seeds both ran: the "
        "larger value minus the smaller (accuracies in percentage points). A family is one setting, one knob and "
        f"one metric; the verdict rests on the Holm p. Below {MIN_PAIRS} non-zero pairs a row has no test, and below "
        f"{MIN_PAIRS} pairs no interval."
    )
    return "\n".join(parts) + "\n" + note


def versus_label(row: dict) -> str:
    """``δ=0.03 − δ=0.01 (WORM r=0.003)``: the two knob values, then what the two variants share."""
    symbol = compare.knob_symbol(row["knob"])
    a, b = (f"{symbol}={cell(row[k])}" for k in ("a_value", "b_value"))
    shared = " ".join(word for word in str(row["a"]).split() if word != a)
    return f"{b} − {a} ({shared})"


def _few_pairs_note(comparisons: pd.DataFrame, keys: tuple[str, ...]) -> str:
    """Why a table shows seeds instead of intervals, said under it when it does."""
    mine = comparisons[comparisons["metric"].isin(keys)]
    few, tied = mine["n_pairs"].between(1, MIN_PAIRS - 1), mine["n_nonzero"].between(1, MIN_PAIRS - 1)
    note = ""
    if few.any():
        note += (
            f" Rows with fewer than {MIN_PAIRS} pairs show each seed's EarlyBird → variant values instead of an "
            f"interval and a p-value: with fewer than {MIN_PAIRS} pairs no interval or test can be meaningful."
        )
    if (tied & ~few).any():
        note += (
            f" Rows with fewer than {MIN_PAIRS} pairs that differ show each seed's values beside the interval, and "
            "no p-value: Wilcoxon's test drops the pairs that tie."
        )
    return note


# -- formatting ------------------------------------------------------------------------------


# -- the HTML --------------------------------------------------------------------------------
