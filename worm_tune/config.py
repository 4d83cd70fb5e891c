"""Typed configuration of one trial: validated once, hashed for stable names.

A trial is fully described by a :class:`TrialConfig`, a tree of frozen dataclasses whose
defaults follow the paper (`[`docs/method.md`](docs/method.md)`). Fields are addressed by dotted
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
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

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
#: ``grad``: scale masked gradients by r (the paper); ``update``: scale masked units' parameter change by r.
APPLY_MODES = ("grad", "update")
#: ``algorithm``: docs/method.md's Early-Bird rules; ``reference``: the reference code's (see README's Choices).
SEARCH_RULES = ("algorithm", "reference")

#: Fields that say where a trial runs, not what it computes: left out of the hash. (Not
#: ``data.num_workers``: with augmentation on, worker processes draw the random crops.)
RUNTIME_FIELDS = frozenset({"data.data_dir", "data.download", "device", "threads", "crash_at_epoch"})

#: Fields added after the first release, with the value that means "not used": at that value
#: they stay out of the hash, so every config written before they existed keeps its name.
LATER_FIELDS: dict[str, Any] = {"model.checkpoint": "", "worm.apply": "grad", "search.rules": "algorithm"}

#: Fields a searching trial's training reads only through its decisions: which mask its window
#: holds and when its search ends (ratio, window, threshold, rules), and how much it truncates
#: (method, delta, factor, scope, apply). Trials that differ only in these train the same network
#: until a decision tells them apart (:mod:`worm_tune.group`).
SEARCH_DECISION_FIELDS = (
    "method",
    "search.ratio",
    "search.window",
    "search.threshold",
    "search.rules",
    "worm.delta",
    "worm.factor",
    "worm.scope",
    "worm.apply",
)
#: Fields nothing reads before the search ends: the prune event and the retraining. Trials that
#: prune the same mask at the same epoch and agree on these retrain the same network.
AFTER_SEARCH_FIELDS = (
    "prune.kind",
    "retrain.max_epochs",
    "retrain.target_acc",
    "retrain.init",
    "retrain.stop_at_target",
)

#: Fields only CNNs use: a transformer trial must leave them at their defaults.
CNN_ONLY_FIELDS = ("model.stem", "worm.scope", "search.l1", "retrain.init")


#: The largest seed ``torch.manual_seed`` accepts (an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


class ConfigError(ValueError):
    """A bad configuration value; its message is one line naming field, value and what is allowed."""


# -- what each field allows, declared once beside the field ---------------------------------


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A field's one-line help and the values it allows; the validator and ``--help`` both read it.

    The base class allows any value of the field's type (paths, switches, checkpoint names)."""

    help: str

    @property
    def allowed(self) -> str:
        """What the error message and ``--help`` say is allowed; empty when anything goes."""
        return ""

    def allows(self, value: Any) -> bool:
        return True

    def check(self, key: str, value: Any) -> None:
        if not self.allows(value):
            raise ConfigError(f"{key}={value!r} is invalid: must be {self.allowed}")


@dataclass(frozen=True, kw_only=True)
class Choice(Spec):
    """One of a fixed tuple of names."""

    options: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return f"one of {', '.join(self.options)}"

    def allows(self, value: Any) -> bool:
        return value in self.options


