"""The measurement behind the pruning-accuracy study's ratio (issue 27): EarlyBird's test accuracy before
pruning, right after it and after one retraining epoch, on the digits study's setup (ResNet-18 from random
init, 512 digits images, s = 0.04), per pruning ratio and kind. A ratio at which the pruned network falls
to chance (10% on digits) cannot show whether WORM's pruned networks "lose less accuracy during pruning".

    python benchmarks/pruning_accuracy.py --seeds 2     # writes benchmarks/results/pruning_accuracy.json

It printed, on 2026-12-04 (two seeds, one thread each, beside a ViT sweep): see docs/results/pruning-study.md, "Accuracy
through pruning".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import machine, write

from worm_tune.data import load_data
from worm_tune.engine import TrialEngine
from worm_tune.ticket.phases import Phase
from worm_tune.tune.spaces import load_space

KEYS = ("search_epochs", "pre_prune_acc", "post_prune_acc", "acc_after_1_retrain_epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--kinds", nargs="+", default=["unstructured", "structured"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pruning_accuracy.json")
    args = parser.parse_args()
    base = next(c for c in load_space("digits_study").grid() if c.method == "earlybird")
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for ratio in args.ratios:
            for kind in args.kinds:
                over = {"seed": seed, "search.ratio": ratio, "prune.kind": kind, "retrain.max_epochs": 1, "threads": 1}
                cfg = base.replace(over).validate()
                start = time.perf_counter()
                engine = TrialEngine(cfg, load_data(cfg.data))
                while engine.phase != Phase.DONE:
                    engine.step()
                summary = engine.summary()
                rows.append({**over, **{k: summary[k] for k in KEYS}, "seconds": round(time.perf_counter() - start, 1)})
                print(rows[-1], flush=True)
    write(args.out, {"machine": machine(), "setup": base.to_flat(), "rows": rows})


if __name__ == "__main__":
    main()
