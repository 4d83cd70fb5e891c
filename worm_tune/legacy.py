"""Reading work saved by earlier versions: every rule that exists only for older saved work.

Each part says what it reads and since when the current form exists. Drop a part when no saved
work of that form is left. The readers that apply a part stay beside the code they serve (the
metric renames, for instance, in :func:`worm_tune.metrics.current`), as does the fallback to MLflow
keys logged before sections (:func:`worm_tune.metrics.logged_summary`).
"""

from __future__ import annotations

# -- config hashes ----------------------------------------------------------------------------
# Reads: the config hash in every saved name (trial names, run folders, MLflow runs' ``config_hash``).
# Current form: a field enters the hash only away from its default (worm_tune.config.hashing), except
# these, which every config hashed before that rule included whatever their value. Frozen: adding a
# key would rename every run that left it at its default, removing one every run that did not.

#: The config keys always hashed, at their defaults too (used by :mod:`worm_tune.config.hashing`).
ALWAYS_HASHED = frozenset(
    {
        "method",
        "seed",
        "data.dataset",
        "data.augment",
        "data.batch_size",
        "data.test_batch_size",
        "data.num_workers",
        "data.train_subset",
        "model.arch",
        "model.stem",
        "model.pretrained",
        "optim.optimizer",
        "optim.lr",
        "optim.momentum",
        "optim.weight_decay",
        "optim.scheduler",
        "search.ratio",
        "search.window",
        "search.threshold",
        "search.max_epochs",
        "search.l1",
        "worm.delta",
        "worm.factor",
        "worm.scope",
        "prune.kind",
        "retrain.max_epochs",
        "retrain.target_acc",
        "retrain.init",
        "retrain.stop_at_target",
        "speed.loader",
        "speed.precision",
        "speed.channels_last",
        "speed.compile",
    }
)


# -- sweeps of one Ray experiment per group of methods --------------------------------------------
# Reads: a sweep folder holding ``earlybird/`` and ``worm/`` instead of ``trials/`` (worm_tune.tune.plan.EXPERIMENT),
# resumed by the Ray classes of worm_tune.tune.legacy_trainables. Current form: one Ray experiment holds every
# trial of a sweep. Such a sweep ran one experiment per group of methods, in the order its trials first named
# them: EarlyBird's (the dense baseline with it), then WORM's (its ablations with it). Frozen: no later method
# ran so.

#: The Ray experiment (and folder) of each method in a sweep saved so.
SAVED_EXPERIMENT_OF = {
    "earlybird": "earlybird",
    "worm": "worm",
    "gradclip": "worm",
    "greedy": "worm",
    "dense": "earlybird",
}


# -- names in a saved Tuner ---------------------------------------------------------------------
# Reads: ``tuner.pkl`` and the searcher's state in a sweep's Ray experiment folder, which name the classes and
# functions they hold (the callbacks, the searcher, the trial-name functions) by module and name, as they were
# when the sweep started. Current form: where each one is now. Used by worm_tune.tune.resume while Ray
# unpickles them.

#: ``module:name`` when a sweep was saved -> ``module:name`` now.
PICKLED_NAMES = {
    # before the package was split into layers (commit 5418119: tests/data/legacy)
    "worm_tune.tracking:MlflowCallback": "worm_tune.tune.callback:MlflowCallback",
    # before the runner was split into rooms (issue 23)
    "worm_tune.tune.runner:trial_name": "worm_tune.tune.experiment:trial_name",
    "worm_tune.tune.runner:trial_dirname": "worm_tune.tune.experiment:trial_dirname",
}


# -- engine states of version 1 -----------------------------------------------------------------
# Reads: a trial's engine state (``engine.pt`` in a Ray checkpoint or a run folder, a group's state in a
# sweep's ``groups/``) written at version 1, where the prune event still due after the search was a flag,
# ``pending_prune``, beside the phase it leads into ("retrain"). Current form (version 2, issue 23): the
# prune event is the phase "prune" (worm_tune.engine.state).


def engine_state_v1(state: dict) -> dict:
    """A version-1 engine state in version 2's form."""
    current = {key: value for key, value in state.items() if key != "pending_prune"}
    if state["pending_prune"]:
        current["phase"] = "prune"
    return current | {"version": 2}


# -- model files without some of their fields -------------------------------------------------------
# Reads: a trial's ``model.pt`` (worm_tune.models.files) written before it recorded the size of the
# input's vocabulary (added with BERT; an image model's is 0) or the input's dtype (issue 23; BERT was
# then the one architecture fed token ids, every other took floats).


def model_file_fields(saved: dict) -> dict:
    """A saved model file's fields, with those an older file lacks filled in."""
    arch = saved["config"]["model"]["arch"]
    return {"vocab_size": 0, "input_dtype": "int64" if arch == "bert" else "float32"} | saved


# -- per-epoch metrics under their former names ----------------------------------------------------
# Reads: engine records (``history`` in an engine state), Ray results and MLflow runs written before
# these metrics were renamed; worm_tune.metrics.current and the analysis's readers fall back to them.

#: Former name -> current name.
RENAMED_METRICS = {
    "mask_dist_max": "d_max",
    "mask_dist_avg": "d_avg",
    "truncated_channels": "truncated_units",
    "converged": "mask_converged",
}
