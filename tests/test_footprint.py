"""A sweep's footprint (issue 22): tickets as small files, finished trials' checkpoints and split
files reclaimed, the folder measured. The quick tests check the pieces; the slow ones run real tiny
sweeps through Ray and MLflow and look at what they leave."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis import compare, load
from analysis.stats import N_BOOT
from analysis.tickets import SAME, compare_tickets, load_tickets, section
from tests.helpers import ENGINE_TINY, mounted_tmpfs
from worm_tune import metrics
from worm_tune.checkpoints import load_state
from worm_tune.cli import sweep
from worm_tune.config import TrialConfig
from worm_tune.engine import TrialEngine
from worm_tune.tickets import KEEP, TICKET_FILE, Ticket, overlap
from worm_tune.tune.footprint import back_up_experiment_state, folder_bytes, reclaim, repair_experiment_state
from worm_tune.tune.plan import GROUPS_DIR, TRIAL_STATES_FILE, SweepSettings, make_plan
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, at_store

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

# -- tickets -----------------------------------------------------------------------------------


def test_a_ticket_round_trips_bit_for_bit_and_stays_small() -> None:
    rng = np.random.default_rng(0)
    channels = Ticket({KEEP: rng.random(4801) < 0.5}, "channel", 7, (4000, 801))  # a ResNet-18's BN channels, and one
    back = Ticket.from_bytes(channels.to_bytes())
    assert back.unit == "channel" and back.epoch == 7 and back.layers == (4000, 801)
    assert np.array_equal(back.masks[KEEP], channels.masks[KEEP])
    assert len(channels.to_bytes()) < 1500  # 4801 bits packed: 601 bytes, and the file's header
    weights = Ticket(
        {"conv.weight": rng.random((8, 3, 3, 3)) < 0.3, "fc.weight": rng.random((10, 8)) < 0.9}, "weight", 3
    )
    back = Ticket.from_bytes(weights.to_bytes())
    assert {k: v.shape for k, v in back.masks.items()} == {"conv.weight": (8, 3, 3, 3), "fc.weight": (10, 8)}
    assert all(np.array_equal(back.masks[k], weights.masks[k]) for k in weights.masks)
    assert back.kept == weights.kept and back.size == 8 * 27 + 80 and back.layers is None


def test_the_overlap_of_two_tickets() -> None:
    a = Ticket({KEEP: np.array([True, True, False, False])}, "channel", 1)
    b = Ticket({KEEP: np.array([True, False, False, True])}, "channel", 2)
    assert overlap(a, a) == 1.0 and overlap(a, b) == 0.5
    with pytest.raises(ValueError, match="different networks"):
        overlap(a, Ticket({KEEP: np.array([True])}, "channel", 1))


@pytest.mark.parametrize(("kind", "unit"), [("unstructured", "weight"), ("structured", "channel")])
def test_the_engine_ticket_is_the_mask_it_pruned(kind: str, unit: str) -> None:
    engine = TrialEngine(TrialConfig().replace({**ENGINE_TINY, "prune.kind": kind}).validate())
    assert engine.ticket() is None  # before the prune
    summary = engine.run()
    ticket = Ticket.from_bytes(engine.ticket().to_bytes())
    assert ticket.unit == unit and ticket.epoch == summary["search_epochs"]
    pruned = {KEEP: engine.pruning.keep} if kind == "structured" else engine.pruning.masks
    assert ticket.masks.keys() == pruned.keys()
    assert all(np.array_equal(ticket.masks[k], pruned[k].numpy()) for k in pruned)
    if kind == "structured":  # its units split by layer as the BatchNorm layers hold them
        dense = TrialEngine(TrialConfig().replace({**ENGINE_TINY, "prune.kind": kind}).validate())
        assert ticket.layers == tuple(bn.num_features for bn in dense.sites.layers)
        assert sum(ticket.layers) == ticket.size
    assert TrialEngine(TrialConfig().replace({**ENGINE_TINY, "method": "dense"})).ticket() is None


# -- reclaiming --------------------------------------------------------------------------------


def test_reclaim_keeps_results_and_what_a_resume_needs(tmp_path: Path) -> None:
    """At a sweep's end: finished trials lose their checkpoints, failed ones keep them (``--resume``
    retries from them), results and the groups' member lists stay."""
    experiment, groups = tmp_path / "trials", tmp_path / GROUPS_DIR
    for trial in ("group-aaa", "group-bbb"):
        (experiment / trial / "checkpoint_000002").mkdir(parents=True)
        (experiment / trial / "checkpoint_000002" / "engine.pt").write_bytes(b"x" * 1000)
        (experiment / trial / "result.json").write_text("{}\n")
    (experiment / TRIAL_STATES_FILE).write_text(json.dumps({"aaa": "TERMINATED", "bbb": "ERROR"}))
    groups.mkdir()
    for suffix in (".pt", ".json"):
        (groups / f"g003-abc{suffix}").write_text("{}")
    before = folder_bytes(tmp_path)
    reclaim(experiment, groups, "none")
    assert not (experiment / "group-aaa" / "checkpoint_000002").exists()
    assert (experiment / "group-bbb" / "checkpoint_000002" / "engine.pt").exists()
    assert (experiment / "group-aaa" / "result.json").exists()
    assert sorted(p.name for p in groups.iterdir()) == ["g003-abc.json"]
    assert folder_bytes(tmp_path) == before - 1000 - 2
    (experiment / "group-aaa" / "checkpoint_000003").mkdir()
    reclaim(experiment, None, "last")  # keeping the last checkpoint keeps it
    assert (experiment / "group-aaa" / "checkpoint_000003").exists()


