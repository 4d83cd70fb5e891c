"""Running a sweep or a ``final`` rerun from its command line: the run flags, and the report at the end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analysis.cli import run as analysis_run
from worm_tune.tune.plan import Plan, SweepSettings
from worm_tune.tune.runner import run_sweep


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
        **options,
    )


def analyse(settings: SweepSettings, reports: Path, prog: str) -> None:
    """The sweep's report (``python -m analysis``). A sweep's results stand without it: a report
    that fails is a warning with the command to retry, not a failed sweep."""
    try:
        written = analysis_run(settings.name, settings.tracking_uri, Path(settings.storage), reports)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"{prog}: warning: the report failed ({type(exc).__name__}: {reason}); "
            f"retry with: python -m analysis {settings.name} --tracking-uri {settings.tracking_uri}",
            file=sys.stderr,
        )
        return
    print(f"report: {written.path}", flush=True)
