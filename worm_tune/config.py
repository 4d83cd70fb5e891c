"""Typed configuration of one trial: validated once, hashed for stable names.

A trial is fully described by a :class:`TrialConfig`, a tree of frozen dataclasses whose
defaults follow the paper (``../shared/ALGORITHM.md``). Fields are addressed by dotted
names (``search.ratio``) in config files, ``--set`` overrides and flattened logs. Fields
that do not change the numbers (where the data lives, the device, worker counts) are
excluded from :meth:`TrialConfig.hash`, so the same experiment gets the same name on
any machine (open_lth's hparams/desc idea).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

IMAGE_DATASETS = ("cifar10", "cifar100", "digits")
#: GLUE tasks (Hugging Face ``datasets``) and ``text``: a local folder of train.tsv/test.tsv.
TEXT_DATASETS = ("sst2", "mrpc", "rte", "text")
DATASETS = IMAGE_DATASETS + TEXT_DATASETS
CNNS = ("resnet18", "vgg11_bn", "vgg16_bn")
#: ``vit``: torchvision's VisionTransformer for 32x32 images; ``bert``: Hugging Face BERT (``[nlp]`` extra).
TRANSFORMERS = ("vit", "bert")
ARCHS = CNNS + TRANSFORMERS
STEMS = ("imagenet", "cifar")
METHODS = ("earlybird", "worm", "gradclip", "greedy", "dense")
SCOPES = ("bn", "channel")
PRUNE_KINDS = ("unstructured", "structured")
RETRAIN_INITS = ("searched", "reinit")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
LOADERS = ("auto", "plain", "device")
PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")

#: The allowed values of every choice field (what ``--help`` and the error messages list).
CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS,
    "device": DEVICES,
    "data.dataset": DATASETS,
    "model.arch": ARCHS,
    "model.stem": STEMS,
    "optim.optimizer": OPTIMIZERS,
    "optim.scheduler": SCHEDULERS,
    "worm.scope": SCOPES,
    "prune.kind": PRUNE_KINDS,
    "retrain.init": RETRAIN_INITS,
    "speed.loader": LOADERS,
    "speed.precision": PRECISIONS,
    "speed.channels_last": SWITCHES,
    "speed.compile": COMPILE_MODES,
}

#: Fields that say where a trial runs, not what it computes: left out of the hash. (Not
#: ``data.num_workers``: with augmentation on, worker processes draw the random crops.)
RUNTIME_FIELDS = frozenset({"data.data_dir", "data.download", "device", "threads", "crash_at_epoch"})

#: Fields added after the first release, with the value that means "not used": at that value
#: they stay out of the hash, so every config written before they existed keeps its name.
LATER_FIELDS: dict[str, Any] = {"model.checkpoint": ""}


#: The largest seed ``torch.manual_seed`` accepts (an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


class ConfigError(ValueError):
    """A bad configuration value; its message is one line naming field, value and what is allowed."""


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is fed. ``augment`` is off by default: the paper used none."""

    dataset: str = "cifar10"
    data_dir: str = "./data"
    download: bool = False
    augment: bool = False
    batch_size: int = 32
    test_batch_size: int = 256
    num_workers: int = 0
    train_subset: int = 0  # 0 = the whole training split; N = a fixed stratified subset, for fast tests

    def validate(self) -> None:
        _choice("data.dataset", self.dataset)
        _positive_int("data.batch_size", self.batch_size)
        _positive_int("data.test_batch_size", self.test_batch_size)
        _non_negative_int("data.num_workers", self.num_workers)
        _non_negative_int("data.train_subset", self.train_subset)


@dataclass(frozen=True)
class ModelConfig:
    """A torchvision model, or BERT. ``stem='imagenet'`` is torchvision's own CNN layout (what the
    paper ran); ``checkpoint`` names a Hugging Face BERT (``bert-base-uncased``, the paper's), whose
    tokenizer the text data then uses; without one, ``bert`` is a tiny randomly initialised BERT."""

    arch: str = "resnet18"
    stem: str = "imagenet"
    pretrained: bool = False
    checkpoint: str = ""

    def validate(self) -> None:
        _choice("model.arch", self.arch)
        _choice("model.stem", self.stem)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer for search and retraining (paper: SGD, lr 0.01, momentum 0.9)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "constant"

    def validate(self) -> None:
        _choice("optim.optimizer", self.optimizer)
        _open_positive("optim.lr", self.lr)
        _in_range("optim.momentum", self.momentum, 0.0, 1.0, "a number in [0, 1)", hi_open=True)
        _non_negative("optim.weight_decay", self.weight_decay)
        _choice("optim.scheduler", self.scheduler)


