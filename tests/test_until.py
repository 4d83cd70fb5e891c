"""The sequential rule (``--until``) without Ray: parsing, the looks, the batches, the refusals."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from analysis.plots import confidence_sequences
from worm_tune.cli import sweep
from worm_tune.tune.plan import SweepSettings, make_plan, trial_table
from worm_tune.tune.until import (
    Interval,
    Look,
    Record,
    Until,
    epoch_bounds,
    look,
    needed_text,
    open_line,
    seed_batches,
    seeds_needed,
    stop_line,
)
from worm_tune.usage import UsageError


@pytest.mark.parametrize(
    ("text", "kind", "value", "shown"),
    [
        ("width=1", "width", 1.0, "width=1"),
        ("decided", "decided", 0.0, "decided"),
        ("decided:0.5", "decided", 0.5, "decided:0.5"),
    ],
)
def test_rules_parse_and_print_back(text: str, kind: str, value: float, shown: str) -> None:
    rule = Until.parse(text)
    assert (rule.kind, rule.value, str(rule)) == (kind, value, shown)
    assert Until.parse(str(rule)) == rule


@pytest.mark.parametrize("text", ["width", "width=0", "width=-1", "width=nan", "decided:-1", "decided:x", "soon", ""])
def test_a_bad_rule_is_refused_with_the_forms_allowed(text: str) -> None:
    with pytest.raises(UsageError, match=r"is not a rule: expected width=W .* or decided\[:MARGIN\]"):
        Until.parse(text)


def test_what_holds() -> None:
    width, decided, within = Until.parse("width=1"), Until.parse("decided"), Until.parse("decided:0.5")
    assert width.holds(-1.4, -0.5) and not width.holds(-1.5, -0.5)
    assert decided.holds(-2.0, -0.1) and decided.holds(0.1, 2.0) and not decided.holds(-2.0, 0.0)
    assert not decided.holds(-0.4, 0.4)  # no margin: only excluding 0 decides
    assert within.holds(-0.4, 0.4) and within.holds(-2.0, -0.1) and not within.holds(-0.6, 0.4)


def test_batches_start_with_the_space_seeds_and_add_the_smallest_unused() -> None:
    assert seed_batches([0, 1, 2], 8, 2) == [[0, 1, 2], [3, 4], [5, 6], [7]]
    assert seed_batches([3, 7], 5, 4) == [[3, 7], [0, 1, 2]]
    assert seed_batches([0, 1], 2, 4) == [[0, 1]]


def test_search_lengths_lie_between_a_full_window_and_the_budget() -> None:
    assert epoch_bounds(5, 16, "algorithm") == (5, 16)
    assert epoch_bounds(5, 16, "reference") == (4, 16)  # the initial mask fills the window one epoch sooner


def test_a_look_is_simultaneous_over_the_variants_and_narrows_with_more_pairs() -> None:
    rule = Until.parse("decided")
    one = look({"a": [-1.0] * 12}, {"a": 11.0}, rule, 12)
    two = look({"a": [-1.0] * 12, "b": [-1.0] * 12}, {"a": 11.0, "b": 11.0}, rule, 12)
    more = look({"a": [-1.0] * 40}, {"a": 11.0}, rule, 40)
    a1, a2, a40 = one.intervals["a"], two.intervals["a"], more.intervals["a"]
    assert a1.low <= -1.0 <= a1.high and a1.mean == -1.0 and a1.n == 12
    assert a2.low <= a1.low and a2.high >= a1.high  # at alpha / 2 for two variants: wider
    assert a40.high - a40.low < a1.high - a1.low
    # A 1-epoch effect in a range of +-11: forty equal pairs cannot yet tell it from 0 at every stop; the range
    # is what costs, as a narrower one shows.
    assert not a40.holds and not more.met
    narrow = look({"a": [-1.0] * 40}, {"a": 2.0}, rule, 40)
    assert narrow.intervals["a"].holds and narrow.met and narrow.intervals["a"].high < 0
    empty = look({"a": []}, {"a": 11.0}, rule, 0)
    assert not empty.met and (empty.intervals["a"].low, empty.intervals["a"].high) == (-11.0, 11.0)


def _look(seeds: int, **intervals: tuple[float, float]) -> Look:
    rule = Until.parse("decided")
    return Look(
        seeds, {v: Interval(seeds, (lo + hi) / 2, lo, hi, rule.holds(lo, hi)) for v, (lo, hi) in intervals.items()}
    )


def test_the_stop_says_why_and_each_variant_needed_its_seeds() -> None:
    rule = Until.parse("decided")
    looks = [
        _look(6, a=(-3.0, 0.5), b=(-3.0, 1.0)),
        _look(8, a=(-2.0, -0.1), b=(-2.5, 0.4)),
        _look(10, a=(-1.8, -0.3), b=(-2.0, -0.2)),
    ]
    assert stop_line(looks, rule, 20) == "rule met at n = 10 paired seeds (every variant's interval excludes 0)"
    assert seeds_needed(looks) == {"a": 8, "b": 10}
    capped = stop_line(looks[:2], rule, 8)
    assert capped == "cap reached: 8 of --max-seeds 8 paired seeds, rule not met (b [-2.50, +0.40])"
    assert seeds_needed(looks[:2]) == {"a": 8, "b": None}
    assert (needed_text(8, 8), needed_text(None, 8)) == ("8", "more than 8")
    going_on = open_line(looks[1], [8, 9], 3, 5)
    assert going_on == (
        "after 8 paired seeds the rule does not hold yet (b [-2.50, +0.40]); batch 3 of 5 starts (seeds 8, 9)"
    )


def test_the_record_reads_back_what_it_wrote(tmp_path: Path) -> None:
    record = Record("decided", 8, [[0, 1], [2, 3], [4, 5, 6, 7]], started=2, looks=[_look(2, a=(-3.0, 0.5))])
    (tmp_path / "sequential.json").write_text(record.to_json())
    assert Record.load(tmp_path) == record
    assert record.seeds == [0, 1, 2, 3]
    assert Record.load(tmp_path / "none") is None


SPACE = """
description = "two seeds, EarlyBird and WORM"
methods = ["earlybird", "worm"]

