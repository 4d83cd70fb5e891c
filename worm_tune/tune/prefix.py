"""Prefix reuse in a paired Optuna study: each seed's EarlyBird baseline keeps its states where
candidates fork, and a candidate's trial on that seed starts there.

A WORM trial trains exactly as EarlyBird does on its seed until its trigger, and where its trigger
falls can be read off the baseline's ``d_avg`` before any training
(:func:`~worm_tune.group.fork_epoch`). So the baseline of a seed saves its engine's state after its
search epochs from the first full window on (the first epoch a candidate can fork at) to its stop,
and a candidate's trial for that seed loads the state at its fork epoch and trains only what
differs (:func:`~worm_tune.group.fork_from`): numbers identical to the trial run alone.

The states are bounded: at most ``limit`` per seed, spread evenly over the epochs the baseline
searched (a stride that doubles when one more would not fit). A candidate whose fork epoch has no
state, thinned out or lost, starts from the nearest earlier one and trains the baseline's epochs
in between again (from the start if there is none): the same state, since training is
deterministic. The folder goes when the study ends (:func:`reclaim`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from worm_tune.checkpoints import CheckpointError, load_state, save_state, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle
from worm_tune.engine import TrialEngine
from worm_tune.group import fork_epoch, fork_from
from worm_tune.ticket.phases import Phase

#: The sweep's folder of baseline states, one folder per baseline config hash.
STATES_DIR = "states"
#: In a baseline's folder once it ends: its records and summary, which candidates fork by.
BASELINE_FILE = "baseline.json"
#: States a baseline keeps by default (``[optuna] cached_states``).
DEFAULT_LIMIT = 6


def stride(first: int, last: int, limit: int) -> int:
    """The spacing of the kept states over epochs ``first``..``last``: the smallest power of two that
    keeps at most ``limit`` of them."""
    step, span = 1, last - first + 1
    while -(-span // step) > limit:
        step *= 2
    return step


class BaselineStates:
    """The states and records of one seed's EarlyBird baseline, in ``folder/<its hash>/``."""

    def __init__(self, folder: str | Path, baseline: TrialConfig, limit: int = DEFAULT_LIMIT) -> None:
        self.baseline, self.limit = baseline, limit
        self.path = Path(folder) / baseline.hash()

    def _file(self, epoch: int) -> Path:
        return self.path / f"e{epoch:03d}.pt"

    def epochs(self) -> list[int]:
        """The epochs whose states are kept, in order."""
        return sorted(int(p.stem[1:]) for p in self.path.glob("e*.pt"))

    def keep(self, engine: TrialEngine) -> None:
        """After one of the baseline's epochs: save its state if the epoch is a search epoch on the
        stride, and drop the states the stride no longer keeps."""
        record = engine.history[-1]
        first, epoch = engine.cfg.search.window, record["epoch"]
        if record["phase"] != Phase.SEARCH or epoch < first:
            return
        step = stride(first, epoch, self.limit)
        if (epoch - first) % step == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            save_state(engine.state_dict(), self._file(epoch))
        for kept in self.epochs():
            if (kept - first) % step:
                self._file(kept).unlink(missing_ok=True)

    def finish(self, engine: TrialEngine) -> None:
        """The baseline's end: its records and summary, for the forks and the study's objective."""
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"history": engine.history, "summary": engine.summary()}, default=str)
        write_atomic(self.path / BASELINE_FILE, lambda tmp: tmp.write_text(text))

    def ended(self) -> dict[str, Any] | None:
        """The baseline's records and summary once it has ended (None before)."""
        try:
            return json.loads((self.path / BASELINE_FILE).read_text())
        except FileNotFoundError:
            return None

    def start(self, cfg: TrialConfig, data: DataBundle | None = None) -> tuple[TrialEngine, int, float]:
        """The engine a trial of ``cfg`` on this seed starts with, how many of the baseline's epochs
        were trained again to reach it, and the training FLOPs it holds that were not (trained by the
        baseline): its fork epoch's state, or the nearest earlier one stepped on, or (none, or a fork
        before the first epoch) the trial from its start."""
        ended = self.ended()
        if ended is None:
            raise RuntimeError(f"the EarlyBird baseline {self.baseline.hash()} of seed {cfg.seed} has not ended")
        at = fork_epoch(cfg, self.baseline, ended["history"])
        if at == 0:
            return TrialEngine(cfg, data), 0, 0.0
        engine = TrialEngine(self.baseline.replace({"threads": cfg.threads}), data)
        for epoch in reversed([e for e in self.epochs() if e <= at]):
            try:
                engine.load_state_dict(load_state(self._file(epoch)))
                break
            except CheckpointError:
                continue  # damaged: an earlier one will do
        replayed, flops = at - engine.global_epoch, engine.results["train_flops"]
        while engine.global_epoch < at:
            engine.step()
        return fork_from(engine, cfg), replayed, flops


def reclaim(folder: str | Path) -> None:
    """The study has ended: its baselines' states are not needed any more."""
    shutil.rmtree(Path(folder), ignore_errors=True)
