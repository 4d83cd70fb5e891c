"""A sweep's driver: the one process that runs it, holding its lock for the whole run.

A second driver of the same sweep is refused at once. A new sweep whose start fails before its
first trial leaves no folder behind, so the same command can simply be run again.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator

from worm_tune.locks import DriverLock, LockHeld, busy
from worm_tune.tune.plan import SETTINGS_FILE, SweepSettings
from worm_tune.usage import UsageError


@contextlib.contextmanager
def driving(settings: SweepSettings, resume: bool, extra_files: dict[str, str] | None) -> Iterator[Callable[[], None]]:
    """Hold the sweep's driver lock for the whole run; write ``sweep.json`` (and ``extra_files``).

    Call the yielded function once trials begin: from then on the folder stays whatever happens
    (it names a parent run, and ``--resume`` continues it).
    """
    folder = settings.folder
    created = [p for p in (folder.parent, folder) if not p.exists()]
    lock = DriverLock(folder)
    try:
        lock.acquire()
    except LockHeld as held:
        raise UsageError(busy(settings.name, held.holder)) from None
    began = False

    def started() -> None:
        nonlocal began
        began = True

    try:
        if not resume and (folder / SETTINGS_FILE).exists():
            raise UsageError(
                f"sweep {settings.name!r} already exists in {settings.storage}; pass --resume or another --name"
            )
        settings.save()
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text)
        yield started
    except BaseException:
        if folder in created and not began:  # remove what this start created: its folder, an empty storage
            shutil.rmtree(folder, ignore_errors=True)
            if folder.parent in created:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        raise
    finally:
        lock.release()
