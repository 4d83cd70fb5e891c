"""The WORM paper's own figures (Vasudev 2024, arXiv 2406.11872; restated in docs/method.md), and
which of a sweep's settings ran the paper's protocol, so that its figures are printed beside ours.

The paper ran torchvision's ImageNet-pretrained models on the whole of CIFAR-10 at 32x32, no
augmentation, SGD lr 0.01 momentum 0.9 without weight decay or schedule, batch 32, p = 0.5,
window 5, s = 0.1, no L1, WORM with delta = 0.05 and r = 0.003 on the BN parameters' gradients,
unstructured pruning, fine-tuning the searched weights towards 90%, on one H100, with 3-7 seeds
and no error bars. A setting that differs in any of these is not the paper's, and its row is not
shown: a figure beside a different protocol reads as a replication it is not.

Its accuracies and epochs to 90% are training-set figures (the reference code's "test" loader
is CIFAR-10's training split), while ours are held out: :data:`CAVEAT` says so beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worm_tune.ticket.methods import METHODS

SOURCE = "paper (Vasudev 2024, one H100, 3-7 seeds)"
CAVEAT = (
    "The paper's accuracies and epochs to 90% are training-set figures: the reference code's \"test\" loader "
    "is built from CIFAR-10's training split, while ours are measured on the held-out test split, so the two "
    "are not directly comparable."
)

#: Every field the paper fixes, with its value: a setting must match all of them for the paper's row.
PROTOCOL: dict[str, Any] = {
    "model.pretrained": True,
    "model.stem": "imagenet",
    "data.dataset": "cifar10",
    "data.augment": False,
    "data.train_subset": 0,
    "data.batch_size": 32,
    "optim.optimizer": "sgd",
    "optim.lr": 0.01,
    "optim.momentum": 0.9,
    "optim.weight_decay": 0.0,
    "optim.scheduler": "constant",
    "search.ratio": 0.5,
    "search.window": 5,
    "search.threshold": 0.1,
    "search.l1": 0.0,
    "prune.kind": "unstructured",
    "retrain.init": "searched",
    "retrain.target_acc": 0.9,
}
#: What the paper fixes for the methods that truncate (WORM), on top of :data:`PROTOCOL`.
WORM_PROTOCOL: dict[str, Any] = {
    "worm.delta": 0.05,
    "worm.factor": 0.003,
    "worm.scope": "bn",
    "worm.apply": "grad",
}


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Tables 2 (ResNet-18) and 3 (VGG-11): search epochs, accuracy before
    pruning and after one retraining epoch, retraining epochs to 90%, and total time."""

    search_epochs: float
    pre_prune_acc: float
    acc_after_1_retrain_epoch: float
    epochs_to_target: float
    total_time: float


PAPER: dict[tuple[str, str], PaperRow] = {
    ("resnet18", "earlybird"): PaperRow(6, 0.8167, 0.8467, 3.3, 264),
    ("resnet18", "worm"): PaperRow(5, 0.8067, 0.8267, 4, 262),
    ("vgg11_bn", "earlybird"): PaperRow(6.7, 0.9533, 0.9067, 1, 229),
    ("vgg11_bn", "worm"): PaperRow(5.7, 0.9233, 0.8967, 1.7, 222),
}


def paper_row(config: Mapping[str, Any]) -> PaperRow | None:
    """The paper's figures for a trial config (flat, dotted keys), or None if its setting differs
    from the paper's in any field (a missing field differs)."""
    method = config.get("method")
    row = PAPER.get((config.get("model.arch"), method))  # type: ignore[arg-type]
    if row is None:
        return None
    wanted = PROTOCOL | (WORM_PROTOCOL if METHODS[str(method)].truncates else {})
    return row if all(_same(config.get(k), v) for k, v in wanted.items()) else None


def _same(got: Any, want: Any) -> bool:
    """``got == want``; numbers within float rounding, since a value may have come through a
    string, a sum or a CSV (``0.1 + 0.2`` is ``0.3`` here)."""
    if isinstance(want, bool | str):
        return bool(got == want)
    try:
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False
