"""Every benchmark, one after the other: ``python benchmarks/run_all.py``.

CPU benchmarks always run; the GPU ones run when CUDA is available and are listed as skipped
otherwise. Each writes its JSON into ``--out-dir`` (default ``benchmarks/results``, the figures
``docs/benchmarks.md`` quotes). ``--quick`` runs every benchmark on tiny settings into a temporary
folder, to check that they all still work (minutes, not figures to quote).

    python benchmarks/run_all.py                   # about 53 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick           # a smoke run
    python benchmarks/run_all.py --only ray_overhead sweep_throughput
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

HERE = Path(__file__).resolve().parent


class Benchmark(NamedTuple):
    name: str
    args: list[str]
    quick: list[str]
    gpu: bool = False


BENCHMARKS = (
    Benchmark("import_time", ["--rounds", "7"], ["--rounds", "1"]),
    Benchmark("engine_overhead", [], ["--epochs", "1", "--train-subset", "64"]),
    Benchmark("ray_overhead", ["--repeats", "3"], ["--repeats", "1", "--train-subset", "64"]),
    Benchmark("sweep_throughput", ["--trials", "4"], ["--trials", "2", "--train-subset", "64"]),
    Benchmark(
        "sharing",
        ["resnet18", "--profile", "quick", "--independent"],
        ["resnet18", "--profile", "quick", "--seeds", "0", "--set", "data.train_subset=64", "--independent"],
    ),
    Benchmark(
        "sharing_sweep",
        ["resnet18", "--quick"],
        ["resnet18", "--quick", "--set", "seed=0", "--set", "data.train_subset=64", "--set", "search.max_epochs=4"],
    ),
    Benchmark(
        "footprint",
        ["resnet18", "--quick"],
        ["resnet18", "--quick", "--set", "seed=0", "--set", "data.train_subset=64", "--set", "search.max_epochs=4"],
    ),
    Benchmark(
        "paired_study",
        ["resnet18", "--quick", "--num-samples", "16"],
        ["resnet18", "--quick", "--num-samples", "2", "--seeds-per-trial", "2"],
    ),
    Benchmark("peeking", ["--reps", "2000"], ["--reps", "20"]),
    Benchmark("gpu_throughput", [], ["--epochs", "1", "--train", "2048", "--test", "512"], gpu=True),
    Benchmark(
        "fast_path_accuracy",
        ["--seeds", "3", "--search-epochs", "12", "--retrain-epochs", "6"],
        ["--seeds", "2", "--search-epochs", "2", "--retrain-epochs", "1", "--train-subset", "128"],
        gpu=True,
    ),
)


def main() -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings into a temporary folder")
    parser.add_argument("--only", nargs="+", choices=names, default=names, metavar="NAME", help=", ".join(names))
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON files go")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or (Path(tmp) if args.quick else HERE / "results")
        failed = []
        for bench in BENCHMARKS:
            if bench.name not in args.only:
                continue
            if bench.gpu and not torch.cuda.is_available():
                print(f"== {bench.name}: skipped, no GPU here", flush=True)
                continue
            command = [
                sys.executable,
                str(HERE / f"{bench.name}.py"),
                *(bench.quick if args.quick else bench.args),
                "--out",
                str(out_dir / f"{bench.name}.json"),
            ]
            print(f"== {bench.name}: {' '.join(command[1:])}", flush=True)
            start = time.perf_counter()
            code = subprocess.run(command).returncode
            print(f"== {bench.name}: exit {code} after {time.perf_counter() - start:.0f}s", flush=True)
            if code:
                failed.append(bench.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
