"""What a sweep runs (:class:`SweepSpace`): one declarative TOML file per experiment in ``search_spaces/``.

A file names the fixed fields, the grid axes and the Optuna ranges of one experiment::

    description = "ResNet-18 on CIFAR-10, the paper's protocol"
    methods = ["earlybird", "worm"]

    [base]                    # fixed config fields, dotted keys
    "model.arch" = "resnet18"

    [axes]                    # grid axes every method sweeps
    seed = [0, 1, 2]
    "search.ratio" = [0.3, 0.5, 0.7]

    [method_axes.worm]        # axes only that method sweeps: no duplicated EarlyBird trials
    "worm.delta" = [0.02, 0.05, 0.1]

    [optuna]                  # --search optuna: candidates of the method, each on paired seeds
    method = "worm"
    objective = ["search_epochs:min", "final_acc:max"]   # each the mean paired difference to EarlyBird
    num_samples = 24          # candidates
    seeds = 6                 # paired seeds per candidate (0 to 5), one EarlyBird baseline per seed
    enqueue = [{ "worm.delta" = 0.05 }]                  # candidates to try first
    cached_states = 6         # states each baseline keeps for candidates to start from
    params = { "worm.delta" = { low = 0.005, high = 0.2, log = true } }

    [final]                   # python -m worm_tune.final: the confirmatory rerun of the sweep's pick
    seeds = 6                 # fresh seeds (after the sweep's largest); 6 pairs make a Wilcoxon test possible
    retrain_epochs = 20       # the final-training budget (default: the sweep's)
    top_k = 1                 # how many of the sweep's best settings to rerun (default 3)

    [analysis]
    margin = 0.01             # equivalence margin for accuracies (0.01 = 1 percentage point)

    [[cases]]                 # settings that only make sense together, each case its own grid
    name = "heads"
    base = { "prune.kind" = "structured", "search.threshold" = 0.01 }
    method_axes = { worm = { "worm.delta" = [0.03, 0.06] } }

    [profiles.quick]          # the same tables again, merged over the ones above
    base = { "data.dataset" = "digits" }

The grid of a space is the union over its methods of the cartesian product of the shared and
the method's own axes, in file order. Cases (optional) split it: the grid is then the union over
the cases of that product, with each case's ``base``, ``axes`` and ``method_axes`` laid over the
space's, so values that belong together (a ViT's head mask and the thresholds its coarse distances
need) are not crossed with those of another case. ``--set`` pins a field: it overrides the base,
every case, and removes that field's axis, so a pinned field never multiplies trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worm_tune import metrics
from worm_tune.config import METHODS, ConfigError, TrialConfig, field_types

#: Where the project's search spaces live (a repository checkout or an editable install).
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"

#: Metrics an objective may name, with the direction that is better (the schema's, kept under this name).
OBJECTIVES: dict[str, str] = metrics.OBJECTIVES

_TOP_KEYS = {"description", "methods", "base", "axes", "method_axes", "cases"}
_TOP_KEYS |= {"optuna", "final", "analysis", "profiles"}
_PROFILE_KEYS = _TOP_KEYS - {"profiles"}
_OPTUNA_KEYS = {"method", "objective", "num_samples", "params", "seeds", "enqueue", "cached_states"}
_FINAL_KEYS = {"seeds", "retrain_epochs", "top_k"}
_ANALYSIS_KEYS = {"margin"}
_CASE_KEYS = {"name", "base", "axes", "method_axes"}
#: Fields a case cannot set: the methods are the space's list, and the seeds pair every case's trials.
_NOT_IN_CASES = {"method", "seed"}


class SpaceError(ValueError):
    """A search space that cannot be read or does not make sense; the message is one line."""


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "min" or "max"

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``"final_acc:max"`` (or a bare metric name, which takes its natural direction)."""
        metric, _, mode = str(text).partition(":")
        if metric not in OBJECTIVES:
            raise SpaceError(f"objective {text!r} is invalid: metric must be one of {', '.join(OBJECTIVES)}")
        mode = mode or OBJECTIVES[metric]
        if mode not in ("min", "max"):
            raise SpaceError(f"objective {text!r} is invalid: mode must be min or max")
        return cls(metric, mode)

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


#: An Optuna study's objectives when neither the space nor ``--objective`` names any: fewer search
#: epochs and higher final accuracy than EarlyBird on the same seeds.
DEFAULT_OBJECTIVES = (Objective("search_epochs", "min"), Objective("final_acc", "max"))


