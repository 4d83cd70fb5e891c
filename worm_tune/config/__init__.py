"""A trial's configuration, in small modules, each one idea; every public name is importable from here.

- :mod:`.names`: the names fields take that other layers read (datasets, architectures, methods, ...).
- :mod:`.specs`: what a field allows (:class:`Spec`, :class:`Choice`, :class:`Range`) and :class:`ConfigError`.
- :mod:`.fields`: how a field declares its spec and its roles (:class:`Role`), and the field helpers.
- :mod:`.tree`: dotted keys (``search.ratio``) over a tree of dataclasses.
- :mod:`.parsing`: files, ``--set`` assignments and values parsed by type.
- :mod:`.rules`: the combinations no single field states.
- :mod:`.hashing`: the config's name, stable as fields with defaults are added.
- :mod:`.schema`: the dataclasses, :class:`TrialConfig` at their root.
- :mod:`.keys`: every list of keys other layers use, read off the schema's declarations.
"""

from worm_tune.config.fields import ROLES, SPEC, Role, choice, count, free, number, open_fraction
from worm_tune.config.keys import (
    AFTER_SEARCH_FIELDS,
    CHOICES,
    CNN_ONLY_FIELDS,
    EXECUTION_FIELDS,
    PAIR_FREE_FIELDS,
    RUNTIME_FIELDS,
    SEARCH_DECISION_FIELDS,
    TRAINING_FIELDS,
    TRUNCATION_FIELDS,
    field_specs,
    field_types,
)
from worm_tune.config.names import (
    APPLY_MODES,
    ARCHS,
    CNNS,
    COMPILE_MODES,
    DATASETS,
    DEVICES,
    IMAGE_DATASETS,
    LOADERS,
    METHODS,
    OPTIMIZERS,
    PRECISIONS,
    PRUNE_KINDS,
    RETRAIN_INITS,
    SCHEDULERS,
    SCOPES,
    SEARCH_RULES,
    STEMS,
    SWITCHES,
    TEXT_DATASETS,
    TRANSFORMERS,
)
from worm_tune.config.parsing import parse_assignments
from worm_tune.config.schema import (
    MAX_SEED,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PruneConfig,
    RetrainConfig,
    SearchConfig,
    SpeedConfig,
    TrialConfig,
    WormConfig,
)
from worm_tune.config.specs import Choice, ConfigError, Range, Spec

__all__ = [
    "AFTER_SEARCH_FIELDS",
    "APPLY_MODES",
    "ARCHS",
    "CHOICES",
    "CNNS",
    "CNN_ONLY_FIELDS",
    "COMPILE_MODES",
    "DATASETS",
    "DEVICES",
    "EXECUTION_FIELDS",
    "IMAGE_DATASETS",
    "LOADERS",
    "MAX_SEED",
    "METHODS",
    "OPTIMIZERS",
    "PAIR_FREE_FIELDS",
    "PRECISIONS",
    "PRUNE_KINDS",
    "RETRAIN_INITS",
    "ROLES",
    "RUNTIME_FIELDS",
    "SCHEDULERS",
    "SCOPES",
    "SEARCH_DECISION_FIELDS",
    "SEARCH_RULES",
    "SPEC",
    "STEMS",
    "SWITCHES",
    "TEXT_DATASETS",
    "TRAINING_FIELDS",
    "TRANSFORMERS",
    "TRUNCATION_FIELDS",
    "Choice",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PruneConfig",
    "Range",
    "RetrainConfig",
    "Role",
    "SearchConfig",
    "Spec",
    "SpeedConfig",
    "TrialConfig",
    "WormConfig",
    "choice",
    "count",
    "field_specs",
    "field_types",
    "free",
    "number",
    "open_fraction",
    "parse_assignments",
]
