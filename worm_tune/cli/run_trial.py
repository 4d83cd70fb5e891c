"""Running one trial for ``python -m worm_tune.run``: the epochs, their lines, the files they keep.

It brings torch (seconds to import): :mod:`worm_tune.cli.run` imports it only once its arguments
are parsed and checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from worm_tune.checkpoints import CheckpointError, load_state, save_state, write_atomic
from worm_tune.config import ConfigError, TrialConfig
from worm_tune.data import DataError
from worm_tune.engine import TrialEngine
from worm_tune.faults import InjectedFault, maybe_crash
from worm_tune.models import ModelError
from worm_tune.usage import UsageError

#: Bad input found once the trial starts: no CUDA device, a missing dataset or weights, a damaged ``--out``.
TRIAL_INPUT_ERRORS = (UsageError, ConfigError, DataError, ModelError)


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
            f"d_max {num(m['d_max'], '.4f')}  d_avg {num(m['d_avg'], '.4f')}"
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
    """Run (or resume) one trial writing into ``out``, which the caller checked is writable; the summary."""
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


def main(prog: str, cfg: TrialConfig, out: Path, fresh: bool, quiet: bool) -> int:
    """Run the trial and print its summary; the exit code, each failure one line on stderr."""
    try:
        summary = run(cfg, out, fresh=fresh, quiet=quiet)
    except TRIAL_INPUT_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # the environment (a full disk), not the input: exit 1 like a crash
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except InjectedFault as exc:
        print(f"{prog}: {exc}; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0
