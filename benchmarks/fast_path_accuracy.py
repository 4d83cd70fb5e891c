"""Does the fast path learn the same as the plain one? Paired trials, same seeds, both paths.

Full EarlyBird and WORM trials (search, prune, retrain) on scikit-learn's digits with
augmentation on, for several seeds, once on the plain path (DataLoader, fp32, contiguous) and
once on the fast path (device-held data, bf16 autocast, channels-last). The two paths draw
their shuffles and crops differently, so single trials differ; the question is whether the
paired differences (fast minus plain) in final accuracy and search epochs are within noise.

    python benchmarks/fast_path_accuracy.py --out benchmarks/results/fast_path_accuracy.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, write
from scipy.stats import wilcoxon

from worm_tune.config import TrialConfig
from worm_tune.data import load_data
from worm_tune.engine import TrialEngine

PATHS = {
    "plain": {"speed.loader": "plain", "speed.precision": "fp32", "speed.channels_last": "off"},
    "fast": {"speed.loader": "device", "speed.precision": "bf16", "speed.channels_last": "on"},
}


def bootstrap_ci(diffs: list[float], seed: int = 0, n: int = 10_000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(np.asarray(diffs), (n, len(diffs))).mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["earlybird", "worm"])
    parser.add_argument("--search-epochs", type=int, default=20)
    parser.add_argument("--retrain-epochs", type=int, default=10)
    parser.add_argument("--train-subset", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fast_path_accuracy.json"))
    args = parser.parse_args()

    base = {
        "data.dataset": "digits",
        "data.augment": "true",
        "data.train_subset": str(args.train_subset),
        "search.max_epochs": str(args.search_epochs),
        "retrain.max_epochs": str(args.retrain_epochs),
        "device": args.device,
    }
    data = load_data(TrialConfig().replace(base).data)
    trials = []
    for method in args.methods:
        for seed in range(args.seeds):
            for path, overrides in PATHS.items():
                cfg = TrialConfig().replace({**base, **overrides, "method": method, "seed": str(seed)}).validate()
                start = time.perf_counter()
                s = TrialEngine(cfg, data).run()
                row = {"method": method, "seed": seed, "path": path, "seconds": time.perf_counter() - start}
                row.update({k: s[k] for k in ("search_epochs", "converged", "pre_prune_acc", "final_acc", "best_acc")})
                trials.append(row)
                print(row, flush=True)
    comparisons = {}
    for metric in ("final_acc", "best_acc", "search_epochs"):
        diffs = []
        for method in args.methods:
            for seed in range(args.seeds):
                pair = {t["path"]: t[metric] for t in trials if t["method"] == method and t["seed"] == seed}
                diffs.append(pair["fast"] - pair["plain"])
        low, high = bootstrap_ci(diffs)
        entry = {"pairs": len(diffs), "mean_fast_minus_plain": statistics.fmean(diffs), "ci95": [low, high]}
        entry["wilcoxon_p"] = float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0
        for path in PATHS:
            entry[f"mean_{path}"] = statistics.fmean(t[metric] for t in trials if t["path"] == path)
        comparisons[metric] = entry
        print(metric, entry, flush=True)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    write(
        args.out,
        {
            "benchmark": "fast_path_accuracy",
            **machine(),
            "device": device,
            "setup": base,
            "trials": trials,
            "comparisons": comparisons,
        },
    )


if __name__ == "__main__":
    main()
