"""A ``final`` rerun's networks in MLflow: each finished trial's network logged to its run, the best
one registered in the Model Registry.

Trials may run on other nodes, so a network is rebuilt on the driver from the trial's last
checkpoint (its engine state, which Ray keeps in the sweep's storage): a trial saves nothing
extra, and a rerun that ended before this existed still gives its networks. The network is
logged in MLflow's safe format, a ``torch.export`` graph (``serialization_format="pt2"``): loading
it runs no pickled code and needs only torch, and a structured-pruned network keeps its narrower
layers (the graph holds the weights' shapes). Its batch dimension is dynamic: the input example is
a batch of two (a batch of one would be exported as a fixed size) and the signature's batch
dimension is -1, which MLflow exports as ``Dim.AUTO``. A network that cannot be exported is said
so in one line and logged pickled instead (:func:`requirements`: the packages of its classes).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import torch
from mlflow.models import infer_signature
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from torch import nn

from worm_tune.checkpoints import load_state, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import load_network
from worm_tune.models.files import ModelFile
from worm_tune.ticket.phases import Phase
from worm_tune.tune.store import TAG_TRIAL, at_store, client
from worm_tune.tune.trainable import CHECKPOINT_FILE

#: A trial's network in :func:`~worm_tune.engine.load_model`'s format, in the trial's folder.
MODEL_FILE = "model.pt"
#: The logged model's name (its artifact folder under the run).
MODEL_NAME = "model"
#: The rerun run's tags a registered version carries: where its configuration came from.
VERSION_TAGS = ("source_sweep", "source_runs", "source_group", "final_rank")


def save_network(folder: Path, run: Any, bundles: dict[Any, DataBundle]) -> Path | None:
    """Write ``model.pt`` into the folder of the run's trial, from its last checkpoint; None if the
    trial left no finished one. ``bundles`` caches the data that gives the network's input shape."""
    checkpoints = sorted(folder.glob(f"*/*-{run.data.tags[TAG_TRIAL]}/checkpoint_*"))
    if not checkpoints:
        return None
    state = load_state(checkpoints[-1] / CHECKPOINT_FILE)
    if state["phase"] != Phase.DONE:
        return None
    cfg = TrialConfig.from_dict(state["config"])
    key = (cfg.data, cfg.model.checkpoint)
    if key not in bundles:
        bundles[key] = load_data(*key)
    path = checkpoints[-1].parent / MODEL_FILE
    write_atomic(path, lambda tmp: ModelFile.of(state, bundles[key]).save(tmp))
    return path


def log_network(uri: str, folder: Path, run: Any, bundles: dict[Any, DataBundle]) -> str | None:
    """The run's logged model's URI, logging the trial's network first if the run has none yet (a
    resumed rerun logs each once); None if the trial left no network. Exported (see the module's
    docstring), or pickled where export fails; the run's metrics at its last epoch (the summary) are
    linked to the model."""
    if run.outputs is not None and run.outputs.model_outputs:
        return f"models:/{run.outputs.model_outputs[-1].model_id}"
    path = save_network(folder, run, bundles)
    if path is None:
        return None
    model, example = load_network(path)
    return log_model(uri, model, example, run)


def log_model(uri: str, model: nn.Module, example: torch.Tensor, run: Any) -> str:
    """Log ``model`` to ``run`` (its URI back): exported, or pickled where export fails; ``example`` is
    a batch of one input."""
    model.eval()
    batch = torch.cat([example, example])  # two rows: a dynamic batch dimension (see the module's docstring)
    with torch.no_grad():
        signature = infer_signature(batch.numpy(), model(batch).numpy())  # its batch dimension: -1
    options = {
        "name": MODEL_NAME,
        "signature": signature,
        "input_example": batch.numpy(),
        "run_id": run.info.run_id,
        "step": int(run.data.metrics.get("epoch", 0)),
    }
    with tracking(uri):
        try:
            # A failed export's log lines and partial graph (torch prints it to stderr): the fallback's line says it.
            with _quiet("torch"), contextlib.redirect_stderr(io.StringIO()):
                info = mlflow.pytorch.log_model(
                    model, serialization_format="pt2", pip_requirements=requirements(model, pickled=False), **options
                )
        except Exception as exc:  # torch.export refuses some Python in a forward: said, then pickled
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"model of run {run.info.run_name}: torch.export failed ({type(exc).__name__}: {reason}); "
                "logged pickled instead (loading it runs its pickled code)",
                file=sys.stderr,
                flush=True,
            )
            with _quiet("mlflow.pytorch"):  # its pickle warning: the line above says it
                info = mlflow.pytorch.log_model(
                    model, serialization_format="pickle", pip_requirements=requirements(model, pickled=True), **options
                )
    return info.model_uri


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Logger ``name``'s warnings kept off the terminal (its errors still reach it)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def register(uri: str, name: str, model_uri: str, run: Any) -> Any:
    """Register the run's logged model as a new version of ``name`` tagged with :data:`VERSION_TAGS`,
    or return the version already registered from this run."""
    found = client(uri).search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    if found:
        return found[0]
    tags = {k: run.data.tags[k] for k in VERSION_TAGS if k in run.data.tags}
    with tracking(uri):
        return mlflow.register_model(model_uri, name, tags=tags)


def requirements(model: nn.Module, pickled: bool) -> list[str]:
    """The pip packages, at the versions here, a logged model loads with: torch for an exported graph;
    for a pickled network, the packages of its classes and cloudpickle, which reads them back.
    (MLflow's own inference loads each model in a subprocess: seconds a model.)"""
    packages = (
        {type(m).__module__.partition(".")[0] for m in model.modules()} | {"cloudpickle"} if pickled else {"torch"}
    )
    dists = importlib.metadata.packages_distributions()
    names = sorted({d for p in packages for d in dists.get(p, [p])})
    return [f"{d}=={v}" for d in names if (v := _version(d)) is not None]


def _version(dist: str) -> str | None:
    """The installed version of ``dist``; None for a module that is no installed package (a local script's)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent calls at ``uri``, from the store's folder (:func:`~worm_tune.tune.store.at_store`),
    then the process as it was (``mlflow.set_tracking_uri`` also sets, and on the way back unsets,
    ``MLFLOW_TRACKING_URI``)."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri), at_store(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
