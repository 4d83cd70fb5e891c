"""Helpers shared by test modules that start subprocesses."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """Let a child process see Ctrl-C even when the tests run in the background (where SIGINT is ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
