"""The measurement behind the resnet18 quick profile's s and deltas (issue 14): EarlyBird's d_max and
d_avg per search epoch on its setup, and for each (s, delta), where the search would stop and where
WORM would fire (WORM is EarlyBird until it fires, so one EarlyBird run per seed tells both).

    python benchmarks/trigger_trajectories.py --seeds 10    # writes benchmarks/results/trigger_trajectories.json

It printed, on 2026-12-01 (ten seeds, one thread each): d_avg 0.07-0.08 at the first full window
(epoch 5), so at the paper's s = 0.1 WORM fires at epoch 5 whatever delta is; at s = 0.04, delta =
0.03 fires at epoch 6 on every seed and delta = 0.01 at epochs 6-9, both before d_avg < s (7-10).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import machine, write

from worm_tune.config import TrialConfig
from worm_tune.data import load_data
from worm_tune.engine import TrialEngine
from worm_tune.ticket.phases import Phase

#: The quick profile's setup, with a threshold no search reaches, so every epoch is seen.
SETUP = {
    "model.arch": "resnet18",
    "model.pretrained": False,
    "data.dataset": "digits",
    "data.train_subset": 512,
    "data.batch_size": 64,
    "search.ratio": 0.5,
    "search.window": 5,
    "search.max_epochs": 16,
    "search.threshold": 1e-4,
    "retrain.max_epochs": 1,
    "threads": 1,
}
THRESHOLDS = (0.03, 0.04, 0.05, 0.1)
DELTAS = (0.005, 0.01, 0.02, 0.03, 0.05)


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
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trigger_trajectories.json")
    args = parser.parse_args()
    base = TrialConfig().replace(SETUP).validate()
    curves = {seed: trajectory(base.replace({"seed": seed})) for seed in range(args.seeds)}
    window = base.search.window
    settings: list[dict[str, Any]] = []
    for s in THRESHOLDS:
        stop = [first(window, [m for m, _ in c], s) for c in curves.values()]
        below = [first(window, [a for _, a in c], s) for c in curves.values()]
        for delta in DELTAS:
            fire = [first(window, [a for _, a in c], s + delta) for c in curves.values()]
            settings.append({"s": s, "delta": delta, "stop": stop, "d_avg_below_s": below, "trigger": fire})
            print(f"s={s} delta={delta}: stops {stop}, d_avg < s at {below}, WORM fires at {fire}", flush=True)
    curves_out = {seed: [list(p) for p in c] for seed, c in curves.items()}
    write(args.out, {"machine": machine(), "setup": SETUP, "curves": curves_out, "settings": settings})


if __name__ == "__main__":
    main()
