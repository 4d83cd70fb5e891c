"""The WORM paper's own figures (Vasudev 2024, arXiv 2406.11872; restated in docs/method.md), and
which of a sweep's settings ran the paper's protocol, so that its figures are printed beside ours.

The protocol is written once, :data:`CLAUSES`: each clause the fields it fixes, their values and the
report's words for them. A setting that differs in any of these fields is not the paper's, and its
row is not shown: a figure beside a different protocol reads as a replication it is not. WORM's
knobs (:data:`~worm_tune.config.TRUNCATION_FIELDS`) count only for the methods that truncate.

Its accuracies and epochs to 90% are training-set figures (the reference code's "test" loader
is CIFAR-10's training split), while ours are held out: :data:`CAVEAT` says so beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worm_tune.config import TRUNCATION_FIELDS
from worm_tune.ticket.methods import METHODS

SOURCE = "paper (Vasudev 2024, one H100, 3-7 seeds)"
CAVEAT = (
    "The paper's accuracies and epochs to 90% are training-set figures: the reference code's \"test\" loader "
    "is built from CIFAR-10's training split, while ours are measured on the held-out test split, so the two "
    "are not directly comparable."
)


@dataclass(frozen=True)
class Clause:
    """Fields the paper fixes, with their values, and the report's words for them: ``{lr}`` in the
    words is the value of ``optim.lr`` (each field named by its last part)."""

    words: str
    values: Mapping[str, Any]

    def text(self) -> str:
        return self.words.format(**{key.rpartition(".")[2]: value for key, value in self.values.items()})


#: The paper's protocol: every field it fixes, with its value and its words.
CLAUSES = (
    Clause(
        "torchvision's pretrained ResNet-18 or VGG-11 on the whole of CIFAR-10 without augmentation",
        {
            "model.pretrained": True,
            "model.stem": "imagenet",
            "data.dataset": "cifar10",
            "data.train_subset": 0,
            "data.augment": False,
        },
    ),
    Clause("batch {batch_size}", {"data.batch_size": 32}),
    Clause(
        "SGD lr {lr} momentum {momentum} without decay or schedule",
        {
            "optim.optimizer": "sgd",
            "optim.lr": 0.01,
            "optim.momentum": 0.9,
            "optim.weight_decay": 0.0,
            "optim.scheduler": "constant",
        },
    ),
    Clause(
        "p = {ratio}, window {window}, s = {threshold}, no L1",
        {"search.ratio": 0.5, "search.window": 5, "search.threshold": 0.1, "search.l1": 0.0},
    ),
    Clause(
        "δ = {delta}, r = {factor} on BN gradients",
        {"worm.delta": 0.05, "worm.factor": 0.003, "worm.scope": "bn", "worm.apply": "grad"},
    ),
    Clause("unstructured pruning", {"prune.kind": "unstructured"}),
    Clause(
        "retraining the searched weights to {target_acc:.0%}",
        {"retrain.init": "searched", "retrain.target_acc": 0.9},
    ),
)
#: Every field the paper fixes, with its value: a setting must match all of them for the paper's row
#: (WORM's knobs only for a method that truncates).
PROTOCOL: dict[str, Any] = {key: value for clause in CLAUSES for key, value in clause.values.items()}
#: The protocol in the report's words.
PROTOCOL_TEXT = ", ".join(clause.text() for clause in CLAUSES)


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
    truncates = METHODS[str(method)].truncates
    wanted = {k: v for k, v in PROTOCOL.items() if truncates or k not in TRUNCATION_FIELDS}
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
