"""The report's view of an Optuna study on hand-made candidates with answers worked out here: the
ranking on the first objective (ties to the second, then the label), the Pareto front with a
dominated candidate and a tie, Optuna's importances read from the parent run, and the whole report
of a study read from a real MLflow store.

Five candidates on seeds 0-2, each seed paired with EarlyBird's run (10 search epochs, 80% final
accuracy); candidate minus EarlyBird on every seed:

    candidate              search epochs   final acc.
    B  WORM δ=0.03 r=0.003      -3           -2 pp
    C  WORM δ=0.05 r=0.003      -3           -3 pp    dominated by B (as fast, less accurate)
    A  WORM δ=0.01 r=0.003      -1            0 pp    ties D on both
    D  WORM δ=0.03 r=0.01       -1            0 pp
    E  WORM δ=0.05 r=0.01       +1           +1 pp    the most accurate

Fewest search epochs first: B and C tie on -3 and B's accuracy is higher, A and D tie on both and go
by label, then E: B, C, A, D, E. On the front: B, A and D (a tie is on it together) and E; not C.
Highest accuracy first: E, then A and D (tied; both -1 epoch, by label), B, C.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import cli, compare, load, report, study
from analysis.load import IMPORTANCE
from tests.test_analysis import cells, curves_of, section, trial
from worm_tune.tune.spaces import Objective
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, TAG_TRIAL

SEEDS = range(3)
EB_EPOCHS, EB_ACC = 10.0, 0.80
#: Candidate (delta, r): its difference to EarlyBird in search epochs and in final accuracy, every seed.
CANDIDATES = {
    (0.01, 0.003): (-1, 0.0),
    (0.03, 0.003): (-3, -0.02),
    (0.05, 0.003): (-3, -0.03),
    (0.03, 0.01): (-1, 0.0),
    (0.05, 0.01): (+1, +0.01),
}
A, B, C, D, E = (
    "WORM δ=0.01 r=0.003",
    "WORM δ=0.03 r=0.003",
    "WORM δ=0.05 r=0.003",
    "WORM δ=0.03 r=0.01",
    "WORM δ=0.05 r=0.01",
)
BY_EPOCHS = [B, C, A, D, E]
BY_ACCURACY = [E, A, D, B, C]
FRONT = {A, B, D, E}
DEFAULT = (Objective("search_epochs", "min"), Objective("final_acc", "max"))
#: The parent run's importances as the study logs them, and a metric of another kind beside them.
IMPORTANCES = {
    f"{IMPORTANCE}/search_epochs/worm.delta": 0.7,
    f"{IMPORTANCE}/search_epochs/worm.factor": 0.3,
    f"{IMPORTANCE}/final_acc/worm.delta": 0.2,
    f"{IMPORTANCE}/final_acc/worm.factor": 0.8,
}


def rows() -> list[dict]:
    """EarlyBird's run and every candidate's on each seed; ``candidate``: the Optuna trial number ("" for EarlyBird)."""
    out = [trial("earlybird", s, search_epochs=EB_EPOCHS, final_acc=EB_ACC) | {"candidate": ""} for s in SEEDS]
    for number, ((delta, factor), (epochs, acc)) in enumerate(CANDIDATES.items()):
        for s in SEEDS:
            config = {"worm.delta": delta, "worm.factor": factor}
            run = trial("worm", s, config=config, search_epochs=EB_EPOCHS + epochs, final_acc=EB_ACC + acc)
            out.append(run | {"candidate": str(number)})
    return out


def optuna_sweep(running: bool = False) -> load.Sweep:
    """The candidates as a sweep read from an Optuna sweep's parent run that logged no importances."""
    trials = load.trials_frame(rows())
    return load.Sweep("study", "hand-made rows", trials, curves_of(trials), running=running, search="optuna")


def ranked_of(sweep: load.Sweep, objectives: tuple[Objective, ...] = DEFAULT) -> pd.DataFrame:
    labelled = compare.label(sweep.trials)
    comparisons = compare.compare(labelled, n_boot=200)
    return study.candidates(comparisons, compare.per_method(labelled, n_boot=200), objectives)


