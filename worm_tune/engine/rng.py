"""A trial's own random streams, so that two trials in one process do not disturb each other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


class RngStreams:
    """Torch's global RNG as this trial left it (model init, dropout, on-device augmentation) and
    the generator of its data order, both seeded by the trial's seed.

    Model init draws from the seeded global stream first, so one seed gives one set of initial
    weights: EarlyBird and WORM trials of one seed start from the same network and see the same batches.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device = device
        self.data = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(seed)
            self.cpu = torch.get_rng_state()
            self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def _devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run with the global RNG set to this trial's stream, and keep where the stream got to."""
        with torch.random.fork_rng(devices=self._devices()):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield
            self.cpu = torch.get_rng_state()
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "cuda": self.cuda, "data": self.data.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cpu, self.cuda = state["cpu"], state["cuda"]
        self.data.set_state(state["data"])
