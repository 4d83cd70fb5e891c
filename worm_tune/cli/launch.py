"""Running a sweep or a ``final`` rerun from its command line: its checks, its run, the report after.

The one command module that brings Ray, torch and MLflow (seconds to import): ``sweep`` and
``final`` import it only once their arguments are parsed and checked.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analysis.cli import run as analysis_run
from worm_tune.data import DataError
from worm_tune.models import ModelError
from worm_tune.paths import storage_flag
from worm_tune.tune.cluster import ClusterError
from worm_tune.tune.plan import Plan, SweepSettings
from worm_tune.tune.preflight import preflight
from worm_tune.tune.runner import run_sweep
from worm_tune.usage import UsageError

#: Bad input that only the machinery finds: a missing dataset or weights, a cluster that cannot be joined.
MACHINERY_ERRORS = (ClusterError, DataError, ModelError)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """The machinery's bad-input errors as :class:`UsageError`: one line and exit 2, like the rest."""
    try:
        yield
    except MACHINERY_ERRORS as exc:
        raise UsageError(str(exc)) from exc


def check(plan: Plan) -> None:
    """What a dry run checks: the datasets and weights a real run loads before its first trial, so a
    dry run fails where the run would, with the same line."""
    with usage_errors():
        preflight(plan)


def launch(
    prog: str,
    args: argparse.Namespace,
    settings: SweepSettings,
    plan: Plan,
    experiment: str,
    params: dict[str, Any],
    **options: Any,
) -> int:
    """Run a sweep (or a ``final`` rerun) as the shared run flags say: ``--resume``, ``--address``,
    and the report at the end (``--reports``, ``--no-analysis``). ``options`` go to ``run_sweep``."""
    reports = None if args.no_analysis else (args.reports or Path("reports")).resolve()
    with usage_errors():
        return run_sweep(
            settings,
            plan,
            args.resume,
            args.address,
            experiment,
            params,
            prog=prog,
            reports=reports,
            analyse=analyse,
            verbose=args.verbose,
            **options,
        )


def analyse(settings: SweepSettings, reports: Path, prog: str) -> None:
    """The sweep's report (``python -m analysis``). A sweep's results stand without it: a report
    that fails is a warning with the command to retry, not a failed sweep."""
    try:
        written = analysis_run(settings.name, settings.tracking_uri, Path(settings.storage), reports)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = storage_flag(settings.storage)
        where += "" if reports == Path("reports").resolve() else f" --reports {reports}"
        print(
            f"{prog}: warning: the report failed ({type(exc).__name__}: {reason}); "
            f"retry with: python -m analysis {settings.name} --tracking-uri {settings.tracking_uri}{where}",
            file=sys.stderr,
        )
        return
    print(f"report: {written.path}", flush=True)
