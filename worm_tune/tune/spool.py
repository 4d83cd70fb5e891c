"""A bounded queue of events, spooled to a file and written in order by one thread.

The sweep's driver must not wait for its tracking store (a 30 s MLflow outage once blocked it for
62 s in MLflow's retries). So what it would write goes here as an event: appended to a spool file
in the sweep's folder, then queued; one thread writes the events in order, each until it is
written, waiting longer between tries while the store is away (1 s doubling to 30 s). An event the
store refuses as wrong in itself is skipped after a few tries, with a line on stderr. A driver
killed meanwhile leaves its unwritten events in the spool (a count beside it says how far the
writer got), and the next writer of the folder writes them first: so each event's write must be
harmless to repeat. Files an event needs after its source is gone (a trial's ticket, whose
checkpoint is deleted as the trial ends) are linked (or copied) beside the spool. The spool is
removed once all is written, and compacted every :data:`COMPACT_LINES` written lines before that.
A hook waits only while :data:`BUFFER` events wait to be written.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: Events the queue holds before a hook waits for the writer (each a trial's epoch, start or end).
BUFFER = 10_000
#: The writer's wait before it tries an event again while the store is away: doubling up to the cap (s).
RETRY_S, RETRY_MAX_S = 1.0, 30.0
#: How often an event the store refuses as wrong (not as away) is tried before it is skipped.
REFUSED_TRIES = 3
#: In a sweep's folder: the events in the order they came (one JSON line each), and the number of the
#: last one written.
SPOOL_FILE, DONE_FILE = "mlflow-spool.jsonl", "mlflow-spool.done"
#: Beside them: the files of spooled events (tickets of trials that ended).
TICKETS_DIR = "mlflow-spool-tickets"
#: Written lines a spool keeps before it is rewritten with its unwritten ones only (once all are
#: written it is emptied at once).
COMPACT_LINES = 1000


class Spool:
    """Events written in order by one thread, kept in a file until written (see the module)."""

    def __init__(
        self,
        folder: str | None,
        apply: Callable[[dict[str, Any], bytes | None], None],
        refused: Callable[[BaseException], bool],
        name: str = "MLflow",
    ) -> None:
        """``apply`` writes one event, given the bytes of the file it was submitted with (None if none),
        raising while the store is away; ``refused`` tells an error
        that says the event itself is wrong (skipped after :data:`REFUSED_TRIES` tries) from one that
        says the store is away (tried again as long as it takes); ``name`` is the store's, for messages."""
        self._apply, self._refused, self.name = apply, refused, name
        #: The file that keeps the events not yet written (None: kept in memory only).
        self.path = None if folder is None else Path(folder) / SPOOL_FILE
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue(maxsize=BUFFER)
        self._replay: collections.deque[tuple[int, str]] = collections.deque()  # a spool's unwritten, first
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the spool file: hooks append, the writer empties it
        self._written = threading.Condition()  # notified as each event is written
        self._pending = 0  # events taken and not yet written (or skipped)
        self._seq = self._done = 0  # the numbers of the last event taken and the last written
        self._lines = 0  # lines in the spool file
        self._stop = threading.Event()
        #: Why the store could not be written the last time it could not (one line), while it cannot.
        self.unreachable: str | None = None
        self._start()

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every event so far is written (at most ``timeout_s`` seconds); the number still
        unwritten (a restored sweep's spool may hold a killed driver's: they count)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._written:
            while self._pending and (deadline is None or time.monotonic() < deadline):
                self._written.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return self._pending

    def close(self, timeout_s: float | None = None) -> int:
        """:meth:`flush`, then stop the writer (what is unwritten stays in the spool, for the next
        writer of the folder); the number unwritten."""
        left = self.flush(timeout_s)
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)  # wakes a writer waiting for an event
            self._thread.join(timeout=60)
        return left

    def _start(self) -> None:
        """Start the writer (once): first the spool's events a killed driver did not write, then the new."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            if self.path is not None:
                self._read_spool(self.path)
            self._thread = threading.Thread(target=self._write_all, name=f"{self.name.lower()}-writer", daemon=True)
            self._thread.start()

    def _read_spool(self, spool: Path) -> None:
        done = spool.with_name(DONE_FILE)
        with contextlib.suppress(OSError, ValueError):
            self._done = int(done.read_text())
        self._seq = self._done
        lines = spool.read_text().splitlines() if spool.exists() else []
        for line in lines:
            try:
                seq = int(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill: its hook never returned
                continue
            self._seq = max(self._seq, seq)
            if seq > self._done:
                self._replay.append((seq, line))
        self._pending += len(self._replay)
        self._lines = len(lines)
        if not self._replay:
            self._clear()

    def _clear(self) -> None:
        """Remove the spool, its count and its tickets: every event in it is written (the next
        event starts them again; its number counts on from the last one's)."""
        assert self.path is not None
        with contextlib.suppress(OSError):  # left for the next time all is written
            self.path.unlink(missing_ok=True)
            self.path.with_name(DONE_FILE).unlink(missing_ok=True)
            shutil.rmtree(self.path.with_name(TICKETS_DIR), ignore_errors=True)
            self._lines = 0

    def submit(self, *events: dict[str, Any], ticket: Path | None = None) -> None:
        """Spool events (and the ``ticket`` file they log), then queue them (waiting only while the
        queue is full: the writer never waits for the spool's lock)."""
        self._start()
        with self._lock:  # spool order is queue order; the spool is not emptied meanwhile
            kept = None if ticket is None else _keep(self.path, ticket)
            for event in events:
                self._seq += 1
                line = json.dumps({"seq": self._seq, **event, "ticket": kept}, default=_plain)
                if self.path is not None:
                    try:
                        with self.path.open("a") as spool:
                            spool.write(line + "\n")
                        self._lines += 1
                    except OSError as exc:  # a full disk: kept in memory, written all the same unless killed
                        print(f"{self.name}: cannot spool an update ({exc}); it is kept in memory", file=sys.stderr)
                with self._written:
                    self._pending += 1
                self._queue.put((self._seq, line))

    def _write_all(self) -> None:
        """The writer thread: each event in order, each until it is written."""
        while not self._stop.is_set():
            item = self._replay.popleft() if self._replay else self._queue.get()
            if item is None or not self._write(json.loads(item[1])):
                return  # closed
            self._written_up_to(item[0])

    def _write(self, event: dict[str, Any]) -> bool:
        """Write one event, trying again while the store is away; False if closed meanwhile."""
        delay, refused = RETRY_S, 0
        while not self._stop.is_set():
            try:
                self._apply(event, _kept_bytes(self.path, event.get("ticket"), self.name))
                self.unreachable = None
                return True
            except Exception as exc:  # whatever the store or its client raises: sorted below
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                if self._refused(exc):
                    refused += 1
                    if refused >= REFUSED_TRIES:
                        print(f"{self.name} refused an update ({why}); skipped", file=sys.stderr)
                        return True
                else:
                    self.unreachable = why
            self._stop.wait(delay)
            delay = min(2 * delay, RETRY_MAX_S)
        return False

    def _written_up_to(self, seq: int) -> None:
        """Record that every event up to ``seq`` is written; empty the spool once all are."""
        self._done = seq
        if self.path is not None:
            with contextlib.suppress(OSError):
                tmp = self.path.with_name(DONE_FILE + ".tmp")
                tmp.write_text(str(seq))
                os.replace(tmp, self.path.with_name(DONE_FILE))
            self._compact()
        with self._written:
            self._pending -= 1
            self._written.notify_all()

    def _compact(self) -> None:
        """Keep the spool small: removed once all is written, else rewritten with the unwritten only
        once it holds :data:`COMPACT_LINES` written lines. Skipped while a hook holds the spool."""
        assert self.path is not None
        if not self._lock.acquire(blocking=False):
            return
        try:
            unwritten = self._seq - self._done
            if unwritten == 0:
                self._clear()
            elif self._lines - unwritten >= COMPACT_LINES:
                keep = [json.loads(line) for line in self.path.read_text().splitlines() if _seq_of(line) > self._done]
                tmp = self.path.with_name(SPOOL_FILE + ".tmp")
                tmp.write_text("".join(json.dumps(event) + "\n" for event in keep))
                os.replace(tmp, self.path)
                self._lines = len(keep)
                needed = {(event.get("ticket") or {}).get("file") for event in keep}
                for path in self.path.with_name(TICKETS_DIR).glob("*"):
                    if path.name not in needed:
                        path.unlink(missing_ok=True)
        except OSError:
            pass  # a full disk: the spool is emptied later
        finally:
            self._lock.release()


def _keep(spool: Path | None, ticket: Path) -> dict[str, str]:
    """A ticket file as the events that log it refer to it: a link (or copy) beside the ``spool``, which
    outlives the checkpoint; or, without a spool, its bytes."""
    if spool is not None:
        folder, name = spool.with_name(TICKETS_DIR), f"{uuid.uuid4().hex}{ticket.suffix}"
        try:
            folder.mkdir(exist_ok=True)
            try:
                os.link(ticket, folder / name)
            except OSError:  # another file system, or no hard links
                shutil.copyfile(ticket, folder / name)
            return {"file": name}
        except OSError:
            pass
    return {"data": base64.b64encode(ticket.read_bytes()).decode("ascii")}


def _kept_bytes(spool: Path | None, kept: Mapping[str, str] | None, store: str) -> bytes | None:
    """The bytes of a ticket kept by :func:`_keep` (``store``: the store's name, for the message)."""
    if kept is None:
        return None
    if "data" in kept:
        return base64.b64decode(kept["data"])
    assert spool is not None
    try:
        return (spool.with_name(TICKETS_DIR) / kept["file"]).read_bytes()
    except FileNotFoundError:  # removed by hand: the run is logged without it
        print(f"{store}: file {kept['file']} is gone from {TICKETS_DIR}; written without it", file=sys.stderr)
        return None


def _plain(value: Any) -> Any:
    """JSON for what a result may hold besides JSON's types: numpy scalars, tuples of them."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _seq_of(line: str) -> int:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0
