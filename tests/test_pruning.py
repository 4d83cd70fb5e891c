"""Tests of worm_tune.ticket.pruning and .accounting: masks, enforced sparsity, channel removal, FLOPs, parameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from worm_tune.ticket.accounting import count_params, effective_flops_per_image, flops_per_image, nonzero_params
from worm_tune.ticket.pruning import SparsityEnforcer, expected_channels, sparsity, structured_prune, unstructured_masks

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _randomise_bns(model: nn.Module, seed: int) -> nn.Module:
    """Random gammas/betas/statistics, so magnitude masks and eval outputs are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def resnet18(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_bns(torchvision.models.resnet18(num_classes=10), seed).eval()


@pytest.fixture(scope="module")
def vgg_imagenet_base() -> nn.Module:
    """Built once: torchvision's VGG constructor initialises its 100M-parameter head (~5 s on 2 cores)."""
    torch.manual_seed(0)
    return _randomise_bns(torchvision.models.vgg11_bn(num_classes=10), 0).eval()


@pytest.fixture(scope="module")
def vgg_cifar_base(vgg_imagenet_base: nn.Module) -> nn.Module:
    model = copy.deepcopy(vgg_imagenet_base)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Linear(512, 10)
    return model


@pytest.fixture
def vgg(vgg_cifar_base: nn.Module) -> nn.Module:
    """vgg11_bn with the cifar head; a fresh copy per test, since pruning works in place."""
    return copy.deepcopy(vgg_cifar_base)


def bns(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def random_keep(model: nn.Module, p: float = 0.6, seed: int = 1) -> torch.Tensor:
    total = sum(bn.num_features for bn in bns(model).values())
    return torch.rand(total, generator=torch.Generator().manual_seed(seed)) < p


def keep_slices(model: nn.Module, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    layers = bns(model)
    return dict(zip(layers, keep.split([bn.num_features for bn in layers.values()]), strict=True))


def resnet_couplings() -> list[list[str]]:
    """resnet18's residual couplings, written out independently of torch-pruning."""
    coupled = [["bn1", "layer1.0.bn2", "layer1.1.bn2"]]
    coupled += [[f"layer{k}.0.bn2", f"layer{k}.0.downsample.1", f"layer{k}.1.bn2"] for k in (2, 3, 4)]
    return coupled


def zero_channels(model: nn.Module, kept: dict[str, torch.Tensor]) -> nn.Module:
    """Dense twin of a pruned model: BN outputs of removed channels forced to 0 (eval mode)."""
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, bn in bns(dense).items():
            bn.weight[~kept[name]] = 0
            bn.bias[~kept[name]] = 0
    return dense


# --- unstructured ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.3, 0.9])
def test_unstructured_masks_fraction_and_magnitude(ratio: float, vgg: nn.Module) -> None:
    model = vgg
    fresh = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    order = [n for n, _ in model.named_parameters()]
    masks = unstructured_masks(model, ratio)

    types = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    expected = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, types)}
    assert set(masks) == expected
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert int((~mask).sum()) == round(ratio * mask.numel())
        magnitude = before[name].abs()
        assert magnitude[mask].min() >= magnitude[~mask].max()
        assert torch.equal(params[name], before[name] * mask)
    pruned = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert sparsity(model, masks) == pytest.approx(pruned / total)
    assert sparsity(model, masks) == pytest.approx(ratio, abs=1e-3)
    assert nonzero_params(model) < count_params(model)

    assert not any("_orig" in k or "_mask" in k for k in model.state_dict())
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert [n for n, _ in model.named_parameters()] == order  # positional optimizer state stays valid
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_sparsity_enforcer_keeps_zeros_through_sgd() -> None:
    """Masked gradients alone keep pruned weights at zero under SGD with momentum and weight decay."""
    model = resnet18().train()
    masks = unstructured_masks(model, 0.5)
    enforcer = SparsityEnforcer(model, masks)
    start = sparsity(model, masks)
    params = {n: p for n, p in model.named_parameters() if n in masks}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(X), torch.tensor([3, 7])).backward()
        enforcer.mask_grads()
        optimizer.step()

    assert all(not (p.grad * ~masks[n]).any() for n, p in params.items())
    assert sparsity(model, masks) == start
    assert all(not (p.detach() * ~masks[n]).any() for n, p in params.items())
    changed = sum(int(((p.detach() != before[n]) & masks[n]).sum()) for n, p in params.items())
    assert changed > 0.5 * sum(int(m.sum()) for m in masks.values())


