"""A SQLite store that survives being copied: relative artifact locations, no machine paths in params."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from worm_tune.tune import store


def test_artifacts_are_recorded_beside_the_store_and_read_from_a_copy_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tmp_path / "cluster"
    original.mkdir()
    monkeypatch.chdir(tmp_path)  # a working directory other than the store's folder
    uri = f"sqlite:///{original / 'mlflow.db'}"
    exp = store.experiment_id(uri, "resnet18")
    assert MlflowClient(uri).get_experiment(exp).artifact_location == "mlartifacts/resnet18"
    run = store.start_parent_run(uri, exp, "s", "sweep", {}, {})
    with store.at_store(uri):
        MlflowClient(uri).log_text(run, "hello", "note.txt")
    assert (original / "mlartifacts" / "resnet18" / run / "artifacts" / "note.txt").read_text() == "hello"
    assert Path.cwd() == tmp_path  # at_store gave the working directory back

    copy = tmp_path / "laptop"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    copied = f"sqlite:///{copy / 'mlflow.db'}"
    with store.at_store(copied):
        path = MlflowClient(copied).download_artifacts(run, "note.txt")
        assert Path(path).resolve().read_text() == "hello"


def test_a_server_store_is_left_to_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with store.at_store("http://127.0.0.1:5000"):
        assert Path.cwd() == tmp_path
    assert store.artifact_root("http://127.0.0.1:5000", "resnet18") is None  # the server's mlflow-artifacts:


def test_a_parent_run_keeps_machine_paths_as_tags_not_params(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = store.experiment_id(uri, "custom")
    params = {
        "name": "s",
        "space": str(tmp_path / "spaces" / "custom.toml"),
        "storage": str(tmp_path / "ray"),
        "tracking_uri": uri,
        "set.data.data_dir": str(tmp_path / "data"),
        "set.search.ratio": "0.3",
    }
    run = MlflowClient(uri).get_run(store.start_parent_run(uri, exp, "s", "sweep", {}, params))
    assert run.data.params == {"name": "s", "space": "custom", "set.search.ratio": "0.3"}
    assert run.data.tags["worm_tune.storage"] == str(tmp_path / "ray")
    assert run.data.tags["worm_tune.space"] == params["space"]
    assert run.data.tags["worm_tune.set.data.data_dir"] == str(tmp_path / "data")
    # What the driver state reads back: the resume command names the space file and the storage.
    state = store.driver_state(run)
    assert f"sweep {params['space']} --resume --name s --storage {tmp_path / 'ray'}" in state