# -- the Pareto front ------------------------------------------------------------------------


def test_the_front_keeps_ties_and_drops_dominated_and_unknown_points() -> None:
    # (cost, accuracy): (2, 4) is beaten by (1, 5); the two (1, 5) tie, so both stay; NaN is unknown.
    points = [(1, 5), (2, 6), (2, 4), (1, 5), (3, 7), (math.nan, 9)]
    assert study.pareto_front(points, ["min", "max"]).tolist() == [True, True, False, True, True, False]
    # Both maximized: (1, 0) ties (1, 1) on the first and is worse on the second, so it is dominated.
    assert study.pareto_front([(1, 1), (0, 2), (1, 0)], ["max", "max"]).tolist() == [True, True, False]
    assert study.pareto_front(np.empty((0, 2)), ["min", "max"]).tolist() == []
    with pytest.raises(ValueError, match="'min' or 'max'"):
        study.pareto_front([(1, 1)], ["min", "maximize"])


# -- the ranking -----------------------------------------------------------------------------


def test_candidates_rank_by_the_first_objective_with_ties_to_the_next_and_mark_the_front() -> None:
    ranked = ranked_of(optuna_sweep())
    assert ranked["variant"].tolist() == BY_EPOCHS
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    assert set(ranked.loc[ranked["front"], "variant"]) == FRONT
    by = ranked.set_index("variant")
    assert by.loc[B, "search_epochs_diff"] == -3.0 and by.loc[B, "final_acc_diff"] == pytest.approx(-0.02)
    assert by.loc[E, "search_epochs_pairs"] == 3 and by.loc[A, "final_acc_nonzero"] == 0
    assert (by.loc[C, "worm.delta"], by.loc[C, "worm.factor"]) == (0.05, 0.003)  # the tuned values, which vary
    assert math.isnan(by.loc[B, "search_epochs_lo"])  # 3 pairs: no interval


def test_the_first_objective_and_its_direction_set_the_order() -> None:
    objectives = (Objective("final_acc", "max"), Objective("search_epochs", "min"))
    assert ranked_of(optuna_sweep(), objectives)["variant"].tolist() == BY_ACCURACY
    fewest_last = (Objective("search_epochs", "max"), Objective("final_acc", "max"))
    assert ranked_of(optuna_sweep(), fewest_last)["variant"].tolist() == [E, A, D, B, C]


# -- the importances -------------------------------------------------------------------------


def test_importances_are_read_per_objective_most_important_first() -> None:
    logged = IMPORTANCES | {"headline/x/y/search_epochs_diff": -1.0, f"{IMPORTANCE}/no_param": 0.5}
    table = study.importances(logged)
    assert table.values.tolist() == [
        ["final_acc", "worm.factor", 0.8],
        ["final_acc", "worm.delta", 0.2],
        ["search_epochs", "worm.delta", 0.7],
        ["search_epochs", "worm.factor", 0.3],
    ]
    assert study.importances({}).empty


# -- the report ------------------------------------------------------------------------------


def test_an_optuna_report_ranks_the_candidates_and_says_why_it_has_no_importances(tmp_path: Path) -> None:
    written = report.write(optuna_sweep(), tmp_path, n_boot=200)
    text = written.path.read_text()
    part = section(text, study.TITLE.removeprefix("## "))
    table = cells(part.split("### Candidates", 1)[1].split("###", 1)[0])
    assert [row[1] for row in table[1:]] == BY_EPOCHS
    assert [row[-1] == "yes" for row in table[1:]] == [v in FRONT for v in BY_EPOCHS]
    assert "seed 0: 10.00 → 7.00" in table[1][2]  # 3 pairs: each seed's values, no interval
    assert "(The parent run logs no objectives: these are `--search optuna`'s default.)" in part
    assert "None logged: the study logs Optuna's fANOVA importances when it ends" in part
    assert "4 of the 5 candidates with a paired effect on every objective lie on the front" in part
    assert pd.read_csv(tmp_path / study.CANDIDATES_CSV)["variant"].tolist() == BY_EPOCHS
    assert {tmp_path / study.CANDIDATES_CSV, tmp_path / report.CANDIDATE_FRONT} <= set(written.files)
    assert "still running" in section(
        report.write(optuna_sweep(running=True), tmp_path, n_boot=200).path.read_text(), study.TITLE.removeprefix("## ")
    )


