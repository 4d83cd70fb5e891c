"""The measurement behind a quick profile's s, window, budget and deltas (issues 14 and 27):
EarlyBird's d_max and d_avg per search epoch on the profile's own setup, and for each (s, delta),
where the search would stop and where WORM would fire (WORM is EarlyBird until it fires, so one
EarlyBird run per seed tells both).

    python benchmarks/trigger_trajectories.py --seeds 10                 # resnet18's quick profile
    python benchmarks/trigger_trajectories.py --space vit --set prune.kind=structured --seeds 10 \\
        --epochs 16 --thresholds 0.01 0.07 --deltas 0.06 0.12

Each writes benchmarks/results/trigger_trajectories[-SPACE[-KEY=VALUE...]].json. The search runs
with a threshold no search reaches, so every epoch up to --epochs is seen; --window replaces the
profile's window.

It printed, on 2026-12-01 (resnet18, ten seeds, one thread each): d_avg 0.07-0.08 at the first full
window (epoch 5), so at the paper's s = 0.1 WORM fires at epoch 5 whatever delta is; at s = 0.04,
delta = 0.03 fires at epoch 6 on every seed and delta = 0.01 at epochs 6-9, both before d_avg < s
(7-10). docs/results/quick-profile.md and docs/results/vit.md quote the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import machine, write

from worm_tune.config import TrialConfig
from worm_tune.config.parsing import parse_assignments
from worm_tune.data import load_data
from worm_tune.engine import TrialEngine
from worm_tune.ticket.phases import Phase
from worm_tune.tune.spaces import load_space

RESULTS = Path(__file__).parent / "results"


def setup(space: str, profile: str, overrides: dict[str, Any], epochs: int | None, window: int | None) -> TrialConfig:
    """The profile's first EarlyBird config (with ``overrides``), searching without stopping."""
    grid = load_space(space, profile).grid()
    cfg = next(c for c in grid if c.method == "earlybird").replace(overrides)
    extra: dict[str, Any] = {"seed": 0, "search.threshold": 1e-6, "retrain.max_epochs": 1, "threads": 1}
    if epochs is not None:
        extra["search.max_epochs"] = epochs
    if window is not None:
        extra["search.window"] = window
    return cfg.replace(extra).validate()


def trajectory(cfg: TrialConfig) -> list[tuple[float, float]]:
    """(d_max, d_avg) of each search epoch from the first full window on."""
    engine = TrialEngine(cfg, load_data(cfg.data))
    out = []
    while engine.phase == Phase.SEARCH:
        record = engine.step()
        if record["d_max"] is not None:
            out.append((record["d_max"], record["d_avg"]))
    return out


def first(window: int, curve: list[float], level: float) -> int | None:
    """The search epoch at whose end ``curve`` first falls below ``level`` (None: never)."""
    return next((window + i for i, value in enumerate(curve) if value < level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="resnet18")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, help="search epochs to watch (default: the profile's budget)")
    parser.add_argument("--window", type=int, help="the window (default: the profile's)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.03, 0.04, 0.05, 0.1])
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.03, 0.05])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = parse_assignments(args.overrides)
    base = setup(args.space, args.profile, overrides, args.epochs, args.window)
    curves = {}
    for seed in range(args.seeds):
        curves[seed] = trajectory(base.replace({"seed": seed}))
        print(f"seed {seed}: d_max {[round(m, 4) for m, _ in curves[seed]]}", flush=True)
        print(f"        d_avg {[round(a, 4) for _, a in curves[seed]]}", flush=True)
    window = base.search.window
    settings: list[dict[str, Any]] = []
    for s in args.thresholds:
        stop = [first(window, [m for m, _ in c], s) for c in curves.values()]
        below = [first(window, [a for _, a in c], s) for c in curves.values()]
        for delta in args.deltas:
            fire = [first(window, [a for _, a in c], s + delta) for c in curves.values()]
            settings.append({"s": s, "delta": delta, "stop": stop, "d_avg_below_s": below, "trigger": fire})
            print(f"s={s} delta={delta}: stops {stop}, d_avg < s at {below}, WORM fires at {fire}", flush=True)
    suffix = "" if args.space == "resnet18" and not args.overrides else "-" + "-".join([args.space, *args.overrides])
    out = args.out or RESULTS / f"trigger_trajectories{suffix}.json"
    curves_out = {seed: [list(p) for p in c] for seed, c in curves.items()}
    write(out, {"machine": machine(), "setup": base.to_flat(), "curves": curves_out, "settings": settings})


if __name__ == "__main__":
    main()
