"""One trial, search -> prune -> retrain, one epoch per :meth:`TrialEngine.step`."""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch

from worm_tune import metrics
from worm_tune.config import TRANSFORMERS, TrialConfig
from worm_tune.data import DataBundle, fingerprint, load_data
from worm_tune.engine.epoch import EpochLoop, Pass, pass_hooks
from worm_tune.engine.optimizer import build_optimizer
from worm_tune.engine.prune import Pruning, reinitialize
from worm_tune.engine.results import close_record, epoch_record, fresh_results, record_training, summary_values
from worm_tune.engine.rng import RngStreams
from worm_tune.engine.setup import loaders, resolve_device, use_threads
from worm_tune.engine.state import STATE_VERSION, current_state
from worm_tune.models import bn_layers, build_model
from worm_tune.models.files import ModelFile
from worm_tune.speed import resolve_speed
from worm_tune.ticket.accounting import count_params, flops_per_image
from worm_tune.ticket.control import SearchControl, next_training
from worm_tune.ticket.phases import Phase
from worm_tune.ticket.sites import representative_sites
from worm_tune.ticket.truncation import GradientTruncator
from worm_tune.tickets import Ticket


class TrialEngine:
    """Runs one trial. Build it, call ``step()`` until ``done``, then read ``summary()``."""

    def __init__(self, cfg: TrialConfig, data: DataBundle | None = None) -> None:
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        self.threads = use_threads(cfg.threads)
        self.data = data if data is not None else load_data(cfg.data, cfg.model.checkpoint)
        self.data_digest = fingerprint(self.data)
        self.example_input = torch.zeros(1, *self.data.input_shape, dtype=self.data.input_dtype, device=self.device)
        self.rng = RngStreams(cfg.seed, self.device)
        with self.rng.active():  # model init draws from the seeded stream only: one seed, one initial network
            model = build_model(cfg.model, self.data.num_classes, self.data.input_shape, self.data.vocab_size)
            self.model = model.to(self.device)
        speed = resolve_speed(cfg.speed, self.device, images=self.data.input_dtype.is_floating_point)
        train, test = loaders(self.data, cfg.data, speed, self.device, self.rng.data)

        self.sites = representative_sites(self.model, cfg)
        self.mask_layers = self.sites.layer_sizes  # the dense network's: a structured prune narrows the layers
        self.layers = [bn for _, bn in bn_layers(self.model)]  # for the optional L1 on gamma
        self.control = SearchControl(cfg, self.sites.scores())
        self.truncator = GradientTruncator(self.sites, cfg.worm.apply)
        self.truncator.set(*self.control.first_truncation(self.sites.scores()))

        self.phase = self.control.method.first_phase
        self.epoch = 0  # epochs completed in the current phase
        self.global_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.pruning = Pruning(self.example_input, transformer=cfg.model.arch in TRANSFORMERS)
        self._flops_now = self._flops()
        self.dense_size = {"params_dense": count_params(self.model), "flops_dense": self._flops_now}
        self.results = fresh_results(self.model)
        self.optimizer, self.scheduler = build_optimizer(cfg.optim, self.model, self._phase_epochs())
        self.loop = EpochLoop(self.model, speed, self.device, train, test)

    @property
    def done(self) -> bool:
        return self.phase == Phase.DONE

    def next_training(self) -> Hashable:
        """What the next epoch trains with besides the training fields (see :func:`next_training`)."""
        return next_training(self.cfg, self.phase, (self.truncator.keep, self.truncator.factor))

    def step(self) -> dict[str, Any]:
        """Run one epoch (a search epoch, or the prune event plus a retrain epoch); return its record: where
        the trial is, every per-epoch metric, the running totals and, once, the accuracy right after pruning."""
        if self.done:
            raise RuntimeError("the trial is done; no more steps")
        start = time.perf_counter()
        if self.results["started_at"] is None:
            self.results["started_at"] = time.time()
        pruning = self.phase == Phase.PRUNE
        with self.rng.active():
            if pruning:
                self._prune()
            record = self._search_epoch() if self.phase == Phase.SEARCH else self._training_epoch()
        close_record(record, self.results, time.perf_counter() - start, pruning)
        self.history.append(record)
        return record

    def run(self) -> dict[str, Any]:
        """Step to the end; return the summary."""
        while not self.done:
            self.step()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The trial's result metrics (complete once ``done``; partial before)."""
        sparsity = self.pruning.sparsity(self.model)
        values = summary_values(
            self.results, self.history, epochs=self.global_epoch, sparsity=sparsity, **self.dense_size
        )
        return {
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "config_hash": self.cfg.hash(),
            "unit": self.sites.unit,  # what truncated_units counts: channel, weight or head
            **values,
            "done": self.done,
            "init_weights": self.results["init_weights"],
            "data_digest": self.data_digest,
            "threads": self.threads,
        }

    def ticket(self) -> Ticket | None:
        """The mask this trial pruned with (None before the prune, or for a dense trial)."""
        return self.pruning.ticket(self.sites.unit, self.results["search_epochs"], self.mask_layers)

    def _search_epoch(self) -> dict[str, Any]:
        """Algorithm 1: train an epoch (truncating as decided after the last one), draw the mask, decide."""
        r, truncated = self.truncator.factor, self.truncator.num_truncated
        trained = self._train(searching=True)
        self.results["search_flops"] = self.results["train_flops"]
        step = self.control.observe(self.epoch, self.sites.scores())
        if step.truncation is not None:
            self.truncator.set(*step.truncation)
        test_acc, obs = self.loop.evaluate(), step.obs
        measured = {"d_max": obs.d_max, "d_avg": obs.d_avg, "r": r, "truncated_units": truncated}
        record = self._record(trained, test_acc, **measured, mask_converged=obs.converged)
        self.phase = self.control.conclude(step, self.epoch, test_acc, self.results["diverged"], self.results)
        if self.phase == Phase.PRUNE:
            self.epoch = 0  # retraining counts its own epochs
        return record

    def _prune(self) -> None:
        """The prune event: prune the searched network, measure it, and start retraining it."""
        cfg, newest = self.cfg, self.control.detector.newest
        self.truncator.set(None, 1.0)
        flops, params = self.pruning.prune(self.model, cfg, newest, self.sites, self.data)
        self.results.update(flops_pruned=flops, params_pruned=params)
        self.loop.prepare()  # new layers or weights: lay out (and compile) again
        self._flops_now = self._flops()
        self.results["post_prune_acc"] = self.loop.evaluate()
        if cfg.retrain.init == "reinit":
            reinitialize(self.model)
            if self.pruning.enforcer is not None:
                self.pruning.enforcer.mask_weights()
        self.phase = Phase.RETRAIN
        self.optimizer, self.scheduler = build_optimizer(cfg.optim, self.model, cfg.retrain.max_epochs)

    def _training_epoch(self) -> dict[str, Any]:
        """An epoch retraining the pruned network, or training a dense trial's."""
        trained, test_acc = self._train(searching=False), self.loop.evaluate()
        record = self._record(trained, test_acc, d_max=None, d_avg=None, r=1.0, truncated_units=0, mask_converged=None)
        if record_training(self.results, self.phase, self.epoch, test_acc, self.cfg.retrain):
            self.phase = Phase.DONE
        return record

    def _train(self, searching: bool) -> Pass:
        """An epoch's training pass with the phase's hooks; counts its FLOPs and tells a diverged loss."""
        self.epoch += 1
        self.global_epoch += 1
        hooks = pass_hooks(searching, self.truncator, (self.layers, self.cfg.search.l1), self.pruning.enforcer)
        trained = self.loop.train(self.optimizer, self.scheduler, hooks)
        self.results["train_flops"] += 3 * self._flops_now * trained.seen  # forward + backward ~= 3x forward
        if not math.isfinite(trained.loss):
            self.results["diverged"] = True
        return trained

    def _record(self, trained: Pass, test_acc: float, **measured: Any) -> dict[str, Any]:
        values = {"train_loss": trained.loss, "train_acc": trained.accuracy, "test_acc": test_acc, **measured}
        return epoch_record(self.phase, self.epoch, self.global_epoch, values)

    def _flops(self) -> int:
        return flops_per_image(self.model, self.data.input_shape, self.data.input_dtype)

    def _phase_epochs(self) -> int:
        return self.cfg.search.max_epochs if self.phase == Phase.SEARCH else self.cfg.retrain.max_epochs

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly (:mod:`worm_tune.engine.state`)."""
        return {
            "version": STATE_VERSION,
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.hash(),
            "phase": self.phase.value,
            "epoch": self.epoch,
            "global_epoch": self.global_epoch,
            "history": [dict(m) for m in self.history],
            "results": dict(self.results),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.control.state_dict(),  # the mask window ("detector") and the truncation "schedule"
            "truncation": self.truncator.state_dict(),
            **self.pruning.state_dict(),
            "flops_now": self._flops_now,
            "rng": self.rng.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the engine must have been built from the same config."""
        state = current_state(state, self.cfg)
        self.pruning.restore(self.model, state)  # first, so that the saved weights fit
        if self.pruning.keep is not None:
            self.loop.prepare()  # new layers: lay out (and compile) again
        self.model.load_state_dict(state["model"])
        self.phase, self.epoch, self.global_epoch = Phase(state["phase"]), state["epoch"], state["global_epoch"]
        self.history = [metrics.current(m) for m in state["history"]]  # a checkpoint may predate a rename
        self.results = self.results | state["results"]  # a checkpoint may predate a metric: keep its fresh value
        self.optimizer, self.scheduler = build_optimizer(self.cfg.optim, self.model, self._phase_epochs())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.control.load_state_dict(state)
        self.truncator.load_state_dict(state["truncation"])
        self._flops_now = int(state["flops_now"])
        self.rng.load_state_dict(state["rng"])

    def save_model(self, path: str | Path) -> None:
        """Save the final network as a model file (:func:`worm_tune.engine.load_network` rebuilds it)."""
        ModelFile.of(self.state_dict(), self.data).save(path)
