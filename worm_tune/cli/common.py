"""What the commands share: the errors that are usage errors, the run flags, sweep names."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from worm_tune.config import ConfigError
from worm_tune.data import DataError
from worm_tune.models import ModelError
from worm_tune.paths import PathError
from worm_tune.tune.cluster import ClusterError
from worm_tune.tune.spaces import SpaceError
from worm_tune.tune.store import TrackingError
from worm_tune.usage import UsageError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


#: Longest ``--name``: it names a folder, an MLflow run and Ray's experiment paths.
NAME_MAX = 100


USAGE_ERRORS = (ClusterError, ConfigError, DataError, ModelError, PathError, SpaceError, TrackingError)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where and how trials run: the flags ``sweep`` and ``final`` share."""
    parser.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=None, help="GPUs per trial; fractions share a GPU")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (default 2)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster, e.g. 10.0.0.1:6379 or auto")
    parser.add_argument("--storage", type=Path, default=None, help="where Ray keeps trials (default ./ray_results)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    parser.add_argument(
        "--reports", type=Path, default=None, help="where the report goes (default ./reports): <reports>/<name>/"
    )
    parser.add_argument("--no-analysis", action="store_true", help="do not write the report at the end")


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or len(name) > NAME_MAX:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise UsageError(
            f"--name {shown!r} is invalid: use up to {NAME_MAX} letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
