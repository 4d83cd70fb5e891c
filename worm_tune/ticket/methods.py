"""The methods a trial can run, and what each one is: the one place that knows them by name.

A method belongs to a trainable *family* (the Ray experiment that runs it: WORM's ablations run
beside WORM), may or may not run an Early-Bird search, and may or may not truncate gradients
(and so read WORM's knobs, ``worm.*``). Everything that asks "is this a WORM-like method" asks
this registry (open_lth's pruning registry is the model).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # the trainable family (and Ray experiment) that runs it
    searches: bool  # draws Early-Bird masks until they converge (dense trains without a search)
    truncates: bool  # scales masked gradients by r, so WORM's knobs (worm.*) apply to it
    summary: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("earlybird", "earlybird", True, False, "Early-Bird ticket search, r = 1"),
        Method("worm", "worm", True, True, "WORM: r = worm.factor once d_avg < s + worm.delta"),
        Method("gradclip", "worm", True, True, "ablation: r = worm.factor from the first epoch"),
        Method("greedy", "worm", True, True, "ablation: r = d_avg, refreshed each epoch"),
        Method("dense", "earlybird", False, False, "the dense baseline: no search, no pruning"),
    )
}

#: The trainable families, in the order a sweep runs them.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(m.family for m in METHODS.values()))
#: The knobs only truncating methods read.
WORM_KNOBS_PREFIX = "worm."


def family_of(method: str) -> str:
    """The trainable family (and Ray experiment) that runs ``method``."""
    return METHODS[method].family


def methods_of(family: str) -> tuple[str, ...]:
    return tuple(m.name for m in METHODS.values() if m.family == family)


def applies(key: str, method: str) -> bool:
    """Whether config field ``key`` means anything to ``method`` (WORM's knobs only to truncating methods)."""
    return not key.startswith(WORM_KNOBS_PREFIX) or METHODS[method].truncates
