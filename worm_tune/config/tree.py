"""Dotted keys over a config tree: a root dataclass whose fields are values or sections (dataclasses
of values), ``search.ratio`` naming field ``ratio`` of section ``search``.

Config files, ``--set`` overrides, MLflow params and tables all address fields this way. Each
function takes the root class, so the schema's own methods can use them while it is being defined.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import Field, fields, is_dataclass
from typing import Any

from worm_tune.config.fields import ROLES, SPEC, Role
from worm_tune.config.specs import Spec


@functools.cache
def sections(root: type) -> tuple[str, ...]:
    """The root's fields that are dataclasses of their own."""
    return tuple(f.name for f in fields(root) if is_dataclass(f.default_factory))


@functools.cache
def leaves(root: type) -> dict[str, Field[Any]]:
    """Every key (dotted for section fields) and its dataclass field, in declaration order."""
    found: dict[str, Field[Any]] = {}
    for f in fields(root):
        if f.name in sections(root):
            found.update({f"{f.name}.{sf.name}": sf for sf in fields(f.default_factory)})  # type: ignore[arg-type]
        else:
            found[f.name] = f
    return found


@functools.cache
def types(root: type) -> dict[str, type]:
    """Every key and its Python type."""
    return {key: _resolve(f.type) for key, f in leaves(root).items()}


@functools.cache
def specs(root: type) -> dict[str, Spec]:
    """Every key and its :class:`~.specs.Spec`, in declaration order."""
    return {key: f.metadata[SPEC] for key, f in leaves(root).items()}


@functools.cache
def defaults(root: type) -> dict[str, Any]:
    """Every key and its default value."""
    return {key: f.default for key, f in leaves(root).items()}


@functools.cache
def keys_with(root: type, role: Role) -> tuple[str, ...]:
    """The keys whose fields declare ``role``, in declaration order."""
    return tuple(key for key, f in leaves(root).items() if role in f.metadata[ROLES])


def get(config: Any, key: str) -> Any:
    """The value of a dotted key in a config tree."""
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


def flat(config: Any) -> dict[str, Any]:
    """``{"search.ratio": 0.5, ...}``: every key of a config tree and its value."""
    values: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            values.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            values[key] = value
    return values


def replaced(config: Any, values: Mapping[str, Any]) -> Any:
    """A copy of a config tree with the dotted keys' values set (already typed and known)."""
    top: dict[str, Any] = {}
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if "." in key:
            section, name = key.split(".", 1)
            by_section.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, section_values in by_section.items():
        top[section] = dataclasses.replace(getattr(config, section), **section_values)
    return dataclasses.replace(config, **top)


def _resolve(annotation: Any) -> type:
    """A field's type from its annotation, a string under ``from __future__ import annotations``."""
    return {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, annotation)
