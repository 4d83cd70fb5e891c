"""The config's keys and what each declares, read off :class:`~.schema.TrialConfig`: nothing here
is written by hand, so a field added, renamed or given another role changes every list at once."""

from __future__ import annotations

from worm_tune.config import tree
from worm_tune.config.fields import Role
from worm_tune.config.schema import TrialConfig
from worm_tune.config.specs import Choice, Spec


def field_types() -> dict[str, type]:
    """Every config key and its Python type."""
    return tree.types(TrialConfig)


def field_specs() -> dict[str, Spec]:
    """Every config key and its :class:`~.specs.Spec`, in the order :meth:`TrialConfig.validate` checks them."""
    return tree.specs(TrialConfig)


#: The allowed values of every choice field, read off the specs.
CHOICES: dict[str, tuple[str, ...]] = {k: s.options for k, s in field_specs().items() if isinstance(s, Choice)}

#: Fields that say where a trial runs, not what it computes: left out of the hash and MLflow's params.
RUNTIME_FIELDS = frozenset(tree.keys_with(TrialConfig, Role.RUNTIME))
#: Fields that say how the arithmetic is fed and done (the speed section).
EXECUTION_FIELDS = tree.keys_with(TrialConfig, Role.EXECUTION)
#: Fields a searching trial's training reads only through its decisions: which mask its window
#: holds and when its search ends (ratio, window, threshold, rules), and how much it truncates
#: (method, delta, factor, scope, apply).
SEARCH_DECISION_FIELDS = tree.keys_with(TrialConfig, Role.SEARCH_DECISION)
#: Fields nothing reads before the search ends: the prune event and the retraining. Trials that
#: prune the same mask at the same epoch and agree on these retrain the same network.
AFTER_SEARCH_FIELDS = tree.keys_with(TrialConfig, Role.AFTER_SEARCH)
#: Fields a trial's training reads directly: every field but the search-decision and after-search
#: ones. Trials that agree on these train the same network until a decision tells them apart
#: (:mod:`worm_tune.group`).
TRAINING_FIELDS = frozenset(field_types()) - {*SEARCH_DECISION_FIELDS, *AFTER_SEARCH_FIELDS}
#: Fields only CNNs use: a transformer trial must leave them at their defaults.
CNN_ONLY_FIELDS = tree.keys_with(TrialConfig, Role.CNN_ONLY)
#: WORM's knobs: fields only the methods that truncate gradients read.
TRUNCATION_FIELDS = tree.keys_with(TrialConfig, Role.TRUNCATION)
#: Fields the two trials of a pair may differ in: the method and its knobs, and where and how the
#: arithmetic runs (a machine's choice, not the experiment's). A pair shares every other field, the
#: seed (so the initial weights and the data order) included: the sweep plans pairs by it
#: (:func:`worm_tune.tune.plan.pair_key`) and the analysis pairs trials by it.
PAIR_FREE_FIELDS = frozenset({"method", *TRUNCATION_FIELDS, *RUNTIME_FIELDS, *EXECUTION_FIELDS})
