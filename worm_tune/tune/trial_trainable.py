"""The Trainable of one trial: a thin layer over :class:`~worm_tune.engine.TrialEngine`.

:class:`TicketTrainable` runs every method, so a sweep's pairs share one Ray experiment. A trial's
Ray config holds only what it sets on top of the sweep's base config, flat (``{"method": "worm",
"search.ratio": 0.3}``), so Ray's table shows exactly what the sweep varies.
"""

from __future__ import annotations

from typing import Any, ClassVar

import ray

from worm_tune.config import TrialConfig
from worm_tune.engine import TrialEngine
from worm_tune.faults import maybe_crash
from worm_tune.ticket.methods import METHODS
from worm_tune.tickets import Ticket
from worm_tune.tune.console import no_checkpoint_lines
from worm_tune.tune.plan import config_overrides
from worm_tune.tune.reports import epoch_result, reported
from worm_tune.tune.trainable import SweepTrainable, check_gpus


class TicketTrainable(SweepTrainable):
    """Wraps one engine, of any method. (Ray restores a saved experiment only with a Trainable of the
    class name it saved: the name stays.)"""

    METHODS: ClassVar[tuple[str, ...]] = tuple(METHODS)

    def setup(self, config: dict[str, Any], base: dict[str, Any] | None = None, quiet: bool = False) -> None:
        """``quiet``: no line per checkpoint from Ray (:func:`~worm_tune.tune.console.no_checkpoint_lines`)."""
        if quiet:
            no_checkpoint_lines()
        self.base = base or {}
        self._build(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Run the next trial in this process (Ray's ``reuse_actors``): no new worker to start."""
        self._build(new_config)
        return True

    def _build(self, config: dict[str, Any]) -> None:
        cfg = TrialConfig.from_dict(self.base).replace(config_overrides(config)).validate()
        if cfg.method not in self.METHODS:
            raise ValueError(f"{type(self).__name__} runs {', '.join(self.METHODS)}, not {cfg.method!r}")
        if not cfg.threads:
            cfg = cfg.replace({"threads": self.cpu_threads()})
        check_gpus(cfg.device)
        self.cfg = cfg
        self.engine = TrialEngine(cfg)
        self.node_id = ray.get_runtime_context().get_node_id()

    def step(self) -> dict[str, Any]:
        record = self.engine.step()
        maybe_crash(self.cfg.crash_at_epoch, self.engine.global_epoch, self.logdir)
        result = epoch_result(record, self.engine.summary(), reported(self.cfg.method))
        result.update(
            method=self.cfg.method,
            seed=self.cfg.seed,
            config_hash=self.cfg.hash(),
            **self.whereabouts(),
            done=self.engine.done,
        )
        return self.with_notice(result)

    def state(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def ticket(self) -> Ticket | None:
        return self.engine.ticket()

    def load(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)

    def restart(self) -> str:
        self.engine = TrialEngine(self.cfg)
        return "restarted from scratch"
