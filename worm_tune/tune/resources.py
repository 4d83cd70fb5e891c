"""What a trial asks of the Ray cluster, and whether (and how many trials at once) the cluster gives it."""

from __future__ import annotations

import math

import ray

from worm_tune.tune.plan import SweepSettings
from worm_tune.usage import UsageError


def per_trial(settings: SweepSettings) -> tuple[tuple[str, float, str], ...]:
    """Each Ray resource a trial asks for: its name, the amount and the flag that sets it."""
    return (("CPU", settings.cpus_per_trial, "--cpus-per-trial"), ("GPU", settings.gpus_per_trial, "--gpus-per-trial"))


def check_resources(settings: SweepSettings) -> None:
    """One line, before any trial, if a trial asks for more of a resource than the whole cluster has."""
    have = ray.cluster_resources()
    for key, amount, flag in per_trial(settings):
        if amount > 0 and have.get(key, 0) < amount:
            raise UsageError(f"{flag} {amount:g} is more than the cluster has ({have.get(key, 0):g} {key})")


def slots(settings: SweepSettings) -> int:
    """How many trials the cluster can run at once (as it is now: an autoscaling cluster that grows
    later needs ``--max-concurrent``)."""
    have = ray.cluster_resources()
    fits = [have.get(key, 0) / amount for key, amount, _ in per_trial(settings) if amount > 0]
    return max(1, math.floor(min(fits, default=1)))
