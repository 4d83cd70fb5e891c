"""The analysis on hand-made sweeps with known answers: pairing, intervals, p-values, what is not
compared and why, the report's files, and the command line on a hand-made MLflow store."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import cli, compare, load, paper, report, stats
from worm_tune.config import TrialConfig
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, TAG_TRIAL

SETTING = {"data.dataset": "digits", "search.ratio": 0.5}


def trial(method: str, seed: int, status: str = "converged", config: dict | None = None, **metrics: float) -> dict:
    """One row of the trials table: a real config, a status and the given summary metrics."""
    cfg = TrialConfig().replace({"method": method, "seed": seed, **SETTING, **(config or {})})
    defaults = {"search_epochs": 6.0, "search_time": 10.0, "search_flops": 1e9, "final_acc": 0.8}
    defaults |= {"pre_prune_acc": 0.9, "post_prune_acc": 0.5, "acc_after_1_retrain_epoch": 0.7, "total_time": 20.0}
    return {
        "trial_id": f"{method}-{seed}-{cfg.hash()}",
        "run_id": "",
        "status": status,
        "config_hash": cfg.hash(),
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
                         "test_acc": 0.1 * e, "mask_dist_max": d, "mask_dist_avg": d and d / 2, "r": 1.0,
                         "truncated_units": 0.0})  # fmt: skip
        if t["status"] in load.FINISHED:
            for e in (1, 2):
                rows.append({"trial_id": t["trial_id"], "step": search + e, "phase": "retrain", "phase_epoch": e,
                             "test_acc": 0.6 + 0.1 * e, "mask_dist_max": math.nan, "mask_dist_avg": math.nan,
                             "r": 1.0, "truncated_units": 0.0})  # fmt: skip
    return pd.DataFrame(rows, columns=["trial_id", "step", "phase", "phase_epoch", *load.CURVE_KEYS])


def sweep_of(rows: list[dict], running: bool = False) -> load.Sweep:
    trials = load.trials_frame(rows)
    return load.Sweep("handmade", "hand-made rows", trials, curves_of(trials), running=running)


def comparison(rows: list[dict], metric: str = "search_epochs") -> pd.Series:
    table = compare.compare(compare.label(load.trials_frame(rows)), n_boot=2000)
    (row,) = [r for _, r in table.iterrows() if r["metric"] == metric]
    return row


# -- statistics ------------------------------------------------------------------------------


def test_bootstrap_interval_of_a_constant_is_the_constant() -> None:
    est = stats.bootstrap_mean([7.0] * 5)
    assert (est.value, est.lo, est.hi, est.n) == (7.0, 7.0, 7.0, 5)


def test_bootstrap_interval_matches_the_normal_theory_on_a_large_sample() -> None:
    x = np.random.default_rng(1).normal(10.0, 2.0, 400)
    est = stats.bootstrap_mean(x, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert est.lo < est.value < est.hi
    assert (est.hi - est.lo) / 2 == pytest.approx(half, rel=0.1)
    assert est == stats.bootstrap_mean(x, seed=3)  # reproducible


def test_one_value_has_no_interval_and_nan_is_ignored() -> None:
    est = stats.bootstrap_mean([3.0, math.nan])
    assert est.value == 3.0 and est.n == 1 and math.isnan(est.lo) and math.isnan(est.hi)
    assert stats.bootstrap_mean([]).n == 0


def test_wilcoxon_exact_p_values() -> None:
    # Every difference negative, distinct magnitudes: the exact two-sided p is 2 / 2^n.
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5]) == pytest.approx(2 / 2**5)
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5, -6]) == pytest.approx(2 / 2**6)
    assert stats.wilcoxon_p([0, 0, 0]) == 1.0
    assert math.isnan(stats.wilcoxon_p([-1]))


def test_speedup_ratio_of_means_over_pairs() -> None:
    est = stats.bootstrap_ratio([6, 6, 8, 8], [4, 4, 4, 4])
    assert est.value == pytest.approx(1.75) and 1.5 <= est.lo <= est.value <= est.hi <= 2.0


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


def test_a_significant_paired_difference_with_known_answers() -> None:
    eb = [8, 9, 10, 11, 12, 13]
    rows = [trial("earlybird", s, search_epochs=e, search_time=2.0 * e) for s, e in enumerate(eb)]
    rows += [trial("worm", s, search_epochs=7, search_time=14.0) for s in range(6)]
    row = comparison(rows)
    assert row["n_pairs"] == 6 and row["eb_mean"] == 10.5 and row["v_mean"] == 7.0
    assert row["diff_mean"] == -3.5 and -6 <= row["diff_lo"] < -3.5 < row["diff_hi"] <= -1
    assert row["p"] == pytest.approx(2 / 2**6) and row["verdict"] == "significant"
    assert row["speedup"] == pytest.approx(1.5)
    assert comparison(rows, "search_time")["speedup"] == pytest.approx(1.5)


def test_five_pairs_cannot_be_significant() -> None:
    rows = [trial("earlybird", s, search_epochs=8 + s) for s in range(5)]
    rows += [trial("worm", s, search_epochs=7) for s in range(5)]
    row = comparison(rows)
    assert row["p"] == pytest.approx(2 / 2**5) and row["verdict"] == "not significant"


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
    assert row["v_unfinished"] == 2 and row["n_pairs"] == 1 and row["verdict"] == "too few pairs"
    assert math.isnan(row["p"]) and math.isnan(row["diff_lo"])


def test_no_worm_trials_means_no_comparisons() -> None:
    labelled = compare.label(load.trials_frame([trial("earlybird", s) for s in range(3)]))
    assert compare.compare(labelled).empty
    (row,) = compare.per_method(labelled).to_dict("records")
    assert row["variant"] == "EarlyBird" and row["trials"] == row["converged"] == 3


def test_paper_figures_apply_only_to_the_papers_protocol() -> None:
    protocol = {"data.dataset": "cifar10", "model.pretrained": True, "method": "worm"}
    cfg = TrialConfig().replace(protocol).to_flat()
    assert paper.paper_row(cfg) == paper.PAPER[("resnet18", "worm")]
    assert paper.paper_row(TrialConfig().replace({**protocol, "worm.delta": 0.1}).to_flat()) is None
    assert paper.paper_row(TrialConfig().replace({**protocol, "data.dataset": "digits"}).to_flat()) is None
    assert paper.paper_row(TrialConfig().replace({**protocol, "method": "earlybird"}).to_flat()).search_epochs == 6


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


def test_the_papers_rows_sit_under_a_matching_setting(tmp_path: Path) -> None:
    protocol = {"data.dataset": "cifar10", "model.pretrained": True, "search.ratio": 0.5}
    rows = [trial(m, s, config=protocol) for m in ("earlybird", "worm") for s in range(2)]
    text = report.write(sweep_of(rows), tmp_path, n_boot=200).path.read_text()
    assert text.count(paper.SOURCE) == 2 and "81.67%" in text and "80.67%" in text


def test_a_single_seed_and_a_running_sweep_give_a_partial_report(tmp_path: Path) -> None:
    rows = [trial("earlybird", 0), trial("worm", 0), trial("worm", 1, "running", search_epochs=math.nan)]
    text = report.write(sweep_of(rows, running=True), tmp_path, n_boot=200).path.read_text()
    assert "**Partial report.** 2 of 3 trials have finished and the sweep is still running" in text
    assert "too few pairs" in text


def test_a_sweep_of_earlybird_only_says_there_is_nothing_to_pair(tmp_path: Path) -> None:
    text = report.write(sweep_of([trial("earlybird", s) for s in range(2)]), tmp_path, n_boot=200).path.read_text()
    assert "No pairs: the sweep has no WORM-family trial" in text
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
    curves = load.from_mlflow(store["uri"], load.find_parent(store["uri"], "made")[0]).curves
    assert set(curves["phase"]) == {"search", "retrain"} and curves["step"].max() == 4
    logged = {a.path for a in MlflowClient(store["uri"]).list_artifacts(store["parent"], "report")}
    assert {"report/report.md", "report/trials.csv", "report/comparisons.csv"} <= logged


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
