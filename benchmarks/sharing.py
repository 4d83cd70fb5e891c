"""What exact computation sharing saves (issue 16): a space's grid run by :mod:`worm_tune.group`,
the epochs its group engines trained against the sum of its trials' epochs (what running each
trial alone trains, by exactness), search and retraining apart, and wall times.

    python benchmarks/sharing.py resnet18 --profile quick                 # the quick profile's 18 trials
    python benchmarks/sharing.py resnet18 --profile quick --independent   # ... and each trial alone, timed and compared
    python benchmarks/sharing.py resnet18 --set data.dataset=digits --set model.pretrained=false --seeds 0

``--set`` pins fields as a sweep's does (the default grid on digits from random init: the second
line); ``--seeds`` keeps some seeds. With ``--independent`` every trial also runs alone and the
script fails unless its records and summary equal the shared run's (timings aside). One torch
thread unless ``--threads``. Writes ``benchmarks/results/sharing-<space>-<profile>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine, write

from worm_tune.config import parse_assignments
from worm_tune.data import load_data
from worm_tune.engine import TrialEngine
from worm_tune.group import run_shared
from worm_tune.metrics import untimed
from worm_tune.tune.spaces import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to keep (default: the grid's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--independent", action="store_true", help="also run every trial alone, and compare")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    space = load_space(args.space, args.profile).pin(parse_assignments(args.set))
    configs = [cfg.replace({"threads": args.threads}).validate() for cfg in space.grid()]
    if args.seeds:
        keep = {int(s) for s in args.seeds.split(",")}
        configs = [cfg for cfg in configs if cfg.seed in keep]
    data = load_data(configs[0].data, configs[0].model.checkpoint)
    print(f"{len(configs)} trials of {args.space} ({args.profile})", flush=True)

    start = time.perf_counter()
    shared = run_shared(configs, data)
    shared_time = time.perf_counter() - start
    saving = shared.saved
    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {"space": args.space, "profile": args.profile, "set": args.set, "seeds": args.seeds},
        "trials": len(configs),
        "groups_at_start": shared.groups_at_start,
        "groups_at_end": shared.groups_at_end,
        **dataclasses.asdict(saving),
        "shared_seconds": round(shared_time, 1),
    }
    result["saving_all"] = round(saving.epochs_of_trials / saving.epochs_trained, 2)
    result["saving_search"] = round(saving.search_epochs_of_trials / saving.search_epochs_trained, 2)
    print(f"{saving.line()}; {shared_time:.0f} s", flush=True)
    if args.independent:
        start = time.perf_counter()
        for cfg in configs:
            engine = TrialEngine(cfg, data)
            summary = engine.run()
            history, shared_summary = shared.trials[cfg.hash()]
            if untimed(history) != untimed(engine.history) or untimed(summary) != untimed(shared_summary):
                raise SystemExit(f"trial {cfg.hash()} ({cfg.method}, seed {cfg.seed}) differs when shared")
        result["independent_seconds"] = round(time.perf_counter() - start, 1)
        print(f"independent: {result['independent_seconds']:.0f} s; every trial identical to its shared run")
    name = f"sharing-{args.space}-{args.profile}{'-' + args.seeds.replace(',', '_') if args.seeds else ''}.json"
    write(args.out or Path(__file__).parent / "results" / name, result)


if __name__ == "__main__":
    main()
