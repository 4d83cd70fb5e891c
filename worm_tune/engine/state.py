"""The engine's state format: what a checkpoint holds, and the state a fork starts from.

A state dict holds everything a trial needs to continue bit-exactly (its config, phase and
counters, records and results, weights, optimizer and scheduler, mask window and truncation
schedule, truncation mask, pruning, RNG streams), only tensors and plain Python values, so it
loads with ``torch.load(weights_only=True)``. Version 1 (before the prune event was a phase of
its own) still reads (:func:`worm_tune.legacy.engine_state_v1`).
"""

from __future__ import annotations

import io
from typing import Any

import torch

from worm_tune import legacy
from worm_tune.config import TrialConfig
from worm_tune.ticket.control import SearchControl, Truncation
from worm_tune.ticket.phases import Phase

STATE_VERSION = 2


def current_state(state: dict[str, Any], cfg: TrialConfig) -> dict[str, Any]:
    """``state`` in today's form, once it is known to be a state of the trial of ``cfg``."""
    if state.get("version") == 1:
        state = legacy.engine_state_v1(state)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')!r} is not {STATE_VERSION}")
    if state["config_hash"] != cfg.hash():
        raise ValueError(f"checkpoint is for config {state['config_hash']}, this trial is {cfg.hash()}")
    return state


def forked_state(
    state: dict[str, Any],
    cfg: TrialConfig,
    control: SearchControl,
    truncation: Truncation,
    phase: Phase,
    history: list[dict[str, Any]],
    results: dict[str, Any],
) -> dict[str, Any]:
    """The state of a trial of ``cfg`` that trained what the trial of ``state`` trained, with its own
    decisions: its search ``control``, ``truncation``, records, decided ``results`` and, if it is to
    search or to prune next, its ``phase`` (otherwise that of ``state``). Taken through a checkpoint's
    round trip, so the two trials share no tensor."""
    forked = state | {
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "detector": control.detector.state_dict(),
        "schedule": control.schedule.state_dict(),
        "truncation": {"keep": truncation[0], "factor": truncation[1]},
        "history": [dict(m) for m in history],
        "results": state["results"] | results,
    }
    if phase == Phase.SEARCH:
        forked |= {"phase": phase.value, "epoch": history[-1]["epoch"] if history else 0}
    elif phase == Phase.PRUNE:
        forked |= {"phase": phase.value, "epoch": 0}
    buffer = io.BytesIO()
    torch.save(forked, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
