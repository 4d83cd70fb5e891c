"""The methods a trial can run, and what each one is: the one place that knows them by name.

A method belongs to a trainable *family* (the Ray experiment that runs it: WORM's ablations run
beside WORM), may or may not run an Early-Bird search, and may or may not truncate gradients
(and so read WORM's knobs, ``worm.*``). Everything that asks "is this a WORM-like method" asks
this registry (open_lth's pruning registry is the model).
"""

from __future__ import annotations

from dataclasses import dataclass

#: How a method's truncation factor r evolves (see :class:`~worm_tune.ticket.truncation.TruncationSchedule`).
NO_TRUNCATION, ON_TRIGGER, FROM_START, D_AVG = "none", "on_trigger", "from_start", "d_avg"


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # how reports and plots name it
    family: str  # the trainable family (and Ray experiment) that runs it
    searches: bool  # draws Early-Bird masks until they converge (dense trains without a search)
    schedule: str  # how r evolves: one of NO_TRUNCATION, ON_TRIGGER, FROM_START, D_AVG
    knobs: tuple[str, ...]  # the WORM knobs that set its r (what tells its variants apart)
    summary: str

    @property
    def truncates(self) -> bool:
        """Scales masked gradients by r, so WORM's knobs (``worm.*``) apply to it."""
        return self.schedule != NO_TRUNCATION


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("earlybird", "EarlyBird", "earlybird", True, NO_TRUNCATION, (), "Early-Bird ticket search, r = 1"),
        Method(
            "worm",
            "WORM",
            "worm",
            True,
            ON_TRIGGER,
            ("worm.delta", "worm.factor"),
            "WORM: r = worm.factor once d_avg < s + worm.delta",
        ),
        Method(
            "gradclip", "gradclip", "worm", True, FROM_START, ("worm.factor",), "ablation: r = worm.factor throughout"
        ),
        Method("greedy", "greedy", "worm", True, D_AVG, (), "ablation: r = d_avg, refreshed each epoch"),
        Method("dense", "dense", "earlybird", False, NO_TRUNCATION, (), "the dense baseline: no search, no pruning"),
    )
}
#: The method every WORM-family trial is paired with.
BASELINE = "earlybird"

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
