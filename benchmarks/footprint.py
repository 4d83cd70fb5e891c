"""A sweep's disk footprint (issue 22): its folder at the end and at its peak, and what MLflow keeps.

    python benchmarks/footprint.py resnet18 --quick       # the quick profile: 18 trials
    python benchmarks/footprint.py digits_study           # the 20-seed study: 100 trials

Runs the sweep as a user does, then reads what the sweep itself measured (the parent run's
``storage/bytes_final`` and ``storage/bytes_peak``: the peak is sampled by the driver on every
checkpoint, before Ray deletes the previous one), checks the end size against the folder as it
is now, and sizes the MLflow artifacts and the trials' tickets. Writes
``benchmarks/results/footprint-<space>[-quick].json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, write
from _sweeps import sweep_command, timed
from mlflow.tracking import MlflowClient

from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.footprint import folder_bytes
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-checkpoints", default="none", choices=("none", "last", "all"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="footprint-"))
    flags = (["--quick"] if args.quick else []) + [f"--set={kv}" for kv in args.set]
    flags += ["--keep-checkpoints", args.keep_checkpoints]
    seconds = timed(sweep_command(Path(args.space), "sweep", root, *flags), root)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = 'sweep'", max_results=1000)
    (parent,) = [r for r in found if r.data.tags[TAG_KIND] == "sweep"]
    trials = [r for r in found if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    final, peak = parent.data.metrics["storage/bytes_final"], parent.data.metrics["storage/bytes_peak"]
    folder = folder_bytes(root / DEFAULT_STORAGE / "sweep")
    if abs(folder - final) > 0.05 * final:
        raise SystemExit(f"the sweep logged {final:.0f} bytes at its end; its folder holds {folder}")
    tickets = sorted(p.stat().st_size for p in (root / "mlartifacts").rglob(TICKET_FILE))
    result = {
        "machine": machine(),
        "command": " ".join(["python benchmarks/footprint.py", args.space, *flags]),
        "trials": len(trials),
        "seconds": round(seconds, 1),
        "folder_bytes_final": int(final),
        "folder_bytes_peak": int(peak),
        "mlflow_artifact_bytes": folder_bytes(root / "mlartifacts"),
        "mlflow_db_bytes": (root / "mlflow.db").stat().st_size,
        "tickets": len(tickets),
        "ticket_bytes_min": tickets[0] if tickets else None,
        "ticket_bytes_max": tickets[-1] if tickets else None,
    }
    print(
        f"{len(trials)} trials in {seconds:.0f} s: folder {final / 1e6:.1f} MB at the end, {peak / 1e6:.1f} MB at "
        f"its peak; MLflow artifacts {result['mlflow_artifact_bytes'] / 1e6:.1f} MB ({len(tickets)} tickets)",
        flush=True,
    )
    name = f"footprint-{Path(args.space).stem}{'-quick' if args.quick else ''}.json"
    write(args.out or Path(__file__).parent / "results" / name, result)


if __name__ == "__main__":
    main()