def test_a_truncated_experiment_state_is_replaced_by_its_last_good_copy(tmp_path: Path) -> None:
    """Ray rewrites its experiment state in place; a full disk can cut the rewrite short."""
    state = tmp_path / "trials" / "experiment_state-2026-12-02_10-00-00.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"trials": ["a", "b"]}))
    back_up_experiment_state(tmp_path)
    state.write_text(json.dumps({"trials": ["a", "b", "c"]})[:12])  # the disk filled mid-copy
    back_up_experiment_state(tmp_path)  # a damaged state is never backed up over a good copy
    assert repair_experiment_state(tmp_path) == [state]
    assert json.loads(state.read_text()) == {"trials": ["a", "b"]}
    assert repair_experiment_state(tmp_path) == []  # a readable state is left alone


# -- real sweeps -------------------------------------------------------------------------------

#: One seed and ratio, two thresholds, EarlyBird and WORM at two deltas: 6 trials, which part mid-way.
GRID = """
description = "the footprint tests' grid"
methods = ["earlybird", "worm"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = 128
"data.batch_size" = 32
"search.window" = 2
"search.max_epochs" = 5
"search.ratio" = 0.5
"retrain.max_epochs" = 1
threads = 1
seed = 0

[axes]
"search.threshold" = [0.05, 0.15]

[method_axes.worm]
"worm.delta" = [0.05, 0.3]
"worm.factor" = [0.003]
"""
TRIALS = 6
#: What a finished trial may leave in a sweep folder, at most: Ray's result files (a group trial's
#: hold every member's report each epoch) and its MLflow-free leftovers. Measured: about 30 kB.
SMALL_PER_TRIAL = 100_000


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("footprint")
    space = root / "grid.toml"
    space.write_text(GRID)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"root": root, "uri": uri, "space": str(space), "storage": root / "ray"}


