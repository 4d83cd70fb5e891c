"""The trial engine on real resnet18/vgg11_bn and digits: determinism, pairing, rules, resume, pruning."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from tests.helpers import round_trip
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine, load_model, load_network
from worm_tune.metrics import untimed
from worm_tune.models import bn_layers
from worm_tune.ticket.phases import Phase

BASE = {
    "data.dataset": "digits",
    "data.train_subset": "192",
    "data.batch_size": "64",
    "search.window": "3",
    "search.max_epochs": "4",
    "retrain.max_epochs": "2",
    "device": "cpu",
}


def config(**overrides: Any) -> TrialConfig:
    merged = {**BASE, **{k.replace("__", "."): str(v) for k, v in overrides.items()}}
    return TrialConfig().replace(merged).validate()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(config().data)


def run(cfg: TrialConfig, data: DataBundle) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    engine = TrialEngine(cfg, data)
    summary = engine.run()
    return [untimed(m) for m in engine.history], untimed(summary)


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(digits: DataBundle) -> None:
    cfg = config(method="worm", search__threshold=0.05, worm__delta=0.3)
    first, second = run(cfg, digits), run(cfg, digits)
    assert first == second
    assert first[0][1]["train_loss"] != run(config(method="worm", seed=1), digits)[0][1]["train_loss"]


@pytest.mark.slow
def test_worm_with_r_one_equals_earlybird(digits: DataBundle) -> None:
    eb_hist, eb_sum = run(config(method="earlybird"), digits)
    worm_hist, worm_sum = run(config(method="worm", worm__factor=1.0, worm__delta=0.95), digits)
    assert worm_sum["trigger_epoch"] == 3  # it triggered as soon as the window was full...
    assert eb_hist == worm_hist  # ...and changed nothing
    for key in ("search_epochs", "final_acc", "pre_prune_acc", "post_prune_acc", "sparsity"):
        assert eb_sum[key] == worm_sum[key]


def test_paired_trials_start_from_the_same_weights(digits: DataBundle) -> None:
    eb, worm = TrialEngine(config(method="earlybird"), digits), TrialEngine(config(method="worm"), digits)
    for (name, a), b in zip(eb.model.state_dict().items(), worm.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = TrialEngine(config(method="earlybird", seed=1), digits)
    assert not torch.equal(eb.model.conv1.weight, other.model.conv1.weight)


@pytest.mark.slow
def test_truncation_changes_the_trajectory_once_triggered(digits: DataBundle) -> None:
    eb_hist, _ = run(config(method="earlybird"), digits)
    # delta = 0.95 (s + delta > 1 >= d_avg) makes WORM trigger as soon as the window is full (epoch 3 of 4).
    worm_hist, worm_sum = run(config(method="worm", worm__delta=0.95, worm__factor=0.0), digits)
    assert worm_sum["trigger_epoch"] == 3
    assert eb_hist[:3] == worm_hist[:3]  # identical until truncation starts
    assert worm_hist[3]["r"] == 0.0 and worm_hist[3]["truncated_units"] > 0
    assert worm_hist[3]["train_loss"] != eb_hist[3]["train_loss"]


@pytest.mark.parametrize("threshold, delta", [(0.05, 0.5), (0.2, 0.1), (0.99, 0.005)])
def test_search_epochs_and_trigger_follow_the_logged_distances(
    digits: DataBundle, threshold: float, delta: float
) -> None:
    cfg = config(method="worm", search__threshold=threshold, worm__delta=delta, search__max_epochs=5)
    history, summary = run(cfg, digits)
    search = [m for m in history if m["phase"] == "search"]
    window = cfg.search.window
    for m in search[: window - 1]:
        assert m["d_max"] is None and m["d_avg"] is None
    stop = next((m["epoch"] for m in search if m["d_max"] is not None and m["d_max"] < threshold), None)
    assert summary["converged"] == (stop is not None)
    assert summary["search_epochs"] == (stop if stop is not None else cfg.search.max_epochs)
    assert len(search) == summary["search_epochs"]
    trigger = next(
        (m["epoch"] for m in search if m["d_avg"] is not None and m["d_avg"] < threshold + delta),
        None,
    )
    assert summary["trigger_epoch"] == trigger
    for m in search:  # r is r_trunc exactly in the epochs after the trigger
        expected = cfg.worm.factor if trigger is not None and m["epoch"] > trigger else 1.0
        assert m["r"] == expected


@pytest.fixture(scope="module")
def uninterrupted(digits: DataBundle) -> tuple[TrialConfig, list[dict[str, Any]], dict[str, Any]]:
    """The reference the resume tests compare against, run once for all of them."""
    cfg = config(method="worm", worm__delta=0.95, search__max_epochs=4, retrain__max_epochs=3)
    return cfg, *run(cfg, digits)


@pytest.mark.parametrize("split_after", [2, 4, 5])  # mid-search, at the prune boundary, mid-retrain
def test_resume_from_state_dict_is_bit_identical(
    digits: DataBundle, uninterrupted: tuple[TrialConfig, list[dict[str, Any]], dict[str, Any]], split_after: int
) -> None:
    cfg, full_hist, full_sum = uninterrupted
    engine = TrialEngine(cfg, digits)
    for _ in range(split_after):
        engine.step()
    state = round_trip(engine.state_dict())
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(state)
    resumed.run()
    assert [untimed(m) for m in resumed.history] == full_hist
    assert untimed(resumed.summary()) == full_sum


def test_a_version_1_state_resumes_at_its_pending_prune(
    digits: DataBundle, uninterrupted: tuple[TrialConfig, list[dict[str, Any]], dict[str, Any]]
) -> None:
    """Version 1 said "the prune is next" with ``pending_prune`` beside the phase "retrain" (worm_tune.legacy)."""
    cfg, full_hist, full_sum = uninterrupted
    engine = TrialEngine(cfg, digits)
    while engine.phase != Phase.PRUNE:
        engine.step()
    state = round_trip(engine.state_dict()) | {"version": 1, "phase": "retrain", "pending_prune": True}
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(state)
    resumed.run()
    assert [untimed(m) for m in resumed.history] == full_hist
    assert untimed(resumed.summary()) == full_sum


@pytest.mark.slow
def test_resume_with_augmentation_in_worker_processes_is_bit_identical(digits: DataBundle) -> None:
    cfg = config(data__augment="true", data__num_workers=2, search__max_epochs=3, retrain__max_epochs=1)
    data = load_data(cfg.data)
    full_hist, _ = run(cfg, data)
    engine = TrialEngine(cfg, data)
    engine.step()
    resumed = TrialEngine(cfg, data)
    resumed.load_state_dict(round_trip(engine.state_dict()))
    resumed.run()
    assert [untimed(m) for m in resumed.history] == full_hist
    assert full_hist != run(config(search__max_epochs=3, retrain__max_epochs=1), digits)[0]  # augmentation acted


def test_resume_refuses_another_config(digits: DataBundle) -> None:
    state = TrialEngine(config(), digits).state_dict()
    with pytest.raises(ValueError, match="config"):
        TrialEngine(config(seed=3), digits).load_state_dict(state)


def test_unstructured_pruning_keeps_sparsity_through_retraining(digits: DataBundle) -> None:
    engine = TrialEngine(config(search__ratio=0.7, search__max_epochs=3, retrain__max_epochs=2), digits)
    summary = engine.run()
    assert summary["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["params_pruned"] < summary["params_dense"]
    assert summary["flops_pruned"] < summary["flops_dense"]
    assert summary["retrain_epochs"] == 2 and summary["acc_after_1_retrain_epoch"] is not None


def test_reinit_retrains_fresh_weights_on_the_pruned_network(digits: DataBundle) -> None:
    short = {"search__window": 2, "search__max_epochs": 2, "retrain__max_epochs": 1}
    searched = TrialEngine(config(**short), digits)
    fresh = TrialEngine(config(retrain__init="reinit", **short), digits)
    for engine in (searched, fresh):
        engine.step(), engine.step()
        engine._prune()  # the prune event alone, to compare the weights retraining starts from
    assert searched.results["post_prune_acc"] == fresh.results["post_prune_acc"]  # measured before re-init
    assert not torch.equal(searched.model.layer1[0].conv1.weight, fresh.model.layer1[0].conv1.weight)
    assert fresh.summary()["sparsity"] == pytest.approx(0.5, abs=1e-3)  # the masks still hold
    fresh.step()
    assert fresh.done and fresh.summary()["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_structured_pruning_gives_a_smaller_runnable_network(digits: DataBundle, tmp_path) -> None:
    cfg = config(
        model__arch="vgg11_bn",
        model__stem="cifar",
        prune__kind="structured",
        search__max_epochs=3,
        retrain__max_epochs=1,
        data__train_subset=64,
    )
    engine = TrialEngine(cfg, digits)
    engine.run()
    summary = engine.summary()
    keep = engine.pruning.keep
    assert keep is not None
    widths = [bn.num_features for _, bn in bn_layers(engine.model)]
    dense = [bn.num_features for _, bn in bn_layers(TrialEngine(cfg, digits).model)]
    expected, offset = [], 0
    for n in dense:  # vgg has no residual coupling: each layer keeps exactly its mask's channels
        expected.append(int(keep[offset : offset + n].sum()))
        offset += n
    assert widths == expected and sum(widths) < sum(dense)
    assert summary["flops_pruned"] < summary["flops_dense"]
    assert summary["params_pruned"] < summary["params_dense"]
    assert engine.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    engine.save_model(tmp_path / "m.pt")
    rebuilt, example = load_network(tmp_path / "m.pt")
    assert example.dtype == torch.float32 and example.shape == (1, 3, 32, 32)  # as the data gave it
    engine.model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), engine.model(x))
    # A model file written before it recorded its input's dtype and vocabulary still loads (worm_tune.legacy).
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({k: v for k, v in saved.items() if k not in ("input_dtype", "vocab_size")}, tmp_path / "old.pt")
    assert torch.equal(load_model(tmp_path / "old.pt").eval()(x), engine.model(x))


def test_structured_resume_rebuilds_the_pruned_network(digits: DataBundle) -> None:
    cfg = config(prune__kind="structured", search__max_epochs=2, retrain__max_epochs=2, search__window=2)
    full_hist, full_sum = run(cfg, digits)
    engine = TrialEngine(cfg, digits)
    for _ in range(3):  # 2 search epochs + prune + first retrain epoch
        engine.step()
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(round_trip(engine.state_dict()))
    resumed.run()
    assert [untimed(m) for m in resumed.history] == full_hist
    assert untimed(resumed.summary()) == full_sum


def test_divergence_ends_the_trial_cleanly(digits: DataBundle) -> None:
    engine = TrialEngine(config(optim__lr=1e12), digits)
    summary = engine.run()
    assert summary["diverged"] is True and engine.done
    assert engine.history[-1]["diverged"] is True and engine.history[-1]["train_loss"] is None
    assert summary["epochs"] < 6


@pytest.mark.parametrize("method", ["gradclip", "greedy", "dense"])
def test_other_methods_run(digits: DataBundle, method: str) -> None:
    engine = TrialEngine(config(method=method, worm__factor=0.5, search__max_epochs=3, retrain__max_epochs=1), digits)
    summary = engine.run()
    history = engine.history
    if method == "dense":
        assert [m["phase"] for m in history] == ["train"]
        assert summary["search_epochs"] is None and summary["sparsity"] is None
        return
    search = [m for m in history if m["phase"] == "search"]
    if method == "gradclip":
        assert all(m["r"] == 0.5 and m["truncated_units"] > 0 for m in search)
    else:  # greedy: r of epoch e+1 is d_avg of epoch e
        for prev, cur in itertools.pairwise(search):
            assert cur["r"] == (1.0 if prev["d_avg"] is None else prev["d_avg"])
    assert math.isfinite(summary["final_acc"])


@pytest.mark.slow
def test_channel_scope_and_l1_are_wired_into_the_search(digits: DataBundle) -> None:
    short = {"search__window": 2, "search__max_epochs": 3, "retrain__max_epochs": 1, "worm__delta": 0.95}
    engine = TrialEngine(config(method="worm", worm__scope="channel", **short), digits)
    convs = engine.sites.convs
    assert convs is not None and [c.out_channels for c in convs] == [bn.num_features for bn in engine.layers]
    channel_hist, _ = run(config(method="worm", worm__scope="channel", **short), digits)
    bn_hist, _ = run(config(method="worm", **short), digits)
    assert channel_hist[:2] == bn_hist[:2]  # identical until truncation starts after epoch 2
    assert channel_hist[2]["train_loss"] != bn_hist[2]["train_loss"]  # then the conv filters are truncated too
    l1_hist, _ = run(config(search__l1=1e-3, **short), digits)
    assert l1_hist[0]["train_loss"] != run(config(**short), digits)[0][0]["train_loss"]


def test_cuda_without_a_gpu_is_a_config_error(digits: DataBundle) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from worm_tune.config import ConfigError

    with pytest.raises(ConfigError, match="no CUDA device"):
        TrialEngine(config(device="cuda"), digits)


def test_a_trial_runs_on_the_threads_it_is_given_and_records_them(digits: DataBundle) -> None:
    before = torch.get_num_threads()
    try:
        engine = TrialEngine(config(threads=1, search__max_epochs=1), digits)
        assert torch.get_num_threads() == 1 and engine.summary()["threads"] == 1
        # 0 (the default) leaves the process's setting alone; threads are not part of the hash.
        torch.set_num_threads(2)
        assert TrialEngine(config(search__max_epochs=1), digits).summary()["threads"] == 2
        assert config(threads=1).hash() == config(threads=2).hash() == config().hash()
    finally:
        torch.set_num_threads(before)
