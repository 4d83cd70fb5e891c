"""Typed configuration of one trial: a tree of frozen dataclasses, validated once, hashed for stable names.

A trial is fully described by a :class:`TrialConfig`, whose defaults follow the paper
(`docs/method.md`). Each field declares, beside its default, the values it allows and the roles it
plays (:mod:`.fields`); fields are addressed by dotted names (``search.ratio``, :mod:`.tree`) in
config files, ``--set`` overrides and flattened logs. Fields that do not change the numbers (where
the data lives, the device) are left out of :meth:`TrialConfig.hash`, so the same experiment gets
the same name on any machine (open_lth's hparams/desc idea).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worm_tune.config import names, parsing, tree
from worm_tune.config.fields import Role, choice, count, free, number, open_fraction
from worm_tune.config.hashing import config_hash
from worm_tune.config.rules import check_combinations

#: The largest seed ``torch.manual_seed`` accepts (an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is fed. ``augment`` is off by default: the paper used none."""

    dataset: str = choice("cifar10", names.DATASETS, "the dataset (text ones need model.arch=bert)")
    data_dir: str = free("./data", "where datasets are read from (and downloaded to)", roles=Role.RUNTIME)
    download: bool = free(False, "fetch a missing dataset instead of failing", roles=Role.RUNTIME)
    augment: bool = free(False, "random crops and flips (images only)")
    batch_size: int = count(32, 1, "training batch size")
    test_batch_size: int = count(256, 1, "evaluation batch size")
    # Not a runtime field: with augmentation on, worker processes draw the random crops.
    num_workers: int = count(0, 0, "DataLoader worker processes (0: load in the trial's process)")
    train_subset: int = count(0, 0, "train on a stratified subset of N examples, for fast tests (0: the whole split)")


