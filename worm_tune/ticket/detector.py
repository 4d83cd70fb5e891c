"""The Early-Bird detector: a FIFO window of masks and the convergence rule.

At the end of each search epoch the newest mask is pushed; once ``window`` masks are held,
``d_max`` and ``d_avg`` are the max and mean Hamming distance from the newest mask to each
of the ``window - 1`` older ones. The ticket has emerged when ``d_max < threshold``, or
``d_max <= threshold`` under the reference code's rules (``rules="reference"``, whose window also
holds the initial weights' mask: the engine pushes it before training).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from worm_tune.config import SEARCH_RULES
from worm_tune.ticket.masks import hamming


@dataclass(frozen=True)
class Observation:
    """What the detector saw after one push. Distances are None until the window is full."""

    d_max: float | None
    d_avg: float | None
    converged: bool


class EarlyBirdDetector:
    def __init__(self, window: int, threshold: float, rules: str = "algorithm") -> None:
        if window < 2:
            raise ValueError(f"window={window} is invalid: must be >= 2")
        if rules not in SEARCH_RULES:
            raise ValueError(f"rules={rules!r} is invalid: expected one of {', '.join(SEARCH_RULES)}")
        self.window = window
        self.threshold = threshold
        self.inclusive = rules == "reference"  # the reference code stops at d_max <= s
        self.masks: deque[torch.Tensor] = deque(maxlen=window)

    @property
    def newest(self) -> torch.Tensor | None:
        return self.masks[-1] if self.masks else None

    def push(self, mask: torch.Tensor) -> Observation:
        """Add the mask drawn at the end of an epoch and apply the convergence rule."""
        self.masks.append(mask.detach().to("cpu", torch.bool).clone())
        if len(self.masks) < self.window:
            return Observation(None, None, False)
        newest = self.masks[-1]
        dists = [hamming(newest, older) for older in list(self.masks)[:-1]]
        d_max, d_avg = max(dists), sum(dists) / len(dists)
        converged = d_max <= self.threshold if self.inclusive else d_max < self.threshold
        return Observation(d_max, d_avg, converged)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": [m.clone() for m in self.masks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = deque((m.to(torch.bool) for m in state["masks"]), maxlen=self.window)
