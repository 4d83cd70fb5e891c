"""The methods a trial can run, and what each one does: the one place that knows them by name.

A method may or may not run an Early-Bird search, and evolves its truncation factor r by its
schedule (:mod:`worm_tune.ticket.schedules`), which says whether it truncates gradients at all
(and so reads WORM's knobs, ``worm.*``). Everything that asks "is this a WORM-like method" asks
this registry (open_lth's pruning registry is the model): a new method is one entry in
:data:`METHODS`, under a name :data:`worm_tune.config.METHODS` lists, and, if r evolves in a new
way, one schedule class.
"""

from __future__ import annotations

from dataclasses import dataclass

from worm_tune.config import TRUNCATION_FIELDS
from worm_tune.ticket.phases import Phase
from worm_tune.ticket.schedules import FollowDAvg, FromStart, OnTrigger, TruncationSchedule


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # how reports and plots name it
    searches: bool  # draws Early-Bird masks until they converge (dense trains without a search)
    schedule: type[TruncationSchedule]  # how r evolves over the search
    knobs: tuple[str, ...]  # the WORM knobs that set its r (what tells its variants apart)
    summary: str

    @property
    def truncates(self) -> bool:
        """Scales masked gradients by r, so WORM's knobs (``worm.*``) apply to it."""
        return self.schedule.truncates

    @property
    def first_phase(self) -> Phase:
        return Phase.SEARCH if self.searches else Phase.TRAIN


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("earlybird", "EarlyBird", True, TruncationSchedule, (), "Early-Bird ticket search, r = 1"),
        Method(
            "worm",
            "WORM",
            True,
            OnTrigger,
            ("worm.delta", "worm.factor"),
            "WORM: r = worm.factor once d_avg < s + worm.delta",
        ),
        Method("gradclip", "gradclip", True, FromStart, ("worm.factor",), "ablation: r = worm.factor throughout"),
        Method("greedy", "greedy", True, FollowDAvg, (), "ablation: r = d_avg, refreshed each epoch"),
        Method("dense", "dense", False, TruncationSchedule, (), "the dense baseline: no search, no pruning"),
    )
}
#: The method every truncating method's trial is paired with.
BASELINE = "earlybird"


def applies(key: str, method: str) -> bool:
    """Whether config field ``key`` means anything to ``method`` (WORM's knobs only to truncating methods)."""
    return key not in TRUNCATION_FIELDS or METHODS[method].truncates
