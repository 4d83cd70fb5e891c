"""The Ray experiments of sweeps saved with one experiment per group of methods, kept so those resume.

Such a sweep (:data:`worm_tune.legacy.SAVED_EXPERIMENT_OF` says which methods each experiment ran)
has a folder per experiment instead of :data:`~worm_tune.tune.plan.EXPERIMENT`'s, and Ray restores
an experiment only with a Trainable of the class name it saved: :class:`EarlyBirdTrainable` and
:class:`WormTrainable` are those classes, :class:`~worm_tune.tune.trial_trainable.TicketTrainable`
with the methods of their experiment.
"""

from __future__ import annotations

from pathlib import Path

from worm_tune.legacy import SAVED_EXPERIMENT_OF
from worm_tune.tune.plan import EXPERIMENT, Plan
from worm_tune.tune.trial_trainable import TicketTrainable


def _methods_of(experiment: str) -> tuple[str, ...]:
    return tuple(method for method, saved in SAVED_EXPERIMENT_OF.items() if saved == experiment)


class EarlyBirdTrainable(TicketTrainable):
    """EarlyBird ticket search (r = 1), and the dense baseline without a search."""

    METHODS = _methods_of("earlybird")


class WormTrainable(TicketTrainable):
    """WORM and its ablations."""

    METHODS = _methods_of("worm")


#: The Trainable class of each Ray experiment: the sweep's one, and those of sweeps saved before it.
TRAINABLES: dict[str, type[TicketTrainable]] = {
    EXPERIMENT: TicketTrainable,
    "earlybird": EarlyBirdTrainable,
    "worm": WormTrainable,
}


def saved_experiments(folder: Path, plan: Plan) -> list[str]:
    """The Ray experiments of a sweep saved with one per group of methods, in the order it ran them;
    none for any other sweep."""
    if not any((folder / name).is_dir() for name in TRAINABLES if name != EXPERIMENT):
        return []
    methods = [plan.optuna.method] if plan.optuna is not None else [cfg.method for cfg in plan.configs()]
    return list(dict.fromkeys(SAVED_EXPERIMENT_OF[method] for method in methods))


def runs_in(experiment: str, method: str) -> bool:
    """Whether the Ray experiment ``experiment`` runs ``method`` (:data:`EXPERIMENT` runs every one)."""
    return experiment == EXPERIMENT or SAVED_EXPERIMENT_OF[method] == experiment