[base]
"data.dataset" = "digits"
"model.pretrained" = false

[axes]
seed = [0, 1]
"""


def _space(tmp_path: Path) -> str:
    path = tmp_path / "pair.toml"
    path.write_text(SPACE)
    return str(path)


def _settings(tmp_path: Path, **kw: object) -> SweepSettings:
    return SweepSettings(space=_space(tmp_path), name="x", storage=str(tmp_path), tracking_uri="sqlite:///x.db", **kw)


def test_the_plan_holds_every_batch_and_the_dry_run_says_so(tmp_path: Path) -> None:
    plan = make_plan(_settings(tmp_path, until="decided", max_seeds=5, seed_batch=2))
    assert plan.batches == [[0, 1], [2, 3], [4]]
    assert sorted({cfg.seed for cfg in plan.configs()}) == [0, 1, 2, 3, 4]
    table = trial_table(plan)
    assert table.startswith(
        "sequential: seeds 0-1 first, then 2-4 in batches of 2, until every variant's interval excludes 0"
    )


def test_max_seeds_below_the_first_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--max-seeds 1 is below the space's own 2 seeds, its first batch"):
        make_plan(_settings(tmp_path, until="decided", max_seeds=1))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--until", "soon"], "--until 'soon' is not a rule"),
        (["--max-seeds", "8"], "--max-seeds and --seed-batch apply to --until only"),
        (["--seed-batch", "2"], "--max-seeds and --seed-batch apply to --until only"),
        (["--until", "decided", "--seed-batch", "0"], "--seed-batch 0 is invalid: must be an integer >= 1"),
        (["--until", "decided", "--max-seeds", "0"], "--max-seeds 0 is invalid: must be an integer >= 1"),
        (
            ["--until", "decided", "--scheduler", "asha"],
            "--until adds paired seeds to a grid sweep whose trials run to their ends; drop --scheduler asha",
        ),
        (["--until", "decided", "--search", "optuna"], "drop --search optuna"),
        (["--until", "decided", "--max-seeds", "1"], "--max-seeds 1 is below the space's own 2 seeds"),
        (["--until", "decided", "--set", "method=worm"], "--until compares variants with EarlyBird on paired seeds"),
    ],
)
def test_bad_sequential_flags_exit_2_with_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = sweep.main([_space(tmp_path), "--dry-run", "--storage", str(tmp_path), *flags])
    assert code == 2, err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_the_intervals_plot_draws_a_panel_per_variant_with_pairs(tmp_path: Path) -> None:
    n = np.arange(1, 9)
    frame = pd.DataFrame({"n": n, "mean": -np.ones(8), "low": -1 - 8 / n, "high": -1 + 8 / n})
    empty = pd.DataFrame({"n": [], "mean": [], "low": [], "high": []})
    path = confidence_sequences({"WORM a\nsetting": frame, "WORM b\nsetting": empty}, [4, 8], 0.5, tmp_path / "s.png")
    assert path == tmp_path / "s.png"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width < 1.5 * height  # one panel drawn: the variant without pairs has none
    assert confidence_sequences({"WORM b\nsetting": empty}, [4], 0.0, tmp_path / "none.png") is None
