"""Writing and reading engine state files: the one place that knows how they fail.

Every write goes to a temporary file that is renamed over the target only when complete, so
an interrupt or a full disk leaves the last good file in place and no half-written one. Before
writing, the free space is checked against the size of the file being replaced (the last
checkpoint), so a disk that cannot hold the next checkpoint is reported before it fills up.
Failures become :class:`CheckpointError` with a one-line message: which file, and why; a full
disk names the filesystem. A file that cannot be read is reported as damaged, not as the
unpickler's traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

#: Errors that mean "the filesystem is full" (quota counts too).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: torch's C++ file writer reports a full disk only as "iostream error" or "unexpected pos":
#: a write that fails while less than this is free is taken to have run out of space.
LOW_SPACE = 1 << 20


class CheckpointError(Exception):
    """A state file could not be written or read. ``str()`` is one line naming the file;
    ``reason`` is the short cause on its own, for messages that name the file differently."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def write_atomic(path: str | Path, write: Callable[[Path], object], need: int | None = None) -> int:
    """Write ``path`` by calling ``write(tmp)``, then rename; return the size written.

    ``need`` is the space to require before writing; by default the size of the file at
    ``path`` (the new one is rarely much bigger). The old file stays until the new one is whole.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if need is None:
        need = path.stat().st_size if path.exists() else 0
    require_space(path, need)
    try:
        write(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except BaseException as exc:
        partial = tmp.stat().st_size if tmp.exists() else 0
        free = shutil.disk_usage(path.parent).free  # measured while the partial file still fills the disk
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError | RuntimeError):
            raise
        if _out_of_space(exc, free):
            # The partial file is a lower bound on the new file's size; the old file's is an estimate.
            needed = f"more than {size_text(partial)}" if partial > need else f"about {size_text(need)}"
            raise CheckpointError(_no_space_message(path, needed, free)) from exc
        reason = _reason(exc)
        raise CheckpointError(f"cannot write {path}: {reason}", reason) from exc
    return size


def require_space(path: str | Path, need: int) -> None:
    """Raise the one-line :class:`CheckpointError` unless the file system that will hold ``path`` has
    ``need`` bytes free: for a file another writer copies there (Ray copies a checkpoint from a
    temporary folder to the sweep's storage), checked before the copy can fill the disk."""
    path = Path(path)
    free = shutil.disk_usage(_existing(path.parent)).free
    if free < need:
        raise CheckpointError(_no_space_message(path, f"about {size_text(need)}", free))


def is_out_of_space(message: str) -> bool:
    """Whether an error's message says a file system is full: this module's words, or the OS's."""
    return any(words in message for words in ("no space left on ", "No space left on device", "Disk quota exceeded"))


def save_state(state: Mapping[str, Any], path: str | Path, need: int | None = None) -> int:
    """Save an engine state dict atomically (see :func:`write_atomic`); return the size written."""

    def write(tmp: Path) -> None:
        # Through a Python file object, so a full disk is OSError(ENOSPC) rather than torch's
        # C++ writer's "basic_ios::clear: iostream error".
        with open(tmp, "wb") as f:
            torch.save(state, f)

    return write_atomic(path, write, need)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a state dict saved by :func:`save_state`; an unreadable file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing", "the file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever the unpickler trips on (it varies with the bytes), the file is unusable
        reason = "the file is empty" if path.stat().st_size == 0 else _reason(exc)
        raise CheckpointError(f"checkpoint {path} is damaged ({reason})", reason) from exc
    if not isinstance(state, dict):
        reason = f"it holds a {type(state).__name__}, not a state dict"
        raise CheckpointError(f"checkpoint {path} is damaged ({reason})", reason)
    return state


def _out_of_space(exc: OSError | RuntimeError, free: int) -> bool:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in NO_SPACE_ERRNOS
    return free < LOW_SPACE


def _no_space_message(path: Path, needed: str, free: int) -> str:
    return f"no space left on {filesystem(path)} writing {path}: need {needed}, {size_text(free)} free"


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def filesystem(path: Path) -> str:
    """The mount point holding ``path``, with its device and type from /proc/mounts when readable."""
    mount = path.absolute()
    while not mount.exists():
        mount = mount.parent
    mount = mount.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return str(mount)
    # The last entry for a mount point is the one on top; /proc/mounts escapes spaces as \040.
    entries = [line.split() for line in lines]
    matches = [e for e in entries if len(e) >= 3 and _unescape(e[1]) == str(mount)]
    if not matches:
        return str(mount)
    device, fstype = _unescape(matches[-1][0]), matches[-1][2]
    return f"{mount} ({fstype})" if device == fstype else f"{mount} ({device}, {fstype})"


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _reason(exc: BaseException) -> str:
    """The exception's first sentence on one line: torch's messages run to paragraphs."""
    text = " ".join(str(exc).split())
    first = text.split(". ")[0].rstrip(".")
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
