"""Ray overhead: one trial through a one-trial sweep against the same trial through ``run``.

The same EarlyBird trial (ResNet-18 on all of digits, about a minute on 2 cores, 2 torch
threads in both) runs as ``python -m worm_tune.run`` and as a one-trial ``python -m
worm_tune.sweep`` (Ray Tune, a fresh SQLite MLflow store, a checkpoint every epoch). Each is a
fresh process timed from outside, so the sweep pays for starting Ray, as a user's does. All
sweeps log into one SQLite store, as a user's sweeps do (the first creates it: a few seconds
more, which the median leaves out). Runs alternate (run, sweep, run, sweep, ...) so machine
drift hits both alike. The script checks that both ran the same trial: same config hash, same
numbers. It also times the sweep's fixed steps one by one, in fresh processes, to say where
the difference goes.

    python benchmarks/ray_overhead.py --repeats 3 --out benchmarks/results/ray_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, write
from _sweeps import TRIAL, ray_trials, sweep_command, timed, write_space

from worm_tune.config import TrialConfig
from worm_tune.metrics import TIMING
from worm_tune.paths import DEFAULT_STORAGE

THREADS = 2

#: The sweep's fixed steps, each timed in a fresh process (the same calls ``worm_tune.sweep`` makes).
STEPS = """
import json, sys, time
t = time.perf_counter()
def lap(name):
    global t
    now = time.perf_counter(); steps[name] = now - t; t = now
steps = {}
import worm_tune.cli.launch
lap("import worm_tune.cli.launch (torch, torchvision, Ray, MLflow)")
from worm_tune.tune import cluster, store as tracking
from worm_tune.tune.console import no_snapshot_warning
tracking.check_tracking(sys.argv[1])
lap("create the SQLite MLflow store (first sweep only)")
tracking.check_tracking(sys.argv[1])
lap("open an existing store")
no_snapshot_warning()
cluster.connect(None, None)
lap("ray.init")
import ray
ray.shutdown()
lap("ray.shutdown")
print(json.dumps(steps))
"""


def startup_steps(root: Path) -> dict[str, float]:
    uri = f"sqlite:///{root / 'steps.db'}"
    done = subprocess.run([sys.executable, "-c", STEPS, uri], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs of runs")
    parser.add_argument("--train-subset", type=int, default=0, help="digits training images (0 = all 1,437)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_overhead.json"))
    args = parser.parse_args()

    base = {**TRIAL, "data.train_subset": args.train_subset, "threads": THREADS}
    cfg = TrialConfig().replace({**base, "method": "earlybird", "seed": 0}).validate()
    walls: dict[str, list[float]] = {"run": [], "sweep": []}
    trial_seconds: dict[str, list[float]] = {"run": [], "sweep": []}
    summaries: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_file = root / "trial.json"
        config_file.write_text(json.dumps(cfg.to_dict()))
        space = write_space(root / "one.toml", base, seeds=[0], methods=["earlybird"])
        for i in range(args.repeats):
            out = root / f"run-{i}"
            walls["run"].append(
                timed([sys.executable, "-m", "worm_tune.run", "--config", str(config_file), "--out", str(out)], root)
            )
            summaries["run"] = json.loads((out / "metrics.json").read_text())["summary"]
            trial_seconds["run"].append(summaries["run"]["total_time"])

            name = f"one-{i}"
            walls["sweep"].append(timed(sweep_command(space, name, root, "--cpus-per-trial", str(THREADS)), root))
            (trial,) = ray_trials(root / DEFAULT_STORAGE / name)
            summaries["sweep"] = trial["summary"]
            trial_seconds["sweep"].append(trial["summary"]["total_time"])
            print(
                f"pair {i}: run {walls['run'][-1]:.1f}s, sweep {walls['sweep'][-1]:.1f}s "
                f"(epochs {trial_seconds['run'][-1]:.1f}s vs {trial_seconds['sweep'][-1]:.1f}s)",
                flush=True,
            )

        steps = startup_steps(root)

    same = {k: v for k, v in summaries["run"].items() if k not in TIMING}
    other = {k: v for k, v in summaries["sweep"].items() if k not in TIMING}
    if same != other:
        sys.exit(f"the two commands ran different trials:\n{same}\n{other}")
    wall = {k: statistics.median(v) for k, v in walls.items()}
    epochs = {k: statistics.median(v) for k, v in trial_seconds.items()}
    write(
        args.out,
        {
            "benchmark": "ray_overhead",
            "machine": machine(),
            "trial": {"config_hash": cfg.hash(), "threads": THREADS, "epochs": same["epochs"]},
            "command_seconds": walls,
            "trial_seconds": trial_seconds,
            "median_command_seconds": wall,
            "median_trial_seconds": epochs,
            "ratio_command": wall["sweep"] / wall["run"],
            "ratio_trial": epochs["sweep"] / epochs["run"],
            "fixed_cost_seconds": {k: wall[k] - epochs[k] for k in wall},
            "sweep_startup_steps_seconds": steps,
        },
    )
    ratio = wall["sweep"] / wall["run"], epochs["sweep"] / epochs["run"]
    print(f"sweep / run: {ratio[0]:.3f}x whole command, {ratio[1]:.3f}x the trial's epochs")


if __name__ == "__main__":
    main()
