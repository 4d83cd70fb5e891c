"""``worm.apply = update``: r scales the masked units' parameter change, whatever the optimizer.

Why the knob exists (docs/method.md, "How r interacts with the optimizer"): under AdamW a constant
factor on the gradient cancels once the second moment adapts, and weight decay is applied after
truncation at full rate; scaling the update keeps r's meaning under SGD, SGD with decay and AdamW.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import round_trip
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine
from worm_tune.metrics import untimed
from worm_tune.models.vit import vit_32
from worm_tune.ticket.attention import ElementSites, HeadSites, attention_layers
from worm_tune.ticket.sites import ChannelSites, MaskSites
from worm_tune.ticket.truncation import GradientTruncator

R = 0.003
Optimizer = Callable[[Any], torch.optim.Optimizer]
OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "sgd_decay": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}


def small_cnn() -> nn.Sequential:
    """Conv -> BN -> head in float64, BN affine parameters random so that decay and scaling both show."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).double()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def one_step(
    model: nn.Module, sites: MaskSites | None, keep: torch.Tensor, make_opt: Optimizer, loss: Callable[[], torch.Tensor]
) -> None:
    """One optimizer step as the engine takes it, truncated in update mode when ``sites`` is given."""
    opt = make_opt(model.parameters())
    truncator = GradientTruncator(sites, "update") if sites is not None else None
    if truncator is not None:
        truncator.set(keep, R)
    opt.zero_grad()
    loss().backward()
    if truncator is not None:
        truncator.apply()
    opt.step()
    if truncator is not None:
        truncator.after_step()


def assert_moves_scaled(
    before: nn.Module, plain: nn.Module, truncated: nn.Module, scales: dict[str, torch.Tensor]
) -> None:
    """Every parameter's change is ``scale`` times the untruncated one; exactly equal where the scale is 1."""
    old, new = dict(before.named_parameters()), dict(plain.named_parameters())
    for name, p in truncated.named_parameters():
        scale = scales.get(name, torch.ones((), dtype=p.dtype)).expand_as(p)
        moved, full = (p - old[name]).detach(), (new[name] - old[name]).detach()
        assert torch.equal(p[scale == 1], new[name][scale == 1]), f"{name}: kept entries moved differently"
        masked = scale != 1  # the scale holds r as a float32 rounds it, as the gradient scale does
        torch.testing.assert_close(moved[masked], scale[masked] * full[masked], rtol=1e-9, atol=1e-15)
        assert torch.all(scale[masked] == torch.tensor(R).to(p.dtype))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_one_step_moves_masked_channels_exactly_r_times_the_untruncated_change(optimizer: str) -> None:
    before = small_cnn()
    plain, truncated = copy.deepcopy(before), copy.deepcopy(before)
    keep = torch.tensor([True, False, True, True, False, False, True, False])
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    for model, sites in ((plain, None), (truncated, ChannelSites([truncated[1]]))):
        one_step(model, sites, keep, OPTIMIZERS[optimizer], lambda m=model: nn.functional.cross_entropy(m(x), y))
    per_channel = torch.where(keep, 1.0, R).double()
    assert_moves_scaled(before, plain, truncated, {"1.weight": per_channel, "1.bias": per_channel})
    assert not torch.equal(truncated[1].weight, before[1].weight)


@pytest.mark.parametrize("sites_cls", [ElementSites, HeadSites])
def test_update_mode_scales_attention_weights_and_heads_through_the_same_sites(
    sites_cls: type[ElementSites] | type[HeadSites],
) -> None:
    torch.manual_seed(0)
    before = vit_32(10).double()
    nn.init.normal_(before.heads.head.weight, std=0.1)  # torchvision's zero head would zero every gradient
    plain, truncated = copy.deepcopy(before), copy.deepcopy(before)
    sites = sites_cls(attention_layers(truncated))
    keep = torch.rand(sites.num_units, generator=torch.Generator().manual_seed(2)) < 0.5
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for model, s in ((plain, None), (truncated, sites)):
        one_step(model, s, keep, OPTIMIZERS["adamw"], lambda m=model: m(x).square().mean())
    names = {p: name for name, p in truncated.named_parameters()}
    scales = {names[p]: scale for p, scale in sites.scales(keep, R)}
    assert scales and all(name.endswith(("in_proj_weight", "in_proj_bias")) for name in scales)
    assert_moves_scaled(before, plain, truncated, scales)


