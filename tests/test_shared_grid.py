"""The pieces of a shared sweep that need no cluster: the searcher's queue, group names, and a
group's state through a checkpoint (exactly what a group trial saves, restores and forks from)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from tests.helpers import ENGINE_TINY, round_trip
from worm_tune.config import TrialConfig
from worm_tune.data import load_data
from worm_tune.group import ComputeSaved, TrialGroup, plan_groups
from worm_tune.metrics import untimed
from worm_tune.tune.plan import GROUP_KEY, staying
from worm_tune.tune.sharing import SharedGrid, group_id, ray_config

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def test_the_searcher_starts_each_group_once_and_finishes_when_none_runs(tmp_path: Path) -> None:
    starts = [ray_config("a", 3, 0), ray_config("b", 2, 0)]
    searcher = SharedGrid(starts)
    assert searcher.suggest("t1")[GROUP_KEY] == "a"
    assert searcher.suggest("t2")[GROUP_KEY] == "b"
    assert searcher.suggest("t3") is None  # nothing queued, but groups run: Ray asks again later
    split = ray_config("c", 1, 4)
    searcher.on_trial_result("t1", {"splits": (split,)})
    searcher.on_trial_result("t1", {"splits": (split,)})  # the same split again (a retried epoch)
    assert searcher.suggest("t3") == split
    assert searcher.suggest("t4") is None
    # Saved and restored (Ctrl-C, --resume): the queue and what it has seen survive.
    searcher.on_trial_complete("t2", {"splits": (ray_config("d", 1, 5),)})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = SharedGrid([])
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t5")[GROUP_KEY] == "d"
    restored.on_trial_result("t3", {"splits": (split,)})
    for trial in ("t1", "t3", "t5"):
        assert restored.suggest("t6") is None
        restored.on_trial_complete(trial)
    assert restored.suggest("t6") == Searcher.FINISHED
    assert pickle.loads(pickle.dumps(restored)).known == {"a", "b", "c", "d"}


def test_a_groups_parts_start_before_groups_not_yet_started() -> None:
    """Parts of a group that parted run next, beside each other, not after every other seed."""
    searcher = SharedGrid([ray_config(g, 2, 0) for g in ("a", "b", "c")])
    assert searcher.suggest("t1")[GROUP_KEY] == "a"
    searcher.on_trial_result("t1", {"splits": (ray_config("a1", 1, 6), ray_config("a2", 1, 6))})
    assert [searcher.suggest(t)[GROUP_KEY] for t in ("t2", "t3", "t4", "t5")] == ["a1", "a2", "b", "c"]


def test_a_group_is_named_by_its_members_and_epoch() -> None:
    assert group_id(["x", "y"], 3) == group_id(["y", "x"], 3)
    assert group_id(["x", "y"], 3) != group_id(["x", "y"], 4)
    assert group_id(["x", "y"], 3) != group_id(["x"], 3)
    assert group_id(["x"], 12).startswith("g012-")


def test_members_that_left_are_not_reported_as_staying() -> None:
    result = {"members": ({"config_hash": "a"}, {"config_hash": "b", "moved_to": "g003-x"})}
    assert [m["config_hash"] for m in staying(result)] == ["a"]
    assert staying({"phase": "search"}) == []


def test_a_group_saved_and_restored_goes_on_exactly() -> None:
    """A group of EarlyBird and WORM trials through a checkpoint's round trip (with ``threads``
    given anew, as a Ray worker does) steps to the same records as the group that was not saved."""
    base = TrialConfig().replace({**ENGINE_TINY, "search.max_epochs": 4})
    configs = [
        base.replace({"method": "earlybird"}),
        base.replace({"method": "worm", "worm.delta": 0.3}),
        base.replace({"method": "earlybird", "search.ratio": 0.3}),
    ]
    data = load_data(base.data)
    (group,) = plan_groups(configs, data)
    group.step()
    restored = TrialGroup.from_state(round_trip(group.state_dict()), data, {"threads": 1})
    assert [c.hash() for c in restored.configs] == [c.hash() for c in group.configs]
    for _ in range(2):
        assert [g.configs for g in group.step()] == [g.configs for g in restored.step()]
    assert untimed(restored.summaries()) == untimed(group.summaries())


def test_the_saving_line_says_each_pair_and_the_ratio() -> None:
    saving = ComputeSaved(10, 25, 6, 18, 2e9, 5e9)
    assert saving.line() == (
        "sharing: trained 10 epochs for the trials' 25 (2.50x fewer); 6 search epochs for the trials' 18 "
        "(3.00x fewer); 2e+09 training FLOPs for the trials' 5e+09 (2.50x fewer)"
    )
    assert saving.metrics()["sharing/search_epochs_of_trials"] == 18.0
