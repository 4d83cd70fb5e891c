"""The phases of a trial: what its next step is, from the search to the end.

A trial that searches goes search -> prune -> retrain -> done; a dense trial goes train -> done.
``prune`` is a step, not an epoch's phase: the prune event, then the first retraining epoch, whose
record says ``retrain``. The values are saved in checkpoints and group states, and an epoch's
phase names its section of per-epoch metrics in MLflow (``search/test_acc``), so they never change.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    SEARCH = "search"  # an Early-Bird search epoch
    PRUNE = "prune"  # the search has ended: prune, then retrain an epoch
    RETRAIN = "retrain"  # an epoch retraining the pruned network
    TRAIN = "train"  # an epoch of a dense trial, which neither searches nor prunes
    DONE = "done"
