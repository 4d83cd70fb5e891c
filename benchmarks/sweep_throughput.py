"""Sweep throughput: trials per hour on this machine's CPU cores, 1 and 2 trials at a time.

One sweep of ``--trials`` EarlyBird trials (ResNet-18 on digits, seeds 0, 1, ...) runs through
``python -m worm_tune.sweep`` in each setting below, timed from outside as a whole command
(Ray's start included), into one SQLite MLflow store:

- ``1 x 2 threads``: ``--cpus-per-trial 2``, one trial at a time on both cores;
- ``2 x 1 thread``: ``--cpus-per-trial 1`` (the default), two trials at a time, each on its
  share of the cores (torch threads = the CPUs Ray gave the trial);
- ``2 x 2 threads``: the same two at a time, each pinned to 2 threads (``--set threads=2``):
  what happens without the thread setting, when concurrent trials oversubscribe the cores.

Trials per hour counts whole commands; "trial seconds" is Ray's time inside the trials, so the
gap between them is the sweep's fixed cost. Settings run in rotation, ``--repeats`` rounds.

    python benchmarks/sweep_throughput.py --trials 4 --out benchmarks/results/sweep_throughput.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import machine, write
from _sweeps import TRIAL, ray_trials, sweep_command, timed, write_space

from worm_tune.paths import DEFAULT_STORAGE

SETTINGS: dict[str, list[str]] = {
    "1 x 2 threads": ["--cpus-per-trial", "2"],
    "2 x 1 thread": ["--cpus-per-trial", "1"],
    "2 x 2 threads": ["--cpus-per-trial", "1", "--set", "threads=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per sweep")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the settings")
    parser.add_argument("--train-subset", type=int, default=512, help="digits training images (0 = all 1,437)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_throughput.json"))
    args = parser.parse_args()

    base = {**TRIAL, "data.train_subset": args.train_subset}
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        space = write_space(root / "space.toml", base, seeds=range(args.trials), methods=["earlybird"])
        for round_ in range(args.repeats):
            for i, (setting, flags) in enumerate(SETTINGS.items()):
                name = f"s{round_}-{i}"
                seconds = timed(sweep_command(space, name, root, *flags), root)
                trials = ray_trials(root / DEFAULT_STORAGE / name)
                if len(trials) != args.trials or not all(t["summary"]["done"] for t in trials):
                    raise SystemExit(f"{setting}: {len(trials)} trials finished, expected {args.trials}")
                runs[setting].append(
                    {
                        "command_seconds": seconds,
                        "trial_seconds": [t["seconds"] for t in trials],
                        "threads": sorted({t["summary"]["threads"] for t in trials}),
                        "trials_per_hour": 3600 * args.trials / seconds,
                    }
                )
                mean_trial = statistics.mean(t["seconds"] for t in trials)
                print(
                    f"{setting}: {seconds:.0f}s for {args.trials} trials "
                    f"({3600 * args.trials / seconds:.0f}/h), {mean_trial:.1f}s per trial",
                    flush=True,
                )

    summary = {
        setting: {
            "trials_per_hour": statistics.median(r["trials_per_hour"] for r in rs),
            "mean_trial_seconds": statistics.median(statistics.mean(r["trial_seconds"]) for r in rs),
            "threads_per_trial": rs[0]["threads"],
        }
        for setting, rs in runs.items()
    }
    write(
        args.out,
        {
            "benchmark": "sweep_throughput",
            "machine": machine(),
            "trials_per_sweep": args.trials,
            "train_subset": args.train_subset,
            "runs": runs,
            "summary": summary,
        },
    )
    for setting, s in summary.items():
        print(f"{setting:>14}: {s['trials_per_hour']:.0f} trials/h, {s['mean_trial_seconds']:.1f}s per trial")


if __name__ == "__main__":
    main()
