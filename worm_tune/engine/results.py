"""A trial's results as :mod:`worm_tune.metrics` declares them: each epoch's record, and the summary.

A trial records some summary values as it runs (:data:`~worm_tune.metrics.RECORDED`) and reads the
rest off its state when a summary is taken (source ``state``); every list of names here comes from
the metrics' specs, so a metric is added in :mod:`worm_tune.metrics` and filled in here.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from worm_tune import metrics
from worm_tune.config import RetrainConfig
from worm_tune.ticket.phases import Phase


def fresh_results(model: nn.Module) -> dict[str, Any]:
    """What a trial records before its first epoch: every recorded value at its start, and its initial weights."""
    return dict(metrics.RECORDED) | {"init_weights": weights_fingerprint(model)}


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights: shows that paired trials started from the same network."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def epoch_record(phase: Phase, epoch: int, global_epoch: int, values: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record so far: where the trial is, then its per-epoch metrics in the schema's order
    (a metric the epoch did not measure is a KeyError here; :func:`close_record` adds the rest)."""
    if not math.isfinite(values["train_loss"]):
        values["train_loss"] = None
    where = {"phase": phase.value, "epoch": epoch, "global_epoch": global_epoch}
    return where | {name: values[name] for name in metrics.EPOCH if name not in metrics.TIMING}


def close_record(record: dict[str, Any], results: dict[str, Any], seconds: float, pruned: bool) -> None:
    """Add an epoch's wall ``seconds`` to the record and the results, then the running totals and,
    in the epoch the trial ``pruned`` in, the accuracy right after pruning (the summary's value)."""
    record["epoch_time"] = seconds
    results["ended_at"] = time.time()
    results["total_time"] += seconds
    if record["phase"] == Phase.SEARCH:
        results["search_time"] += seconds
    record.update({name: results[name] for name in metrics.TOTALS})
    if pruned:
        record["post_prune_acc"] = results["post_prune_acc"]


def record_training(results: dict[str, Any], phase: Phase, epoch: int, test_acc: float, cfg: RetrainConfig) -> bool:
    """Record what (re)training ``epoch`` of ``phase`` reached; return whether the trial ends with it: diverged,
    out of epochs, or at its target accuracy if it stops there."""
    if epoch == 1 and phase == Phase.RETRAIN:
        results["acc_after_1_retrain_epoch"] = test_acc
    reached = test_acc >= cfg.target_acc
    if reached and results["epochs_to_target"] is None:
        results["epochs_to_target"] = epoch
    return results["diverged"] or epoch >= cfg.max_epochs or (reached and cfg.stop_at_target)


def summary_values(results: dict[str, Any], history: Sequence[dict[str, Any]], **state: Any) -> dict[str, Any]:
    """Every summary metric, in the schema's order: what the trial recorded, and the rest read off its
    records and its ``state`` (the epochs it ran, its network's sparsity, its dense network's size)."""
    trained = [m for m in history if m["phase"] in (Phase.RETRAIN, Phase.TRAIN)]
    accs = [m["test_acc"] for m in trained]
    records = {
        "retrain_epochs": len(trained),
        "final_acc": accs[-1] if accs else None,
        "best_acc": max(accs) if accs else None,
    }
    values = results | records | state
    return {name: values[name] for name in metrics.SUMMARY}
