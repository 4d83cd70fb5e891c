"""The trial engine: one trial, search -> prune -> retrain, in plain PyTorch, one epoch per step.

Ray Trainables and the CLI drive a :class:`TrialEngine` through ``step()``, ``done``, ``summary()`` and
``state_dict()`` / ``load_state_dict()``; a state taken between steps continues bit-exactly. The same
config and seed give the same numbers. Its rooms, read top to bottom:

- :mod:`.trial`: :class:`TrialEngine`, the trial's phases and the order of what happens in an epoch.
- :mod:`.epoch`: one epoch's loop, a training pass with its hooks (L1, WORM truncation, sparsity) and the test pass.
- :mod:`.prune`: the prune event, and what it leaves (the structured mask or the unstructured masks).
- :mod:`.results`: each epoch's record and the summary, as :mod:`worm_tune.metrics` declares them.
- :mod:`.state`: the state format, and the state a fork (computation sharing) starts from.
- :mod:`.optimizer`: the optimizer and learning-rate scheduler of a phase.
- :mod:`.rng`: the trial's own random streams; :mod:`.setup`: its device, threads and data loaders.
- :mod:`.files`: a finished trial's network rebuilt from its model file.
"""

from worm_tune.engine.files import load_model, load_network
from worm_tune.engine.trial import TrialEngine

__all__ = ["TrialEngine", "load_model", "load_network"]