def test_a_grid_sweep_has_no_study_section_and_no_candidate_plot(tmp_path: Path) -> None:
    report.write(optuna_sweep(), tmp_path, n_boot=200)
    grid = optuna_sweep()
    grid.search = "grid"
    text = report.write(grid, tmp_path, n_boot=200).path.read_text()
    assert study.TITLE not in text
    # The earlier report's study files do not pass for this one's.
    assert not (tmp_path / report.CANDIDATE_FRONT).exists() and not (tmp_path / study.CANDIDATES_CSV).exists()


# -- a study read from MLflow ----------------------------------------------------------------


def make_store(root: Path) -> str:
    """A real SQLite MLflow store holding the candidates as an Optuna sweep lays them out: child runs
    tagged with their candidate's trial number, and a finished parent run with ``search=optuna``, its
    objectives as ``sweep.json`` logs them (accuracy first) and the study's importances."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("resnet18", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={TAG_KIND: "sweep", TAG_SWEEP: "study"}).info.run_id
    params = {
        "space": "resnet18",
        "name": "study",
        "search": "optuna",
        "objectives": "['final_acc:max', 'search_epochs']",
    }
    for key, value in params.items():
        client.log_param(parent, key, value)
    for key, value in IMPORTANCES.items():
        client.log_metric(parent, key, value)
    for row in rows():
        tags = {PARENT_TAG: parent, TAG_KIND: "trial", TAG_SWEEP: "study", TAG_TRIAL: row["trial_id"]}
        tags |= {"method": row["method"], "seed": str(row["seed"]), "config_hash": row["config_hash"]}
        tags |= {"status": row["status"], "node_id": "node-a"} | (
            {"candidate": row["candidate"]} if row["candidate"] else {}
        )
        run = client.create_run(exp, tags=tags).info.run_id
        for key, value in row.items():
            if "." in key or key in ("method", "seed"):
                client.log_param(run, key, value)
        for key in ("search_epochs", "search_flops", "final_acc", "pre_prune_acc", "post_prune_acc"):
            client.log_metric(run, key, row[key], step=4)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri


def test_a_study_read_from_mlflow_reports_its_ranking_front_importances_and_plot(tmp_path: Path) -> None:
    uri = make_store(tmp_path)
    read = load.from_mlflow(uri, load.find_parent(uri, "study")[0])
    assert (read.search, read.objectives) == (
        "optuna",
        (Objective("final_acc", "max"), Objective("search_epochs", "min")),
    )
    assert read.importances == IMPORTANCES
    reports = tmp_path / "reports"
    assert cli.main(["study", "--tracking-uri", uri, "--reports", str(reports), "--bootstrap", "200"]) == 0
    folder = reports / "study"
    part = section((folder / report.REPORT).read_text(), study.TITLE.removeprefix("## "))
    ranking = cells(part.split("### Candidates, best first by final acc.", 1)[1].split("###", 1)[0])
    assert [row[1] for row in ranking[1:]] == BY_ACCURACY
    assert "logs no objectives" not in part
    importance = cells(part.split("### Parameter importances (fANOVA)", 1)[1])
    assert importance == [
        ["parameter", "final acc.", "search epochs"],
        ["worm.factor", "0.80", "0.30"],
        ["worm.delta", "0.20", "0.70"],
    ]
    assert (folder / report.CANDIDATE_FRONT).stat().st_size > 0
    assert (
        f"![The Optuna candidates' paired effects and their Pareto front]({report.CANDIDATE_FRONT})"
        in (folder / report.REPORT).read_text()
    )
    logged = {a.path for a in MlflowClient(uri).list_artifacts(read.parent_run_id, "report")}
    assert {f"report/{study.CANDIDATES_CSV}", f"report/{report.CANDIDATE_FRONT}"} <= logged
