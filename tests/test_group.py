"""Exact computation sharing: trials grouped by their training fields train one network until a
decision parts them, and each ends with exactly what it would have produced alone."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from tests.helpers import ENGINE_TINY, round_trip
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine
from worm_tune.group import plan_groups, replay, run_shared, training_key
from worm_tune.metrics import untimed
from worm_tune.ticket.control import next_training
from worm_tune.ticket.phases import Phase

#: The trials pin torch to one thread: later test modules get back what they had.
pytestmark = pytest.mark.usefixtures("keep_torch_threads")

#: Searches long enough for triggers and stops to part trials (5 epochs, batches of 32).
TINY = {**ENGINE_TINY, "data.batch_size": 32, "search.max_epochs": 5}
BASE = TrialConfig().replace(TINY)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(BASE.data)


def grid(seeds: tuple[int, ...], **extra: Any) -> list[TrialConfig]:
    """EarlyBird and WORM at two deltas, for every seed, ratio and threshold."""
    configs = []
    for seed, ratio, threshold in itertools.product(seeds, (0.3, 0.5), (0.05, 0.15)):
        common = {"seed": seed, "search.ratio": ratio, "search.threshold": threshold, **extra}
        configs.append(BASE.replace({**common, "method": "earlybird"}).validate())
        for delta in (0.05, 0.3):
            configs.append(BASE.replace({**common, "method": "worm", "worm.delta": delta}).validate())
    return configs


def assert_exact(configs: list[TrialConfig], data: DataBundle) -> Any:
    """Run ``configs`` shared and each alone: every record and summary agree, timings aside."""
    shared = run_shared(configs, data)
    assert sorted(shared.trials) == sorted(cfg.hash() for cfg in configs)
    for cfg in configs:
        engine = TrialEngine(cfg, data)
        summary = engine.run()
        history, shared_summary = shared.trials[cfg.hash()]
        assert untimed(history) == untimed(engine.history), (cfg.method, cfg.seed, cfg.search.ratio)
        assert untimed(shared_summary) == untimed(summary), (cfg.method, cfg.seed, cfg.search.ratio)
    return shared


# -- the rule ----------------------------------------------------------------------------------


def test_only_the_decision_fields_leave_the_training_key() -> None:
    key = training_key(BASE)
    for field, value in [("search.ratio", 0.3), ("search.threshold", 0.2), ("search.window", 3), ("method", "worm")]:
        assert training_key(BASE.replace({field: value})) == key, field
    for field, value in [("seed", 1), ("optim.lr", 0.1), ("data.batch_size", 64), ("search.max_epochs", 9)]:
        assert training_key(BASE.replace({field: value})) != key, field
    # A CNN's masks are over channels whatever its pruning; a transformer's over heads or weights.
    assert training_key(BASE.replace({"prune.kind": "structured"})) == key
    vit = TrialConfig().replace({"model.arch": "vit", "data.dataset": "digits"})
    assert training_key(vit.replace({"prune.kind": "structured"})) != training_key(vit)


def test_the_next_training_differs_only_where_the_network_would() -> None:
    eb, worm = BASE, BASE.replace({"method": "worm", "search.ratio": 0.3, "worm.delta": 0.2})
    keep = torch.tensor([True, False, True])
    other = torch.tensor([True, True, False])
    # No truncation (EarlyBird, WORM before its trigger): the masks do not matter.
    assert next_training(eb, Phase.SEARCH) == next_training(worm, Phase.SEARCH, (keep, 1.0))
    # Truncating: the factor, the mask and how it is applied do.
    assert next_training(worm, Phase.SEARCH, (keep, 0.003)) != next_training(worm, Phase.SEARCH, (keep, 1.0))
    assert next_training(worm, Phase.SEARCH, (keep, 0.003)) != next_training(worm, Phase.SEARCH, (other, 0.003))
    update = worm.replace({"worm.apply": "update"})
    assert next_training(worm, Phase.SEARCH, (keep, 0.003)) != next_training(update, Phase.SEARCH, (keep, 0.003))
    # Pruning: by the trial's ratio and rules, then retraining by its after-search fields; not its threshold.
    assert next_training(eb, Phase.PRUNE) == next_training(eb.replace({"search.threshold": 0.3}), Phase.PRUNE)
    assert next_training(eb, Phase.PRUNE) != next_training(eb.replace({"search.ratio": 0.3}), Phase.PRUNE)
    assert next_training(eb, Phase.PRUNE) != next_training(eb.replace({"prune.kind": "structured"}), Phase.PRUNE)
    assert next_training(eb, Phase.PRUNE) != next_training(eb.replace({"retrain.max_epochs": 3}), Phase.PRUNE)
    assert next_training(eb, Phase.RETRAIN) == next_training(worm, Phase.RETRAIN)


def test_trials_start_together_unless_their_first_step_differs(digits: DataBundle) -> None:
    configs = grid((0, 1))
    gradclip = BASE.replace({"method": "gradclip"})  # truncates from its first step
    dense = BASE.replace({"method": "dense"})
    groups = plan_groups([*configs, gradclip, dense], digits)
    members = sorted(len(g.configs) for g in groups)
    assert members == [1, 1, 12, 12]  # per seed: EarlyBird and WORM together; gradclip and dense alone


# -- exactness ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_shared_grid_gives_every_trial_exactly_its_own_numbers(digits: DataBundle) -> None:
    """2 seeds x 2 ratios x 2 thresholds x (EarlyBird + WORM at 2 deltas): 24 trials."""
    shared = assert_exact(grid((0, 1)), digits)
    assert shared.groups_at_end > shared.groups_at_start  # decisions parted trials mid-way
    assert 2 * shared.saved.epochs_trained <= shared.saved.epochs_of_trials


@pytest.mark.slow
def test_sharing_is_exact_for_the_other_methods_and_rules(digits: DataBundle) -> None:
    """Truncation by update, the reference rules, structured pruning, the ablations and dense."""
    configs = [
        *grid((2,), **{"worm.apply": "update"})[:6],
        *grid((3,), **{"search.rules": "reference", "prune.kind": "structured"})[:6],
        BASE.replace({"method": "gradclip", "seed": 2}),
        BASE.replace({"method": "greedy", "seed": 2}),
        BASE.replace({"method": "dense", "seed": 2}),
    ]
    assert_exact(configs, digits)


# -- replay: a part's state from its members' configs ----------------------------------------


def parts_of(configs: list[TrialConfig], data: DataBundle) -> list[Any]:
    """Every group a shared run of ``configs`` forks mid-way, as (its configs, its epoch, its state)."""
    active, parts = plan_groups(configs, data), []
    while active:
        group = active.pop()
        if group.done:
            continue
        forked = group.step()[1:]
        parts += [(p.configs, p.engine.global_epoch, round_trip(p.state_dict())) for p in forked]  # a copy
        active += [group, *forked]
    return parts


@pytest.mark.slow
def test_a_replayed_part_is_the_state_its_fork_had(digits: DataBundle) -> None:
    """What a group trial restarts from when its part file is gone: the same tensors, records and
    decisions as the fork, for every part a seed's grid forks (at its search's end and at triggers)."""
    parts = parts_of(grid((0,)), digits)
    assert len(parts) >= 2 and len({epoch for _, epoch, _ in parts}) >= 2
    for configs, epoch, forked in parts:
        replayed = replay(configs, epoch, digits).state_dict()
        assert [m["config"] for m in replayed["members"]] == [m["config"] for m in forked["members"]]
        assert untimed(replayed["engine"]["history"]) == untimed(forked["engine"]["history"])
        for member, other in zip(replayed["members"], forked["members"], strict=True):
            assert untimed(member["history"]) == untimed(other["history"])
            assert member["next_step"] == other["next_step"] and member["results"] == other["results"]
        for key in ("model", "optimizer"):
            a, b = replayed["engine"][key], forked["engine"][key]
            assert str(a) == str(b) if key == "optimizer" else all(torch.equal(a[k], b[k]) for k in a), key
        for key in ("phase", "epoch", "global_epoch", "prune_keep", "prune_masks"):
            assert str(replayed["engine"][key]) == str(forked["engine"][key]), key


def test_a_replay_of_trials_that_never_shared_a_group_is_refused(digits: DataBundle) -> None:
    eb, worm = grid((0,))[:2]
    with pytest.raises(RuntimeError, match="never shared a group"):
        replay([eb, worm.replace({"seed": 1})], 1, digits)
