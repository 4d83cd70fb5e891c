"""What the commands share: the run flags, sweep names, the driver probe.

Like every command module here but :mod:`~worm_tune.cli.launch` and :mod:`~worm_tune.cli.run_trial`,
it imports no torch, Ray or MLflow: a command parses and checks its arguments before it imports
them, so ``--help`` and bad usage answer at once instead of after seconds of imports.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from worm_tune import locks
from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.tune.plan import KEEP_CHOICES
from worm_tune.usage import UsageError, check_range

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


#: Longest ``--name``: it names a folder, an MLflow run and Ray's experiment paths.
NAME_MAX = 100


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where and how trials run: the flags ``sweep`` and ``final`` share."""
    parser.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=None, help="GPUs per trial; fractions share a GPU")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (default 2)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster, e.g. 10.0.0.1:6379 or auto")
    where = f"where Ray keeps trials (default ./{DEFAULT_STORAGE})"
    parser.add_argument("--storage", type=Path, default=None, help=where)
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    parser.add_argument(
        "--reports", type=Path, default=None, help="where the report goes (default ./reports): <reports>/<name>/"
    )
    parser.add_argument("--no-analysis", action="store_true", help="do not write the report at the end")
    parser.add_argument(
        "--keep-checkpoints",
        choices=KEEP_CHOICES,
        default=None,
        help="what stays of a finished trial's Ray checkpoints: none (default; its numbers and ticket are in "
        "MLflow), last or all",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Ray Tune's own console output instead of a line per finished trial"
    )


def check_run_flags(args: argparse.Namespace) -> None:
    """The ranges of the shared run flags."""
    check_range("--cpus-per-trial", args.cpus_per_trial, 0, open_low=True)
    check_range("--gpus-per-trial", args.gpus_per_trial, 0)
    check_range("--max-concurrent", args.max_concurrent, 1, integer=True)
    check_range("--max-failures", args.max_failures, 0, integer=True)


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or len(name) > NAME_MAX:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise UsageError(
            f"--name {shown!r} is invalid: use up to {NAME_MAX} letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def check_not_driven(folder: Path, name: str) -> None:
    """Refuse at once a sweep (or rerun) whose driver runs now: a probe of its driver lock, made
    before seconds of imports and cluster checks. The runner still takes the lock itself and holds
    it for the whole run; this only answers the usual case sooner."""
    holder = locks.holder(folder)
    if holder is not None:
        raise UsageError(locks.busy(name, holder))
