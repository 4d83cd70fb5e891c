"""Fault injection, so tests can prove that a crashed trial recovers with the same numbers.

``crash_at_epoch = k`` makes a trial raise :class:`InjectedFault` once, right after training
epoch ``k`` and before that epoch is reported or checkpointed, exactly like a process dying
mid-trial. A marker file in the trial's working folder (``--out`` for ``worm_tune.run``, the
trial's folder in the Ray session for a sweep) remembers that the fault fired, so the retry
(which resumes from the epoch ``k - 1`` checkpoint) runs through.
"""

from __future__ import annotations

from pathlib import Path

MARKER = ".fault_injected"


class InjectedFault(RuntimeError):
    """The crash that ``crash_at_epoch`` asked for."""


def maybe_crash(crash_at_epoch: int, epoch: int, folder: str | Path) -> None:
    """Raise once per ``folder`` when ``epoch`` is the configured crash epoch."""
    if crash_at_epoch <= 0 or epoch != crash_at_epoch:
        return
    marker = Path(folder) / MARKER
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"crashed after epoch {epoch}\n")
    raise InjectedFault(f"injected fault: crash_at_epoch={crash_at_epoch}")
