"""OS file locks: one driver per sweep, one schema migration per MLflow store.

Both are ``flock`` locks, which the kernel releases when the process that holds them dies, so a
``kill -9`` never leaves a stale lock behind. (``flock`` is per open file: a second open of the
same file in the same process is refused like another process would be, which is what a check
for "is anyone running this sweep" needs.) Shared file systems that do not support ``flock``
across hosts make the lock local to each host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: The lock file inside a sweep's folder (``<storage>/<name>/``); it holds "PID on HOST".
DRIVER_LOCK = "driver.lock"


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` says which ("process 123 on host-a")."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def busy(name: str, holder: str) -> str:
    """The line that refuses a second driver of sweep ``name``: a command's early probe
    (:func:`holder`) says what the runner says when :class:`DriverLock` is refused."""
    return f"sweep {name} is being run by {holder}; wait for it, or stop it first"


#: How long :meth:`DriverLock.acquire` retries a taken lock: :func:`holder` takes it (shared) for an
#: instant, and a driver that meets such a probe must not be refused for it.
PROBE_GRACE_S = 0.5


class DriverLock:
    """The exclusive lock a sweep's driver holds on the sweep's folder for its whole run."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / DRIVER_LOCK
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock (within :data:`PROBE_GRACE_S`) or raise :class:`LockHeld`; creates the folder if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        if not _take(handle, PROBE_GRACE_S, every_s=0.02):
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            raise LockHeld(text or "another process")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(folder: Path) -> str | None:
    """Who runs the sweep in ``folder`` now ("process 123 on host-a"), or None if nobody does."""
    path = Path(folder) / DRIVER_LOCK
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
    return None


@contextlib.contextmanager
def exclusive(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Wait (up to ``timeout`` seconds) for an exclusive lock on ``path``, a file created if missing."""
    with open(path, "a") as handle:
        if not _take(handle, timeout, every_s=0.05):
            raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _take(handle: IO[str], within_s: float, every_s: float) -> bool:
    """Take an exclusive lock on an open file, trying every ``every_s`` for ``within_s`` s; whether it was taken."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(every_s)
