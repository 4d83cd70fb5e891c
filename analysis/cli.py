"""``python -m analysis <sweep>``: a sweep's report, from MLflow or from its Ray folder.

The sweep is named as ``worm_tune.sweep`` named it, or by its MLflow experiment (the newest sweep
in it), or by the path of its Ray folder (``<storage>/<name>``). MLflow is read first; when the
store is missing, unreachable or does not know the sweep, the Ray folder under ``--storage`` is.

The equivalence margin for accuracies is ``--margin``, else the sweep's space's ``[analysis] margin``:
chosen before the data is seen, as a margin must be, and so written down with the experiment.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis import load, report
from analysis.stats import N_BOOT
from worm_tune.paths import DEFAULT_STORAGE, check_writable
from worm_tune.tune import store
from worm_tune.tune.errors import USAGE_ERRORS
from worm_tune.tune.spaces import SpaceError, load_space
from worm_tune.usage import Parser, UsageError, check_range, run_command

PROG = "python -m analysis"
DEFAULT_REPORTS = Path("reports")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Turn a sweep into paired EarlyBird-vs-WORM comparisons: report.md and .html, CSVs, plots.",
    )
    parser.add_argument("sweep", help="a sweep name, an MLflow experiment name, or a sweep's Ray folder")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    parser.add_argument(
        "--storage", type=Path, default=None, help=f"Ray storage to fall back on (default {DEFAULT_STORAGE})"
    )
    parser.add_argument(
        "--reports", type=Path, default=None, help="where reports go (default ./reports): <reports>/<sweep>/report.md"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=None, help=f"bootstrap resamples per interval (default {N_BOOT})"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the bootstrap resampling (default 0)")
    parser.add_argument(
        "--margin",
        default=None,
        help="equivalence margin for accuracies, e.g. 1pp or 0.01: each accuracy comparison also gets two "
        "one-sided tests (TOST) and a verdict: equivalent within the margin, worse, better or undecided "
        "(default: the space's [analysis] margin; none: no equivalence tests)",
    )
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's MLflow run")
    return parser


def parse_margin(text: str) -> float:
    """``1pp`` (percentage points) or ``0.01`` (a fraction of accuracy): the margin as a fraction in (0, 1)."""
    number = text.strip().removesuffix("pp")
    try:
        margin = float(number) / (100 if number != text.strip() else 1)
    except ValueError:
        margin = float("nan")
    if not 0 < margin < 1:
        raise UsageError(
            f"--margin {text!r} is invalid: expected percentage points like 1pp or a fraction of accuracy like 0.01, "
            "above 0 and below 1"
        )
    return margin


def space_margin(space: str | None) -> float | None:
    """The margin the sweep's space states (``[analysis] margin``), or None: none stated, or the space is
    not readable here any more (a margin is never guessed)."""
    if not space:
        return None
    try:
        return load_space(space).margin
    except (SpaceError, OSError):
        return None


def locate(name: str, uri_arg: str | None, storage: Path) -> load.Sweep:
    """Find the sweep in MLflow or on disk and read it; :class:`UsageError` if it is nowhere."""
    path = Path(name)
    if load.is_sweep_folder(path):
        return load.from_ray(path.resolve())
    uri = store.resolve_tracking_uri(uri_arg)
    folder = storage / name
    problem = _store_problem(uri)
    if problem is None:
        parent, note = load.find_parent(uri, name)
        if parent is not None:
            sweep = load.from_mlflow(uri, parent)
            sweep.notes += [note] if note else []
            return sweep
        known = load.sweep_names(uri)
        problem = f"no sweep or experiment named {name!r} in {uri}" + (
            f" (its sweeps: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})" if known else ""
        )
    if load.is_sweep_folder(folder):
        sweep = load.from_ray(folder.resolve())
        sweep.notes.append(f"Read from the Ray folder: {problem}.")
        return sweep
    raise UsageError(f"{problem}, and no Ray folder {str(folder)!r}")


def _store_problem(uri: str) -> str | None:
    """Why the tracking store cannot be read, or None. A missing SQLite file is not created."""
    path = store.sqlite_path(uri)
    if path is not None and not path.is_file():
        return f"no MLflow store at {uri}"
    try:
        store.check_tracking(uri)
    except store.TrackingError as exc:
        return str(exc)
    return None


def run(
    name: str,
    uri: str | None = None,
    storage: Path | None = None,
    reports: Path | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    log: bool = True,
    command: str = "",
    margin: float | None = None,
) -> report.Report:
    """Read the sweep, write its report folder, log it to MLflow; what was written. Without a
    ``margin``, the sweep's space's (:func:`space_margin`)."""
    sweep = locate(name, uri, (storage or Path(DEFAULT_STORAGE)).resolve())
    if sweep.trials.empty:
        state = f"; it {sweep.driver}" if sweep.driver else ""
        raise load.LoadError(f"sweep {sweep.name!r} has no trials yet ({sweep.source}){state}; nothing to report")
    out = (reports or DEFAULT_REPORTS) / sweep.name
    margin = margin if margin is not None else space_margin(sweep.space)
    written = report.write(sweep, out, n_boot, seed, command or f"{PROG} {shlex.quote(name)}", margin=margin)
    if log and sweep.tracking_uri and sweep.parent_run_id and sweep.source.startswith("MLflow"):
        report.log_to_mlflow(written, sweep.tracking_uri, sweep.parent_run_id)
        headline = f" and {len(written.headline)} headline metrics" if written.headline else ""
        written.notes.append(f"logged to MLflow run {sweep.parent_run_id} under {report.ARTIFACT_DIR}/{headline}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, lambda: _main(argv), USAGE_ERRORS)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_range("--bootstrap", args.bootstrap, 100, integer=True)
    check_range("--seed", args.seed, 0, integer=True)
    margin = parse_margin(args.margin) if args.margin is not None else None
    check_writable(args.reports or DEFAULT_REPORTS, "--reports")
    try:
        written = run(
            args.sweep,
            args.tracking_uri,
            args.storage,
            args.reports,
            args.bootstrap if args.bootstrap is not None else N_BOOT,
            args.seed or 0,
            log=not args.no_log,
            command=shlex.join([*PROG.split(), *(argv if argv is not None else sys.argv[1:])]),
            margin=margin,
        )
    except load.LoadError as exc:  # a sweep that exists but cannot be reported yet: not bad input
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"report: {written.path}" + "".join(f"; {n}" for n in written.notes))
    return 0