@dataclass(frozen=True)
class SearchConfig:
    """Early-Bird search: ratio ``p``, window ``l``, stop threshold ``s`` and budget."""

    ratio: float = 0.5
    window: int = 5
    threshold: float = 0.1
    max_epochs: int = 30
    l1: float = 0.0  # network-slimming L1 on BN gamma (EB code's --s); off in the WORM paper

    def validate(self) -> None:
        _in_range("search.ratio", self.ratio, 0.0, 1.0, "a number in (0, 1)", lo_open=True, hi_open=True)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise ConfigError(f"search.window={self.window!r} is invalid: must be an integer >= 2")
        # Mask distances lie in [0, 1]: s >= 1 would call the first full window converged, whatever it holds.
        _in_range("search.threshold", self.threshold, 0.0, 1.0, "a number in (0, 1)", lo_open=True, hi_open=True)
        _positive_int("search.max_epochs", self.max_epochs)
        _non_negative("search.l1", self.l1)


@dataclass(frozen=True)
class WormConfig:
    """WORM truncation: window ``delta`` above ``s``, factor ``r`` (fraction of gradient kept)."""

    delta: float = 0.05
    factor: float = 0.003
    scope: str = "bn"

    def validate(self) -> None:
        _in_range("worm.delta", self.delta, 0.0, 1.0, "a number in (0, 1)", lo_open=True, hi_open=True)
        _in_range("worm.factor", self.factor, 0.0, 1.0, "a number in [0, 1]")
        _choice("worm.scope", self.scope)


@dataclass(frozen=True)
class PruneConfig:
    """After the search: ``unstructured`` (paper protocol) or ``structured`` channel removal."""

    kind: str = "unstructured"

    def validate(self) -> None:
        _choice("prune.kind", self.kind)


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining after pruning, towards a target test accuracy (paper: 90% on CIFAR-10)."""

    max_epochs: int = 10
    target_acc: float = 0.9
    init: str = "searched"
    stop_at_target: bool = False

    def validate(self) -> None:
        _positive_int("retrain.max_epochs", self.max_epochs)
        _in_range("retrain.target_acc", self.target_acc, 0.0, 1.0, "a fraction in (0, 1]", lo_open=True)
        _choice("retrain.init", self.init)


@dataclass(frozen=True)
class SpeedConfig:
    """How the arithmetic is fed and done (see :mod:`worm_tune.fastpath`). ``auto`` turns each
    speed-up on with CUDA and off on the CPU, so CPU trials stay the paper's plain path, bit for
    bit; set ``loader=plain, precision=fp32, channels_last=off`` to run that path on a GPU."""

    loader: str = "auto"  # plain: a torch DataLoader; device: the dataset held on the device
    precision: str = "auto"  # fp32, or bf16 autocast for forward and loss
    channels_last: str = "auto"
    #: torch.compile's mode, or off. ``reduce-overhead`` (CUDA graphs) is for small batches, where
    #: launching kernels, not running them, takes the time. Recompiled after structured pruning.
    compile: str = "off"

    def validate(self) -> None:
        _choice("speed.loader", self.loader)
        _choice("speed.precision", self.precision)
        _choice("speed.channels_last", self.channels_last)
        _choice("speed.compile", self.compile)


@dataclass(frozen=True)
class TrialConfig:
    """Everything one search -> prune -> retrain trial needs."""

    method: str = "earlybird"
    seed: int = 0
    device: str = "auto"
    #: torch's CPU threads; 0 = the CPUs the trial was given (``--cpus-per-trial`` in a sweep, every
    #: core for ``worm_tune.run``). CPU kernels sum in an order that depends on it, so bit-identical
    #: CPU numbers need the same count: every trial records the count it ran with.
    threads: int = 0
    #: Fault injection for recovery tests: crash once, after training epoch k (0 = never).
    crash_at_epoch: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    worm: WormConfig = field(default_factory=WormConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def validate(self) -> TrialConfig:
        """Check every field; raise :class:`ConfigError` on the first bad one. Returns self."""
        _choice("method", self.method)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"seed={self.seed!r} is invalid: must be an integer in [0, {MAX_SEED}] (what torch accepts)"
            )
        _choice("device", self.device)
        _non_negative_int("threads", self.threads)
        _non_negative_int("crash_at_epoch", self.crash_at_epoch)
        for section in _SECTIONS:
            getattr(self, section).validate()
        self._check_model_and_data()
        return self

    def _check_model_and_data(self) -> None:
        """Combinations that cannot run, refused before anything loads."""
        arch, dataset = self.model.arch, self.data.dataset
        text = dataset in TEXT_DATASETS
        if (arch == "bert") != text:
            wanted = f"one of {', '.join(TEXT_DATASETS)}" if arch == "bert" else f"one of {', '.join(IMAGE_DATASETS)}"
            raise ConfigError(f"data.dataset={dataset!r} does not fit model.arch={arch!r}: use {wanted}")
        if self.model.checkpoint and arch != "bert":
            raise ConfigError(f"model.checkpoint={self.model.checkpoint!r} applies to model.arch='bert' only")
        if arch == "bert" and self.model.pretrained and not self.model.checkpoint:
            raise ConfigError("model.pretrained=true with model.arch='bert' needs model.checkpoint (bert-base-uncased)")
        if arch == "vit" and self.model.pretrained:
            raise ConfigError("model.pretrained=true is invalid for model.arch='vit': a 32x32 ViT trains from scratch")
        if text and self.data.augment:
            raise ConfigError(f"data.augment=true is invalid for {dataset!r}: augmentation is for images")
        if text and self.speed.channels_last == "on":
            raise ConfigError(f"speed.channels_last='on' is invalid for {dataset!r}: it is for image batches")
        if arch in TRANSFORMERS:
            for key, value, default in (
                ("model.stem", self.model.stem, "imagenet"),
                ("worm.scope", self.worm.scope, "bn"),
                ("search.l1", self.search.l1, 0.0),
                ("retrain.init", self.retrain.init, "searched"),
            ):
                if value != default:
                    raise ConfigError(f"{key}={value!r} is for CNNs, not model.arch={arch!r}; leave it at {default!r}")

    # -- flat views -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """``{"search.ratio": 0.5, ...}``: the form of overrides, MLflow params and tables."""
        flat: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        return flat

    def hash(self) -> str:
        """Stable short name of what this trial computes (runtime-only fields excluded)."""
        semantic = {
            k: v
            for k, v in sorted(self.to_flat().items())
            if k not in RUNTIME_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])
        }
        blob = json.dumps(semantic, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, overrides: Mapping[str, Any]) -> TrialConfig:
        """A copy with dotted-name overrides applied; values may be strings (parsed by type)."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for key, raw in overrides.items():
            ftype = field_types().get(key)
            if ftype is None:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(field_types()))}")
            value = _coerce(key, raw, ftype)
            if "." in key:
                section, name = key.split(".", 1)
                sections.setdefault(section, {})[name] = value
            else:
                top[key] = value
        for section, values in sections.items():
            top[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **top)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        """Build from a nested (``{"search": {"ratio": 0.5}}``) or flat mapping, then validate."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                if key not in _SECTIONS:
                    raise ConfigError(f"unknown config section {key!r}; known sections: {', '.join(_SECTIONS)}")
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        return cls().replace(flat).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> TrialConfig:
        """Read a ``.json`` or ``.toml`` file (nested sections or dotted keys)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        if path.suffix not in (".toml", ".json"):
            raise ConfigError(f"config file {str(path)!r} has an unknown type: use .json or .toml")
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be parsed: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of config keys")
        return cls.from_dict(data)


