"""Issue 12's fault-injection findings, each reproduced as it was reported, and what now happens.

Every command here is the real one (a subprocess where the fault is about processes, ports or
Ray's address file), against a real Ray instance and a real MLflow SQLite store. Two of the
cases (two ``--resume`` of one sweep, a damaged Ray checkpoint) ride on the interrupt test in
``test_sweep.py``; the damaged and disk-full checkpoints of ``worm_tune.run`` are in
``test_checkpoints.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from analysis import cli as analysis_cli
from tests.helpers import QUICK_PAIR
from worm_tune import locks
from worm_tune.cli import final, run, sweep
from worm_tune.tune import runner
from worm_tune.tune import store as tracking
from worm_tune.tune.plan import SETTINGS_FILE

#: One EarlyBird trial of the quick profile.
ONE_TRIAL = [*QUICK_PAIR, "--set", "method=earlybird"]


def command(module: str, *argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m module argv`` in ``env`` (default: this one); its exit code and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        timeout=timeout,
    )
    return proc.returncode, proc.stderr


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Ray's address and auth settings (an earlier ``ray.init`` in this
    process may have set them), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, **extra}


def all_runs(uri: str) -> list[Any]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, max_results=1000)) if experiments else []


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Any]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--reports", str(tmp_path / "reports")]
    return {"uri": uri, "args": args, "root": tmp_path}


@pytest.fixture
def ray_tmpdir() -> Iterator[Path]:
    """A private Ray temp dir (short: Ray's socket paths must fit in 107 characters)."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


# -- 1. one driver per sweep -------------------------------------------------------------------


def test_the_driver_lock_dies_with_its_process(tmp_path: Path) -> None:
    """kill -9 of a driver leaves no stale lock: the kernel releases it with the process."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from worm_tune.locks import DriverLock; lock = DriverLock(sys.argv[1]); lock.acquire(); "
            "print('locked', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert locks.holder(tmp_path) == f"process {holder.pid} on {socket.gethostname()}"
        with pytest.raises(locks.LockHeld, match=f"process {holder.pid} on "):
            locks.DriverLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert locks.holder(tmp_path) is None
    lock = locks.DriverLock(tmp_path)
    lock.acquire()
    assert locks.holder(tmp_path) == f"process {os.getpid()} on {socket.gethostname()}"
    lock.release()


def test_final_and_analysis_tell_a_running_sweep_from_one_whose_driver_is_gone(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, storage = where["uri"], where["root"] / "ray"
    tracking.check_tracking(uri)
    exp = tracking.experiment_id(uri, "resnet18")
    params = {"space": "resnet18", "name": "live", "storage": str(storage), "kind": "sweep"}
    tracking.start_parent_run(uri, exp, "live", "sweep", {}, params)  # left RUNNING, as by a driver
    lock = locks.DriverLock(storage / "live")
    lock.acquire()
    try:
        assert final.main(["live", "--tracking-uri", uri, "--storage", str(storage)]) == 2
        err = capsys.readouterr().err
        me = f"process {os.getpid()} on {socket.gethostname()}"
        assert err == f"python -m worm_tune.final: error: sweep live is being run by {me}; wait for it to finish\n"
    finally:
        lock.release()
    assert final.main(["live", "--tracking-uri", uri, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep live did not finish and its driver is gone" in err
    assert f"`python -m worm_tune.sweep resnet18 --resume --name live --storage {storage}` continues it" in err
    # The analysis of such a sweep says the same (it has no trials yet, so it says it in its error).
    sweep_state = analysis_cli.locate("live", uri, storage)
    assert sweep_state.running and sweep_state.driver.startswith("did not finish and its driver is gone")


# -- 2. a failed start leaves nothing RUNNING ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--storage", "/proc/x"], "--storage /proc/x cannot be written"),
        (["--name", "n" * 300], "is invalid: use up to 100 letters"),
        (["--reports", "/proc/x"], "--reports /proc/x cannot be written"),
    ],
)
def test_a_start_that_fails_leaves_no_run_and_no_folder(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = list(where["args"])
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert sweep.main([*ONE_TRIAL, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert [r for r in all_runs(where["uri"]) if r.info.status == "RUNNING"] == []
    assert not (where["root"] / "ray").exists()


@pytest.mark.slow
def test_a_failure_after_the_parent_run_exists_ends_it_failed(
    where: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error once the parent run exists (here: the Ray experiment itself raising) ends it FAILED."""
    import ray

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the Ray experiment broke")

    monkeypatch.setattr(runner, "execute", broken)
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        with pytest.raises(RuntimeError, match="the Ray experiment broke"):
            sweep.main([*ONE_TRIAL, *where["args"], "--name", "broken"])
    finally:
        ray.shutdown()
    (parent,) = all_runs(where["uri"])
    assert parent.info.status == "FAILED" and parent.data.tags[tracking.TAG_SWEEP] == "broken"
    assert (where["root"] / "ray" / "broken" / SETTINGS_FILE).is_file()  # kept: --resume finds it
    assert locks.holder(where["root"] / "ray" / "broken") is None


# -- 3 and 11. --address is checked in seconds; no --address never joins another cluster -----------


def test_an_address_where_nothing_listens_is_one_line_in_seconds(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Timed in-process, from the command's start to its exit code: what the command itself does
    (the interpreter's start and imports, 4 to 11 s on this 2-core machine, come on top)."""
    start = time.monotonic()
    code = sweep.main([*ONE_TRIAL, *where["args"], "--address", "127.0.0.1:1"])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and took < 15, (took, err)
    assert err.startswith("python -m worm_tune.sweep: error: cannot connect to the Ray cluster at '127.0.0.1:1'")
    assert err.count("\n") == 1 and "nothing answers there (Connection refused)" in err
    assert all_runs(where["uri"]) == [] and not (where["root"] / "ray").exists()


@pytest.mark.slow
def test_a_stale_ray_address_file_is_ignored_and_errors_stay_one_line(where: dict[str, Any], ray_tmpdir: Path) -> None:
    """Ray's address file names a cluster that died without ``ray stop``: the sweep starts its own
    instance, and an error raised after Ray started (GPUs it does not have) is the only line."""
    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")  # nothing listens there
    start = time.monotonic()
    code, err = command(
        "worm_tune.sweep",
        *ONE_TRIAL,
        *where["args"],
        "--gpus-per-trial",
        "1",
        env=clean_env(RAY_TMPDIR=str(ray_tmpdir)),
    )
    assert time.monotonic() - start < 120
    assert code == 2
    assert err == "python -m worm_tune.sweep: error: --gpus-per-trial 1 is more than the cluster has (0 GPU)\n"
    assert [r for r in all_runs(where["uri"]) if r.info.status == "RUNNING"] == []


# -- 4. many commands on one fresh store ------------------------------------------------------


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_fresh_store_both_run(where: dict[str, Any]) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "worm_tune.sweep", *ONE_TRIAL, *where["args"], "--name", name, "--no-analysis"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for name in ("twin-a", "twin-b")
    ]
    errors = [p.communicate(timeout=400)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    runs = all_runs(where["uri"])
    parents = sorted(r.data.tags[tracking.TAG_SWEEP] for r in runs if r.data.tags[tracking.TAG_KIND] == "sweep")
    assert parents == ["twin-a", "twin-b"]
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 4
    assert sorted(e.name for e in MlflowClient(where["uri"]).search_experiments()) == ["Default", "resnet18"]


# -- 7 and 8. bad input is one line and exit 2 ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "99999999999999999999"], "seed=99999999999999999999 is invalid: must be an integer in [0, "),
        (["--search-threshold", "2"], "search.threshold=2.0 is invalid: must be a number in (0, 1)"),
        (["--worm-delta", "0"], "worm.delta=0.0 is invalid: must be a number in (0, 1)"),
    ],
)
def test_out_of_range_run_values_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m worm_tune.run: error: ") and message in err


def test_a_space_file_that_is_not_utf8(where: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    space = where["root"] / "latin1.toml"
    space.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    assert sweep.main([str(space), *where["args"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search space latin1.toml is not UTF-8 text" in err


def test_sweep_refuses_a_threshold_of_two(where: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["resnet18", "--quick", "--set", "search.threshold=2", *where["args"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search.threshold=2.0 is invalid: must be a number in (0, 1)" in err


def test_analysis_reports_folder_that_cannot_be_written(
    where: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert analysis_cli.main(["any", "--tracking-uri", where["uri"], "--reports", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err == "python -m analysis: error: --reports /proc/x cannot be written (No such file or directory)\n"


def test_final_refuses_empty_seeds(where: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert final.main(["s", "--seeds", "", *where["args"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds '' is invalid" in err


# -- 10. a cluster started with `ray start`, token authentication on -----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def token_cluster(tmp_path: Path, ray_tmpdir: Path) -> Iterator[dict[str, Any]]:
    """``ray start --head`` as a user runs it, with a token in the user's ``~/.ray/auth_token``
    (Ray 2.59+ then turns token authentication on); stopped by the PIDs of its own processes."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("worm-tune-test-" + os.urandom(16).hex())
    port = _free_port()
    env = clean_env(HOME=str(home), RAY_TMPDIR=str(ray_tmpdir))
    ray_cli = Path(sys.executable).with_name("ray")
    started = subprocess.run(
        [str(ray_cli), "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "Token authentication is enabled" in started.stdout + started.stderr
        yield {"address": f"127.0.0.1:{port}", "env": env, "home": home}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes_mentioning(str(ray_tmpdir)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)


@pytest.mark.slow
def test_a_ray_start_cluster_with_token_auth(token_cluster: dict[str, Any], where: dict[str, Any]) -> None:
    env, address = token_cluster["env"], token_cluster["address"]
    # Without a token (another user's home), one line within seconds says what to set.
    no_token = {**env, "HOME": str(where["root"] / "stranger")}
    start = time.monotonic()
    code, err = command("worm_tune.sweep", *ONE_TRIAL, *where["args"], "--address", address, env=no_token, timeout=60)
    assert code == 2 and time.monotonic() - start < 15, err
    assert err == (
        f"python -m worm_tune.sweep: error: the Ray cluster at '{address}' requires token authentication and no "
        "token was found here; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token "
        "(`ray get-auth-token` on its head node)\n"
    )
    assert all_runs(where["uri"]) == []
    # With the token Ray keeps in ~/.ray/auth_token, and RAY_AUTH_MODE unset, the sweep just runs.
    code, err = command("worm_tune.sweep", *ONE_TRIAL, *where["args"], "--address", address, "--no-analysis", env=env)
    assert code == 0, err
    (parent,) = [r for r in all_runs(where["uri"]) if r.data.tags[tracking.TAG_KIND] == "sweep"]
    assert parent.info.status == "FINISHED"
