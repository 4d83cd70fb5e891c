"""How long importing the analysis takes, next to importing the sweep runner (issue 13).

The analysis reads configs, plans and the MLflow store, and never imports Ray, torch or a CLI
(an import-linter contract): a report should not pay for the machinery that ran the sweep. Each
import is timed in a fresh interpreter, the two alternating, so disk caches and machine load hit
both alike.

    python benchmarks/import_time.py --rounds 7     # writes benchmarks/results/import_time.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _common import machine, write

MODULES = ("analysis.load", "worm_tune.tune.runner")
PROBE = "import sys, time; t = time.perf_counter(); import {m}; print(time.perf_counter() - t, 'ray' in sys.modules)"


def timed(module: str) -> tuple[float, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(m=module)], capture_output=True, text=True, check=True)
    seconds, ray = out.stdout.split()
    return float(seconds), ray == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "import_time.json")
    args = parser.parse_args()
    times: dict[str, list[float]] = {m: [] for m in MODULES}
    imports_ray: dict[str, bool] = {}
    timed(MODULES[0])  # warm the file cache once, untimed
    for _ in range(args.rounds):
        for module in MODULES:
            seconds, ray = timed(module)
            times[module].append(round(seconds, 3))
            imports_ray[module] = ray
    medians = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "machine": machine(),
        "rounds": args.rounds,
        "seconds": times,
        "median_s": medians,
        "imports_ray": imports_ray,
        "ratio_analysis_to_runner": round(medians[MODULES[0]] / medians[MODULES[1]], 3),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    write(args.out, result)


if __name__ == "__main__":
    main()
