"""Sequential sweeps (``--until``): paired seeds added a batch at a time until the question is answered.

A grid sweep's question is a paired difference per variant: its search epochs minus EarlyBird's on
the same seed and setting. How many seeds that needs depends on the effect, which is what the sweep
is for; a researcher who looks after six seeds, adds six and looks again has made the classical 95%
interval's coverage false. So a sequential sweep looks at anytime-valid intervals
(:mod:`worm_tune.confseq`), which keep their coverage at whatever look the sweep stops:

- the space's seeds are the first batch; after each batch's trials have ended the rule is checked
  on every variant's interval, and ``--seed-batch`` fresh seeds are added if it is not met, up to
  ``--max-seeds``;
- the intervals are simultaneous over the sweep's ``k`` variants (each at ``alpha / k``,
  Bonferroni), since the rule asks of all of them at once;
- a search length is known to lie in [:func:`epoch_bounds`], so a difference lies within that
  range's width either side of 0: the bound the betting interval needs.

This module holds the rule and the looks, without Ray: the sweep's searcher
(:mod:`~worm_tune.tune.sequential`) and the report (``analysis``) both use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from worm_tune.confseq import anytime_interval
from worm_tune.usage import UsageError

#: The metric the rule asks about: the paired difference in it, variant minus EarlyBird.
METRIC = "search_epochs"
#: The level of the intervals (before the correction over variants).
ALPHA = 0.05
#: Paired seeds added per batch when ``--seed-batch`` is not given.
DEFAULT_BATCH = 4
_FORMS = (
    "width=W (every variant's interval narrower than W epochs) or decided[:MARGIN] (every interval excludes 0 "
    "or lies within ±MARGIN epochs)"
)


@dataclass(frozen=True)
class Until:
    """A stopping rule: ``width=W`` or ``decided[:MARGIN]`` (MARGIN 0: only excluding 0 decides)."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Until:
        kind, _, value = text.partition("=") if text.startswith("width") else text.partition(":")
        try:
            number = float(value) if value else math.nan
        except ValueError:
            number = math.nan
        if kind == "width" and number > 0 and math.isfinite(number):
            return cls("width", number)
        if kind == "decided" and (not value or (number >= 0 and math.isfinite(number))):
            return cls("decided", number if value else 0.0)
        raise UsageError(f"--until {text!r} is not a rule: expected {_FORMS}")

    def __str__(self) -> str:
        if self.kind == "width":
            return f"width={self.value:g}"
        return f"decided:{self.value:g}" if self.value else "decided"

    def describe(self) -> str:
        """The rule in words, for the terminal and the report."""
        if self.kind == "width":
            return f"every variant's interval is narrower than {self.value:g} epochs"
        within = f" or lies within ±{self.value:g} epochs" if self.value else ""
        return f"every variant's interval excludes 0{within}"

    def holds(self, low: float, high: float) -> bool:
        """Whether one variant's interval answers the question."""
        if self.kind == "width":
            return high - low < self.value
        return low > 0 or high < 0 or (self.value > 0 and -self.value <= low and high <= self.value)


def epoch_bounds(window: int, max_epochs: int, rules: str) -> tuple[int, int]:
    """Where a search length lies: from the first epoch the detector can decide (a full window; the
    reference rules count the initial mask in it, one epoch sooner) to the budget (``search.max_epochs``),
    which a search that does not converge counts."""
    first = window - (1 if rules == "reference" else 0)
    return max(first, 1), max_epochs


@dataclass(frozen=True)
class Interval:
    """One variant at one look: its paired differences so far and their anytime-valid interval."""

    n: int
    mean: float
    low: float
    high: float
    holds: bool


@dataclass(frozen=True)
class Look:
    """The rule checked after a batch: ``seeds`` paired seeds so far, each variant's interval."""

    seeds: int
    intervals: dict[str, Interval]

    @property
    def met(self) -> bool:
        return bool(self.intervals) and all(i.holds for i in self.intervals.values())