def test_sparsity_enforcer_mask_weights() -> None:
    model = resnet18()
    masks = unstructured_masks(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # e.g. a checkpoint or an optimizer that moved pruned entries
    expected = {n: p.detach() * masks[n] for n, p in model.named_parameters() if n in masks}
    SparsityEnforcer(model, masks).mask_weights()
    assert all(torch.equal(p, expected[n]) for n, p in model.named_parameters() if n in masks)
    assert sparsity(model, masks) == pytest.approx(0.5, abs=1e-3)


def test_sparsity_enforcer_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        SparsityEnforcer(resnet18(), {"nope.weight": torch.ones(1, dtype=torch.bool)})


# --- structured -----------------------------------------------------------------------------------


def test_structured_vgg_exact_counts_and_equivalence(vgg: nn.Module) -> None:
    model = vgg
    keep = random_keep(model)
    slices = keep_slices(model, keep)
    dense = zero_channels(model, slices)
    params, flops = count_params(model), flops_per_image(model, (3, 32, 32))
    model.train()

    planned = expected_channels(model, keep, X[:1])
    result = structured_prune(model, keep, X[:1])

    assert model.training and all(m.training for m in model.modules())
    counts = {name: int(s.sum()) for name, s in slices.items()}
    assert result.channels_after == counts == planned
    assert result.channels_before == {name: s.numel() for name, s in slices.items()}
    assert {n: bn.num_features for n, bn in bns(model).items()} == counts
    assert model.classifier.in_features == counts[list(counts)[-1]]
    model.eval()
    out = model(X)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, dense(X), rtol=1e-4, atol=1e-5)
    assert count_params(model) < params
    assert flops_per_image(model, (3, 32, 32)) < flops


def test_structured_resnet_union_of_coupled_bns() -> None:
    model = resnet18()
    keep = random_keep(model)
    slices = keep_slices(model, keep)
    kept = dict(slices)
    for names in resnet_couplings():
        union = torch.stack([slices[n] for n in names]).any(dim=0)
        kept.update({n: union for n in names})
    dense = zero_channels(model, kept)
    params, flops = count_params(model), flops_per_image(model, (3, 32, 32))

    result = structured_prune(model, keep, X[:1])

    assert result.channels_after == {n: int(k.sum()) for n, k in kept.items()}
    coupled = {n for g in resnet_couplings() for n in g}
    for name, s in slices.items():
        if name not in coupled:  # inner bn1 layers: exactly the mask
            assert result.channels_after[name] == int(s.sum())
    assert model.fc.in_features == result.channels_after["layer4.1.bn2"]
    out = model(X)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, dense(X), rtol=1e-4, atol=1e-5)
    assert count_params(model) < params
    assert flops_per_image(model, (3, 32, 32)) < flops


def test_structured_rebuild_round_trip() -> None:
    model_a = resnet18(seed=0)
    keep = random_keep(model_a, seed=2)
    keep[: model_a.bn1.num_features] = False  # stem BN all pruned: its coupled BNs keep the union
    start = sum(bn.num_features for bn in list(bns(model_a).values())[:2])
    keep[start : start + 64] = False  # layer1.0.bn2 all pruned too
    result_a = structured_prune(model_a, keep, X[:1])
    state = copy.deepcopy(model_a.state_dict())

    model_b = resnet18(seed=7)  # fresh dense model, different weights
    result_b = structured_prune(model_b, keep, X[:1])
    assert result_b == result_a
    model_b.load_state_dict(state, strict=True)
    torch.testing.assert_close(model_b(X), model_a(X), rtol=0, atol=0)

    model_c = resnet18(seed=0)  # same model + keep: same weights too
    structured_prune(model_c, keep, X[:1])
    for (name, a), c in zip(state.items(), model_c.state_dict().values(), strict=True):
        assert torch.equal(a, c), name