def adamw_step_ratio(mode: str, steps: int = 300) -> float:
    """Mean per-step |change| of masked over kept gammas over the last 50 of ``steps`` AdamW steps, with
    random gradients of equal size for every channel, truncated from the first step."""
    bn = nn.BatchNorm2d(64).double()
    keep = torch.arange(64) % 2 == 0
    truncator = GradientTruncator(ChannelSites([bn]), mode)
    truncator.set(keep, R)
    opt = torch.optim.AdamW(bn.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    moved = torch.zeros(64, dtype=torch.float64)
    for step in range(steps):
        opt.zero_grad()
        g = torch.randn(2, 64, dtype=torch.float64, generator=gen)
        ((bn.weight * g[0]).sum() + (bn.bias * g[1]).sum()).backward()
        old = bn.weight.detach().clone()
        truncator.apply()
        opt.step()
        truncator.after_step()
        if step >= steps - 50:
            moved += (bn.weight.detach() - old).abs()
    return float(moved[~keep].mean() / moved[keep].mean())


def test_under_adamw_grad_mode_truncation_fades_while_update_mode_keeps_r() -> None:
    # Adam divides by the running RMS of the (truncated) gradient: r cancels, masked gammas move as
    # much as kept ones. Scaling the update instead keeps their steps at r times the kept ones'.
    assert adamw_step_ratio("grad") > 0.5
    assert adamw_step_ratio("update") == pytest.approx(R, rel=0.3)


def test_update_mode_is_a_no_op_while_truncation_is_off_and_refuses_unknown_modes() -> None:
    bn = nn.BatchNorm2d(4)
    truncator = GradientTruncator(ChannelSites([bn]), "update")
    truncator.set(torch.zeros(4, dtype=torch.bool), 1.0)
    before = bn.weight.detach().clone()
    truncator.apply()
    with torch.no_grad():
        bn.weight.add_(1.0)
    truncator.after_step()
    assert torch.equal(bn.weight, before + 1.0)
    with pytest.raises(ValueError, match="mode='both' is invalid"):
        GradientTruncator(ChannelSites([bn]), "both")


# -- the engine -------------------------------------------------------------------------------

TINY = {
    "data.dataset": "digits",
    "data.train_subset": "128",
    "data.batch_size": "64",
    "device": "cpu",
    "method": "worm",
    "search.threshold": "0.001",  # no convergence before truncation starts
    "worm.delta": "0.95",  # s + delta > 1 >= d_avg: WORM triggers as soon as the window is full (epoch 2)
    "worm.factor": "0.003",
    "search.window": "2",
    "search.max_epochs": "4",
    "retrain.max_epochs": "1",
}
OPTIM = {"sgd": {"optim.weight_decay": "5e-4"}, "adamw": {"optim.optimizer": "adamw", "optim.lr": "1e-3"}}


def config(apply: str, optimizer: str) -> TrialConfig:
    return TrialConfig().replace({**TINY, **OPTIM[optimizer], "worm.apply": apply}).validate()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(config("update", "sgd").data)


@pytest.fixture(scope="module", params=list(OPTIM))
def update_run(request: pytest.FixtureRequest, digits: DataBundle) -> tuple[str, list[dict[str, Any]]]:
    """An uninterrupted update-mode trial per optimizer: the reference of the tests below."""
    engine = TrialEngine(config("update", request.param), digits)
    engine.run()
    return request.param, [untimed(m) for m in engine.history]


def test_update_mode_runs_end_to_end_and_differs_from_grad_mode_once_truncation_starts(
    digits: DataBundle, update_run: tuple[str, list[dict[str, Any]]]
) -> None:
    optimizer, update = update_run
    phases = [m["phase"] for m in update]
    assert phases[:3] == ["search"] * 3 and phases[-1] == "retrain"  # it may converge once truncated
    assert update[2]["r"] == 0.003 and update[2]["truncated_units"] > 0
    assert update[-1]["test_acc"] is not None
    engine = TrialEngine(config("grad", optimizer), digits)
    assert engine.truncator.mode == "grad"
    grad = [untimed(engine.step()) for _ in range(3)]
    assert grad[:2] == update[:2]  # identical until truncation starts after epoch 2
    assert grad[2]["train_loss"] != update[2]["train_loss"]


def test_update_mode_resumes_bit_exactly(digits: DataBundle, update_run: tuple[str, list[dict[str, Any]]]) -> None:
    optimizer, full = update_run
    cfg = config("update", optimizer)
    engine = TrialEngine(cfg, digits)
    for _ in range(3):  # mid-search, truncating since epoch 3
        engine.step()
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(round_trip(engine.state_dict()))
    resumed.run()
    assert [untimed(m) for m in resumed.history] == full
