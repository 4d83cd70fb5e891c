"""The sweep's MLflow parent run: opened once nothing can refuse the start, and never left RUNNING.

A new sweep creates it (with its provenance, its settings as params and its space's description as
the run's note); ``--resume`` sets the saved one running again. It ends FINISHED (FAILED if a
trial failed) with the summary, KILLED on Ctrl-C, FAILED on a full storage or any error.
"""

from __future__ import annotations

import sys
from typing import Any

from worm_tune.group import ComputeSaved
from worm_tune.tune import store
from worm_tune.tune.footprint import SECTION as FOOTPRINT_SECTION
from worm_tune.tune.plan import SweepSettings
from worm_tune.tune.spaces import load_space


def open_parent_run(
    settings: SweepSettings, experiment: str, prog: str, tags: dict[str, str] | None, params: dict[str, Any]
) -> None:
    """Create the parent run in the MLflow experiment ``experiment`` (its ids go into ``settings``,
    which ``sweep.json`` saves), or set a resumed sweep's running again."""
    uri = settings.tracking_uri
    if settings.parent_run_id is None:
        settings.experiment_id = store.experiment_id(uri, experiment)
        about = {**store.provenance(prog, sys.argv[1:]), **_note(settings), **(tags or {})}
        settings.parent_run_id = store.start_parent_run(
            uri, settings.experiment_id, settings.name, settings.kind, about, params
        )
    else:
        store.client(uri).update_run(settings.parent_run_id, status="RUNNING")


def _note(settings: SweepSettings) -> dict[str, str]:
    """A sweep's parent run carries its space's description as the run's note (``mlflow ui`` shows it)."""
    if settings.kind != "sweep":
        return {}
    space = load_space(settings.space, settings.profile)
    return {"mlflow.note.content": space.description} if space.description else {}


def end_stopped(settings: SweepSettings, status: str, prog: str) -> None:
    """End the run of a sweep that stopped (KILLED: Ctrl-C; FAILED: a full storage). A store that is
    away too leaves it running: ``--resume`` sets it going again, and ends it."""
    try:
        store.end_run(settings.tracking_uri, settings.parent_run_id, status)
    except Exception:  # whatever the store's client raises for a store that is away
        print(f"{prog}: the MLflow run was not ended: {settings.tracking_uri} is unreachable", file=sys.stderr)


def end_failed(settings: SweepSettings) -> None:
    store.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED")


def finish(settings: SweepSettings, table: str, saved: ComputeSaved | None, errors: int) -> None:
    """The run's end: what sharing saved (a shared sweep's ``saved``) as metrics, the summary table as
    ``summary.md``; FAILED if any trial failed, else FINISHED."""
    uri, run_id = settings.tracking_uri, settings.parent_run_id
    if saved is not None:
        store.log_metrics(uri, run_id, saved.metrics())
    with store.at_store(uri):
        store.client(uri).log_text(run_id, table + "\n", "summary.md")
    store.end_run(uri, run_id, "FAILED" if errors else "FINISHED")


def log_storage(settings: SweepSettings, final: int, peak: int) -> int:
    """Log the sweep folder's size at the end and at its peak (a resumed sweep's earlier peak counts);
    the peak."""
    uri, run_id = settings.tracking_uri, settings.parent_run_id
    logged = store.client(uri).get_run(run_id).data.metrics
    peak = max(final, peak, int(logged.get(f"{FOOTPRINT_SECTION}/bytes_peak", 0)))
    sizes = {f"{FOOTPRINT_SECTION}/bytes_final": float(final), f"{FOOTPRINT_SECTION}/bytes_peak": float(peak)}
    store.log_metrics(uri, run_id, sizes)
    return peak
