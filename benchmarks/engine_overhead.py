"""Engine overhead: per-epoch wall time of EarlyBird and WORM against a bare PyTorch loop.

All three train the same model (same initial weights) on the same data with the same
optimizer and batch size; each epoch is one pass over the training split plus one pass
over the test split, which is what every loop must do. Epochs are interleaved (bare, EB,
WORM, bare, EB, ...) so drift in machine speed hits all three alike; the first round is
warm-up and is dropped. Two ratios are reported: of the median epochs, and the median of each
round's own ratio (paired: robust to the machine drifting between rounds). WORM runs with
truncation active on every step (``gradclip``: r = 0.003 from the first epoch, the paper's
r_trunc), the worst case for overhead.

    python benchmarks/engine_overhead.py --epochs 8 --out benchmarks/results/engine_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from worm_tune.config import TrialConfig
from worm_tune.data import load_data, make_loaders
from worm_tune.engine import TrialEngine
from worm_tune.models import build_model
from worm_tune.ticket.masks import global_mask


def bare_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train, test) -> None:
    """torchvision-reference-style loop: train one epoch, then evaluate."""
    model.train()
    for x, y in train:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for x, y in test:
            model(x).argmax(1).eq(y).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=8, help="timed rounds after one warm-up round")
    parser.add_argument("--train-subset", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine_overhead.json"))
    args = parser.parse_args()

    common = {
        "data.dataset": args.dataset,
        "data.train_subset": str(args.train_subset),
        "model.arch": args.arch,
        "device": "cpu",
        "search.threshold": "1e-9",  # never converge: every timed epoch is a search epoch
        "search.max_epochs": str(args.epochs + 1),
    }
    cfg_eb = TrialConfig().replace({**common, "method": "earlybird"}).validate()
    cfg_worm = TrialConfig().replace({**common, "method": "gradclip", "worm.factor": "0.003"}).validate()
    data = load_data(cfg_eb.data)
    eb, worm = TrialEngine(cfg_eb, data), TrialEngine(cfg_worm, data)
    torch.manual_seed(0)
    model = build_model(cfg_eb.model, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train, test = make_loaders(data, cfg_eb.data, torch.Generator().manual_seed(0))

    times: dict[str, list[float]] = {"bare": [], "earlybird": [], "worm": []}
    for round_ in range(args.epochs + 1):
        for name, fn in (
            ("bare", lambda: bare_epoch(model, opt, train, test)),
            ("earlybird", eb.step),
            ("worm", worm.step),
        ):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ > 0:
                times[name].append(elapsed)
        print(f"round {round_}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v), flush=True)
    assert worm.history[-1]["truncated_units"] > 0, "truncation must be active in the WORM runs"

    # Cost of the pieces, measured directly: truncation per step, mask + distance per epoch.
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        worm.truncator.apply()
    trunc_per_step = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(200):
        worm.control.detector.push(global_mask(worm.sites.scores(), cfg_worm.search.ratio))
    mask_per_epoch = (time.perf_counter() - start) / 200

    med = {k: statistics.median(v) for k, v in times.items()}
    paired = {k: statistics.median(t / b for t, b in zip(times[k], times["bare"], strict=True)) for k in times}
    steps = len(train)
    result = {
        "benchmark": "engine_overhead",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "setup": {
            "dataset": args.dataset,
            "arch": args.arch,
            "batch_size": cfg_eb.data.batch_size,
            "train_examples": len(data.train),
            "steps_per_epoch": steps,
            "timed_epochs": args.epochs,
        },
        "epoch_seconds": times,
        "median_epoch_seconds": med,
        "ratio_earlybird_vs_bare": med["earlybird"] / med["bare"],
        "ratio_worm_vs_bare": med["worm"] / med["bare"],
        "paired_ratio_earlybird_vs_bare": paired["earlybird"],
        "paired_ratio_worm_vs_bare": paired["worm"],
        "truncation_seconds_per_step": trunc_per_step,
        "truncation_share_of_epoch": trunc_per_step * steps / med["worm"],
        "mask_and_distance_seconds_per_epoch": mask_per_epoch,
        "mask_share_of_epoch": mask_per_epoch / med["earlybird"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "epoch_seconds"}, indent=2))


if __name__ == "__main__":
    main()
