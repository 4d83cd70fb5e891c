"""What a field allows: a :class:`Spec` per field, read by the validator and by ``--help`` alike.

A bad value is one :class:`ConfigError` line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value; its message is one line naming field, value and what is allowed."""


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
