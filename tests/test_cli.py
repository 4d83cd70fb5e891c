"""``python -m worm_tune.run``: outputs, progress, resume after an interrupt, and every bad-input path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import default_sigint
from worm_tune.cli.run import main
from worm_tune.config import field_types
from worm_tune.engine import load_model
from worm_tune.metrics import untimed

TINY = [
    "--dataset",
    "digits",
    "--data-train-subset",
    "128",
    "--data-batch-size",
    "64",
    "--search-window",
    "2",
    "--search-max-epochs",
    "3",
    "--retrain-max-epochs",
    "2",
    "--device",
    "cpu",
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worm_tune.run", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900
    )


@pytest.mark.slow
def test_full_resnet18_trial_on_digits_converges(tmp_path: Path) -> None:
    """The acceptance run: the real resnet18, the whole digits split, EarlyBird's default rule (s = 0.1)."""
    out = tmp_path / "eb"
    proc = cli("--dataset", "digits", "--method", "earlybird", "--retrain-max-epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    payload = json.loads((out / "metrics.json").read_text())
    summary = payload["summary"]
    assert summary["converged"] is True, [m["d_max"] for m in payload["epochs"]]
    assert summary["search_epochs"] < 30
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert summary["final_acc"] > 0.8
    # One progress line per epoch, with the key numbers.
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("search", "retrain"))]
    assert len(lines) == summary["search_epochs"] + 2
    assert "d_max" in lines[0] and "test" in lines[0] and "converged" in lines[summary["search_epochs"] - 1]
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["search_epochs"] == summary["search_epochs"]
    model = load_model(out / "model.pt").eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_interrupted_or_crashed_run_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    assert cli(*TINY, "--method", "worm", "--quiet", "--out", str(reference)).returncode == 0
    out = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worm_tune.run", *TINY, "--method", "worm", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=default_sigint,
    )
    for line in proc.stdout:  # wait for two finished epochs, then interrupt like Ctrl-C
        if line.startswith("search  ep   2"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    partial = json.loads((out / "metrics.json").read_text())  # partial results stay readable
    assert 2 <= len(partial["epochs"]) < 5 and partial["summary"]["done"] is False
    resumed = cli(*TINY, "--method", "worm", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert untimed(json.loads((out / "metrics.json").read_text())) == untimed(
        json.loads((reference / "metrics.json").read_text())
    )
    # The fault knob: crash once after epoch 2 (before it is saved); the rerun resumes from epoch 1.
    crashed = tmp_path / "crash"
    proc = cli(*TINY, "--method", "worm", "--crash-at-epoch", "2", "--quiet", "--out", str(crashed))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "injected fault: crash_at_epoch=2" in proc.stderr
    assert len(json.loads((crashed / "metrics.json").read_text())["epochs"]) == 1
    assert cli(*TINY, "--method", "worm", "--crash-at-epoch", "2", "--quiet", "--out", str(crashed)).returncode == 0
    assert untimed(json.loads((crashed / "metrics.json").read_text())) == untimed(
        json.loads((reference / "metrics.json").read_text())
    )


def test_config_file_and_set_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "trial.toml"
    cfg_file.write_text('method = "gradclip"\n[search]\nratio = 0.3\n[worm]\nfactor = 0.5\n')
    out = tmp_path / "run"
    code = main(["--config", str(cfg_file), *TINY, "--set", "search.ratio=0.7", "--quiet", "--out", str(out)])
    assert code == 0
    written = json.loads((out / "config.json").read_text())["config"]
    assert written["method"] == "gradclip" and written["worm"]["factor"] == 0.5
    assert written["search"]["ratio"] == 0.7  # --set beats the file
    assert json.loads(capsys.readouterr().out)["sparsity"] == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--ratio", "1.5"], "search.ratio=1.5 is invalid: must be a number in (0, 1)"),
        (["--method", "lottery"], "method='lottery' is invalid: must be one of earlybird, worm"),
        (["--search-window", "two"], "search.window='two' is invalid: must be an integer"),
        (["--set", "search.ratoi=0.5"], "unknown config key 'search.ratoi'"),
        (["--set", "search.ratio"], "expected KEY=VALUE"),
        (["--config", "/nonexistent/trial.toml"], "does not exist"),
        (["--device", "cuda"], "no CUDA device is available"),
        (["--model", "resnet50"], "model.arch='resnet50' is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([*TINY, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("python -m worm_tune.run: error:")
    assert not (tmp_path / "o" / "metrics.json").exists()  # nothing started


def test_missing_cifar_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "cifar-10-batches-py") in err and "--set data.download=true" in err


def test_out_dir_of_another_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*TINY, "--search-max-epochs", "1", "--retrain-max-epochs", "1", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--seed", "5", "--quiet", "--out", str(out)]) == 2
    assert "use another --out or pass --fresh" in capsys.readouterr().err


def test_usage_error_from_the_real_entry_point_has_no_traceback() -> None:
    proc = cli("--ratio", "0")
    assert proc.returncode == 2
    expected = "python -m worm_tune.run: error: search.ratio=0.0 is invalid: must be a number in (0, 1)"
    assert proc.stderr.strip() == expected
    assert "Traceback" not in proc.stderr


def test_help_lists_every_config_field_with_its_choices() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for key in field_types():
        assert "--" + key.replace(".", "-").replace("_", "-") in proc.stdout, key
    assert "one of earlybird, worm, gradclip, greedy," in proc.stdout