def test_structured_keeps_at_least_one_channel(vgg: nn.Module) -> None:
    model = vgg
    keep = random_keep(model)
    layers = bns(model)
    names = list(layers)
    sizes = [bn.num_features for bn in layers.values()]
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    victim = 2
    keep[starts[victim] : starts[victim + 1]] = False
    gamma = layers[names[victim]].weight.detach().clone()

    result = structured_prune(model, keep, X[:1])

    assert result.channels_after[names[victim]] == 1
    pruned_bn = bns(model)[names[victim]]
    assert pruned_bn.weight.item() == gamma[gamma.abs().argmax()].item()
    assert model(X).shape == (2, 10)


def test_structured_coupled_bns_all_pruned() -> None:
    """Emptied coupled BNs keep one channel, the largest summed |gamma|, whatever their own gammas."""
    model = resnet18()
    keep = random_keep(model)
    layers = bns(model)
    coupled = resnet_couplings()[2]  # layer3: 256 channels shared by three BNs
    sizes = [bn.num_features for bn in layers.values()]
    offsets = dict(zip(layers, torch.tensor([0, *sizes]).cumsum(0).tolist()[:-1], strict=True))
    for name in coupled:
        keep[offsets[name] : offsets[name] + 256] = False
    gamma = torch.stack([layers[n].weight.detach().abs() for n in coupled]).sum(dim=0)
    survivor = int(gamma.argmax())
    expected = {n: layers[n].weight.detach()[survivor].item() for n in coupled}

    result = structured_prune(model, keep, X[:1])

    assert all(result.channels_after[n] == 1 for n in coupled)
    assert {n: bns(model)[n].weight.item() for n in coupled} == expected
    assert model(X).shape == (2, 10)


def test_structured_vgg_imagenet_head_flatten(vgg_imagenet_base: nn.Module) -> None:
    """torch-pruning traces flatten: each removed last-conv channel drops 7*7 Linear inputs."""
    model = copy.deepcopy(vgg_imagenet_base)
    keep = torch.ones(sum(bn.num_features for bn in bns(model).values()), dtype=torch.bool)
    last = list(bns(model))[-1]
    dropped = [0, 5, 7, 100, 511]
    keep[[-512 + i for i in dropped]] = False
    dense = zero_channels(model, keep_slices(model, keep))

    structured_prune(model, keep, X[:1])

    assert bns(model)[last].num_features == 512 - len(dropped)
    assert model.classifier[0].in_features == 512 * 49 - 49 * len(dropped)
    torch.testing.assert_close(model(X), dense(X), rtol=1e-4, atol=1e-5)


def test_structured_rejects_wrong_length(vgg: nn.Module) -> None:
    with pytest.raises(ValueError):
        structured_prune(vgg, torch.ones(3, dtype=torch.bool), X[:1])


# --- counting -------------------------------------------------------------------------------------


def test_flops_resnet18_imagenet_stem_sane() -> None:
    model = resnet18().train()
    flops = flops_per_image(model, (3, 32, 32))
    assert model.training
    assert flops == pytest.approx(2 * 1.82e9 * (32 / 224) ** 2, rel=0.25)


def test_effective_flops(vgg: nn.Module) -> None:
    model = vgg
    dense = flops_per_image(model, (3, 32, 32))
    assert effective_flops_per_image(model, (3, 32, 32), unstructured_masks(copy.deepcopy(model), 0.0)) == dense
    half = effective_flops_per_image(model, (3, 32, 32), unstructured_masks(model, 0.5))
    assert flops_per_image(model, (3, 32, 32)) == dense  # masked kernels are still dense to the counter
    assert half == pytest.approx(dense / 2, rel=0.01)