@dataclass(frozen=True)
class ModelConfig:
    """A torchvision model, or BERT. ``stem='imagenet'`` is torchvision's own CNN layout (what the
    paper ran); ``checkpoint`` names a Hugging Face BERT (``bert-base-uncased``, the paper's), whose
    tokenizer the text data then uses; without one, ``bert`` is a tiny randomly initialised BERT."""

    arch: str = choice("resnet18", names.ARCHS, "the network: a CNN or a transformer")
    stem: str = choice(
        "imagenet",
        names.STEMS,
        "CNN input layers: torchvision's (the paper's) or the 32x32 CIFAR one",
        roles=Role.CNN_ONLY,
    )
    pretrained: bool = free(False, "start from pretrained weights (for bert: model.checkpoint's, not for vit)")
    checkpoint: str = free("", "a Hugging Face BERT to load, e.g. bert-base-uncased (bert only)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer for search and retraining (paper: SGD, lr 0.01, momentum 0.9)."""

    optimizer: str = choice("sgd", names.OPTIMIZERS, "optimizer for search and retraining")
    lr: float = number(0.01, 0, low_open=True, help="learning rate")
    momentum: float = number(0.9, 0, 1, high_open=True, help="SGD momentum")
    weight_decay: float = number(0.0, 0, help="L2 weight decay")
    scheduler: str = choice("constant", names.SCHEDULERS, "learning-rate schedule over each phase")


@dataclass(frozen=True)
class SearchConfig:
    """Early-Bird search: ratio ``p``, window ``l``, stop threshold ``s`` and budget."""

    ratio: float = open_fraction(0.5, "pruning ratio p: the fraction pruned", roles=Role.SEARCH_DECISION)
    window: int = count(5, 2, "window l: how many recent masks are compared", roles=Role.SEARCH_DECISION)
    # Mask distances lie in [0, 1]: s >= 1 would call the first full window converged, whatever it holds.
    threshold: float = open_fraction(0.1, "stop threshold s on the mask distance", roles=Role.SEARCH_DECISION)
    max_epochs: int = count(30, 1, "search budget in epochs")
    l1: float = number(
        0.0, 0, help="network-slimming L1 on BN gamma (Early-Bird's --s, off in the WORM paper)", roles=Role.CNN_ONLY
    )
    rules: str = choice(
        "algorithm",
        names.SEARCH_RULES,
        "docs/method.md's window, < s and floor(C*p) pruned, or the reference code's "
        "(initial mask in the window, <= s, ties pruned, final bias pruned)",
        roles=Role.SEARCH_DECISION,
    )


#: What WORM's knobs are: decisions of a searching trial, read by the truncating methods only.
WORM_KNOB = Role.SEARCH_DECISION | Role.TRUNCATION


@dataclass(frozen=True)
class WormConfig:
    """WORM truncation: window ``delta`` above ``s``, factor ``r`` (fraction of gradient kept)."""

    delta: float = open_fraction(0.05, "truncation starts once d_avg < s + delta", roles=WORM_KNOB)
    factor: float = number(0.003, 0, 1, help="factor r: the fraction of a masked gradient kept", roles=WORM_KNOB)
    scope: str = choice(
        "bn", names.SCOPES, "what is truncated: BN gammas only, or whole channels", roles=WORM_KNOB | Role.CNN_ONLY
    )
    apply: str = choice(
        "grad",
        names.APPLY_MODES,
        "scale masked gradients by r (the paper), or masked units' update after the step",
        roles=WORM_KNOB,
    )


@dataclass(frozen=True)
class PruneConfig:
    """After the search: ``unstructured`` (paper protocol) or ``structured`` channel removal."""

    kind: str = choice(
        "unstructured",
        names.PRUNE_KINDS,
        "mask weights (the paper's protocol) or remove channels",
        roles=Role.AFTER_SEARCH,
    )


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining after pruning, towards a target test accuracy (paper: 90% on CIFAR-10)."""

    max_epochs: int = count(10, 1, "retraining budget in epochs", roles=Role.AFTER_SEARCH)
    target_acc: float = number(
        0.9, 0, 1, low_open=True, noun="a fraction", help="test accuracy to reach", roles=Role.AFTER_SEARCH
    )
    init: str = choice(
        "searched",
        names.RETRAIN_INITS,
        "retrain from the searched weights or a fresh initialisation",
        roles=Role.AFTER_SEARCH | Role.CNN_ONLY,
    )
    stop_at_target: bool = free(False, "end retraining once target_acc is reached", roles=Role.AFTER_SEARCH)


@dataclass(frozen=True)
class SpeedConfig:
    """How the arithmetic is fed and done (see :mod:`worm_tune.speed`, :mod:`worm_tune.data.device`).
    ``auto`` turns each speed-up on with CUDA and off on the CPU, so CPU trials stay the paper's
    plain path, bit for bit; set ``loader=plain, precision=fp32, channels_last=off`` to run that path on a GPU."""

    loader: str = choice(
        "auto", names.LOADERS, "plain: a torch DataLoader, device: the dataset held on the device", roles=Role.EXECUTION
    )
    precision: str = choice(
        "auto", names.PRECISIONS, "fp32, or bf16 autocast for forward and loss", roles=Role.EXECUTION
    )
    channels_last: str = choice(
        "auto", names.SWITCHES, "channels-last memory layout for image batches", roles=Role.EXECUTION
    )
    #: ``reduce-overhead`` (CUDA graphs) is for small batches, where launching kernels, not
    #: running them, takes the time. Recompiled after structured pruning.
    compile: str = choice("off", names.COMPILE_MODES, "torch.compile's mode, or off", roles=Role.EXECUTION)


@dataclass(frozen=True)
class TrialConfig:
    """Everything one search -> prune -> retrain trial needs."""

    method: str = choice(
        "earlybird", names.METHODS, "how the ticket is found (dense: no search, no pruning)", roles=Role.SEARCH_DECISION
    )
    seed: int = number(0, 0, MAX_SEED, integer=True, note="what torch accepts", help="random seed")
    device: str = choice(
        "auto", names.DEVICES, "where the trial runs (auto: CUDA when there is one)", roles=Role.RUNTIME
    )
    #: CPU kernels sum in an order that depends on the thread count, so bit-identical CPU numbers
    #: need the same count: every trial records the count it ran with.
    threads: int = count(
        0,
        0,
        "torch's CPU threads (0: the CPUs the trial was given, --cpus-per-trial or every core)",
        roles=Role.RUNTIME,
    )
    crash_at_epoch: int = count(
        0, 0, "fault injection for recovery tests: crash once after epoch k (0: never)", roles=Role.RUNTIME
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    worm: WormConfig = field(default_factory=WormConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def validate(self) -> TrialConfig:
        """Check every field against its :class:`~.specs.Spec`, then the combinations (:mod:`.rules`);
        raise :class:`~.specs.ConfigError` on the first bad one. Returns self."""
        for key, spec in tree.specs(TrialConfig).items():
            spec.check(key, self.get(key))
        defaults = tree.defaults(TrialConfig)
        check_combinations(self.to_flat(), {k: defaults[k] for k in tree.keys_with(TrialConfig, Role.CNN_ONLY)})
        return self

    def get(self, key: str) -> Any:
        """The value of a dotted config key (``search.ratio``)."""
        return tree.get(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """``{"search.ratio": 0.5, ...}``: the form of overrides, MLflow params and tables."""
        return tree.flat(self)

    def hash(self) -> str:
        """Stable short name of what this trial computes (:mod:`.hashing`; runtime fields left out)."""
        return config_hash(self.to_flat(), tree.defaults(TrialConfig), tree.keys_with(TrialConfig, Role.RUNTIME))

    def replace(self, overrides: Mapping[str, Any]) -> TrialConfig:
        """A copy with dotted-name overrides applied; values may be strings (parsed by type)."""
        return tree.replaced(self, parsing.typed(overrides, tree.types(TrialConfig)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        """Build from a nested (``{"search": {"ratio": 0.5}}``) or flat mapping, then validate."""
        return cls().replace(parsing.flatten(data, tree.sections(cls))).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> TrialConfig:
        """Read a ``.json`` or ``.toml`` file (nested sections or dotted keys)."""
        return cls.from_dict(parsing.read_file(path))
