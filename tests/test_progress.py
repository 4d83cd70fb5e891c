"""What a sweep prints while it runs (:mod:`worm_tune.tune.progress`), read as a person reads it.

The printer is fed Ray Tune's own ``Trial`` objects, in the states the controller puts them in;
the end-to-end check of a real sweep's terminal is in tests/test_sweep.py.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from ray.tune.experiment import Trial

from worm_tune.tune.plan import SweepSettings, label_columns, make_plan, trial_label
from worm_tune.tune.progress import ProgressPrinter

#: The field the sweep varies, as :func:`~worm_tune.tune.plan.label_columns` gives it.
COLUMNS = ("worm.delta",)


def trial(number: int, method: str, status: str, result: dict[str, Any] | None = None) -> Trial:
    """A trial as the sweep's grid makes it: its dry-run number, method, seed and the varied field."""
    config = {"trial": number, "method": method, "seed": 1, "worm.delta": 0.01 if method == "worm" else None}
    t = Trial("TicketTrainable", config=config, stub=True)
    t.set_status(status)
    if result is not None:
        t.update_last_result({"training_iteration": 1, **result})
    return t


def summary(method: str, **values: Any) -> dict[str, Any]:
    base = {"method": method, "done": True, "converged": True, "diverged": False, "search_epochs": 9}
    return base | {"final_acc": 0.5417, "total_time": 31.6} | values


def test_every_minute_a_table_of_the_running_trials_shows_where_each_search_stands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = ProgressPrinter(18, COLUMNS, every_s=0.0)
    trials = [
        trial(2, "worm", Trial.RUNNING, {"phase": "search", "epoch": 7, "d_max": 0.0712}),
        trial(1, "earlybird", Trial.RUNNING),  # started, no epoch reported yet
        trial(3, "worm", Trial.PENDING),
        trial(4, "earlybird", Trial.TERMINATED, {"phase": "retrain", "epoch": 2}),
    ]
    printer.on_step_end(0, trials)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "1/18 done, 2 running, 1 waiting"
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["#", "trial", "phase", "epoch", "d_max"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:]]
    assert rows == [
        ["2", "worm δ=0.01 s1", "search", "7", "0.071"],
        ["1", "earlybird s1", "starting", "-", "-"],
    ]


def test_the_table_waits_its_interval_and_skips_a_sweep_with_nothing_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = ProgressPrinter(4, COLUMNS, every_s=3600.0)
    running = [trial(1, "earlybird", Trial.RUNNING, {"phase": "search", "epoch": 1})]
    printer.on_step_end(0, running)  # the first call starts the clock: no table at the very start
    printer.on_step_end(1, running)
    assert capsys.readouterr().out == ""
    ProgressPrinter(4, COLUMNS, every_s=0.0).on_step_end(0, [trial(1, "earlybird", Trial.PENDING)])
    assert capsys.readouterr().out == ""


def test_a_finished_trial_is_one_line_with_how_it_ended(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(18, COLUMNS)
    done = trial(4, "earlybird", Trial.TERMINATED)
    eb = trial(1, "earlybird", Trial.RUNNING, {"phase": "retrain", "epoch": 2, "summary": summary("earlybird")})
    worm = trial(2, "worm", Trial.RUNNING, {"summary": summary("worm", converged=False, search_epochs=16)})
    printer.on_trial_complete(0, [done, eb, worm], eb)
    eb.set_status(Trial.TERMINATED)  # as the controller leaves it
    printer.on_trial_error(0, [done, eb, worm], worm)
    assert capsys.readouterr().out.splitlines() == [
        "[2/18] #1 earlybird s1: converged, 9 search epochs, final acc 54.17%, 32 s",
        "[3/18] #2 worm δ=0.01 s1: error, 16 search epochs, final acc 54.17%, 32 s",
    ]


def test_the_printer_survives_the_pickle_a_resumable_sweep_saves() -> None:
    printer = ProgressPrinter(18, COLUMNS, every_s=5.0)
    printer.on_step_end(0, [])
    again = pickle.loads(pickle.dumps(printer))
    assert (again.total, again.columns, again.every_s) == (18, COLUMNS, 5.0)


def test_a_trial_is_named_by_its_method_what_the_sweep_varies_and_its_seed() -> None:
    config = {
        "trial": 4,
        "method": "worm",
        "seed": 0,
        "search.ratio": 0.3,
        "worm.delta": 0.05,
        "search.threshold": 0.04,
    }
    assert trial_label(config, ("search.ratio", "worm.delta")) == "worm p=0.3 δ=0.05 s0"
    assert trial_label(config) == "worm p=0.3 δ=0.05 s=0.04 s0"  # no columns: every field it sets
    eb = {"method": "earlybird", "seed": 2, "worm.delta": None, "prune.kind": "structured"}
    assert trial_label(eb, ("prune.kind", "worm.delta")) == "earlybird prune.kind=structured s2"


def test_trial_names_show_the_fields_a_grid_varies_or_an_optuna_search_tunes() -> None:
    grid = make_plan(SweepSettings(space="resnet18", name="n", storage="s", tracking_uri="u", profile="quick"))
    assert label_columns(grid) == ("worm.delta",)  # not s, which the quick profile sets for every trial
    settings = SweepSettings(
        space="resnet18", name="n", storage="s", tracking_uri="u", profile="quick", search="optuna"
    )
    assert label_columns(make_plan(settings)) == ("worm.delta", "worm.factor")


def group(gid: str, status: str, members: list[dict[str, Any]] | None = None, size: int = 2) -> Trial:
    """A shared sweep's group trial, with its members' reports once it has reported."""
    t = Trial("GroupTrainable", config={"group": gid, "trials": size, "from_epoch": 0}, stub=True)
    t.set_status(status)
    if members is not None:
        t.update_last_result({"training_iteration": 3, "phase": "search", "epoch": 3, "members": tuple(members)})
    return t


def member(number: int, method: str, **extra: Any) -> dict[str, Any]:
    point = {"trial": number, "method": method, "seed": 1, "worm.delta": 0.01 if method == "worm" else None}
    return {"point": point, "config_hash": f"h{number}", "summary": summary(method), **extra}


def test_a_shared_sweep_prints_a_line_per_trial_and_a_row_per_group(capsys: pytest.CaptureFixture[str]) -> None:
    """A group trial's end is a line for each member that stayed in it (not those that left it for
    a group of their own), counted among the sweep's trials; the table shows groups."""
    printer = ProgressPrinter(18, COLUMNS, every_s=0.0, groups="/nowhere")
    stayed, left = member(1, "earlybird"), member(2, "worm", moved_to="g003-x")
    ended = group("g000-a", Trial.RUNNING, [stayed, left])
    running = group("g003-x", Trial.RUNNING, [member(2, "worm")], size=1)
    printer.on_trial_complete(0, [ended, running], ended)
    ended.set_status(Trial.TERMINATED)
    printer.on_step_end(1, [ended, running])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "[1/18] #1 earlybird s1: converged, 9 search epochs, final acc 54.17%, 32 s"
    assert lines[2] == "1/18 done, 1 groups running, 0 waiting"
    assert [c.strip() for c in lines[-1].strip("|").split("|")] == ["-", "g003-x: 1 trials", "search", "3", "-"]
