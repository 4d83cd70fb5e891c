"""How a schema field declares itself: the values it allows (its :class:`~.specs.Spec`) and the roles
it plays (its :class:`Role`), both in its dataclass field's metadata, beside its default.

Every list of fields another layer uses (what the hash leaves out, what a shared group's trials may
differ in, what only CNNs read, ...) is read off these declarations (:mod:`.keys`): a new or renamed
field is declared once, and every list follows.
"""

from __future__ import annotations

import enum
from dataclasses import field
from typing import Any, TypeVar

from worm_tune.config.specs import Choice, Range, Spec

#: The ``dataclasses.field`` metadata key that holds a field's :class:`~.specs.Spec`.
SPEC = "spec"
#: The ``dataclasses.field`` metadata key that holds a field's roles (one :class:`Role`, its flags combined).
ROLES = "roles"


class Role(enum.Flag):
    """What a field is to the layers that read it, beside its value: a field plays any number of roles
    (``Role.SEARCH_DECISION | Role.TRUNCATION``), or none (:data:`NO_ROLE`). :data:`MEANING` says what each is."""

    RUNTIME = enum.auto()
    EXECUTION = enum.auto()
    SEARCH_DECISION = enum.auto()
    AFTER_SEARCH = enum.auto()
    CNN_ONLY = enum.auto()
    TRUNCATION = enum.auto()


#: What each role means, once: the layers read the roles, a reader (and the configuration reference) this.
MEANING: dict[Role, str] = {
    Role.RUNTIME: "says where a trial runs, not what it computes: left out of the config hash and of MLflow's params",
    Role.EXECUTION: (
        "says how the arithmetic is fed and done: hashed (it may round differently), but a machine's choice, "
        "not the experiment's, so the analysis compares trials across it"
    ),
    Role.SEARCH_DECISION: (
        "read by a searching trial only through its decisions: which mask its window holds, when its search ends, "
        "how much it truncates (trials that differ only in these share their training)"
    ),
    Role.AFTER_SEARCH: "read by nothing before the search ends: the prune event and the retraining",
    Role.CNN_ONLY: "used by CNNs only: a transformer trial must leave it at its default",
    Role.TRUNCATION: "read only by the methods that truncate gradients (WORM's knobs): EarlyBird ignores it",
}


_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


#: No role: a field that only says what the trial computes.
NO_ROLE = Role(0)


def _declared(default: Any, spec: Spec, roles: Role) -> Any:
    return field(default=default, metadata={SPEC: spec, ROLES: roles})


def free(default: _T, help: str, *, roles: Role = NO_ROLE) -> _T:
    """A free-form field: the parser gives it its type, and any value of that type will do."""
    return _declared(default, Spec(help=help), roles)


def choice(default: str, options: tuple[str, ...], help: str, *, roles: Role = NO_ROLE) -> str:
    """A field that must be one of ``options``."""
    return _declared(default, Choice(options=options, help=help), roles)


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
    roles: Role = NO_ROLE,
) -> _N:
    """A numeric field: at least ``low`` and, if ``high`` is given, at most ``high`` (``*_open``: strictly)."""
    spec = Range(
        low=low, high=high, low_open=low_open, high_open=high_open, integer=integer, noun=noun, note=note, help=help
    )
    return _declared(default, spec, roles)


def count(default: int, low: int, help: str, *, roles: Role = NO_ROLE) -> int:
    """An integer ``>= low`` (epochs, batch sizes, workers)."""
    return number(default, low, integer=True, help=help, roles=roles)


def open_fraction(default: float, help: str, *, roles: Role = NO_ROLE) -> float:
    """A number strictly between 0 and 1 (ratios, thresholds)."""
    return number(default, 0, 1, low_open=True, high_open=True, help=help, roles=roles)
