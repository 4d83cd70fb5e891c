"""A shared sweep against the same sweep with ``--no-share``, side by side in one run (issue 16):
the epochs, search epochs and training FLOPs each trained, and their wall times, whole commands
timed from outside (Ray and MLflow start-up included).

    python benchmarks/sharing_sweep.py resnet18 --quick     # the quick profile: 18 trials, twice

The shared sweep's parent run logs what it trained and the sum over its trials
(``sharing/...``); the unshared sweep's trial runs give what running each alone trained, which
must equal that sum (by exactness). The script checks it, and that every trial's summary metrics
agree between the two (timings aside). Writes ``benchmarks/results/sharing-sweep-<space>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, write
from _sweeps import sweep_command, timed
from mlflow.tracking import MlflowClient

from worm_tune import metrics
from worm_tune.group import ComputeSaved
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP


def runs(uri: str, name: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = '{name}'", max_results=1000)
    (parent,) = [r for r in found if r.data.tags[TAG_KIND] == "sweep"]
    return parent, [r for r in found if r.data.tags.get(PARENT_TAG) == parent.info.run_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pinned in both sweeps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sharing-sweep-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    profile = (["--quick"] if args.quick else []) + [f"--set={kv}" for kv in args.set]
    seconds = {}
    for name, flags in (("shared", []), ("alone", ["--no-share"])):
        seconds[name] = timed(sweep_command(Path(args.space), name, root, *profile, *flags), root)
        print(f"{name}: {seconds[name]:.0f} s", flush=True)

    parent, shared = runs(uri, "shared")
    _, alone = runs(uri, "alone")
    saving = ComputeSaved.from_metrics(parent.data.metrics)
    summaries = {
        kind: {r.data.tags["config_hash"]: metrics.logged_summary(r.data.metrics) for r in trial_runs}
        for kind, trial_runs in (("shared", shared), ("alone", alone))
    }
    epochs_alone = sum(s["epochs"] for s in summaries["alone"].values())
    if epochs_alone != saving.epochs_of_trials:
        raise SystemExit(f"--no-share trained {epochs_alone} epochs, the shared sweep's trials sum to {saving}")
    if metrics.untimed(summaries["shared"]) != metrics.untimed(summaries["alone"]):
        raise SystemExit("a trial's summary differs between the shared and the unshared sweep")
    result = {
        "machine": machine(),
        "command": " ".join(["python benchmarks/sharing_sweep.py", args.space, *profile]),
        "trials": len(shared),
        **dataclasses.asdict(saving),
        "shared_seconds": round(seconds["shared"], 1),
        "alone_seconds": round(seconds["alone"], 1),
        "saving_epochs": round(saving.epochs_of_trials / saving.epochs_trained, 2),
        "saving_search_epochs": round(saving.search_epochs_of_trials / saving.search_epochs_trained, 2),
        "saving_wall_time": round(seconds["alone"] / seconds["shared"], 2),
    }
    print(saving.line(), flush=True)
    print(f"wall time: {seconds['shared']:.0f} s shared, {seconds['alone']:.0f} s alone", flush=True)
    name = f"sharing-sweep-{Path(args.space).stem}{'-quick' if args.quick else ''}.json"
    write(args.out or Path(__file__).parent / "results" / name, result)


if __name__ == "__main__":
    main()
