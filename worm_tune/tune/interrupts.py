"""Whether a Ray experiment ran to its end, or an interrupt cut it short, and which trials it cut.

Ray Tune catches Ctrl-C, saves the experiment state, then stops every trial (calling
``on_trial_complete``, as for a trial the scheduler stopped) and returns normally. Only the saved
state tells the two apart: there, cut-short trials are still running or pending, and a searcher
that was stopped early has made fewer trials than asked for. The states are also written to
:data:`~worm_tune.tune.plan.TRIAL_STATES_FILE` in the experiment's folder, for readers without Ray.
"""

from __future__ import annotations

import json

from ray.tune import ExperimentAnalysis

from worm_tune.checkpoints import CheckpointError, write_atomic
from worm_tune.tune.experiment import ExperimentSpec
from worm_tune.tune.plan import TRIAL_STATES_FILE, config_overrides, trial_reports


def cut_short(spec: ExperimentSpec, full: str | None) -> set[str] | None:
    """The trials an interrupt cut short (Ray's trial ids; a shared sweep's: config hashes, which key
    their runs), or None if the experiment ran to its end. A storage found full (``full`` says why)
    stopped it on purpose: its last state may be cut short too, and then no trial is named."""
    try:
        return _cut_short(spec)
    except (OSError, ValueError, CheckpointError):  # Ray's last snapshot, cut short by a full disk
        if full is None:
            raise
        return set()


def _cut_short(spec: ExperimentSpec) -> set[str] | None:
    """A shared sweep ran to its end when the groups that ended reported every trial's end; those they
    did not were cut short."""
    trials = ExperimentAnalysis(str(spec.folder)).trials
    states = {t.trial_id: t.status for t in trials}
    write_atomic(spec.folder / TRIAL_STATES_FILE, lambda tmp: tmp.write_text(json.dumps(states, indent=2)))
    cut = {t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")}
    shared, groups, base = spec.trial_hashes, spec.settings.groups, spec.plan.base
    # A sequential sweep has ended when its searcher stopped it; until then, even between two batches, it was cut.
    record = spec.record
    unstopped = spec.plan.until is not None and (record is None or record.stop is None)
    if shared is not None:
        reports = [trial_reports(t.config, t.last_result or {}, groups) for t in trials if t.trial_id not in cut]
        ended = {base.replace(config_overrides(point)).hash() for ended in reports for point, _ in ended}
        return shared - ended or (set() if unstopped else None)
    if unstopped:
        return cut
    return cut if cut or (spec.plan.until is None and len(trials) < spec.num_trials) else None