_SECTIONS = ("data", "model", "optim", "search", "worm", "prune", "retrain", "speed")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["search.ratio=0.7", ...]`` (the ``--set`` flags) as a mapping; values are parsed later, by type."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is invalid: expected KEY=VALUE, e.g. search.ratio=0.7")
        parsed[key.strip()] = value.strip()
    return parsed


@functools.cache
def field_types() -> dict[str, type]:
    """Every config key (dotted for section fields) and its Python type."""
    types: dict[str, type] = {}
    for f in fields(TrialConfig):
        if f.name in _SECTIONS:
            section_cls = type(getattr(TrialConfig(), f.name))
            types.update({f"{f.name}.{sf.name}": _resolve(sf.type) for sf in fields(section_cls)})
        else:
            types[f.name] = _resolve(f.type)
    return types


def _resolve(annotation: Any) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, annotation)


def _coerce(key: str, raw: Any, ftype: type) -> Any:
    """Parse ``raw`` (a string from the command line, or a value from a file) as ``ftype``."""
    if ftype is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}={raw!r} is invalid: must be true or false")
    if ftype is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is invalid: must be an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw))
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is invalid: must be an integer") from None
    if ftype is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r} is invalid: must be a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} is invalid: must be a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}={raw!r} is invalid: must be a finite number")
        return value
    if not isinstance(raw, str):
        raise ConfigError(f"{key}={raw!r} is invalid: must be a string")
    return raw


def _choice(name: str, value: Any) -> None:
    allowed = CHOICES[name]
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is invalid: must be one of {', '.join(allowed)}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid: must be an integer >= 1")


def _non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}={value!r} is invalid: must be an integer >= 0")


def _number(name: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is invalid: must be {allowed}")
    return float(value)


def _open_positive(name: str, value: Any) -> None:
    if _number(name, value, "a number > 0") <= 0:
        raise ConfigError(f"{name}={value!r} is invalid: must be a number > 0")


def _non_negative(name: str, value: Any) -> None:
    if _number(name, value, "a number >= 0") < 0:
        raise ConfigError(f"{name}={value!r} is invalid: must be a number >= 0")


def _in_range(
    name: str, value: Any, lo: float, hi: float, allowed: str, *, lo_open: bool = False, hi_open: bool = False
) -> None:
    v = _number(name, value, allowed)
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        raise ConfigError(f"{name}={value!r} is invalid: must be {allowed}")