def look(differences: Mapping[str, Sequence[float]], bounds: Mapping[str, float], rule: Until, seeds: int) -> Look:
    """Check ``rule`` on each variant's differences (in seed order; ``bounds``: the largest difference
    its search lengths allow), with intervals simultaneous over the variants."""
    level = ALPHA / max(len(differences), 1)
    intervals = {}
    for variant, values in differences.items():
        if not values:
            intervals[variant] = Interval(0, math.nan, -bounds[variant], bounds[variant], False)
            continue
        low, high = anytime_interval(values, -bounds[variant], bounds[variant], level)
        intervals[variant] = Interval(len(values), math.fsum(values) / len(values), low, high, rule.holds(low, high))
    return Look(seeds, intervals)


def seed_batches(first: Sequence[int], max_seeds: int, batch: int) -> list[list[int]]:
    """The seeds of each batch: the space's own first, then the smallest unused ones, ``batch`` at a time."""
    batches, used = [list(first)], set(first)
    fresh = (s for s in range(len(used) + max_seeds) if s not in used)
    extra = [next(fresh) for _ in range(max(max_seeds - len(used), 0))]
    batches += [extra[i : i + batch] for i in range(0, len(extra), batch)]
    return batches


def _open(one: Look) -> str:
    """The intervals of a look that do not answer the question yet."""
    return ", ".join(f"{v} [{i.low:+.2f}, {i.high:+.2f}]" for v, i in one.intervals.items() if not i.holds)


def stop_line(looks: Sequence[Look], rule: Until, cap: int) -> str:
    """Why a sequential sweep stopped, in one line: the rule met, or the cap reached (with what is undecided)."""
    last = looks[-1]
    if last.met:
        return f"rule met at n = {last.seeds} paired seeds ({rule.describe()})"
    return f"cap reached: {last.seeds} of --max-seeds {cap} paired seeds, rule not met ({_open(last)})"


def open_line(one: Look, batch: Sequence[int], number: int, batches: int) -> str:
    """A look at which the rule does not hold yet, in one line: the intervals still open and the batch that starts."""
    return (
        f"after {one.seeds} paired seeds the rule does not hold yet ({_open(one)}); "
        f"batch {number} of {batches} starts (seeds {', '.join(map(str, batch))})"
    )


def seeds_needed(looks: Sequence[Look]) -> dict[str, int | None]:
    """Per variant, the paired seeds at the first look whose interval answered the question (None: none did).
    With running intersections an interval only narrows, so a variant once answered stays answered."""
    needed: dict[str, int | None] = {}
    for one in looks:
        for variant, interval in one.intervals.items():
            if needed.get(variant) is None:
                needed[variant] = one.seeds if interval.holds else None
    return needed


def needed_text(needed: int | None, seeds: int) -> str:
    """A variant's seeds needed as tables show it (:func:`seeds_needed`; None after ``seeds``: more than that)."""
    return str(needed) if needed is not None else f"more than {seeds}"


#: The parent run's tags of a sequential sweep: why it stopped, and the paired seeds at each look ("20,24,28").
STOP_TAG = "sequential.stop"
LOOKS_TAG = "sequential.looks"
#: ... and the seeds in the order its batches added them ("0,1,2,3").
SEEDS_TAG = "sequential.seeds"
#: A sequential sweep's record in its folder: the batches, how many have started, the looks and why it stopped.
STATE_FILE = "sequential.json"


@dataclass
class Record:
    """What a sequential sweep's searcher has done so far (:data:`STATE_FILE`, rewritten at each look)."""

    rule: str
    cap: int
    batches: list[list[int]]
    started: int = 0
    looks: list[Look] = field(default_factory=list)
    stop: str | None = None

    @property
    def seeds(self) -> list[int]:
        """The seeds of the batches started so far, in the order they were added."""
        return [s for batch in self.batches[: self.started] for s in batch]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def load(cls, folder: Path) -> Record | None:
        path = folder / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        looks = [
            Look(one["seeds"], {v: Interval(**i) for v, i in one["intervals"].items()}) for one in data.pop("looks")
        ]
        return cls(**data, looks=looks)
