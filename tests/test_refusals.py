"""Issue 22's smaller bad-input findings: a refused command leaves nothing behind and says why at once.

A refused ``sweep`` or ``final`` leaves no new file at its ``--tracking-uri`` (no empty ``mlflow.db``,
no lock file) and no folder under ``--storage``; a folder that takes no files, or a folder given as
the space, is one line saying so; a second driver of a running sweep is refused before the seconds
of imports and cluster checks. Real Ray (a local instance) and real MLflow SQLite stores throughout.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import QUICK_PAIR
from worm_tune import locks
from worm_tune.cli import final, sweep
from worm_tune.config import TrialConfig
from worm_tune.paths import PathError, check_writable
from worm_tune.tune.plan import CHOSEN_FILE, SETTINGS_FILE, SweepSettings

#: One EarlyBird trial of the quick profile.
ONE_TRIAL = [*QUICK_PAIR, "--set", "method=earlybird"]
HEAVY = ("torch", "ray", "mlflow", "optuna")

#: Runs ``python -m MODULE ARGS`` in-process; prints its exit code, its stderr, which of HEAVY it
#: imported and how long it took.
PROBE = """
import contextlib, io, json, runpy, sys, time
module, args, heavy = sys.argv[1], sys.argv[2:], {heavy!r}
sys.argv = [module, *args]
code, err, began = None, io.StringIO(), time.monotonic()
try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
took = time.monotonic() - began
print(json.dumps([code, err.getvalue(), sorted(m for m in heavy if m in sys.modules), took]))
"""


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def clean_env() -> dict[str, str]:
    """This environment without Ray's address and auth settings (a ``ray.init`` in this process may
    have set them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Any]:
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    args = ["--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--no-analysis"]
    return {"uri": uri, "args": args, "root": tmp_path, "store": store, "storage": tmp_path / "ray"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private Ray instance with 2 CPUs and no GPU (on a GPU machine too), which the sweeps join."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False)
    yield
    ray.shutdown()


def existing_store(uri: str) -> None:
    """A store made by MLflow itself: a database and no lock file beside it."""
    MlflowClient(uri).search_experiments()


# -- 1. a refused start leaves no new file at the tracking URI -------------------------------------


@pytest.mark.parametrize("store_before", ["none", "mlflow's"])
def test_final_of_an_unknown_sweep_leaves_no_file(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str], store_before: str
) -> None:
    if store_before != "none":
        existing_store(where["uri"])
    before = files_under(where["root"])
    assert final.main(["nope-sweep", *where["args"]]) == 2
    assert (
        capsys.readouterr().err == f"python -m worm_tune.final: error: no sweep named 'nope-sweep' in {where['uri']}\n"
    )
    assert files_under(where["root"]) == before  # no mlflow.db, no mlflow.db.lock, no storage folder
    if store_before != "none":
        assert MlflowClient(where["uri"]).search_experiments()  # the store is still there, unharmed


@pytest.mark.slow  # a Ray instance to start: about 15 s for the four cases
@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--gpus-per-trial", "2"], "--gpus-per-trial 2 is more than the cluster has (0 GPU)"),
        (["--cpus-per-trial", "64"], "--cpus-per-trial 64 is more than the cluster has (2 CPU)"),
    ],
)
@pytest.mark.parametrize("store_before", ["none", "mlflow's"])
def test_a_sweep_refused_for_resources_leaves_no_file(
    local_ray: None,
    where: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    flag: list[str],
    message: str,
    store_before: str,
) -> None:
    if store_before != "none":
        existing_store(where["uri"])
    before = files_under(where["root"])
    assert sweep.main([*ONE_TRIAL, *where["args"], *flag, "--name", "refused"]) == 2
    assert capsys.readouterr().err == f"python -m worm_tune.sweep: error: {message}\n"
    assert files_under(where["root"]) == before
    if store_before != "none":
        assert MlflowClient(where["uri"]).search_experiments()


# -- 2. a folder that takes no files says why -----------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc file system here")
def test_storage_on_proc_says_it_takes_no_files(where: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PathError, match=r"^--storage /proc cannot be written: its file system refuses new files"):
        check_writable(Path("/proc"), "--storage")
    args = list(where["args"])
    args[args.index("--storage") + 1] = "/proc"
    assert sweep.main([*ONE_TRIAL, *args]) == 2
    err = capsys.readouterr().err
    assert err == (
        "python -m worm_tune.sweep: error: --storage /proc cannot be written: "
        "its file system refuses new files (as /proc does)\n"
    )
    assert "No such file" not in err and files_under(where["root"]) == {"store"}