@dataclass(frozen=True)
class ParamRange:
    """A numeric range Optuna samples (log scale when ``log``); ints stay ints."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class OptunaSpec:
    """A space's ``[optuna]`` table: a study whose trials are candidates, each run on ``seeds`` paired
    seeds (0 to ``seeds`` - 1) beside one EarlyBird baseline per seed, scored by the paired effect."""

    method: str
    objectives: tuple[Objective, ...]
    num_samples: int  # candidates
    params: tuple[ParamRange, ...]
    seeds: int = 6  # paired seeds per candidate
    #: Candidates to try first (Optuna's ``enqueue_trial``): tuned key -> value, e.g. the paper's point.
    enqueue: tuple[dict[str, float], ...] = ()
    #: States each seed's baseline keeps for candidates to fork from (:mod:`~worm_tune.tune.prefix`).
    cached_states: int = 6


@dataclass(frozen=True)
class FinalSpec:
    """A space's ``[final]`` table: how ``final`` confirms the sweep's pick; None: the command's default."""

    seeds: int | None = None  # how many fresh seeds each rerun runs
    retrain_epochs: int | None = None  # the final-training budget (None: the sweep's own)
    top_k: int | None = None  # how many of the sweep's best settings to rerun


@dataclass(frozen=True)
class Case:
    """One ``[[cases]]`` table: fixed fields and axes that hold together, laid over the space's."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    method_axes: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def without(self, keys: set[str]) -> Case:
        """The case with ``keys`` (pinned by ``--set``) removed from its fields and axes."""
        return Case(
            self.name,
            {k: v for k, v in self.base.items() if k not in keys},
            {k: v for k, v in self.axes.items() if k not in keys},
            {m: {k: v for k, v in a.items() if k not in keys} for m, a in self.method_axes.items()},
        )


@dataclass(frozen=True)
class SweepSpace:
    """One experiment's sweep: a base config, grid axes and Optuna ranges. (Its file and messages keep the
    users' name, a search space; "search" alone is the Early-Bird phase.)"""

    name: str
    profile: str
    description: str
    methods: tuple[str, ...]
    base: TrialConfig
    axes: dict[str, list[Any]] = field(default_factory=dict)
    method_axes: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    optuna: OptunaSpec | None = None
    final: FinalSpec = field(default_factory=FinalSpec)
    #: ``[analysis] margin``: the equivalence margin for accuracies (0.01 = 1 pp); None: none stated.
    margin: float | None = None
    #: ``[[cases]]``: sub-grids whose settings go together; empty: the space is one grid.
    cases: tuple[Case, ...] = ()

    def pin(self, overrides: Mapping[str, Any]) -> SweepSpace:
        """Apply ``--set`` overrides: they win over the base and remove the matching axes."""
        if not overrides:
            return self
        base = self.base.replace(overrides).validate()
        methods = self.methods
        if "method" in overrides:
            methods = (base.method,)
        axes = {k: v for k, v in self.axes.items() if k not in overrides}
        method_axes = {m: {k: v for k, v in a.items() if k not in overrides} for m, a in self.method_axes.items()}
        cases = tuple(case.without(set(overrides)) for case in self.cases)
        optuna = self.optuna
        if optuna is not None:
            params = tuple(p for p in optuna.params if p.key not in overrides)
            enqueue = tuple({k: v for k, v in point.items() if k not in overrides} for point in optuna.enqueue)
            optuna = dataclasses.replace(optuna, params=params, enqueue=enqueue)
        return dataclasses.replace(
            self, methods=methods, base=base, axes=axes, method_axes=method_axes, cases=cases, optuna=optuna
        )

    def grid(self) -> list[TrialConfig]:
        """Every trial of the grid (of each case in turn), validated, without duplicates, in file order."""
        configs: dict[str, TrialConfig] = {}
        for case in self.cases or (Case(""),):
            base = self.base.replace(case.base)
            for method in self.methods:
                space_axes = {**self.axes, **self.method_axes.get(method, {})}
                axes = {k: v for k, v in space_axes.items() if k not in case.base}
                axes |= {**case.axes, **case.method_axes.get(method, {})}
                keys = list(axes)
                for values in itertools.product(*(axes[k] for k in keys)):
                    cfg = base.replace({"method": method, **dict(zip(keys, values, strict=True))}).validate()
                    configs.setdefault(cfg.hash(), cfg)
        return list(configs.values())


