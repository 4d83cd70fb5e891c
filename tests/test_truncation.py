"""Gradient truncation: the r schedule per method and the exact scaling of masked gradients."""

import pytest
import torch
from torch import nn

from worm_tune.config import METHODS, SearchConfig, TrialConfig, WormConfig
from worm_tune.ticket import methods
from worm_tune.ticket.schedules import TruncationSchedule
from worm_tune.ticket.sites import ChannelSites
from worm_tune.ticket.truncation import GradientTruncator, add_l1_on_gamma


def cfg(method: str, threshold: float = 0.1, delta: float = 0.05, factor: float = 0.003) -> TrialConfig:
    return TrialConfig(
        method=method, search=SearchConfig(threshold=threshold), worm=WormConfig(delta=delta, factor=factor)
    )


def schedule(cfg: TrialConfig) -> TruncationSchedule:
    """The schedule the trial's method evolves r by."""
    return methods.METHODS[cfg.method].schedule(cfg)


def test_the_method_registry_holds_every_method_the_config_names() -> None:
    assert tuple(methods.METHODS) == METHODS
    assert all(name == m.name for name, m in methods.METHODS.items())


def test_worm_triggers_once_when_d_avg_enters_the_window() -> None:
    s = schedule(cfg("worm", threshold=0.1, delta=0.05))
    assert s.factor == 1.0
    assert s.observe(1, None) == 1.0  # window not full yet
    assert s.observe(2, 0.30) == 1.0
    assert s.observe(3, 0.1501) == 1.0  # just above s + delta
    assert s.observe(4, 0.149) == 0.003
    assert s.trigger_epoch == 4
    assert s.observe(5, 0.9) == 0.003  # never reset
    assert s.trigger_epoch == 4


def test_worm_trigger_is_strict_at_the_boundary() -> None:
    s = schedule(cfg("worm", threshold=0.125, delta=0.125))
    assert s.observe(1, 0.25) == 1.0 and s.trigger_epoch is None


def test_delta_zero_triggers_only_below_the_stop_threshold() -> None:
    s = schedule(cfg("worm", threshold=0.1, delta=0.0))
    assert s.observe(1, 0.12) == 1.0
    assert s.observe(2, 0.05) == 0.003


def test_earlybird_never_truncates_and_gradclip_truncates_from_the_start() -> None:
    eb = schedule(cfg("earlybird"))
    assert [eb.observe(e, 0.0) for e in range(1, 4)] == [1.0, 1.0, 1.0] and eb.trigger_epoch is None
    gc = schedule(cfg("gradclip", factor=0.1))
    assert gc.factor == 0.1 and gc.observe(1, 0.5) == 0.1


def test_greedy_follows_d_avg() -> None:
    g = schedule(cfg("greedy"))
    assert g.observe(1, None) == 1.0
    assert g.observe(2, 0.4) == 0.4
    assert g.observe(3, 0.2) == 0.2


def test_schedule_state_round_trip() -> None:
    s = schedule(cfg("worm"))
    s.observe(3, 0.01)
    t = schedule(cfg("worm"))
    t.load_state_dict(s.state_dict())
    assert (t.factor, t.trigger_epoch) == (0.003, 3)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())).sum()


def grads_after_backward(net: Net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad()
    net(x).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("scope", ["bn", "channel"])
def test_masked_gradients_are_exactly_r_times_and_others_untouched(scope: str) -> None:
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 3, 8, 8)
    keep = torch.tensor([True, False, True, False, False, True, True, False, True, True])
    r = 0.003
    before = grads_after_backward(net, x)
    convs = [net.conv1, net.conv2] if scope == "channel" else None
    trunc = GradientTruncator(ChannelSites([net.bn1, net.bn2], convs))
    trunc.set(keep, r)
    assert trunc.num_truncated == 4
    net.zero_grad()
    net(x).backward()
    trunc.apply()
    after = {n: p.grad for n, p in net.named_parameters()}
    layer_keep = {"bn1": keep[:4], "conv1": keep[:4], "bn2": keep[4:], "conv2": keep[4:]}
    for name, g in after.items():
        module = name.split(".")[0]
        truncated = module.startswith("bn") or scope == "channel"
        k = layer_keep[module]
        if not truncated:
            assert torch.equal(g, before[name]), name
            continue
        assert torch.equal(g[k], before[name][k]), f"{name}: kept channels changed"
        assert torch.equal(g[~k], before[name][~k] * r), f"{name}: masked channels not scaled by r"
        assert not torch.equal(g[~k], before[name][~k])


def test_factor_one_or_no_mask_is_a_no_op() -> None:
    net = Net()
    x = torch.randn(2, 3, 8, 8)
    trunc = GradientTruncator(ChannelSites([net.bn1, net.bn2]))
    before = grads_after_backward(net, x)
    trunc.set(torch.zeros(10, dtype=torch.bool), 1.0)
    trunc.apply()
    assert trunc.num_truncated == 0
    trunc.set(None, 0.5)
    trunc.apply()
    for n, p in net.named_parameters():
        assert torch.equal(p.grad, before[n])


def test_mask_length_must_match_the_layers() -> None:
    net = Net()
    with pytest.raises(ValueError, match="channels"):
        GradientTruncator(ChannelSites([net.bn1, net.bn2])).set(torch.ones(7, dtype=torch.bool), 0.5)


def test_l1_adds_strength_times_sign_of_gamma() -> None:
    net = Net()
    with torch.no_grad():
        net.bn1.weight.copy_(torch.tensor([1.0, -2.0, 0.5, -0.1]))
    before = grads_after_backward(net, torch.randn(2, 3, 8, 8))
    add_l1_on_gamma([net.bn1, net.bn2], 1e-2)
    expected = before["bn1.weight"] + 1e-2 * torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert torch.allclose(net.bn1.weight.grad, expected, rtol=0, atol=1e-7)
    assert torch.equal(net.bn1.bias.grad, before["bn1.bias"])