@dataclass(frozen=True, kw_only=True)
class Range(Spec):
    """A number (or an integer) above ``low`` and, if given, below ``high``; each end open or closed.

    ``noun`` and ``note`` only change the wording: "a fraction in (0, 1]", "... (what torch accepts)"."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    noun: str = ""
    note: str = ""

    @property
    def allowed(self) -> str:
        noun = self.noun or ("an integer" if self.integer else "a number")
        if self.high is None:
            text = f"{noun} {'>' if self.low_open else '>='} {_bound(self.low)}"
        else:
            text = f"{noun} in {'(' if self.low_open else '['}{_bound(self.low)}, {_bound(self.high)}"
            text += ")" if self.high_open else "]"
        return f"{text} ({self.note})" if self.note else text

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not self.integer and not math.isfinite(value):
            return False
        if value <= self.low if self.low_open else value < self.low:
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _bound(value: float) -> str:
    """``0``, not ``0.0``: bounds read as the user would write them."""
    return str(value) if isinstance(value, int) else f"{value:g}"


#: The ``dataclasses.field`` metadata key that holds a field's :class:`Spec`.
SPEC = "spec"

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


def free(default: _T, help: str) -> _T:
    """A free-form field: :func:`_coerce` gives it its type, and any value of that type will do."""
    return field(default=default, metadata={SPEC: Spec(help=help)})


def choice(default: str, options: tuple[str, ...], help: str) -> str:
    """A field that must be one of ``options``."""
    return field(default=default, metadata={SPEC: Choice(options=options, help=help)})


def number(
    default: _N,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    noun: str = "",
    note: str = "",
    help: str,
) -> _N:
    """A numeric field: at least ``low`` and, if ``high`` is given, at most ``high`` (``*_open``: strictly)."""
    spec = Range(
        low=low, high=high, low_open=low_open, high_open=high_open, integer=integer, noun=noun, note=note, help=help
    )
    return field(default=default, metadata={SPEC: spec})


def count(default: int, low: int, help: str) -> int:
    """An integer ``>= low`` (epochs, batch sizes, workers)."""
    return number(default, low, integer=True, help=help)


# -- the config tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is fed. ``augment`` is off by default: the paper used none."""

    dataset: str = choice("cifar10", DATASETS, "the dataset (text ones need model.arch=bert)")
    data_dir: str = free("./data", "where datasets are read from (and downloaded to)")
    download: bool = free(False, "fetch a missing dataset instead of failing")
    augment: bool = free(False, "random crops and flips (images only)")
    batch_size: int = count(32, 1, "training batch size")
    test_batch_size: int = count(256, 1, "evaluation batch size")
    num_workers: int = count(0, 0, "DataLoader worker processes (0: load in the trial's process)")
    train_subset: int = count(0, 0, "train on a stratified subset of N examples, for fast tests (0: the whole split)")


