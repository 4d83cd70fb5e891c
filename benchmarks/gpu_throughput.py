"""Training throughput (images/s) of the fast path against the plain DataLoader path.

ResNet-18 with the CIFAR stem, EarlyBird search epochs (train, draw the mask, evaluate) on data
of CIFAR-10's size and format: a folder in torchvision's CIFAR-10 layout holding 50,000 random
training and 10,000 test images, read by the real ``torchvision.datasets.CIFAR10`` (its checksum
check is skipped: the files are ours). Throughput does not depend on what the pixels show.
Augmentation (crop with padding 4, flip) is on in every variant. Each variant runs one warm-up
epoch (it includes compilation) and then ``--epochs`` timed ones; the figure is training images
per second of epoch time (the epoch includes the 10,000-image evaluation, as every epoch must).

    python benchmarks/gpu_throughput.py --out benchmarks/results/gpu_throughput.json
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets.cifar
from _common import machine, write

from worm_tune.config import TrialConfig
from worm_tune.data import load_data
from worm_tune.engine import TrialEngine

PLAIN = {"speed.loader": "plain", "speed.precision": "fp32", "speed.channels_last": "off"}
FAST = {"speed.loader": "device", "speed.precision": "bf16", "speed.channels_last": "on"}


def fake_cifar10(root: Path, train: int, test: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = [train // 5] * 5 + [test]
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], sizes, strict=True):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def variants(batches: list[int], workers: int) -> list[tuple[str, dict[str, str]]]:
    out = []
    for b in batches:
        bs = {"data.batch_size": str(b)}
        out += [
            (f"plain b{b} workers=0", {**PLAIN, **bs, "data.num_workers": "0"}),
            (f"plain b{b} workers={workers}", {**PLAIN, **bs, "data.num_workers": str(workers)}),
            (f"fast b{b}", {**FAST, **bs}),
            (f"fast+cudagraphs b{b}", {**FAST, **bs, "speed.compile": "reduce-overhead"}),
        ]
    return out


def time_variant(data: Any, overrides: dict[str, str], epochs: int, device: str) -> list[float]:
    cfg = TrialConfig().replace(
        {
            "data.dataset": "cifar10",
            "data.augment": "true",
            "data.test_batch_size": "1024",
            "model.stem": "cifar",
            "search.threshold": "1e-9",  # never converges: every epoch is a search epoch
            "search.max_epochs": str(epochs + 2),
            "device": device,
            **overrides,
        }
    )
    engine = TrialEngine(cfg.validate(), data)
    times = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        engine.step()  # ends in .item() calls: the GPU has finished when it returns
        if epoch:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant, after one warm-up")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the second plain variant")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_throughput.json"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "gpu_throughput: no CUDA device here; the GPU figures need one\n")

    torch.backends.cudnn.benchmark = True
    torchvision.datasets.cifar.check_integrity = lambda *a, **k: True  # our own random files
    with tempfile.TemporaryDirectory() as root:
        fake_cifar10(Path(root), args.train, args.test)
        data = load_data(
            TrialConfig().replace({"data.dataset": "cifar10", "data.data_dir": root, "data.augment": "true"}).data
        )
        rows = []
        for name, overrides in variants(args.batches, args.workers):
            try:
                times = time_variant(data, overrides, args.epochs, args.device)
            except Exception as exc:  # a variant this machine cannot run is recorded, not fatal
                rows.append({"variant": name, "overrides": overrides, "error": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"{name:28s} failed: {rows[-1]['error']}", flush=True)
                continue
            median = statistics.median(times)
            rows.append(
                {
                    "variant": name,
                    "overrides": overrides,
                    "epoch_seconds": times,
                    "images_per_second": args.train / median,
                }
            )
            print(f"{name:28s} {median:7.2f} s/epoch {args.train / median:9.0f} images/s", flush=True)
    by_name = {r["variant"]: r["images_per_second"] for r in rows if "error" not in r}
    ratios = {}
    for b in args.batches:
        plain = by_name.get(f"plain b{b} workers={args.workers}")
        for fast in (f"fast b{b}", f"fast+cudagraphs b{b}"):
            if plain and fast in by_name:
                ratios[f"{fast} vs plain b{b} workers={args.workers}"] = by_name[fast] / plain
    write(
        args.out,
        {
            "benchmark": "gpu_throughput",
            **machine(),
            "train_images": args.train,
            "test_images": args.test,
            "rows": rows,
            "ratios": ratios,
        },
    )
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")


if __name__ == "__main__":
    main()
