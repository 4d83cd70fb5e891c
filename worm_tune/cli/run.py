"""``python -m worm_tune.run``: one trial from flags or a config file.

Prints one line per epoch, keeps ``metrics.json`` (per-epoch and summary metrics) and a
checkpoint up to date after every epoch, and saves the final model. Rerunning the same
command with the same ``--out`` resumes where it stopped. Usage errors (a bad ``--out``, a
damaged checkpoint) exit 2 with one line; a full disk exits 1 with one line, and the rerun
resumes from the last checkpoint that was written whole. The arguments are parsed and checked
before torch is imported (see :func:`start`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worm_tune.config import TrialConfig, field_specs, field_types, parse_assignments
from worm_tune.paths import check_writable
from worm_tune.tune.errors import USAGE_ERRORS
from worm_tune.usage import Parser, UsageError

PROG = "python -m worm_tune.run"


#: Short flags for the fields people set most; every field also has ``--section-field``.
ALIASES = {
    "--model": "model.arch",
    "--dataset": "data.dataset",
    "--data-dir": "data.data_dir",
    "--download": "data.download",
    "--ratio": "search.ratio",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        usage="%(prog)s [--config FILE] [--set KEY=VALUE ...] [--FIELD VALUE ...] [--out DIR] [--fresh] [--quiet]",
        description="Run one EarlyBird/WORM trial: search -> prune -> retrain.",
    )
    parser.add_argument("--config", type=Path, help="a .json or .toml trial config (sections or dotted keys)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. search.ratio=0.7"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<method>-<config hash>)")
    parser.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    fields = parser.add_argument_group("config fields (defaults follow the paper)")
    for flag, key in ALIASES.items():
        _add_field(fields, flag, key, f"alias of --{key.replace('.', '-').replace('_', '-')}")
    for key in field_types():
        _add_field(fields, "--" + key.replace(".", "-").replace("_", "-"), key, field_help(key))
    return parser


def field_help(key: str) -> str:
    """A field's help line, all read off its metadata: what it is, what it allows, its default."""
    spec = field_specs()[key]
    parts = [spec.help, spec.allowed, f"default {TrialConfig().get(key)!r}"]
    return "; ".join(p for p in parts if p).replace("%", "%%")  # argparse reads % as a format


def _add_field(group: argparse._ArgumentGroup, flag: str, key: str, help_text: str) -> None:
    # Booleans may be given bare (``--download``) or with a value (``--download false``).
    ftype = field_types()[key]
    metavar = ftype.__name__.upper()
    if ftype is bool:
        group.add_argument(flag, dest=key, default=None, nargs="?", const="true", metavar=metavar, help=help_text)
    else:
        group.add_argument(flag, dest=key, default=None, metavar=metavar, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    """Defaults, then the config file, then flags, then ``--set``; validated once."""
    cfg = TrialConfig.from_file(args.config) if args.config else TrialConfig()
    keys = field_types()
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    overrides.update(parse_assignments(args.set))
    return cfg.replace(overrides).validate()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
        out = args.out or Path("runs") / f"{cfg.method}-{cfg.hash()}"
        check_writable(out, "--out")
    except (UsageError, *USAGE_ERRORS) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return start(cfg, out, args.fresh, args.quiet)


def start(cfg: TrialConfig, out: Path, fresh: bool, quiet: bool) -> int:
    """Run the trial. Its module (:mod:`worm_tune.cli.run_trial`) brings torch, so it is imported here,
    not at the top: that takes seconds which ``--help`` and bad usage should not wait for."""
    from worm_tune.cli import run_trial

    return run_trial.main(PROG, cfg, out, fresh, quiet)
