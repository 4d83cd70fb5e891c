"""The WORM paper's own figures (Vasudev 2024, arXiv 2406.11872; restated in ALGORITHM.md), and
which of a sweep's settings are close enough to the paper's protocol to print them beside ours.

The paper ran torchvision's ImageNet-pretrained models on CIFAR-10 at 32x32, no augmentation, SGD
lr 0.01 momentum 0.9, batch 32, window 5, s = 0.1, WORM with delta = 0.05 and r = 0.003,
unstructured pruning, retraining to 90%, on one H100, with 3-7 seeds and no error bars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worm_tune.ticket.methods import METHODS

SOURCE = "paper (Vasudev 2024, one H100, 3-7 seeds)"

#: The fields a setting must match for the paper's row to apply (the protocol above).
PROTOCOL: dict[str, Any] = {
    "data.dataset": "cifar10",
    "model.pretrained": True,
    "model.stem": "imagenet",
    "data.augment": False,
    "data.batch_size": 32,
    "optim.optimizer": "sgd",
    "optim.lr": 0.01,
    "optim.momentum": 0.9,
    "search.window": 5,
    "search.threshold": 0.1,
    "prune.kind": "unstructured",
    "retrain.target_acc": 0.9,
}
WORM_PROTOCOL: dict[str, Any] = {"worm.delta": 0.05, "worm.factor": 0.003, "worm.scope": "bn"}


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
    """The paper's figures for a trial config (flat, dotted keys), or None if its setting differs."""
    method = config.get("method")
    row = PAPER.get((config.get("model.arch"), method))  # type: ignore[arg-type]
    if row is None:
        return None
    wanted = PROTOCOL | (WORM_PROTOCOL if METHODS[method].truncates else {})
    return row if all(config.get(k) == v for k, v in wanted.items()) else None