def available_spaces(directory: Path = SPACES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def resolve_space_path(name: str, directory: Path = SPACES_DIR) -> Path:
    """A space by name (``resnet18``) or by path to a ``.toml`` file."""
    path = Path(name)
    if path.suffix == ".toml":
        if path.is_dir():  # not "does not exist": the name is there, as a folder
            raise SpaceError(f"search space {name!r} is a folder, not a space file (a .toml file)")
        if not path.is_file():
            raise SpaceError(f"search space file {name!r} does not exist")
        return path.resolve()
    candidate = directory / f"{name}.toml"
    if not candidate.is_file():
        known = ", ".join(available_spaces(directory)) or "none"
        raise SpaceError(f"unknown search space {name!r}; known spaces: {known} (or a path to a .toml file)")
    return candidate


def load_space(name: str, profile: str = "default", directory: Path = SPACES_DIR) -> SweepSpace:
    """Read, merge the profile, and validate a search space; every trial config is checked."""
    path = resolve_space_path(name, directory)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpaceError(f"search space {path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SpaceError(f"search space {path.name} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"search space {path.name} cannot be parsed: {exc}") from None
    _only(data, _TOP_KEYS, f"search space {path.name}")
    profiles = data.pop("profiles", {})
    if profile != "default":
        if profile not in profiles:
            known = ", ".join(["default", *profiles])
            raise SpaceError(f"search space {path.stem!r} has no profile {profile!r}; profiles: {known}")
        overlay = profiles[profile]
        _only(overlay, _PROFILE_KEYS, f"profile {profile!r} of {path.name}")
        data = _merge(data, overlay)
    where = f"search space {path.stem}" + ("" if profile == "default" else f" ({profile})")
    try:
        space = _build(path.stem, profile, data, where)
        space.grid()  # validates every combination before anything runs
    except ConfigError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    return space


def _merge(data: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    for key, value in overlay.items():
        if key in ("base", "axes"):
            merged[key] = {**data.get(key, {}), **value}
        elif key == "method_axes":
            merged[key] = {m: {**data.get(key, {}).get(m, {}), **v} for m, v in {**data.get(key, {}), **value}.items()}
        elif key in ("optuna", "final", "analysis"):
            merged[key] = {**data.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _build(name: str, profile: str, data: dict[str, Any], where: str) -> SweepSpace:
    methods = tuple(data.get("methods", ["earlybird", "worm"]))
    if not methods:
        raise SpaceError(f"{where}: methods must list at least one of {', '.join(METHODS)}")
    for method in methods:
        if method not in METHODS:
            raise SpaceError(f"{where}: method {method!r} is invalid; allowed: {', '.join(METHODS)}")
    base = TrialConfig().replace(data.get("base", {})).validate()
    axes = _axes(data.get("axes", {}), where, "axes")
    method_axes: dict[str, dict[str, list[Any]]] = {}
    for method, table in data.get("method_axes", {}).items():
        if method not in methods:
            raise SpaceError(
                f"{where}: method_axes.{method} names a method the space does not run ({', '.join(methods)})"
            )
        method_axes[method] = _axes(table, where, f"method_axes.{method}")
        if "method" in method_axes[method]:
            raise SpaceError(f"{where}: method_axes.{method} cannot sweep 'method'")
    if "method" in axes:
        raise SpaceError(f"{where}: sweep methods with the 'methods' list, not an axis")
    optuna = _optuna(data["optuna"], where) if "optuna" in data else None
    description = str(data.get("description", ""))
    final, margin = _final(data.get("final", {}), where), _margin(data.get("analysis", {}), where)
    cases = _cases(data.get("cases", []), methods, where)
    return SweepSpace(name, profile, description, methods, base, axes, method_axes, optuna, final, margin, cases)


def _cases(tables: Any, methods: tuple[str, ...], where: str) -> tuple[Case, ...]:
    """``[[cases]]``: each a named table of ``base`` fields and ``axes``/``method_axes``, names unique."""
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise SpaceError(f'{where}: cases must be a list of tables, e.g. [[cases]] name = "heads"')
    cases: list[Case] = []
    types = field_types()
    for i, table in enumerate(tables, 1):
        _only(table, _CASE_KEYS, f"{where}: case {i}")
        name = table.get("name")
        if not isinstance(name, str) or not name or name in {c.name for c in cases}:
            raise SpaceError(f"{where}: case {i} needs a name of its own (a non-empty string, unique)")
        at = f"case {name!r}"
        base = table.get("base", {})
        if not isinstance(base, Mapping):
            raise SpaceError(f"{where}: {at}: base must be a table of config keys")
        for key in base:
            if key not in types:
                raise SpaceError(f"{where}: {at}: base key {key!r} is not a config key; known keys: {', '.join(types)}")
        axes = _axes(table.get("axes", {}), where, f"{at}: axes")
        method_axes = {}
        for method, sub in table.get("method_axes", {}).items():
            if method not in methods:
                raise SpaceError(
                    f"{where}: {at}: method_axes.{method} names a method the space does not run ({', '.join(methods)})"
                )
            method_axes[method] = _axes(sub, where, f"{at}: method_axes.{method}")
        swept = set(axes) | {k for a in method_axes.values() for k in a}
        if set(base) & swept:
            key = sorted(set(base) & swept)[0]
            raise SpaceError(f"{where}: {at} both fixes and sweeps {key!r}: keep it in base or in an axis")
        fixed = set(base) | swept
        if fixed & _NOT_IN_CASES:
            key = sorted(fixed & _NOT_IN_CASES)[0]
            raise SpaceError(f"{where}: {at} sets {key!r}: methods and seeds are the space's, shared by every case")
        cases.append(Case(name, dict(base), axes, method_axes))
    return tuple(cases)


def _final(table: Mapping[str, Any], where: str) -> FinalSpec:
    """``[final]``: each key a positive integer."""
    if not isinstance(table, Mapping):
        raise SpaceError(f"{where}: final must be a table, e.g. [final]")
    _only(table, _FINAL_KEYS, f"{where}: final")
    for key, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpaceError(f"{where}: final.{key}={value!r} is invalid: must be a positive integer")
    return FinalSpec(**table)


def _margin(table: Mapping[str, Any], where: str) -> float | None:
    """``[analysis] margin``: a fraction of accuracy strictly between 0 and 1."""
    if not isinstance(table, Mapping):
        raise SpaceError(f"{where}: analysis must be a table, e.g. [analysis]")
    _only(table, _ANALYSIS_KEYS, f"{where}: analysis")
    margin = table.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 < margin < 1:
        raise SpaceError(
            f"{where}: analysis.margin={margin!r} is invalid: must be a number in (0, 1), e.g. 0.01 = 1 pp"
        )
    return float(margin)


def _axes(table: Mapping[str, Any], where: str, section: str) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    types = field_types()
    for key, values in table.items():
        if key not in types:
            raise SpaceError(f"{where}: {section} key {key!r} is not a config key; known keys: {', '.join(types)}")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: {section}.{key} must be a non-empty list of values")
        axes[key] = values
    return axes


def _optuna(table: Mapping[str, Any], where: str) -> OptunaSpec:
    _only(table, _OPTUNA_KEYS, f"{where}: optuna")
    method = table.get("method", "worm")
    if method not in METHODS:
        raise SpaceError(f"{where}: optuna.method {method!r} is invalid; allowed: {', '.join(METHODS)}")
    raw_objectives = table.get("objective")
    if isinstance(raw_objectives, str):
        raw_objectives = [raw_objectives]
    objectives = tuple(Objective.parse(o) for o in raw_objectives) if raw_objectives else DEFAULT_OBJECTIVES
    num_samples = table.get("num_samples", 20)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise SpaceError(f"{where}: optuna.num_samples={num_samples!r} is invalid: must be a positive integer")
    types = field_types()
    params = []
    for key, spec in table.get("params", {}).items():
        if types.get(key) not in (int, float):
            raise SpaceError(f"{where}: optuna.params key {key!r} is not a numeric config key")
        if not isinstance(spec, Mapping) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log"}:
            raise SpaceError(f"{where}: optuna.params.{key} must be {{ low = ..., high = ..., log = true|false }}")
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        if not low < high or (log and low <= 0):
            raise SpaceError(f"{where}: optuna.params.{key} needs low < high (and low > 0 on a log scale)")
        params.append(ParamRange(key, low, high, log, types[key] is int))
    if not params:
        raise SpaceError(f"{where}: optuna.params must name at least one range to tune")
    counts = {key: table.get(key, default) for key, default in (("seeds", 6), ("cached_states", 6))}
    for key, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise SpaceError(f"{where}: optuna.{key}={count!r} is invalid: must be a positive integer")
    return OptunaSpec(method, objectives, num_samples, tuple(params), enqueue=_enqueue(table, params, where), **counts)


def _enqueue(table: Mapping[str, Any], params: list[ParamRange], where: str) -> tuple[dict[str, float], ...]:
    """``[optuna] enqueue``: candidates to try first, each a table of tuned keys within their ranges."""
    ranges = {p.key: p for p in params}
    points = table.get("enqueue", [])
    if not isinstance(points, list) or not all(isinstance(p, Mapping) for p in points):
        raise SpaceError(f'{where}: optuna.enqueue must be a list of tables, e.g. [{{ "worm.delta" = 0.05 }}]')
    for point in points:
        for key, value in point.items():
            if key not in ranges:
                raise SpaceError(f"{where}: optuna.enqueue key {key!r} is not tuned; tuned: {', '.join(ranges)}")
            p = ranges[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not p.low <= value <= p.high:
                raise SpaceError(
                    f"{where}: optuna.enqueue {key}={value!r} is outside its range [{p.low:g}, {p.high:g}]"
                )
    return tuple(dict(p) for p in points)


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SpaceError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