@dataclass(frozen=True)
class ModelConfig:
    """A torchvision model, or BERT. ``stem='imagenet'`` is torchvision's own CNN layout (what the
    paper ran); ``checkpoint`` names a Hugging Face BERT (``bert-base-uncased``, the paper's), whose
    tokenizer the text data then uses; without one, ``bert`` is a tiny randomly initialised BERT."""

    arch: str = choice("resnet18", ARCHS, "the network: a CNN or a transformer")
    stem: str = choice("imagenet", STEMS, "CNN input layers: torchvision's (the paper's) or the 32x32 CIFAR one")
    pretrained: bool = free(False, "start from pretrained weights (for bert: model.checkpoint's, not for vit)")
    checkpoint: str = free("", "a Hugging Face BERT to load, e.g. bert-base-uncased (bert only)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer for search and retraining (paper: SGD, lr 0.01, momentum 0.9)."""

    optimizer: str = choice("sgd", OPTIMIZERS, "optimizer for search and retraining")
    lr: float = number(0.01, 0, low_open=True, help="learning rate")
    momentum: float = number(0.9, 0, 1, high_open=True, help="SGD momentum")
    weight_decay: float = number(0.0, 0, help="L2 weight decay")
    scheduler: str = choice("constant", SCHEDULERS, "learning-rate schedule over each phase")


@dataclass(frozen=True)
class SearchConfig:
    """Early-Bird search: ratio ``p``, window ``l``, stop threshold ``s`` and budget."""

    ratio: float = number(0.5, 0, 1, low_open=True, high_open=True, help="pruning ratio p: the fraction pruned")
    window: int = count(5, 2, "window l: how many recent masks are compared")
    # Mask distances lie in [0, 1]: s >= 1 would call the first full window converged, whatever it holds.
    threshold: float = number(0.1, 0, 1, low_open=True, high_open=True, help="stop threshold s on the mask distance")
    max_epochs: int = count(30, 1, "search budget in epochs")
    l1: float = number(0.0, 0, help="network-slimming L1 on BN gamma (Early-Bird's --s, off in the WORM paper)")
    rules: str = choice(
        "algorithm",
        SEARCH_RULES,
        "docs/method.md's window, < s and floor(C*p) pruned, or the reference code's "
        "(initial mask in the window, <= s, ties pruned, final bias pruned)",
    )


@dataclass(frozen=True)
class WormConfig:
    """WORM truncation: window ``delta`` above ``s``, factor ``r`` (fraction of gradient kept)."""

    delta: float = number(0.05, 0, 1, low_open=True, high_open=True, help="truncation starts once d_avg < s + delta")
    factor: float = number(0.003, 0, 1, help="factor r: the fraction of a masked gradient kept")
    scope: str = choice("bn", SCOPES, "what is truncated: BN gammas only, or whole channels")
    apply: str = choice(
        "grad", APPLY_MODES, "scale masked gradients by r (the paper), or masked units' update after the step"
    )


@dataclass(frozen=True)
class PruneConfig:
    """After the search: ``unstructured`` (paper protocol) or ``structured`` channel removal."""

    kind: str = choice("unstructured", PRUNE_KINDS, "mask weights (the paper's protocol) or remove channels")


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining after pruning, towards a target test accuracy (paper: 90% on CIFAR-10)."""

    max_epochs: int = count(10, 1, "retraining budget in epochs")
    target_acc: float = number(0.9, 0, 1, low_open=True, noun="a fraction", help="test accuracy to reach")
    init: str = choice("searched", RETRAIN_INITS, "retrain from the searched weights or a fresh initialisation")
    stop_at_target: bool = free(False, "end retraining once target_acc is reached")


@dataclass(frozen=True)
class SpeedConfig:
    """How the arithmetic is fed and done (see :mod:`worm_tune.speed`, :mod:`worm_tune.data.device`).
    ``auto`` turns each speed-up on with CUDA and off on the CPU, so CPU trials stay the paper's
    plain path, bit for bit; set ``loader=plain, precision=fp32, channels_last=off`` to run that path on a GPU."""

    loader: str = choice("auto", LOADERS, "plain: a torch DataLoader, device: the dataset held on the device")
    precision: str = choice("auto", PRECISIONS, "fp32, or bf16 autocast for forward and loss")
    channels_last: str = choice("auto", SWITCHES, "channels-last memory layout for image batches")
    #: ``reduce-overhead`` (CUDA graphs) is for small batches, where launching kernels, not
    #: running them, takes the time. Recompiled after structured pruning.
    compile: str = choice("off", COMPILE_MODES, "torch.compile's mode, or off")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one search -> prune -> retrain trial needs."""

    method: str = choice("earlybird", METHODS, "how the ticket is found (dense: no search, no pruning)")
    seed: int = number(0, 0, MAX_SEED, integer=True, note="what torch accepts", help="random seed")
    device: str = choice("auto", DEVICES, "where the trial runs (auto: CUDA when there is one)")
    #: CPU kernels sum in an order that depends on the thread count, so bit-identical CPU numbers
    #: need the same count: every trial records the count it ran with.
    threads: int = count(0, 0, "torch's CPU threads (0: the CPUs the trial was given, --cpus-per-trial or every core)")
    crash_at_epoch: int = count(0, 0, "fault injection for recovery tests: crash once after epoch k (0: never)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    worm: WormConfig = field(default_factory=WormConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def validate(self) -> TrialConfig:
        """Check every field against its :class:`Spec`, then the combinations; raise
        :class:`ConfigError` on the first bad one. Returns self."""
        for key, spec in field_specs().items():
            spec.check(key, self.get(key))
        self._check_combinations()
        return self

    def get(self, key: str) -> Any:
        """The value of a dotted config key (``search.ratio``)."""
        section, _, name = key.rpartition(".")
        return getattr(getattr(self, section) if section else self, name)

    def _check_combinations(self) -> None:
        """Combinations that cannot run, refused before anything loads: the rules no single field states."""
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
            for key in CNN_ONLY_FIELDS:
                value, default = self.get(key), _leaf_fields()[key].default
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


#: The config sections: the fields of :class:`TrialConfig` that are dataclasses of their own.
_SECTIONS = tuple(f.name for f in fields(TrialConfig) if is_dataclass(f.default_factory))


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
def _leaf_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every config key (dotted for section fields) and its dataclass field, in declaration order."""
    default = TrialConfig()
    leaves: dict[str, dataclasses.Field[Any]] = {}
    for f in fields(default):
        if f.name in _SECTIONS:
            leaves.update({f"{f.name}.{sf.name}": sf for sf in fields(getattr(default, f.name))})
        else:
            leaves[f.name] = f
    return leaves


@functools.cache
def field_types() -> dict[str, type]:
    """Every config key and its Python type."""
    return {key: _resolve(f.type) for key, f in _leaf_fields().items()}


@functools.cache
def field_specs() -> dict[str, Spec]:
    """Every config key and its :class:`Spec`, in the order :meth:`TrialConfig.validate` checks them."""
    return {key: f.metadata[SPEC] for key, f in _leaf_fields().items()}


#: The allowed values of every choice field, read off the specs.
CHOICES: dict[str, tuple[str, ...]] = {k: s.options for k, s in field_specs().items() if isinstance(s, Choice)}


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
