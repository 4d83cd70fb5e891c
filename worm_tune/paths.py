"""Preflight checks of the folders a command will write, so a bad path is one line, not a traceback."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

#: Where sweeps keep their Ray folders unless ``--storage`` says otherwise (relative to the working directory).
DEFAULT_STORAGE = "ray_results"


def storage_flag(storage: str | Path) -> str:
    """The ``--storage`` flag a next command needs to find ``storage``: empty for the default."""
    return "" if Path(storage).resolve() == Path(DEFAULT_STORAGE).resolve() else f" --storage {storage}"


class PathError(ValueError):
    """A folder a command must write cannot be written; the message names the path and the flag."""


def check_writable(path: Path, flag: str) -> None:
    """Raise :class:`PathError` unless ``path`` is, or can be created as, a folder we can write.

    Creates nothing that stays: the deepest existing ancestor gets a probe file, removed at once.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{flag} {path} exists and is not a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise PathError(f"{flag} {path} cannot be created: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.ENOENT and existing == path:
            # The folder exists, yet a new file in it has "no such file or directory": a virtual file
            # system (/proc, /sys) that takes no files, which strerror alone would hide.
            raise PathError(
                f"{flag} {path} cannot be written: its file system refuses new files (as /proc does)"
            ) from None
        raise PathError(f"{flag} {path} cannot be written ({exc.strerror or exc})") from None
    if len(str(path.resolve())) > 3000 or any(len(part) > 255 for part in path.parts):
        raise PathError(f"{flag} {path} is invalid: a folder name is longer than 255 characters")
