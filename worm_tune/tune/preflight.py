"""The checks before a sweep starts, so bad input is one line, not a traceback once trials run: every
folder it writes, then every dataset and model its trials load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worm_tune.data import DataBundle, load_data
from worm_tune.models import build_model
from worm_tune.paths import check_writable
from worm_tune.tune import store
from worm_tune.tune.plan import Plan, SweepSettings


def check_paths(settings: SweepSettings, experiment: str, reports: Path | None) -> None:
    """Every folder the sweep will write, checked before anything starts: one line naming the flag.
    (``experiment``: the MLflow experiment, whose artifact folder a new SQLite store makes.)"""
    check_writable(Path(settings.storage), "--storage")
    if reports is not None:
        check_writable(reports, "--reports")
    db = store.sqlite_path(settings.tracking_uri)
    if db is not None and db.parent.is_dir():
        check_writable(db.parent, "--tracking-uri (the SQLite file's folder)")
        root = store.artifact_root(settings.tracking_uri, experiment)
        if root is not None:
            check_writable(root, "--tracking-uri (its artifact folder)")


def preflight(plan: Plan) -> None:
    """Load each dataset and build each model once, so a missing one fails before any trial."""
    bundles: dict[Any, DataBundle] = {}
    models = set()
    for cfg in plan.configs():
        data_key = (cfg.data, cfg.model.checkpoint)  # text is tokenised by the checkpoint's tokenizer
        if data_key not in bundles:
            bundles[data_key] = load_data(cfg.data, cfg.model.checkpoint)
        bundle = bundles[data_key]
        if (cfg.model, data_key) not in models:
            models.add((cfg.model, data_key))
            build_model(cfg.model, bundle.num_classes, bundle.input_shape, bundle.vocab_size)
