"""State files that fail: damaged checkpoints, a full disk, an unusable ``--out``; for the run CLI and the trainable.

The disk-full tests fill a real, small tmpfs (they need root to mount one, and skip without).
The trials are a tiny ViT on 128 digits images: ~5 MB checkpoints and a few seconds per run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from tests.helpers import mounted_tmpfs
from worm_tune.checkpoints import CheckpointError, load_state, save_state, write_atomic
from worm_tune.cli.run import main
from worm_tune.metrics import TIMING, untimed
from worm_tune.tune.reports import reported
from worm_tune.tune.trainable import CHECKPOINT_FILE
from worm_tune.tune.trial_trainable import TicketTrainable

#: The trials pin torch to one thread: later test modules get back what they had.
pytestmark = pytest.mark.usefixtures("keep_torch_threads")

TINY = {
    "method": "earlybird",
    "data.dataset": "digits",
    "data.train_subset": 128,
    "data.batch_size": 64,
    "search.window": 2,
    "search.max_epochs": 3,
    "retrain.max_epochs": 2,
    "model.arch": "vit",
    "device": "cpu",
    "threads": 1,  # fixed, so runs in this process agree whatever ran before them
}
ARGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")] + ["--quiet"]


def metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: what every recovered run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB filesystem that fills up: a tmpfs mounted for the test."""
    with mounted_tmpfs(tmp_path / "fs", "16m") as mount:
        yield mount


def fill(fs: Path, leave: int) -> Path:
    """Write a filler file so that about ``leave`` bytes stay free on ``fs``."""
    filler = fs / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(fs).free - leave))
    return filler


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


# -- the module ------------------------------------------------------------------------------


def test_state_round_trips_atomically(tmp_path: Path) -> None:
    state = {"weights": torch.arange(10.0), "history": [{"epoch": 1, "acc": 0.5}], "phase": "search"}
    path = tmp_path / "state.pt"
    size = save_state(state, path)
    assert size == path.stat().st_size and not leftovers(tmp_path)
    loaded = load_state(path)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["history"] == state["history"]


def corrupt(path: Path, how: str) -> None:
    """Damage a state file the ways a crash, a bad copy or a full disk leave one."""
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(4096), "empty": b""}[how])


DAMAGE = pytest.mark.parametrize("how", ["truncated", "random", "empty"])


@DAMAGE
def test_a_damaged_file_is_a_one_line_checkpoint_error(how: str, tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_state({"weights": torch.ones(1000)}, path)
    corrupt(path, how)
    with pytest.raises(CheckpointError) as caught:
        load_state(path)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} is damaged (") and "\n" not in message and len(message) < 300
    assert caught.value.reason in message


def test_a_file_that_is_not_a_state_dict_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="is damaged \\(it holds a list, not a state dict\\)"):
        load_state(path)


def test_space_is_checked_before_writing(tmpfs: Path) -> None:
    """The last checkpoint's size must be free, or nothing is written and the last one stays."""
    path = tmpfs / "checkpoint.pt"
    save_state({"weights": torch.zeros(500_000)}, path)  # 2 MB
    fill(tmpfs, leave=1_000_000)
    with pytest.raises(CheckpointError) as caught:
        save_state({"weights": torch.zeros(10)}, path)  # small, but refused: the check comes first
    message = str(caught.value)
    assert message.startswith(f"no space left on {tmpfs} (tmpfs) writing {path}: need about 2.0 MB, ")
    assert message.endswith(" kB free") and "\n" not in message
    assert not leftovers(tmpfs)
    assert load_state(path)["weights"].shape == (500_000,)


def test_a_write_that_fills_the_disk_removes_its_temp_file(tmpfs: Path) -> None:
    fill(tmpfs, leave=1_000_000)
    path = tmpfs / "checkpoint.pt"
    with pytest.raises(CheckpointError, match=f"^no space left on {tmpfs} \\(tmpfs\\) writing {path}: need more than "):
        save_state({"weights": torch.zeros(1_000_000)}, path)  # 4 MB into 1 MB
    assert not leftovers(tmpfs) and not path.exists()
    # torch's own file writer (how the final model is saved) says only "unexpected pos"; still "no space".
    with pytest.raises(CheckpointError, match=r"^no space left on "):
        write_atomic(path, lambda tmp: torch.save({"weights": torch.zeros(1_000_000)}, tmp))
    assert not leftovers(tmpfs) and not path.exists()