# -- 3. a folder given as the space -------------------------------------------------------------


def test_a_folder_named_like_a_space_file_is_called_a_folder(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = where["root"] / "x.toml"
    folder.mkdir()
    assert sweep.main([str(folder), *where["args"]]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"python -m worm_tune.sweep: error: search space '{folder}' is a folder, not a space file (a .toml file)\n"
    )
    assert "does not exist" not in err


# -- 4. a second driver is refused at once --------------------------------------------------------


def test_a_probe_of_the_driver_lock_never_refuses_a_driver(tmp_path: Path) -> None:
    """:func:`locks.holder` takes the lock (shared) for an instant; a driver meeting it still gets it."""
    (tmp_path / locks.DRIVER_LOCK).touch()
    with open(tmp_path / locks.DRIVER_LOCK) as probe:
        fcntl.flock(probe, fcntl.LOCK_SH)  # a probe, held far longer than a real one
        threading.Timer(0.1, fcntl.flock, (probe, fcntl.LOCK_UN)).start()
        lock = locks.DriverLock(tmp_path)
        lock.acquire()
    assert locks.holder(tmp_path) == f"process {os.getpid()} on {socket.gethostname()}"
    lock.release()


def _hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process holding ``folder``'s driver lock, as a running driver does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from worm_tune.locks import DriverLock; lock = DriverLock(sys.argv[1]); lock.acquire(); "
            "print('locked', flush=True); time.sleep(120)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _probe(module: str, *argv: str) -> tuple[int, str, list[str], float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), module, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=clean_env(),
    )
    code, err, heavy, took = json.loads(done.stdout.splitlines()[-1])
    return code, err, heavy, took


@pytest.mark.parametrize("command", ["worm_tune.sweep", "worm_tune.final"])
def test_a_second_resume_of_a_running_sweep_is_refused_at_once(where: dict[str, Any], command: str) -> None:
    """Refused before torch, Ray or MLflow is imported (the seconds the report measured), with the
    line the driver lock itself gives, while the first driver still runs."""
    storage = where["storage"]
    settings = SweepSettings("resnet18", "live", str(storage), where["uri"], profile="quick")
    settings.save()
    if command == "worm_tune.final":
        settings.kind = "final"
        settings.save()
        chosen = {"configs": [TrialConfig().to_flat()], "extra_tags": {}, "params": {}, "tags": {}}
        (settings.folder / CHOSEN_FILE).write_text(json.dumps(chosen))
    holder = _hold_lock(settings.folder)
    try:
        argv = ["resnet18" if command == "worm_tune.sweep" else "src", "--resume", "--name", "live"]
        code, err, heavy, took = _probe(command, *argv, "--storage", str(storage))
        assert holder.poll() is None  # the first driver still runs
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    me = f"process {holder.pid} on {socket.gethostname()}"
    assert code == 2
    assert err == f"python -m {command}: error: sweep live is being run by {me}; wait for it, or stop it first\n"
    assert heavy == [] and took < 5, (heavy, took)
    assert files_under(where["store"]) == set()


@pytest.mark.slow
def test_a_second_resume_beside_a_real_driver(where: dict[str, Any]) -> None:
    """The report's case end to end: a sweep runs; ``--resume`` of it meanwhile is refused, in
    seconds and before the first driver is done; the first driver keeps its lock and finishes."""
    folder = where["storage"] / "live"
    first = subprocess.Popen(
        [sys.executable, "-m", "worm_tune.sweep", *ONE_TRIAL, *where["args"], "--name", "live"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not (locks.holder(folder) and (folder / SETTINGS_FILE).is_file()) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.05)
        began = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "worm_tune.sweep", "resnet18", "--resume", "--name", "live", *where["args"][:2]],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
        )
        took = time.monotonic() - began
        still_running = first.poll() is None
        assert second.returncode == 2 and still_running, (second.stderr, took)
        assert second.stderr == (
            f"python -m worm_tune.sweep: error: sweep live is being run by process {first.pid} on "
            f"{socket.gethostname()}; wait for it, or stop it first\n"
        )
        assert took < 5, took  # the interpreter's start included
        assert locks.holder(folder) == f"process {first.pid} on {socket.gethostname()}"
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, err
    assert locks.holder(folder) is None
