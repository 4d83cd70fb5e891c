"""A paired Optuna study (issue 25): the epochs it trained against the sum of its trials' own epochs
(what running each trial alone trains), its wall time, and where its candidates' triggers fell.

    python benchmarks/paired_study.py resnet18 --quick --num-samples 16   # 16 candidates x 6 seeds

One run of ``python -m worm_tune.sweep <space> --search optuna`` in a fresh process, timed from
outside (Python, Ray and MLflow start-up included). Its parent run logs what it trained and the
sum over its trials (``sharing/...``): the EarlyBird baselines train in full once per seed, and each
candidate's trial on a seed only its epochs after its fork (plus any baseline epochs it trained
again where a state was thinned out). The per-trial wall times are Ray's, the baselines' epochs
included in each candidate's (a fork inherits them). Writes ``benchmarks/results/paired-study-<space>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import optuna
from _common import machine, write
from _sweeps import sweep_command, timed
from mlflow.tracking import MlflowClient

from worm_tune import metrics
from worm_tune.group import ComputeSaved
from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.tune.paired_study import STUDY_FILE
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--seeds-per-trial", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="paired-study-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    flags = [*(["--quick"] if args.quick else []), "--search", "optuna", f"--num-samples={args.num_samples}"]
    flags.append(f"--seeds-per-trial={args.seeds_per_trial}")
    seconds = timed(sweep_command(Path(args.space), "study", root, *flags), root)

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = 'study'", max_results=2000)
    (parent,) = [r for r in found if r.data.tags[TAG_KIND] == "sweep"]
    children = [r for r in found if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    saving = ComputeSaved.from_metrics(parent.data.metrics)
    summaries = [metrics.logged_summary(r.data.metrics) for r in children]
    trial_seconds = sum(s["total_time"] for s in summaries)

    study = optuna.load_study(study_name="study", storage=f"sqlite:///{root / DEFAULT_STORAGE / 'study' / STUDY_FILE}")
    triggers: dict[int, list[int | None]] = defaultdict(list)
    for run in children:
        if "candidate" in run.data.tags:
            trigger = run.data.tags.get("trigger_epoch")
            triggers[int(run.data.tags["candidate"])].append(None if trigger is None else int(trigger))
    candidates = [
        {
            "number": t.number,
            "params": t.params,
            "state": t.state.name,
            "values": t.values,
            "triggers": sorted(triggers[t.number], key=lambda e: (e is None, e or 0)),
        }
        for t in study.trials
    ]
    result = {
        "machine": machine(),
        "command": " ".join(["python benchmarks/paired_study.py", *sys.argv[1:]]),
        "candidates": len(study.trials),
        "seeds_per_candidate": args.seeds_per_trial,
        "trials": len(children),
        **dataclasses.asdict(saving),
        "saving_epochs": round(saving.epochs_of_trials / saving.epochs_trained, 2),
        "saving_search_epochs": round(saving.search_epochs_of_trials / saving.search_epochs_trained, 2),
        "wall_seconds": round(seconds, 1),
        "trials_own_seconds": round(trial_seconds, 1),
        "study": candidates,
    }
    print(saving.line(), flush=True)
    print(f"wall time: {seconds:.0f} s for the study; its trials' own times sum to {trial_seconds:.0f} s", flush=True)
    for c in candidates:
        print(f"candidate {c['number']}: {c['params']} triggers {c['triggers']} values {c['values']}", flush=True)
    suffix = "-quick" if args.quick else ""
    write(args.out or Path(__file__).parent / "results" / f"paired-study-{Path(args.space).stem}{suffix}.json", result)


if __name__ == "__main__":
    main()