def test_a_write_failing_for_another_reason_says_why(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("serialising went wrong. Details follow")

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(CheckpointError) as caught:
        write_atomic(path, write)
    assert str(caught.value) == f"cannot write {path}: RuntimeError: serialising went wrong"
    assert not leftovers(tmp_path)


# -- python -m worm_tune.run -----------------------------------------------------------------


@DAMAGE
def test_run_refuses_a_damaged_checkpoint_until_fresh(
    how: str, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(reference / "checkpoint.pt", out / "checkpoint.pt")
    corrupt(out / "checkpoint.pt", how)
    assert main([*ARGS, "--out", str(out)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"python -m worm_tune.run: error: checkpoint {out / 'checkpoint.pt'} is damaged (")
    assert err.endswith("; pass --fresh to start over")
    assert main([*ARGS, "--fresh", "--out", str(out)]) == 0
    assert untimed(metrics(out)) == untimed(metrics(reference))


@pytest.mark.parametrize("when", ["first checkpoint", "second checkpoint"])
def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_finishes(
    when: str, reference: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With room for less than one checkpoint the first write fails; with room for about 1.5, the
    space check refuses the second. Either way the last whole checkpoint stays, and the rerun
    after space is freed gives the uninterrupted run's numbers."""
    size = (reference / "checkpoint.pt").stat().st_size  # the largest: after pruning
    filler = fill(tmpfs, leave=size // 2 if when == "first checkpoint" else size * 3 // 2)
    out = tmpfs / "run"
    assert main([*ARGS, "--out", str(out)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"python -m worm_tune.run: error: no space left on {tmpfs} (tmpfs) writing {out}/"), err
    assert not leftovers(out)
    if when == "first checkpoint":
        assert not (out / "checkpoint.pt").exists()
    else:
        assert load_state(out / "checkpoint.pt")["global_epoch"] == 1
        assert len(metrics(out)["epochs"]) == 1
    filler.unlink()
    assert main([*ARGS, "--out", str(out)]) == 0
    assert untimed(metrics(out)) == untimed(metrics(reference))
    assert not leftovers(out)


@pytest.mark.parametrize("kind", ["/proc/x", "a file", "/dev/null"])
def test_an_unusable_out_is_one_line_and_exit_2(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = Path(kind)
    if kind == "a file":
        out = tmp_path / "file"
        out.write_text("not a folder")
    if not out.parent.is_dir():
        pytest.skip(f"{out.parent} does not exist here")
    assert main([*ARGS, "--out", str(out)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"python -m worm_tune.run: error: --out {out} ")
    expected = "cannot be written (" if kind == "/proc/x" else "exists and is not a folder"
    assert expected in err


# -- the Ray trainable -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=1, include_dashboard=False, address="local")
    yield
    ray.shutdown()


def same_epoch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The epoch's numbers, not its timing nor Ray's bookkeeping."""
    keys = [k for k in (*reported("earlybird"), "config_hash") if k not in TIMING]
    strip = lambda s: {k: v for k, v in s.items() if k not in TIMING}  # noqa: E731
    return [a[k] for k in keys] == [b[k] for k in keys] and strip(a["summary"]) == strip(b["summary"])


def test_a_damaged_ray_checkpoint_restarts_the_trial_from_scratch(ray_local: None, tmp_path: Path) -> None:
    first = TicketTrainable(config=dict(TINY))
    results = [first.train(), first.train()]
    saved = first.save(str(tmp_path / "checkpoint"))
    first.stop()
    assert all("notice" not in r for r in results)

    healthy = TicketTrainable(config=dict(TINY))  # a whole checkpoint resumes where it was
    healthy.restore(saved)
    resumed = healthy.train()
    healthy.stop()
    assert resumed["training_iteration"] == 3 and resumed["summary"]["epochs"] == 3 and "notice" not in resumed

    corrupt(tmp_path / "checkpoint" / CHECKPOINT_FILE, "truncated")
    trainable = TicketTrainable(config=dict(TINY))
    trainable.restore(saved)
    restarted = [trainable.train(), trainable.train()]
    trainable.stop()
    notice = restarted[0]["notice"]
    assert notice.startswith(f"checkpoint {CHECKPOINT_FILE} of epoch 2 was damaged (RuntimeError: PytorchStreamReader")
    assert notice.endswith("); restarted from scratch") and "\n" not in notice
    assert "notice" not in restarted[1]
    assert [r["training_iteration"] for r in restarted] == [1, 2]
    assert all(same_epoch(a, b) for a, b in zip(restarted, results, strict=True))
