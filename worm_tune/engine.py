"""One trial, search -> prune -> retrain, one epoch per :meth:`TrialEngine.step`.

The engine is plain PyTorch: Ray Trainables and the CLI drive it through ``step()``,
``done``, ``summary()`` and ``state_dict()`` / ``load_state_dict()``. A state dict taken
between steps holds everything needed to continue bit-exactly (weights, optimizer,
scheduler, mask window, truncation state, RNG streams, phase, history) and loads with
``torch.load(weights_only=True)``.

The engine owns its random streams: every step runs with the global torch RNG swapped to
the engine's own state, so two engines in one process do not disturb each other, and the
data order comes from a separate generator. The same config and seed give the same numbers;
EarlyBird and WORM trials of one seed start from the same weights and see the same batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worm_tune import metrics
from worm_tune.config import TRANSFORMERS, ConfigError, TrialConfig
from worm_tune.data import DataBundle, fingerprint, load_data, make_loaders, split_tensors
from worm_tune.data.device import DeviceLoader
from worm_tune.models import bn_layers, build_model
from worm_tune.speed import resolve_speed
from worm_tune.ticket.accounting import count_params, effective_flops_per_image, flops_per_image, nonzero_params
from worm_tune.ticket.attention import heads_per_layer, keep_one_head_per_layer
from worm_tune.ticket.control import SearchControl, next_training
from worm_tune.ticket.detector import EarlyBirdDetector
from worm_tune.ticket.methods import FROM_START, METHODS
from worm_tune.ticket.pruning import SparsityEnforcer, remove_structure, sparsity, unstructured_masks
from worm_tune.ticket.sites import representative_sites
from worm_tune.ticket.truncation import GradientTruncator, TruncationSchedule, add_l1_on_gamma
from worm_tune.tickets import KEEP, Ticket

STATE_VERSION = 1

#: Metrics that measure wall time (the schema's :data:`~worm_tune.metrics.TIMING`, under its older name).
TIMING_KEYS = metrics.TIMING

SEARCH, RETRAIN, TRAIN, DONE = "search", "retrain", "train", "done"
#: The results a trial's own search decisions set (the rest follow from the network it trained).
SEARCH_RESULTS = ("search_epochs", "converged", "trigger_epoch", "pre_prune_acc")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a config error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid here: no CUDA device is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TrialEngine:
    """Runs one trial. Build it, call ``step()`` until ``done``, then read ``summary()``."""

    def __init__(self, cfg: TrialConfig, data: DataBundle | None = None) -> None:
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.threads = torch.get_num_threads()
        self.data = data if data is not None else load_data(cfg.data, cfg.model.checkpoint)
        self.data_digest = fingerprint(self.data)
        self.example_input = torch.zeros(1, *self.data.input_shape, dtype=self.data.input_dtype, device=self.device)

        # Model init draws from the seeded global RNG only, so one seed = one set of initial weights.
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.manual_seed(cfg.seed)
            self.model = build_model(cfg.model, self.data.num_classes, self.data.input_shape, self.data.vocab_size).to(
                self.device
            )
            self._rng_cpu = torch.get_rng_state()
            self._rng_cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.speed = resolve_speed(cfg.speed, self.device, images=self.data.input_dtype.is_floating_point)
        self.train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
        self.test_loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
        if self.speed.device_loader:
            augment = self.data.augment if cfg.data.augment else None
            self.train_loader = DeviceLoader(
                *split_tensors(self.data.train), cfg.data.batch_size, self.device, self.data_gen, augment
            )
            self.test_loader = DeviceLoader(*split_tensors(self.data.test), cfg.data.test_batch_size, self.device)
        else:
            self.train_loader, self.test_loader = make_loaders(self.data, cfg.data, self.data_gen)

        self.transformer = cfg.model.arch in TRANSFORMERS
        self.sites = representative_sites(self.model, cfg)
        self.layers = [bn for _, bn in bn_layers(self.model)]  # for the optional L1 on gamma
        self.control = SearchControl(cfg, self.sites.scores())
        self.truncator = GradientTruncator(self.sites, cfg.worm.apply)
        self.method = METHODS[cfg.method]
        if self.method.schedule == FROM_START:
            # Truncation "from the first epoch" needs a mask before any epoch: the initial weights' mask.
            self.truncator.set(self.control.mask(self.sites.scores()), self.schedule.factor)

        self.phase = SEARCH if self.method.searches else TRAIN
        self.epoch = 0  # epochs completed in the current phase
        self.global_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.enforcer: SparsityEnforcer | None = None
        self.prune_masks: dict[str, torch.Tensor] | None = None
        self.prune_keep: torch.Tensor | None = None
        self.pending_prune = False
        self.flops_dense = self._flops()
        self.params_dense = count_params(self.model)
        self._flops_now = self.flops_dense
        self.results: dict[str, Any] = {
            "search_epochs": None,
            "converged": False,
            "trigger_epoch": None,
            "pre_prune_acc": None,
            "post_prune_acc": None,
            "acc_after_1_retrain_epoch": None,
            "epochs_to_target": None,
            "diverged": False,
            "train_flops": 0,
            "search_flops": 0,
            "search_time": 0.0,
            "total_time": 0.0,
            "started_at": None,
            "ended_at": None,
            "flops_pruned": None,
            "params_pruned": None,
            "init_weights": weights_fingerprint(self.model),
        }
        self._new_optimizer(cfg.search.max_epochs if self.phase == SEARCH else cfg.retrain.max_epochs)
        self.forward = self.speed.prepare(self.model)

    # -- public API --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase == DONE

    @property
    def detector(self) -> EarlyBirdDetector:
        return self.control.detector

    @property
    def schedule(self) -> TruncationSchedule:
        return self.control.schedule

    @property
    def next_step(self) -> str:
        """What the next ``step()`` is: a search epoch, the prune and a retrain epoch, a (re)training epoch, or none."""
        return "prune" if self.pending_prune else self.phase

    def next_training(self) -> Hashable:
        """What the next epoch trains with besides the training fields (see :func:`next_training`)."""
        return next_training(self.cfg, self.next_step, self.truncator.keep, self.truncator.factor)

    def step(self) -> dict[str, Any]:
        """Run one epoch (a search epoch, or the prune event plus a retrain epoch); return its record: where
        the trial is, every per-epoch metric, the running totals and, once, the accuracy right after pruning."""
        if self.done:
            raise RuntimeError("the trial is done; no more steps")
        start = time.perf_counter()
        if self.results["started_at"] is None:
            self.results["started_at"] = time.time()
        pruning = self.pending_prune
        with self._own_rng():
            if self.phase == SEARCH:
                record = self._search_epoch()
            else:
                if pruning:
                    self._prune()
                record = self._retrain_epoch()
        record["epoch_time"] = time.perf_counter() - start
        self.results["ended_at"] = time.time()
        self.results["total_time"] += record["epoch_time"]
        if record["phase"] == SEARCH:
            self.results["search_time"] += record["epoch_time"]
        record.update({name: self.results[name] for name in metrics.TOTALS})
        if pruning:  # the summary's value, in the record of the epoch that measured it
            record["post_prune_acc"] = self.results["post_prune_acc"]
        self.history.append(record)
        return record

    def run(self) -> dict[str, Any]:
        """Step to the end; return the summary."""
        while not self.done:
            self.step()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The trial's result metrics (complete once ``done``; partial before)."""
        r = self.results
        retrain = [m for m in self.history if m["phase"] in (RETRAIN, TRAIN)]
        accs = [m["test_acc"] for m in retrain]
        pruned = self.prune_masks is not None or self.prune_keep is not None
        values = {
            **r,  # what the trial recorded as it ran; the rest is read off its state now
            "retrain_epochs": len(retrain),
            "final_acc": accs[-1] if accs else None,
            "best_acc": max(accs) if accs else None,
            "sparsity": sparsity(self.model, self.prune_masks) if self.prune_masks is not None else None,
            "params_dense": self.params_dense,
            "params_pruned": r["params_pruned"] if pruned else None,
            "flops_dense": self.flops_dense,
            "flops_pruned": r["flops_pruned"] if pruned else None,
            "epochs": self.global_epoch,
        }
        return {
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "config_hash": self.cfg.hash(),
            "unit": self.sites.unit,  # what truncated_units counts: channel, weight or head
            **{name: values[name] for name in metrics.SUMMARY},
            "done": self.done,
            "init_weights": r["init_weights"],
            "data_digest": self.data_digest,
            "threads": self.threads,
        }

    def ticket(self) -> Ticket | None:
        """The mask this trial pruned with (None before the prune, or for a dense trial)."""
        if self.prune_keep is not None:
            masks, unit = {KEEP: self.prune_keep.cpu().numpy()}, self.sites.unit
        elif self.prune_masks is not None:
            masks, unit = {name: m.cpu().numpy() for name, m in self.prune_masks.items()}, "weight"
        else:
            return None
        return Ticket(masks, unit, self.results["search_epochs"])

    # -- phases ------------------------------------------------------------------------------

    def _search_epoch(self) -> dict[str, Any]:
        self.epoch += 1
        self.global_epoch += 1
        factor_used, truncated = self.truncator.factor, self.truncator.num_truncated
        loss, acc = self._train_epoch(search=True)
        self.results["search_flops"] = self.results["train_flops"]
        step = self.control.observe(self.epoch, self.sites.scores())  # Algorithm 1: train, draw mask, distance, test
        obs = step.obs
        self.results["trigger_epoch"] = self.schedule.trigger_epoch
        if self.method.truncates:
            self.truncator.set(step.keep, step.factor)  # the newest mask, refreshed every epoch
        test_acc = self._evaluate()
        record = self._record(
            train_loss=loss,
            train_acc=acc,
            test_acc=test_acc,
            d_max=obs.d_max,
            d_avg=obs.d_avg,
            r=factor_used,
            truncated_units=truncated,
            mask_converged=obs.converged,
        )
        if self.results["diverged"]:
            self.phase = DONE
        elif step.ends:
            self.results.update(search_epochs=self.epoch, converged=obs.converged, pre_prune_acc=test_acc)
            self.phase, self.epoch, self.pending_prune = RETRAIN, 0, True
        return record

    def _prune(self) -> None:
        """The prune event: prune the searched network, measure it, reset the optimizer."""
        cfg = self.cfg
        self.truncator.set(None, 1.0)
        if cfg.prune.kind == "structured":
            keep = self.detector.newest
            assert keep is not None, "a search epoch always pushes a mask"
            if self.transformer:  # a layer keeps its best head: removing all would cut the network
                keep = keep_one_head_per_layer(keep, self.sites.scores().cpu(), heads_per_layer(self.sites.layers))
            self.prune_keep = keep.clone()
            remove_structure(self.model, self.prune_keep, self.example_input, self.transformer)
            self.results["flops_pruned"] = self._flops()
            self.results["params_pruned"] = count_params(self.model)
        else:
            self.prune_masks = unstructured_masks(self.model, cfg.search.ratio, cfg.search.rules)
            self.enforcer = SparsityEnforcer(self.model, self.prune_masks)
            self.enforcer.mask_weights()
            self.results["flops_pruned"] = effective_flops_per_image(
                self.model, self.data.input_shape, self.prune_masks, self.data.input_dtype
            )
            self.results["params_pruned"] = nonzero_params(self.model)
        self.forward = self.speed.prepare(self.model)  # new layers or weights: lay out (and compile) again
        self._flops_now = self._flops()
        self.results["post_prune_acc"] = self._evaluate()
        if cfg.retrain.init == "reinit":
            reinitialize(self.model)
            if self.enforcer is not None:
                self.enforcer.mask_weights()
        self._new_optimizer(cfg.retrain.max_epochs)
        self.pending_prune = False

    def _retrain_epoch(self) -> dict[str, Any]:
        cfg = self.cfg
        self.epoch += 1
        self.global_epoch += 1
        loss, acc = self._train_epoch(search=False)
        test_acc = self._evaluate()
        record = self._record(
            train_loss=loss,
            train_acc=acc,
            test_acc=test_acc,
            d_max=None,
            d_avg=None,
            r=1.0,
            truncated_units=0,
            mask_converged=None,
        )
        if self.epoch == 1 and self.phase == RETRAIN:
            self.results["acc_after_1_retrain_epoch"] = test_acc
        reached = test_acc >= cfg.retrain.target_acc
        if reached and self.results["epochs_to_target"] is None:
            self.results["epochs_to_target"] = self.epoch
        if self.results["diverged"] or self.epoch >= cfg.retrain.max_epochs or (reached and cfg.retrain.stop_at_target):
            self.phase = DONE
        return record

    # -- the loop ----------------------------------------------------------------------------

    def _train_epoch(self, search: bool) -> tuple[float, float]:
        """One pass over the training data; returns (mean loss, accuracy)."""
        opt, device, fmt = self.optimizer, self.device, self.speed.memory_format
        l1 = self.cfg.search.l1 if search else 0.0
        self.model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for x, y in self.train_loader:
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=fmt), y.to(device, non_blocking=True)
            with self.speed.autocast_context(device):
                out = self.forward(x)
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if l1:
                add_l1_on_gamma(self.layers, l1)
            if search:
                self.truncator.apply()  # grad: scale masked gradients; update: remember the weights
            if self.enforcer is not None:
                self.enforcer.mask_grads()
            opt.step()  # masked gradients keep pruned weights at zero under SGD and AdamW
            if search:
                self.truncator.after_step()  # update: scale masked units' change by r
            loss_sum += loss.detach() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
        self.scheduler.step()
        # Training FLOPs: forward + backward ~= 3x the forward count, per image seen.
        self.results["train_flops"] += 3 * self._flops_now * seen
        mean_loss = loss_sum.item() / seen
        if not math.isfinite(mean_loss):
            self.results["diverged"] = True
        return mean_loss, correct.item() / seen

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Accuracy on the held-out test split."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        total = 0
        for x, y in self.test_loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.speed.memory_format)
            y = y.to(self.device, non_blocking=True)
            with self.speed.autocast_context(self.device):
                correct += (self.forward(x).argmax(1) == y).sum()
            total += y.numel()
        return correct.item() / total

    def _record(self, **values: Any) -> dict[str, Any]:
        """The epoch's record so far: where the trial is, then its per-epoch metrics in the schema's order
        (a metric the phase did not measure is a KeyError here; ``step()`` adds the timing and totals)."""
        if not math.isfinite(values["train_loss"]):
            values["train_loss"] = None
        where = {"phase": self.phase, "epoch": self.epoch, "global_epoch": self.global_epoch}
        return where | {name: values[name] for name in metrics.EPOCH if name not in metrics.TIMING}

    # -- helpers -----------------------------------------------------------------------------

    def _flops(self) -> int:
        return flops_per_image(self.model, self.data.input_shape, self.data.input_dtype)

    def _new_optimizer(self, phase_epochs: int) -> None:
        o = self.cfg.optim
        params = self.model.parameters()
        if o.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.scheduler == "cosine":
            self.scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=phase_epochs
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)

    def _cuda_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with the global RNG set to this engine's stream, and keep where the stream got to."""
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.set_rng_state(self._rng_cpu)
            if self._rng_cuda is not None:
                torch.cuda.set_rng_state(self._rng_cuda, self.device)
            yield
            self._rng_cpu = torch.get_rng_state()
            if self._rng_cuda is not None:
                self._rng_cuda = torch.cuda.get_rng_state(self.device)

    # -- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly; only tensors and plain Python values."""
        return {
            "version": STATE_VERSION,
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.hash(),
            "phase": self.phase,
            "epoch": self.epoch,
            "global_epoch": self.global_epoch,
            "pending_prune": self.pending_prune,
            "history": [dict(m) for m in self.history],
            "results": dict(self.results),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "detector": self.detector.state_dict(),
            "schedule": self.schedule.state_dict(),
            "truncation": self.truncator.state_dict(),
            "prune_keep": self.prune_keep,
            "prune_masks": self.prune_masks,
            "flops_now": self._flops_now,
            "rng": {"cpu": self._rng_cpu, "cuda": self._rng_cuda, "data": self.data_gen.get_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the engine must have been built from the same config."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} is not {STATE_VERSION}")
        if state["config_hash"] != self.cfg.hash():
            raise ValueError(f"checkpoint is for config {state['config_hash']}, this trial is {self.cfg.hash()}")
        # Rebuild the pruned network first so the saved weights fit it.
        if state["prune_keep"] is not None:
            self.prune_keep = state["prune_keep"].to(torch.bool)
            remove_structure(self.model, self.prune_keep, self.example_input, self.transformer)
            self.forward = self.speed.prepare(self.model)
        if state["prune_masks"] is not None:
            self.prune_masks = {k: v.to(torch.bool) for k, v in state["prune_masks"].items()}
            self.enforcer = SparsityEnforcer(self.model, self.prune_masks)
        self.model.load_state_dict(state["model"])
        self.phase, self.epoch, self.global_epoch = state["phase"], state["epoch"], state["global_epoch"]
        self.pending_prune = state["pending_prune"]
        self.history = [metrics.current(m) for m in state["history"]]  # a checkpoint may predate a rename
        self.results = self.results | state["results"]  # a checkpoint may predate a metric: keep its fresh value
        phase_epochs = self.cfg.search.max_epochs if self.phase == SEARCH else self.cfg.retrain.max_epochs
        self._new_optimizer(phase_epochs)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.detector.load_state_dict(state["detector"])
        self.schedule.load_state_dict(state["schedule"])
        self.truncator.load_state_dict(state["truncation"])
        self._flops_now = int(state["flops_now"])
        self._rng_cpu = state["rng"]["cpu"]
        self._rng_cuda = state["rng"]["cuda"]
        self.data_gen.set_state(state["rng"]["data"])

    def fork(
        self,
        cfg: TrialConfig,
        control: SearchControl,
        truncation: tuple[torch.Tensor | None, float],
        next_step: str,
        history: list[dict[str, Any]],
        results: dict[str, Any],
    ) -> TrialEngine:
        """A trial of ``cfg`` that trained what this one trained so far, with its own decisions: its
        search ``control``, its truncation (mask, factor), what its next step is (``search`` or
        ``prune``; otherwise this trial's), its records and its :data:`SEARCH_RESULTS`.

        Exact only where ``cfg`` agrees with this trial's config on every training field and every
        decision taken so far was the same (:mod:`worm_tune.group` checks that). The state goes
        through a checkpoint's round trip, so the two trials share no tensor.
        """
        state = self.state_dict()
        state.update(
            config=cfg.to_dict(),
            config_hash=cfg.hash(),
            detector=control.detector.state_dict(),
            schedule=control.schedule.state_dict(),
            truncation={"keep": truncation[0], "factor": truncation[1]},
            history=[dict(m) for m in history],
            results=state["results"] | results,
        )
        if next_step == "search":
            state.update(phase=SEARCH, epoch=history[-1]["epoch"] if history else 0, pending_prune=False)
        elif next_step == "prune":
            state.update(phase=RETRAIN, epoch=0, pending_prune=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        twin = TrialEngine(cfg, self.data)
        twin.load_state_dict(torch.load(buffer, weights_only=True))
        return twin

    def save_model(self, path: str | Path) -> None:
        """Save the final network with what :func:`load_model` needs to rebuild its architecture."""
        torch.save(model_file(self.state_dict(), self.data), path)


def model_file(state: dict[str, Any], data: DataBundle) -> dict[str, Any]:
    """What :meth:`TrialEngine.save_model` writes, from an engine's state dict and its data: so a
    finished trial's last checkpoint gives its network, wherever the trial ran."""
    return {
        "config": state["config"],
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "vocab_size": data.vocab_size,
        "prune_keep": state["prune_keep"],
        "model": state["model"],
    }


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights: shows that paired trials started from the same network."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :meth:`TrialEngine.save_model` (structured-pruned ones included)."""
    return load_network(path)[0]


def load_network(path: str | Path) -> tuple[nn.Module, torch.Tensor]:
    """:func:`load_model`'s model and a batch of one zero input of its shape and dtype: what rebuilds a
    structured-pruned architecture, and what an MLflow signature is inferred from."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = TrialConfig.from_dict(saved["config"])
    shape, transformer = tuple(saved["input_shape"]), cfg.model.arch in TRANSFORMERS
    model = build_model(cfg.model, saved["num_classes"], shape, saved.get("vocab_size", 0))
    example = torch.zeros(1, *shape, dtype=torch.long if cfg.model.arch == "bert" else torch.float32)
    if saved["prune_keep"] is not None:
        remove_structure(model, saved["prune_keep"].to(torch.bool), example, transformer)
    model.load_state_dict(saved["model"])
    return model, example


def reinitialize(model: nn.Module) -> None:
    """Fresh weights for the (pruned) architecture, with torchvision's init scheme (EB "scratch")."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
