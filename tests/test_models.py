"""Models: every arch x stem builds and runs on 32x32, seeds reproduce weights, BN/conv pairing is complete.

VGG with the ImageNet head has ~130M parameters, so each model is built once per module and shared.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from worm_tune.config import ARCHS, CNNS, STEMS, ModelConfig
from worm_tune.models import BUILDERS, ModelError, bn_layers, build_model, producing_convs

NUM_CLASSES = 10
BN_COUNTS = {"resnet18": 20, "vgg11_bn": 8, "vgg16_bn": 13}
RESNET18_WEIGHTS = "resnet18-f37072fd.pth"


def _build(arch: str, stem: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch=arch, stem=stem), NUM_CLASSES)


def test_the_model_registry_builds_every_architecture_the_config_names() -> None:
    assert tuple(BUILDERS) == ARCHS


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], nn.Module]:
    return {(arch, stem): _build(arch, stem) for arch in CNNS for stem in STEMS}


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("arch", CNNS)
def test_forward_shape(models: dict[tuple[str, str], nn.Module], arch: str, stem: str) -> None:
    model = models[arch, stem].eval()  # eval: a train-mode forward would move the shared BN statistics
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


def test_stems(models: dict[tuple[str, str], nn.Module]) -> None:
    assert models["resnet18", "imagenet"].conv1.kernel_size == (7, 7)
    assert isinstance(models["resnet18", "imagenet"].maxpool, nn.MaxPool2d)
    assert models["resnet18", "cifar"].conv1.kernel_size == (3, 3)
    assert models["resnet18", "cifar"].conv1.stride == (1, 1)
    assert isinstance(models["resnet18", "cifar"].maxpool, nn.Identity)
    assert models["vgg11_bn", "imagenet"].classifier[-1].out_features == NUM_CLASSES
    assert isinstance(models["vgg11_bn", "cifar"].classifier, nn.Linear)
    assert sum(p.numel() for p in models["vgg11_bn", "cifar"].parameters()) < 10_000_000


@pytest.mark.parametrize(("arch", "stem"), [("resnet18", "imagenet"), ("resnet18", "cifar"), ("vgg11_bn", "cifar")])
def test_same_seed_same_weights(models: dict[tuple[str, str], nn.Module], arch: str, stem: str) -> None:
    expected, rebuilt = models[arch, stem].state_dict(), _build(arch, stem).state_dict()
    assert expected.keys() == rebuilt.keys()
    assert all(torch.equal(expected[key], rebuilt[key]) for key in expected)


def test_other_seed_other_weights(models: dict[tuple[str, str], nn.Module]) -> None:
    assert not torch.equal(models["resnet18", "cifar"].fc.weight, _build("resnet18", "cifar", seed=1).fc.weight)


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("arch", CNNS)
def test_bn_layers_and_producing_convs(models: dict[tuple[str, str], nn.Module], arch: str, stem: str) -> None:
    model = models[arch, stem]
    bns = bn_layers(model)
    assert len(bns) == BN_COUNTS[arch]
    assert [name for name, _ in bns] == [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    convs = producing_convs(model)
    assert list(convs) == [name for name, _ in bns]
    assert all(convs[name].out_channels == bn.num_features for name, bn in bns)


def test_producing_convs_of_resnet_blocks(models: dict[tuple[str, str], nn.Module]) -> None:
    model = models["resnet18", "imagenet"]
    convs = producing_convs(model)
    assert convs["bn1"] is model.conv1
    assert convs["layer2.0.bn2"] is model.layer2[0].conv2
    assert convs["layer2.0.downsample.1"] is model.layer2[0].downsample[0]


def test_producing_convs_rejects_mismatch() -> None:
    with pytest.raises(ModelError, match="produces 8"):
        producing_convs(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(16)))
    with pytest.raises(ModelError, match="no Conv2d"):
        producing_convs(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3)))


def test_pretrained_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline path, made independent of whether this machine has a network."""

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("network disabled in this test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.urlopen", offline)
    with pytest.raises(ModelError) as info:
        build_model(ModelConfig(arch="resnet18", pretrained=True), NUM_CLASSES)
    message = str(info.value)
    assert "could not fetch" in message and str(tmp_path / "hub" / "checkpoints" / RESNET18_WEIGHTS) in message
    assert "\n" not in message


def test_pretrained_offline_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
    except OSError:
        pass
    else:
        pytest.skip("this machine can reach download.pytorch.org; the test would download the weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=re.escape(str(tmp_path / "hub" / "checkpoints" / RESNET18_WEIGHTS))):
        build_model(ModelConfig(arch="resnet18", pretrained=True), NUM_CLASSES)


def test_pretrained_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "hub" / "checkpoints" / RESNET18_WEIGHTS
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="unreadable") as info:
        build_model(ModelConfig(arch="resnet18", pretrained=True), NUM_CLASSES)
    assert str(cached) in str(info.value)


def test_pretrained_weights_load_from_the_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline use: a weights file placed where the error message says is what the model starts from."""
    torch.manual_seed(123)
    imagenet = torchvision.models.resnet18(num_classes=1000)
    cached = tmp_path / "hub" / "checkpoints" / RESNET18_WEIGHTS
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet18", pretrained=True), NUM_CLASSES)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.weight, imagenet.layer4[1].bn2.weight)
    assert model.fc.out_features == NUM_CLASSES  # the classifier is replaced for the dataset