def run(where: dict[str, Any], name: str, *flags: str) -> str:
    out = io.StringIO()
    args = ["--storage", str(where["storage"]), "--tracking-uri", where["uri"], "--no-analysis"]
    with contextlib.redirect_stdout(out):
        code = sweep.main([where["space"], "--name", name, *flags, *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


def runs_of(uri: str, name: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = '{name}'", max_results=1000)
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "sweep"]
    return parent, [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]


@pytest.fixture(scope="module")
def shared(local_ray: Any, where: dict[str, Any]) -> str:
    return run(where, "shared")


@pytest.mark.slow
@pytest.mark.parametrize("share", [True, False], ids=["shared", "no-share"])
def test_a_finished_sweep_leaves_only_small_files(
    local_ray: Any, where: dict[str, Any], shared: str, share: bool
) -> None:
    name = "shared" if share else "alone"
    out = shared if share else run(where, name, "--no-share")
    folder = where["storage"] / name
    assert not list(folder.rglob("checkpoint_*")) and not list(folder.rglob("*.pt"))
    assert (folder / GROUPS_DIR).is_dir() == share  # the groups' member lists stay
    size = folder_bytes(folder)
    assert size < TRIALS * SMALL_PER_TRIAL, size
    parent, children = runs_of(where["uri"], name)
    assert len(children) == TRIALS
    logged = parent.data.metrics
    assert logged["storage/bytes_final"] == pytest.approx(size, rel=0.05)
    # The peak: at least one checkpoint; at most what runs and waits (2 trials at a time, each with
    # its new checkpoint beside its last, and every part file, were none yet started); not one per trial.
    parts = [p for p in (folder / GROUPS_DIR).glob("g*.json") if not p.name.startswith("g000-")]
    assert len(parts) >= share  # the grid parts mid-way
    assert state_size(where) <= logged["storage/bytes_peak"] <= (2 * 2 + len(parts)) * state_size(where)
    (line,) = [line for line in out.splitlines() if line.startswith("storage: ")]
    assert f"{folder} holds " in line and "at its peak" in line


def state_size(where: dict[str, Any]) -> int:
    """The size of the grid's largest checkpoint: an engine's state once it has pruned (weights,
    momentum and the pruning masks)."""
    engine = TrialEngine(make_plan(_settings(where)).configs()[0])
    engine.run()
    buf = io.BytesIO()
    torch.save(engine.state_dict(), buf)
    return buf.tell()


@pytest.mark.slow
def test_keep_checkpoints_last_keeps_each_finished_trials_last(local_ray: Any, where: dict[str, Any]) -> None:
    short = ["--set", "search.threshold=0.15", "--set", "search.max_epochs=3"]  # 3 trials, 3 search epochs
    run(where, "kept", "--keep-checkpoints", "last", "--no-share", *short)
    trials = [p for p in (where["storage"] / "kept" / "trials").iterdir() if p.is_dir()]
    assert len(trials) == 3
    for trial in trials:
        (checkpoint,) = trial.glob("checkpoint_*")  # its last, as Ray keeps it
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])["training_iteration"]
        assert int(checkpoint.name.removeprefix("checkpoint_")) == last - 1  # Ray counts checkpoints from 0


def _settings(where: dict[str, Any]) -> SweepSettings:
    return SweepSettings(space=where["space"], name="x", storage=str(where["storage"]), tracking_uri=where["uri"])


@pytest.mark.slow
def test_each_trial_logs_its_ticket_and_it_is_the_mask_its_engine_pruned(
    local_ray: Any, where: dict[str, Any], shared: str
) -> None:
    """An EarlyBird and a WORM ticket of one seed, loaded from MLflow, against engines run alone."""
    _, children = runs_of(where["uri"], "shared")
    plan = make_plan(_settings(where))
    by_hash = {cfg.hash(): cfg for cfg in plan.configs()}
    checked = set()
    for run in children:
        cfg = by_hash[run.data.tags["config_hash"]]
        if cfg.method in checked or cfg.search.threshold != 0.15:
            continue
        ticket = load.ticket(where["uri"], run.info.run_id)
        engine = TrialEngine(cfg)
        summary = engine.run()
        assert ticket.unit == "weight" and ticket.epoch == summary["search_epochs"]
        assert ticket.masks.keys() == engine.pruning.masks.keys()
        assert all(np.array_equal(ticket.masks[k], engine.pruning.masks[k].numpy()) for k in ticket.masks)
        checked.add(cfg.method)
    assert checked == {"earlybird", "worm"}
    client = MlflowClient(where["uri"])
    with at_store(where["uri"]):  # artifact locations are relative to the store's folder
        assert all(TICKET_FILE in {a.path for a in client.list_artifacts(r.info.run_id)} for r in children)


