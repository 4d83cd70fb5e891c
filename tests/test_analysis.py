"""The analysis on hand-made sweeps with known answers: pairing, intervals, p-values, what is not
compared and why, the report's files, and the command line on a hand-made MLflow store."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import cli, compare, load, paper, plots, report
from tests.test_stats import SKEWED, scipy_interval
from worm_tune import metrics
from worm_tune.config import TrialConfig
from worm_tune.tune.plan import SweepSettings
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, TAG_TRIAL

SETTING = {"data.dataset": "digits", "search.ratio": 0.5}


def trial(
    method: str, seed: int, status: str = "converged", config: dict | None = None, node_id: str = "", **metrics: float
) -> dict:
    """One row of the trials table: a real config, a status, the node it ran on and the given summary metrics."""
    cfg = TrialConfig().replace({"method": method, "seed": seed, **SETTING, **(config or {})})
    defaults = {"search_epochs": 6.0, "search_time": 10.0, "search_flops": 1e9, "final_acc": 0.8}
    defaults |= {"pre_prune_acc": 0.9, "post_prune_acc": 0.5, "acc_after_1_retrain_epoch": 0.7, "total_time": 20.0}
    return {
        "trial_id": f"{method}-{seed}-{cfg.hash()}",
        "run_id": "",
        "status": status,
        "config_hash": cfg.hash(),
        "node_id": node_id,
        **cfg.to_flat(),
        **(defaults | metrics),
    }


def curves_of(trials: pd.DataFrame) -> pd.DataFrame:
    """Plausible per-epoch rows: mask distance falling over the search, accuracy rising in retraining."""
    rows = []
    for t in trials.to_dict("records"):
        search = int(t["search_epochs"]) if math.isfinite(t["search_epochs"]) else 2
        for e in range(1, search + 1):
            d = 0.5 / e if e >= t["search.window"] else math.nan
            rows.append({"trial_id": t["trial_id"], "step": e, "phase": "search", "phase_epoch": e,
                         "test_acc": 0.1 * e, "d_max": d, "d_avg": d and d / 2, "r": 1.0,
                         "truncated_units": 0.0})  # fmt: skip
        if t["status"] in load.FINISHED:
            for e in (1, 2):
                rows.append({"trial_id": t["trial_id"], "step": search + e, "phase": "retrain", "phase_epoch": e,
                             "test_acc": 0.6 + 0.1 * e, "d_max": math.nan, "d_avg": math.nan,
                             "r": 1.0, "truncated_units": 0.0})  # fmt: skip
    return pd.DataFrame(rows, columns=["trial_id", "step", "phase", "phase_epoch", *metrics.CURVES])


def sweep_of(rows: list[dict], running: bool = False) -> load.Sweep:
    trials = load.trials_frame(rows)
    return load.Sweep("handmade", "hand-made rows", trials, curves_of(trials), running=running)


def comparison(rows: list[dict], metric: str = "search_epochs") -> pd.Series:
    table = compare.compare(compare.label(load.trials_frame(rows)), n_boot=2000)
    (row,) = [r for _, r in table.iterrows() if r["metric"] == metric]
    return row


def ran(start: float, end: float, node_id: str = "node-a") -> dict[str, Any]:
    """Where and when a trial ran: its node and its [started_at, ended_at]."""
    return {"node_id": node_id, "started_at": start, "ended_at": end}


def section(text: str, title: str) -> str:
    """One ``##`` section of a report, without its title."""
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def cells(part: str) -> list[list[str]]:
    """The rows of a section's table (its header first), each as its stripped cells."""
    lines = [line for line in part.splitlines() if line.startswith("|") and not line.startswith("|-")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


# -- pairing and comparisons -----------------------------------------------------------------


def test_pairs_share_the_seed_and_the_setting_and_eb_partners_every_variant() -> None:
    rows = [trial("earlybird", s, config={"search.ratio": p}) for s in range(3) for p in (0.3, 0.5)]
    rows += [trial("worm", s, config={"worm.delta": d}) for s in range(3) for d in (0.05, 0.1)]
    rows += [trial("worm", 3, config={"worm.delta": 0.05})]  # no EarlyBird partner
    labelled = compare.label(load.trials_frame(rows))
    pairs = compare.pairs(labelled)
    assert len(pairs) == 6 and sorted(pairs["variant"].unique()) == ["WORM δ=0.05 r=0.003", "WORM δ=0.1 r=0.003"]
    by_id = labelled.set_index("trial_id")
    for p in pairs.to_dict("records"):
        eb, v = by_id.loc[p["eb_trial"]], by_id.loc[p["v_trial"]]
        assert eb["seed"] == v["seed"] == p["seed"] and eb["search.ratio"] == v["search.ratio"] == 0.5
        assert eb["method"] == "earlybird" and v["method"] == "worm"
    assert set(labelled["setting"]) == {"resnet18 · digits · p=0.3 · s=0.1", "resnet18 · digits · p=0.5 · s=0.1"}


def test_a_setting_leaves_out_the_pair_its_knobs_and_where_and_how_the_arithmetic_ran() -> None:
    """Written out here, not read from the config's roles: a role dropped from a field fails a test."""
    worm = {"worm.delta", "worm.factor", "worm.scope", "worm.apply"}
    speed = {"speed.loader", "speed.precision", "speed.channels_last", "speed.compile"}
    runtime = {"data.data_dir", "data.download", "device", "threads", "crash_at_epoch"}
    assert {"method", "seed", *worm, *speed, *runtime} == compare.NOT_SETTING
    rows = [trial("earlybird", 0), trial("worm", 0, config={"speed.precision": "fp32", "device": "cpu"})]
    assert len(compare.pairs(compare.label(load.trials_frame(rows)))) == 1


def test_a_significant_paired_difference_with_known_answers() -> None:
    eb = [8, 9, 10, 11, 12, 13]
    rows = [trial("earlybird", s, search_epochs=e, search_time=2.0 * e, **ran(s, s + 1)) for s, e in enumerate(eb)]
    rows += [trial("worm", s, search_epochs=7, search_time=14.0, **ran(s, s + 1)) for s in range(6)]
    row = comparison(rows)
    assert row["n_pairs"] == 6 and row["eb_mean"] == 10.5 and row["v_mean"] == 7.0
    assert row["diff_mean"] == -3.5 and -6 <= row["diff_lo"] < -3.5 < row["diff_hi"] <= -1
    assert row["p"] == pytest.approx(2 / 2**6) and row["verdict"] == "significant"
    assert row["speedup"] == pytest.approx(1.5)
    assert comparison(rows, "search_time")["speedup"] == pytest.approx(1.5)


def test_five_pairs_get_no_interval_and_no_p_value() -> None:
    rows = [trial("earlybird", s, search_epochs=8 + s) for s in range(5)]
    rows += [trial("worm", s, search_epochs=7) for s in range(5)]
    row = comparison(rows)
    assert row["diff_mean"] == -3 and row["speedup"] == pytest.approx(10 / 7)
    for key in ("p", "diff_lo", "diff_hi", "speedup_lo", "speedup_hi", "eb_lo", "v_lo"):
        assert math.isnan(row[key]), key
    assert row["verdict"] == "too few pairs (n=5 < 6): per-seed values shown"


def test_non_converged_trials_are_counted_and_left_out_of_the_search_comparison() -> None:
    rows = [trial("earlybird", s, search_epochs=8) for s in range(4)]
    rows += [trial("worm", s, search_epochs=6) for s in range(3)]
    rows += [trial("worm", 3, "not_converged", search_epochs=30, final_acc=0.4)]
    search, final = comparison(rows), comparison(rows, "final_acc")
    assert search["v_not_converged"] == 1 and search["eb_not_converged"] == 0
    assert search["n_pairs"] == 3 and search["v_n"] == 3 and search["v_mean"] == 6.0
    assert final["n_pairs"] == 4 and final["v_mean"] == pytest.approx((3 * 0.8 + 0.4) / 4)
    assert final["diff_mean"] == pytest.approx(-0.1)


def test_unfinished_trials_are_counted_but_not_compared() -> None:
    rows = [trial("earlybird", s) for s in range(3)]
    rows += [trial("worm", 0), trial("worm", 1, "running"), trial("worm", 2, "diverged")]
    row = comparison(rows, "final_acc")
    assert row["v_unfinished"] == 2 and row["n_pairs"] == 1 and row["verdict"].startswith("too few pairs (n=1 < 6)")
    assert math.isnan(row["p"]) and math.isnan(row["diff_lo"])


def test_no_worm_trials_means_no_comparisons() -> None:
    labelled = compare.label(load.trials_frame([trial("earlybird", s) for s in range(3)]))
    assert compare.compare(labelled).empty
    (row,) = compare.per_method(labelled).to_dict("records")
    assert row["variant"] == "EarlyBird" and row["trials"] == row["converged"] == 3


def test_ten_pairs_get_scipys_bca_intervals() -> None:
    eb = SKEWED + 5  # skewed search costs, where BCa and the percentile interval part
    rows = [trial("earlybird", s, search_epochs=e) for s, e in enumerate(eb)]
    rows += [trial("worm", s, search_epochs=5.0 + (s % 3)) for s in range(10)]
    row = comparison(rows)
    d = np.array([5.0 + (s % 3) for s in range(10)]) - eb
    assert row["n_pairs"] == 10 and row["diff_mean"] == pytest.approx(d.mean())
    assert (row["diff_lo"], row["diff_hi"]) == scipy_interval((d,))
    assert (row["diff_lo"], row["diff_hi"]) != scipy_interval((d,), "percentile")
    assert (row["speedup_lo"], row["speedup_hi"]) == scipy_interval((eb, eb + d))
    assert row["eb_lo"] < row["eb_mean"] < row["eb_hi"] and row["v_lo"] < row["v_mean"] < row["v_hi"]
    assert math.isfinite(row["p"]) and row["verdict"] in ("significant", "not significant")


@pytest.mark.parametrize(
    ("eb", "worm", "together"),
    [
        (ran(0, 100), ran(0, 90), True),
        (ran(0, 100), ran(40, 140), True),  # overlap 60 of the longer 100
        (ran(0, 100), ran(60, 160), False),  # overlap 40 of 100
        (ran(0, 100), ran(100, 200), False),  # one after the other
        (ran(0, 100), ran(0, 100, "node-b"), False),
        (ran(0, 100, ""), ran(0, 100, ""), False),  # node unknown: a run logged before it was recorded
        (ran(0, 100), ran(0, math.nan), False),
    ],
)
def test_a_pair_ran_together_when_it_shared_a_node_for_most_of_its_run(eb: dict, worm: dict, together: bool) -> None:
    assert compare.ran_together(eb, worm) is together
    assert compare.ran_together(worm, eb) is together


def wall_time_rows(worm_runs: list[dict[str, Any]]) -> list[dict]:
    """Six pairs: EarlyBird trials ran at [1000 s, 1000 s + 100 s) per seed, WORM's where ``worm_runs`` says."""
    rows = [trial("earlybird", s, search_time=20.0, total_time=40.0, **ran(1000 * s, 1000 * s + 100)) for s in range(6)]
    return rows + [trial("worm", s, search_time=10.0, total_time=30.0, **worm_runs[s]) for s in range(6)]


def test_wall_time_is_compared_over_side_by_side_pairs_only() -> None:
    side_by_side = [ran(1000 * s, 1000 * s + 90) for s in range(6)]
    assert comparison(wall_time_rows(side_by_side), "search_time")["speedup"] == pytest.approx(2.0)
    mixed = side_by_side[:3] + [ran(1000 * s + 100, 1000 * s + 190) for s in range(3, 6)]
    for metric in ("search_time", "total_time"):
        row = comparison(wall_time_rows(mixed), metric)
        assert (row["n_pairs"], row["n_in_scope"]) == (3, 6) and math.isnan(row["p"])
    elsewhere = [ran(1000 * s, 1000 * s + 90, "node-b") for s in range(6)]
    row = comparison(wall_time_rows(elsewhere), "search_time")
    assert (row["n_pairs"], row["n_in_scope"], row["verdict"]) == (0, 6, "no pairs") and math.isnan(row["speedup"])
    assert comparison(wall_time_rows(elsewhere), "search_epochs")["n_pairs"] == 6  # epochs and FLOPs: every pair


def test_the_trigger_epoch_is_the_variants_own_with_no_pair() -> None:
    rows = [trial("earlybird", s, trigger_epoch=math.nan) for s in range(3)]
    rows += [trial("worm", s, trigger_epoch=e) for s, e in enumerate((4, 5, math.nan))]
    row = comparison(rows, "trigger_epoch")
    assert row["v_mean"] == 4.5 and row["v_n"] == 2 and row["eb_n"] == 0 and row["n_pairs"] == 0
    assert row["verdict"] == "not paired: EarlyBird has none" and math.isnan(row["diff_mean"])


def test_the_apply_mode_names_the_variant_when_the_sweep_varies_it() -> None:
    rows = [trial("earlybird", 0), trial("worm", 0), trial("worm", 0, config={"worm.apply": "update"})]
    labelled = compare.label(load.trials_frame(rows))
    assert sorted(labelled["variant"]) == [
        "EarlyBird",
        "WORM δ=0.05 r=0.003 apply=grad",
        "WORM δ=0.05 r=0.003 apply=update",
    ]
    assert compare.label(load.trials_frame(rows[:2]))["variant"].tolist() == ["EarlyBird", "WORM δ=0.05 r=0.003"]


def test_variants_are_compared_with_each_other_on_the_seeds_both_ran() -> None:
    rows = [trial("earlybird", s) for s in range(6)]
    rows += [trial("worm", s, search_epochs=5, config={"worm.delta": 0.05}) for s in range(6)]
    rows += [trial("worm", s, search_epochs=4 + s % 2, config={"worm.delta": 0.1}) for s in range(1, 8)]
    versus = compare.versus(compare.label(load.trials_frame(rows)), n_boot=200)
    search = versus[versus["metric"] == "search_epochs"].iloc[0]
    # Seeds 1-5 both ran; δ=0.1 minus δ=0.05 is -1 on seeds 2, 4 and 0 on seeds 1, 3, 5.
    assert (search["a"], search["b"], search["n_pairs"], search["n_nonzero"]) == (
        "WORM δ=0.05 r=0.003",
        "WORM δ=0.1 r=0.003",
        5,
        2,
    )
    assert search["diff_mean"] == pytest.approx(-2 / 5) and math.isnan(search["p"])
    assert search["verdict"] == "too few pairs (n=5 < 6): per-seed values shown"
    assert math.isnan(versus[versus["metric"] == "acc_at_matched_epoch"].iloc[0]["diff_mean"])  # no curves given
    assert compare.versus(compare.label(load.trials_frame(rows[:12]))).empty  # one δ: nothing to compare


# -- the report ------------------------------------------------------------------------------

PLOTS = ("mask_distance.png", "search_epochs_vs_ratio.png", "search_epochs_vs_delta.png", "recovery.png", "pareto.png")


def test_the_report_has_every_table_plot_and_csv(tmp_path: Path) -> None:
    rows = [trial("earlybird", s, search_epochs=8 + s, config={"search.window": 3}) for s in range(6)]
    rows += [trial("worm", s, search_epochs=7, config={"search.window": 3}) for s in range(6)]
    written = report.write(sweep_of(rows), tmp_path, n_boot=1000)
    text = written.path.read_text()
    for name in (*PLOTS, report.TRIALS_CSV, report.COMPARISONS_CSV, report.METHODS_CSV):
        assert (tmp_path / name).stat().st_size > 0, name
        assert f"({name})" in text, name
    assert "| WORM δ=0.05 r=0.003 | 6 " in text and "significant" in text and "-3.50" in text
    assert "No setting of this sweep matches the paper's protocol" in text
    assert len(pd.read_csv(tmp_path / report.TRIALS_CSV)) == 12


def test_a_one_panel_figures_title_stays_inside_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A title wider than one panel wraps instead of running off both edges (a pruning study's
    recovery plot lost its first and last words)."""
    rows = [trial(m, s, config={"search.window": 3}) for m in ("earlybird", "worm") for s in range(3)]
    sweep = sweep_of(rows)
    figures: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    assert plots.recovery(compare.label(sweep.trials), sweep.curves, tmp_path / "recovery.png") is not None
    (fig,) = figures
    fig.canvas.draw()  # lays out and wraps the title
    box = fig.get_tightbbox().transformed(fig.dpi_scale_trans)  # inches -> pixels
    assert fig.bbox.x0 <= box.x0 + 1 and box.x1 <= fig.bbox.x1 + 1, (box, fig.bbox)


def test_panel_titles_of_long_settings_do_not_run_into_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings that vary many fields (the ViT study's cases) get titles broken to their panel's width."""
    cases = [
        {"search.window": 3, "search.threshold": 0.016, "search.max_epochs": 16, "prune.kind": "unstructured"},
        {"search.window": 5, "search.threshold": 0.01, "search.max_epochs": 24, "prune.kind": "structured"},
    ]
    rows = [trial(m, s, config=c) for c in cases for m in ("earlybird", "worm") for s in range(3)]
    sweep = sweep_of(rows)
    figures: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    assert plots.recovery(compare.label(sweep.trials), sweep.curves, tmp_path / "recovery.png") is not None
    (fig,) = figures
    fig.canvas.draw()
    left, right = (ax.title.get_window_extent() for ax in fig.axes if ax.get_visible())
    assert left.x1 < right.x0, (left, right)


def test_the_papers_rows_sit_under_a_matching_setting_with_the_training_set_caveat(tmp_path: Path) -> None:
    protocol = {"data.dataset": "cifar10", "model.pretrained": True, "search.ratio": 0.5}
    protocol |= {"search.rules": "reference", "speed.precision": "fp32", "retrain.stop_at_target": True}
    rows = [trial(m, s, config=protocol) for m in ("earlybird", "worm") for s in range(2)]
    text = report.write(sweep_of(rows), tmp_path, n_boot=200).path.read_text()
    assert text.count(paper.SOURCE) == 2 and "81.67%" in text and "80.67%" in text
    assert paper.CAVEAT in text and "training-set" in text and "held-out" in text
    other = [trial(m, s, config=protocol | {"search.ratio": 0.3}) for m in ("earlybird", "worm") for s in range(2)]
    text = report.write(sweep_of(other), tmp_path / "p03", n_boot=200).path.read_text()
    assert paper.SOURCE not in text and paper.CAVEAT not in text and "matches the paper's protocol" in text
    assert "differs in: search.ratio=0.3 (paper: 0.5)." in text  # what keeps the paper's row away


def test_three_pairs_show_each_seeds_values_and_no_interval(tmp_path: Path) -> None:
    rows = [trial("earlybird", s, search_epochs=8 + s, final_acc=0.8) for s in range(3)]
    rows += [trial("worm", s, search_epochs=7, final_acc=0.75) for s in range(3)]
    text = report.write(sweep_of(rows), tmp_path, n_boot=200).path.read_text()
    search = section(text, "Paired comparison of the search: variant minus EarlyBird, seed by seed")
    assert "| -2.00 (n=3): seed 0: 8.00 → 7.00; seed 1: 9.00 → 7.00; seed 2: 10.00 → 7.00 |" in search
    assert "too few pairs (n=3 < 6): per-seed values shown" in search
    assert "with fewer than 6 pairs no interval or test can be meaningful" in search
    accuracy = section(text, "Accuracy, paired: variant minus EarlyBird (exploratory)")
    assert "| -5.00 pp (n=3): seed 0: 80.00% → 75.00%; seed 1: 80.00% → 75.00%" in accuracy
    for part in (search, accuracy):
        assert not any("[" in cell for row in cells(part) for cell in row)  # no interval of any kind
    assert "BCa bootstrap" in text and "percentile" not in text


def test_ten_pairs_show_bca_intervals(tmp_path: Path) -> None:
    eb = SKEWED + 5
    rows = [trial("earlybird", s, search_epochs=e) for s, e in enumerate(eb)]
    rows += [trial("worm", s, search_epochs=5.0 + (s % 3)) for s in range(10)]
    text = report.write(sweep_of(rows), tmp_path, n_boot=2000).path.read_text()
    d = np.array([5.0 + (s % 3) for s in range(10)]) - eb
    lo, hi = scipy_interval((d,))
    search = section(text, "Paired comparison of the search: variant minus EarlyBird, seed by seed")
    assert f"{d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] (n=10)" in search and "seed 0:" not in search
    assert "too few pairs" not in search and "fewer than 6 pairs no interval" not in search


WALL = "Wall time, paired: only pairs that ran side by side"


def test_the_report_compares_wall_time_over_side_by_side_pairs_only(tmp_path: Path) -> None:
    mixed = [ran(1000 * s, 1000 * s + 90) for s in range(3)] + [ran(1000 * s + 100, 1000 * s + 190) for s in (3, 4, 5)]
    text = report.write(sweep_of(wall_time_rows(mixed)), tmp_path, n_boot=200).path.read_text()
    search_time, total_time = (row[2:] for row in cells(section(text, WALL))[1:])
    per_seed = "-10.0 (n=3): seed 0: 20.0 → 10.0; seed 1: 20.0 → 10.0; seed 2: 20.0 → 10.0"
    assert search_time[:4] == ["search time (s)", "concurrent pairs only, n=3 of 6", per_seed, "-"]
    assert total_time[:2] == ["total time (s)", "concurrent pairs only, n=3 of 6"]
    header = cells(section(text, "Paired comparison of the search: variant minus EarlyBird, seed by seed"))[0]
    assert header[-3:] == ["speed-up: epochs", "FLOPs", "not converged (EB / variant)"]  # wall time has its table
    apart = [ran(1000 * s + 100, 1000 * s + 190) for s in range(6)]
    text = report.write(sweep_of(wall_time_rows(apart)), tmp_path / "apart", n_boot=200).path.read_text()
    for row in cells(section(text, WALL))[1:]:
        assert row[3:] == [
            "concurrent pairs only, n=0 of 6",
            "no pair ran side by side on one node",
            "-",
            "-",
            "not compared",
            "-",
        ]


def test_the_report_shows_each_variants_trigger_epoch(tmp_path: Path) -> None:
    rows = [trial("earlybird", s, trigger_epoch=math.nan) for s in range(3)]
    rows += [trial("worm", s, trigger_epoch=e, config={"worm.delta": 0.05}) for s, e in enumerate((4, 5, 4))]
    rows += [trial("worm", s, trigger_epoch=e, config={"worm.delta": 0.1}) for s, e in enumerate((2, 3, math.nan))]
    text = report.write(sweep_of(rows), tmp_path, n_boot=200).path.read_text()
    assert [row[1:] for row in cells(section(text, "WORM's trigger epoch"))[1:]] == [
        ["WORM δ=0.05 r=0.003", "4.33 (n=3)", "3 of 3", "0: 4, 1: 5, 2: 4"],
        ["WORM δ=0.1 r=0.003", "2.50 (n=2)", "2 of 3", "0: 2, 1: 3, 2: never"],
    ]


def test_a_single_seed_and_a_running_sweep_give_a_partial_report(tmp_path: Path) -> None:
    rows = [trial("earlybird", 0), trial("worm", 0), trial("worm", 1, "running", search_epochs=math.nan)]
    text = report.write(sweep_of(rows, running=True), tmp_path, n_boot=200).path.read_text()
    assert "**Partial report.** 2 of 3 trials have finished and the sweep is still running" in text
    assert "too few pairs" in text


def test_a_sweep_of_earlybird_only_says_there_is_nothing_to_pair(tmp_path: Path) -> None:
    text = report.write(sweep_of([trial("earlybird", s) for s in range(2)]), tmp_path, n_boot=200).path.read_text()
    assert "No pairs: the sweep has no trial of a truncating method" in text
    assert "Nothing to plot yet" in text  # the delta plot needs WORM trials
    assert not (tmp_path / "search_epochs_vs_delta.png").exists()


# -- the command line on a hand-made MLflow store --------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Any]:
    """A real SQLite MLflow store holding a sweep as ``worm_tune.sweep`` lays it out: one finished
    EarlyBird/WORM pair and a WORM trial still running."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("resnet18", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={TAG_KIND: "sweep", TAG_SWEEP: "made"}).info.run_id
    for key, value in {"space": "resnet18", "name": "made", "storage": str(tmp_path / "ray")}.items():
        client.log_param(parent, key, value)  # as a sweep records them: where its driver's lock lives
    for row in (trial("earlybird", 0, final_acc=0.75), trial("worm", 0, final_acc=0.7), trial("worm", 1, "running")):
        cfg = {k: v for k, v in row.items() if "." in k or k in ("method", "seed")}
        tags = {PARENT_TAG: parent, TAG_KIND: "trial", TAG_SWEEP: "made", TAG_TRIAL: row["trial_id"]}
        tags |= {"method": row["method"], "seed": str(row["seed"]), "config_hash": row["config_hash"]}
        tags["node_id"] = "None" if row["status"] == "running" else "node-a"  # the callback's tag for a node unknown
        run = client.create_run(exp, tags=tags).info.run_id
        for key, value in cfg.items():
            client.log_param(run, key, value)
        for epoch in range(1, 4):
            client.log_metric(run, "mask_converged", 0.0, step=epoch)
            client.log_metric(run, "test_acc", 0.2 * epoch, step=epoch)
        if row["status"] == "running":
            continue
        client.log_metric(run, "test_acc", row["final_acc"], step=4)
        for key in ("search_epochs", "final_acc", "pre_prune_acc", "post_prune_acc", "search_flops"):
            client.log_metric(run, key, row[key], step=4)
        client.log_metric(run, "started_at", 1000.0, step=4)
        client.log_metric(run, "ended_at", 1100.0, step=4)
        client.set_tag(run, "status", row["status"])
        client.set_terminated(run, "FINISHED")
    return {"uri": uri, "parent": parent, "root": tmp_path}


def test_analysis_of_a_running_sweep_writes_a_partial_report_and_logs_it(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    reports = store["root"] / "reports"
    assert cli.main(["made", "--tracking-uri", store["uri"], "--reports", str(reports), "--bootstrap", "200"]) == 0
    assert f"report: {reports / 'made' / 'report.md'}" in capsys.readouterr().out
    text = (reports / "made" / "report.md").read_text()
    assert "2 of 3 trials have finished" in text
    # Its parent run is RUNNING but no driver holds the sweep's lock: the driver is gone.
    resume = f"`python -m worm_tune.sweep resnet18 --resume --name made --storage {store['root'] / 'ray'}`"
    assert f"the sweep did not finish and its driver is gone; {resume} continues it" in text
    trials = pd.read_csv(reports / "made" / report.TRIALS_CSV)
    assert sorted(trials["status"]) == ["converged", "converged", "running"]
    assert trials.set_index("method").loc["earlybird", "final_acc"] == 0.75
    read = load.from_mlflow(store["uri"], load.find_parent(store["uri"], "made")[0])
    curves, by_status = read.curves, read.trials.set_index("status")
    assert set(curves["phase"]) == {"search", "retrain"} and curves["step"].max() == 4
    assert by_status.loc["running", "node_id"] == "" and set(by_status.loc["converged", "node_id"]) == {"node-a"}
    assert set(by_status.loc["converged", "started_at"]) == {1000.0} and set(
        by_status.loc["converged", "ended_at"]
    ) == {1100.0}
    logged = {a.path for a in MlflowClient(store["uri"]).list_artifacts(store["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/trials.csv", "report/comparisons.csv"} <= logged


def test_the_ray_folder_gives_each_trial_its_node_and_times(tmp_path: Path) -> None:
    """Ray's result rows carry the node (``node_id``) and the summary the trial's times; a row without
    a node (a trial run before it was recorded) reads as an unknown node."""
    SweepSettings("resnet18", "made", str(tmp_path), f"sqlite:///{tmp_path / 'none.db'}", profile="quick").save()
    for i, (method, node) in enumerate((("earlybird", {"node_id": "node-a"}), ("worm", {}))):
        folder = tmp_path / "made" / "trials" / f"{method}-abc_0000{i}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"method": method, "seed": 0}))
        summary = {"method": method, "done": True, "converged": True, "started_at": 1000.0 + i, "ended_at": 1100.0}
        lines = [{"training_iteration": e, "phase": "search", "epoch": e, "summary": summary, **node} for e in (1, 2)]
        (folder / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    trials = load.from_ray(tmp_path / "made").trials.set_index("method")
    assert trials.loc["earlybird", "node_id"] == "node-a" and trials.loc["worm", "node_id"] == ""
    assert trials["started_at"].tolist() == [1000.0, 1001.0] and trials["ended_at"].tolist() == [1100.0, 1100.0]


def test_an_experiment_name_picks_its_newest_sweep(store: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["resnet18", "--tracking-uri", store["uri"], "--reports", str(store["root"] / "r"), "--no-log"]
    assert cli.main([*argv, "--bootstrap", "200"]) == 0
    assert (store["root"] / "r" / "made" / "report.md").is_file()
    assert not MlflowClient(store["uri"]).list_artifacts(store["parent"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "no sweep or experiment named 'nope' in sqlite:///"),
        (["made", "--bootstrap", "5"], "--bootstrap 5 is invalid: must be an integer >= 100"),
        (["made", "--seed", "-1"], "--seed -1 is invalid: must be an integer >= 0"),
        (["made", "--tracking-uri", "file:./mlruns"], "the ./mlruns file store is deprecated"),
        (["made", "--tracking-uri", "http://127.0.0.1:9"], "is unreachable"),
        (["made", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_analysis_input_is_one_line_and_exit_2(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    where = [] if "--tracking-uri" in argv else ["--tracking-uri", store["uri"]]
    assert cli.main([*argv, *where, "--storage", str(store["root"] / "ray")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{cli.PROG}: error: ") and message in err and "\n" not in err
    if argv == ["nope"]:
        assert "(its sweeps: made)" in err and "no Ray folder" in err


def test_a_missing_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert cli.main(["made", "--tracking-uri", uri, "--storage", str(tmp_path)]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_a_sweep_without_trials_yet_is_a_message_not_a_report(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(store["uri"])
    client.create_run(
        client.get_experiment_by_name("resnet18").experiment_id, tags={TAG_KIND: "sweep", TAG_SWEEP: "empty"}
    )
    assert cli.main(["empty", "--tracking-uri", store["uri"], "--reports", str(store["root"] / "r")]) == 1
    err = capsys.readouterr().err
    state = "it is running or was stopped (no sweep folder is recorded to tell which)"
    assert (
        err.strip()
        == f"{cli.PROG}: sweep 'empty' has no trials yet (MLflow {store['uri']}); {state}; nothing to report"
    )
    assert not (store["root"] / "r" / "empty").exists()


def test_importing_the_analysis_loads_no_ray_torch_or_cli() -> None:
    """A report does not pay for the machinery that ran the sweep (the import-linter contract, checked
    here on what a fresh interpreter really loads)."""
    code = "import sys, analysis.load, analysis.report; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("'ray'", "'torch'", "'torchvision'", "'optuna'"):
        assert heavy not in loaded
    modules = subprocess.run(
        [sys.executable, "-c", "import sys, analysis.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "worm_tune.cli" not in modules and "worm_tune.tune.runner" not in modules
