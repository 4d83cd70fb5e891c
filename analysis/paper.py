"""The WORM paper's own figures (Vasudev 2024, arXiv 2406.11872; restated in docs/method.md), and
which of a sweep's settings ran the paper's protocol, so that its figures are printed beside ours.

The protocol is written once, :data:`CLAUSES`: each clause the fields it fixes, their values and the
report's words for them. A setting that differs in any of these fields is not the paper's, and its
row is not shown: a figure beside a different protocol reads as a replication it is not. The
clauses hold every field that shifts a compared figure, not only the paper's hyperparameters: its
numbers came from its reference code, whose search rules converge up to one epoch earlier than
docs/method.md's (``search.rules``, exactly the compared figure); it ran in fp32; its budgets were
long enough not to cut a search or a retraining short (:class:`AtLeast`), and it retrained until
the target, which its total time counts. WORM's knobs (:data:`~worm_tune.config.TRUNCATION_FIELDS`)
count only for the methods that truncate.

Its accuracies and epochs to 90% are training-set figures (the reference code's "test" loader
is CIFAR-10's training split), while ours are held out: :data:`CAVEAT` says so beside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
class AtLeast:
    """A budget: any value from ``least`` on leaves the paper's figures alone (its longest search took
    7 epochs and its slowest retraining 4 to reach 90%)."""

    least: int

    def __str__(self) -> str:
        return f"at least {self.least}"


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
        "p = {ratio}, window {window}, s = {threshold}, no L1, the {rules} code's search rules",
        {
            "search.ratio": 0.5,
            "search.window": 5,
            "search.threshold": 0.1,
            "search.l1": 0.0,
            "search.rules": "reference",
        },
    ),
    Clause("a search budget of {max_epochs} epochs", {"search.max_epochs": AtLeast(10)}),
    Clause("{precision} arithmetic", {"speed.precision": "fp32"}),
    Clause(
        "δ = {delta}, r = {factor} on BN gradients",
        {"worm.delta": 0.05, "worm.factor": 0.003, "worm.scope": "bn", "worm.apply": "grad"},
    ),
    Clause("unstructured pruning", {"prune.kind": "unstructured"}),
    Clause(
        "retraining the searched weights until {target_acc:.0%} (stopping there), a budget of {max_epochs} epochs",
        {
            "retrain.init": "searched",
            "retrain.target_acc": 0.9,
            "retrain.stop_at_target": True,
            "retrain.max_epochs": AtLeast(5),
        },
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
    return row if not mismatches(config) else None


def mismatches(config: Mapping[str, Any]) -> list[str]:
    """The protocol's fields a trial config differs in, as ``field=ours (paper: theirs)`` (WORM's knobs
    only for a method that truncates; a missing field differs)."""
    spec = METHODS.get(str(config.get("method")))
    truncates = spec is not None and spec.truncates
    wanted = {k: v for k, v in PROTOCOL.items() if truncates or k not in TRUNCATION_FIELDS}
    return [f"{k}={config.get(k)} (paper: {v})" for k, v in wanted.items() if not _same(config.get(k), v)]


def closest(configs: Sequence[Mapping[str, Any]]) -> str:
    """Why no config shows the paper's row: the fewest differing fields any config of a model and
    method the paper reports has, in words; "" when one matches or none is of such a model and method."""
    differences = [mismatches(c) for c in configs if (c.get("model.arch"), c.get("method")) in PAPER]
    if not differences or not all(differences):
        return ""
    return "; ".join(min(differences, key=len))


def _same(got: Any, want: Any) -> bool:
    """``got == want``; numbers within float rounding, since a value may have come through a
    string, a sum or a CSV (``0.1 + 0.2`` is ``0.3`` here); a budget at least its bound."""
    if isinstance(want, AtLeast):
        try:
            return float(got) >= want.least
        except (TypeError, ValueError):
            return False
    if isinstance(want, bool | str):
        return bool(got == want)
    try:
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False
