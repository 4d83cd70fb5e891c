"""``python -m worm_tune.run``: one trial from flags or a config file.

Prints one line per epoch, keeps ``metrics.json`` (per-epoch and summary metrics) and a
checkpoint up to date after every epoch, and saves the final model. Rerunning the same
command with the same ``--out`` resumes where it stopped. Usage errors (a bad ``--out``, a
damaged checkpoint) exit 2 with one line; a full disk exits 1 with one line, and the rerun
resumes from the last checkpoint that was written whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worm_tune.checkpoints import CheckpointError, load_state, save_state, write_atomic
from worm_tune.cli.common import USAGE_ERRORS
from worm_tune.config import TrialConfig, field_specs, field_types, parse_assignments
from worm_tune.engine import TrialEngine
from worm_tune.faults import InjectedFault, maybe_crash
from worm_tune.paths import check_writable
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


def format_epoch(m: dict[str, Any]) -> str:
    """The one progress line per epoch."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    parts = [
        f"{m['phase']:<7} ep {m['epoch']:3d}",
        f"loss {num(m['train_loss'], '.4f')}  train {100 * m['train_acc']:5.1f}%  test {100 * m['test_acc']:5.1f}%",
    ]
    if m["phase"] == "search":
        parts.append(
            f"d_max {num(m['mask_dist_max'], '.4f')}  d_avg {num(m['mask_dist_avg'], '.4f')}"
            f"  r {m['r']:.3g}  trunc {m['truncated_units']}"
        )
        if m["mask_converged"]:
            parts.append("converged")
    if "post_prune_acc" in m:
        parts.append(f"after pruning {100 * m['post_prune_acc']:.1f}%")
    if m["diverged"]:
        parts.append("DIVERGED")
    parts.append(f"{m['epoch_time']:.1f}s")
    return " | ".join(parts)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))


def run(cfg: TrialConfig, out: Path, fresh: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) one trial writing into ``out``; returns the summary."""
    check_writable(out, "--out")  # a bad --out is one line before any training
    out.mkdir(parents=True, exist_ok=True)
    engine = TrialEngine(cfg)
    checkpoint, metrics_path = out / "checkpoint.pt", out / "metrics.json"
    if checkpoint.exists() and not fresh:
        try:
            state = load_state(checkpoint)
        except CheckpointError as exc:
            raise UsageError(f"{exc}; pass --fresh to start over") from exc
        if state.get("config_hash") != cfg.hash():
            raise UsageError(
                f"{out} holds a run of config {state.get('config_hash')}, not {cfg.hash()}; "
                "use another --out or pass --fresh"
            )
        engine.load_state_dict(state)
        if not quiet:
            print(f"resuming {out} at epoch {engine.global_epoch}", flush=True)
    _write_json(out / "config.json", {"config_hash": cfg.hash(), "config": cfg.to_dict()})
    if not quiet:
        print(f"trial {cfg.method} seed {cfg.seed} config {cfg.hash()} on {engine.device} -> {out}", flush=True)
    while not engine.done:
        metrics = engine.step()
        maybe_crash(cfg.crash_at_epoch, engine.global_epoch, out)
        save_state(engine.state_dict(), checkpoint)
        _write_json(metrics_path, {"epochs": engine.history, "summary": engine.summary()})
        if not quiet:
            print(format_epoch(metrics), flush=True)
    summary = engine.summary()
    _write_json(metrics_path, {"epochs": engine.history, "summary": summary})
    write_atomic(out / "model.pt", engine.save_model)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
        out = args.out or Path("runs") / f"{cfg.method}-{cfg.hash()}"
        summary = run(cfg, out, fresh=args.fresh, quiet=args.quiet)
    except (UsageError, *USAGE_ERRORS) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # the environment (a full disk), not the input: exit 1 like a crash
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except InjectedFault as exc:
        print(f"{PROG}: {exc}; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0
