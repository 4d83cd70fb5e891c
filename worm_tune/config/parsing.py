"""Reading config values from outside: files, ``--set`` assignments and the raw values in them.

Values arrive as strings (the command line) or as a file's JSON/TOML values; each is parsed by the
type of its field, and anything that does not parse is one :class:`~.specs.ConfigError` line.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worm_tune.config.specs import ConfigError


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["search.ratio=0.7", ...]`` (the ``--set`` flags) as a mapping; values are parsed later, by type."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is invalid: expected KEY=VALUE, e.g. search.ratio=0.7")
        parsed[key.strip()] = value.strip()
    return parsed


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping a ``.json`` or ``.toml`` config file holds (nested sections or dotted keys)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {str(path)!r} has an unknown type: use .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of config keys")
    return data


def flatten(data: Mapping[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """A nested (``{"search": {"ratio": 0.5}}``) or flat mapping as dotted keys; an unknown section is an error."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            if key not in sections:
                raise ConfigError(f"unknown config section {key!r}; known sections: {', '.join(sections)}")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def typed(values: Mapping[str, Any], types: Mapping[str, type]) -> dict[str, Any]:
    """Each value parsed as its key's type; an unknown key is an error that lists the known ones."""
    parsed = {}
    for key, raw in values.items():
        if key not in types:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(types))}")
        parsed[key] = coerce(key, raw, types[key])
    return parsed


def coerce(key: str, raw: Any, ftype: type) -> Any:
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
