"""``search.rules = reference``: the reference code's Early-Bird rules (docs/method.md, "Where the
reference code differs"), each on a case built for it, and the defaults left as they were."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.helpers import round_trip
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine
from worm_tune.metrics import untimed
from worm_tune.ticket.detector import EarlyBirdDetector
from worm_tune.ticket.masks import global_mask
from worm_tune.ticket.pruning import unstructured_masks


def mask(bits: str) -> torch.Tensor:
    return torch.tensor([b == "1" for b in bits])


# -- (a) the initial weights' mask in the window: converged one epoch earlier ------------------


@pytest.mark.parametrize("window", [2, 3, 5])
def test_with_the_initial_mask_in_the_window_a_stable_mask_converges_one_epoch_earlier(window: int) -> None:
    stable = mask("1100")

    def converged_at(rules: str) -> int:
        det = EarlyBirdDetector(window, threshold=0.1, rules=rules)
        if rules == "reference":
            det.push(stable)  # what the engine pushes before training: the initial weights' mask
        return next(epoch for epoch in range(1, 10) if det.push(stable).converged)

    assert converged_at("algorithm") == window
    assert converged_at("reference") == window - 1


# -- (b) d_max <= s ----------------------------------------------------------------------------


@pytest.mark.parametrize("rules, converged", [("algorithm", False), ("reference", True)])
def test_d_max_equal_to_s_converges_only_under_the_reference_rules(rules: str, converged: bool) -> None:
    det = EarlyBirdDetector(window=2, threshold=0.25, rules=rules)
    det.push(mask("1100"))
    obs = det.push(mask("1000"))
    assert obs.d_max == 0.25 and obs.converged is converged
    assert not det.push(mask("0001")).converged  # above s: neither converges


# -- (c) every unit at or below the sorted value at index floor(C*p) ---------------------------


def test_reference_mask_prunes_every_tied_unit() -> None:
    ones = torch.ones(4)
    assert int((~global_mask(ones, 0.5)).sum()) == 2
    assert not global_mask(ones, 0.5, "reference").any()  # all four tie at the threshold
    # A tie straddling the cut: index floor(5 * 0.4) = 2 holds 0.2, so all three 0.2s go.
    scores = torch.tensor([0.2, 0.9, 0.1, 0.2, 0.2])
    assert global_mask(scores, 0.4).tolist() == [True, True, False, True, False]
    assert global_mask(scores, 0.4, "reference").tolist() == [False, True, False, False, False]


@pytest.mark.parametrize("n, ratio", [(10, 0.5), (7, 0.3), (64, 0.7), (5, 0.7), (3, 0.01)])
def test_reference_mask_prunes_floor_c_p_plus_one_distinct_scores(n: int, ratio: float) -> None:
    scores = torch.randperm(n, generator=torch.Generator().manual_seed(n)).float()
    keep = global_mask(scores, ratio, "reference")
    assert int((~keep).sum()) == math.floor(n * ratio) + 1
    assert scores[keep].min() > scores[~keep].max()  # still the smallest ones


# -- (d) the final Linear's bias ---------------------------------------------------------------


def two_linear_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 6), nn.Linear(6, 10))
    with torch.no_grad():
        for linear in (net[3], net[4]):
            linear.bias.uniform_(0.1, 1.0)  # no zeros before pruning
    return net


def test_reference_unstructured_pruning_also_prunes_the_final_bias() -> None:
    algorithm, reference = two_linear_net(), two_linear_net()
    fresh = [name for name, _ in two_linear_net().named_parameters()]
    masks = unstructured_masks(algorithm, 0.5)
    ref_masks = unstructured_masks(reference, 0.5, "reference")
    assert set(ref_masks) - set(masks) == {"4.bias"}  # the last Linear's bias only, not 3.bias
    assert int((reference[4].bias == 0).sum()) == 5 == int((~ref_masks["4.bias"]).sum())
    assert torch.equal(reference[4].bias != 0, ref_masks["4.bias"])
    assert not (algorithm[4].bias == 0).any() and not (reference[3].bias == 0).any()
    for name in masks:  # every weight is pruned as before
        assert torch.equal(masks[name], ref_masks[name]), name
    assert [name for name, _ in reference.named_parameters()] == fresh  # optimizer state stays positional


def test_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="rules='paper' is invalid"):
        global_mask(torch.ones(4), 0.5, "paper")
    with pytest.raises(ValueError, match="rules='paper' is invalid"):
        EarlyBirdDetector(2, 0.1, "paper")
    with pytest.raises(ValueError, match="rules='paper' is invalid"):
        unstructured_masks(two_linear_net(), 0.5, "paper")


# -- the engine --------------------------------------------------------------------------------

TINY = {
    "data.dataset": "digits",
    "data.train_subset": "64",
    "data.batch_size": "64",
    "device": "cpu",
    "search.window": "2",
    "search.max_epochs": "3",
    "retrain.max_epochs": "1",
}


def config(**overrides: str) -> TrialConfig:
    return TrialConfig().replace({**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}).validate()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(config().data)


def test_reference_engine_converges_one_epoch_earlier_and_prunes_the_final_bias(digits: DataBundle) -> None:
    # s = 0.99: any full window converges, so each rule stops at its first full window.
    algorithm = TrialEngine(config(search__threshold="0.99"), digits)
    reference = TrialEngine(config(search__threshold="0.99", search__rules="reference"), digits)
    assert len(algorithm.control.detector.masks) == 0
    (initial,) = reference.control.detector.masks  # pushed at construction: every gamma is 1, all tie, all pruned
    assert not initial.any()
    first = reference.step()
    assert first["mask_converged"] and first["d_max"] is not None and first["d_max"] <= 0.99
    assert reference.summary()["search_epochs"] == 1 and reference.summary()["converged"]
    assert algorithm.step()["d_max"] is None
    assert algorithm.step()["mask_converged"] and algorithm.summary()["search_epochs"] == 2

    reference.step()  # the prune event and the retraining epoch
    fc = reference.model.fc.bias
    assert int((~reference.pruning.masks["fc.bias"]).sum()) == round(0.5 * fc.numel()) == int((fc == 0).sum())
    assert reference.done


def test_reference_mask_window_resumes_bit_exactly(digits: DataBundle) -> None:
    cfg = config(method="worm", search__rules="reference", search__threshold="0.001", search__window="3")
    full = TrialEngine(cfg, digits)
    records = [untimed(full.step()) for _ in range(2)]
    engine = TrialEngine(cfg, digits)
    engine.step()
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(round_trip(engine.state_dict()))
    assert all(
        torch.equal(a, b) for a, b in zip(resumed.control.detector.masks, engine.control.detector.masks, strict=True)
    )
    assert len(resumed.control.detector.masks) == 2  # the initial mask and epoch 1's
    assert untimed(resumed.step()) == records[1]
    assert records[1]["d_max"] is not None  # window 3 full after 2 trained epochs


def test_defaults_are_the_algorithm_rules_and_gradient_truncation(digits: DataBundle) -> None:
    cfg = config()
    assert (cfg.search.rules, cfg.worm.apply) == ("algorithm", "grad")
    engine = TrialEngine(cfg, digits)
    assert len(engine.control.detector.masks) == 0 and engine.truncator.mode == "grad"
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(global_mask(scores, 0.3), global_mask(scores, 0.3, "algorithm"))