# -- a full storage ----------------------------------------------------------------------------


def test_a_real_sweeps_tickets_compared(local_ray: Any, where: dict[str, Any], shared: str) -> None:
    """The footprint tests' sweep (EarlyBird and WORM at two δ, one seed, two thresholds), read from MLflow."""
    parent, _ = load.find_parent(where["uri"], "shared")
    sweep = load.from_mlflow(where["uri"], parent)
    tickets = load_tickets(where["uri"], sweep.trials)
    assert set(tickets) == set(sweep.trials["trial_id"])  # every trial pruned and logged its ticket
    frame = compare.label(sweep.trials)
    per_pair, chance = compare_tickets(frame, tickets)
    assert len(per_pair) == 4 and chance.empty  # 2 settings x 2 variants, one seed: no two EB seeds
    for r in per_pair.to_dict("records"):
        a, b = tickets[r["eb_trial"]], tickets[r["v_trial"]]
        # By inclusion-exclusion (|A ∪ B| = |A| + |B| - |A ∩ B|), over the tensors one by one.
        both = sum(int((~a.masks[k] & ~b.masks[k]).sum()) for k in a.masks)
        assert r["jaccard"] == pytest.approx(both / (a.size - a.kept + b.size - b.kept - both))
        assert r["identical"] == (r["jaccard"] == 1.0)
        assert r["layer_names"] == list(a.masks)  # per weight tensor
    text = section(frame, tickets, n_boot=N_BOOT)
    assert "too few pairs (n=1 < 6)" in text or SAME in text
    assert "fewer than two seeds" in text and "Kept in common per layer" in text


@pytest.fixture
def small_disk(tmp_path: Path, where: dict[str, Any]) -> Iterator[Path]:
    """A real tmpfs room for two and a half of the grid's checkpoints: a sweep fills it mid-way."""
    with mounted_tmpfs(tmp_path / "small", int(2.5 * state_size(where))) as mount:
        yield mount


def numbers(uri: str, run: Any) -> dict[str, list[tuple[int, float]]]:
    """Every metric a trial run logged, as (step, value) over the run, less wall times."""
    client = MlflowClient(uri)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
        if metrics.parse_logged(key)[1] not in metrics.TIMING
    }


@pytest.mark.slow
def test_a_full_storage_stops_the_sweep_in_one_line_and_the_resume_ends_it_exactly(
    local_ray: Any, where: dict[str, Any], shared: str, small_disk: Path
) -> None:
    flags = ["--storage", str(small_disk), "--tracking-uri", where["uri"], "--no-analysis"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sweep.main([where["space"], "--name", "full", *flags])
    assert code == 1, out.getvalue() + err.getvalue()
    ours = [line for line in err.getvalue().splitlines() if line.startswith("python -m worm_tune.sweep: ")]
    assert len(ours) == 1, err.getvalue()
    assert ours[0].startswith(f"python -m worm_tune.sweep: no space left on {small_disk} (tmpfs)"), ours[0]
    assert "then resume with: python -m worm_tune.sweep" in ours[0]
    assert "Traceback" not in out.getvalue() + err.getvalue()
    # Nothing truncated that a resume would trust: every state file loads, every Ray state file parses.
    folder = small_disk / "full"
    for state in folder.rglob("*.pt"):
        load_state(state)
    for state in folder.glob("trials/experiment_state-*.json"):
        json.loads(state.read_text())

    subprocess.run(["mount", "-o", "remount,size=2g", str(small_disk)], check=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep.main([where["space"], "--resume", "--name", "full", "--storage", str(small_disk), "--no-analysis"])
    assert code == 0, out.getvalue()
    _, resumed = runs_of(where["uri"], "full")
    _, reference = runs_of(where["uri"], "shared")
    expected = {r.data.tags["config_hash"]: r for r in reference}
    assert sorted(r.data.tags["config_hash"] for r in resumed) == sorted(expected)
    for run in resumed:
        got, want = numbers(where["uri"], run), numbers(where["uri"], expected[run.data.tags["config_hash"]])
        assert got == want, run.info.run_name  # every step once, with the undisturbed run's values
