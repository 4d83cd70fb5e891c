"""``worm_tune.sweep`` and ``worm_tune.final`` command lines: dry runs and every bad-input path.

Each bad input must fail before any trial starts (no Ray experiment, no MLflow run), with one
line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SWEEP_TINY
from worm_tune.cli import final, sweep


def run_main(module, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = module.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


def test_dry_run_prints_the_count_and_a_table(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run_main(sweep, ["resnet18", "--quick", "--dry-run", "--name", "dry", *where], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "sweep dry: 18 trials (resnet18, quick profile)"
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == ["#", "method", "seed", "worm.delta", "hash"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:]]
    assert len(rows) == 18 and [r[0] for r in rows] == [str(i) for i in range(1, 19)]
    # In run order: each EarlyBird trial, then its two WORM partners (same seed).
    assert [(r[1], r[2], r[3]) for r in rows[:3]] == [
        ("earlybird", "0", "-"),
        ("worm", "0", "0.01"),
        ("worm", "0", "0.03"),
    ]
    assert [r[1] for r in rows] == ["earlybird", "worm", "worm"] * 6
    assert len({r[-1] for r in rows}) == 18


def test_dry_run_of_the_full_grid_leaves_worm_knobs_off_earlybird_rows(
    capsys: pytest.CaptureFixture[str], where: list[str]
) -> None:
    code, out, _ = run_main(sweep, ["vgg11_bn", "--dry-run", *where], capsys)
    assert code == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[3:]]
    header = [c.strip() for c in out.splitlines()[1].strip("|").split("|")]
    delta = header.index("worm.delta")
    assert {r[delta] for r in rows if r[1] == "earlybird"} == {"-"}
    assert {r[delta] for r in rows if r[1] == "worm"} == {"0.02", "0.05", "0.1"}


def test_dry_run_of_an_optuna_search(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    argv = ["resnet18", "--quick", "--search", "optuna", "--num-samples", "5", "--objective", "final_acc", "--dry-run"]
    code, out, _ = run_main(sweep, [*argv, *where], capsys)
    assert code == 0
    assert "5 trials" in out and "Optuna (TPE) trials of worm" in out and "objective final_acc:max" in out


def test_set_pins_a_field_in_the_dry_run(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run_main(sweep, ["resnet18", "--quick", "--set", "worm.delta=0.02", "--dry-run", *where], capsys)
    assert code == 0 and "12 trials" in out.splitlines()[0] and "0.01" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["resnet50"],
            "unknown search space 'resnet50'; known spaces: bert, resnet18, vgg11_bn, vgg16_bn, vit"
            " (or a path to a .toml file)",
        ),
        (["resnet18", "--quick", "--set", "search.ratioo=0.5"], "unknown config key 'search.ratioo'"),
        (["resnet18", "--quick", "--set", "search.ratio=2"], "search.ratio=2.0 is invalid"),
        (["resnet18", "--quick", "--set", "search.window=five"], "search.window='five' is invalid"),
        (["resnet18", "--quick", "--set", "novalue"], "expected KEY=VALUE"),
        (["resnet18", "--search", "bayes"], "invalid choice: 'bayes'"),
        (["resnet18", "--scheduler", "pbt"], "invalid choice: 'pbt'"),
        (["resnet18", "--num-samples", "4"], "apply to --search optuna only"),
        (["resnet18", "--search", "optuna", "--num-samples", "0"], "--num-samples 0 is invalid"),
        (["resnet18", "--search", "optuna", "--objective", "loss"], "metric must be one of"),
        (["resnet18", "--cpus-per-trial", "0"], "--cpus-per-trial 0.0 is invalid: must be > 0"),
        (["resnet18", "--gpus-per-trial", "-1"], "--gpus-per-trial -1.0 is invalid"),
        (["resnet18", "--max-concurrent", "0"], "--max-concurrent 0 is invalid"),
        (["resnet18", "--max-failures", "-2"], "--max-failures -2 is invalid"),
        (["resnet18", "--name", "a/b"], "--name 'a/b' is invalid"),
        (["resnet18", "--resume"], "no sweep of space 'resnet18'"),
        (["resnet18", "--resume", "--name", "nope"], "no sweep named 'nope'"),
        (["resnet18", "--resume", "--quick"], "--resume continues a sweep with its saved settings; drop --quick"),
        (["resnet18", "--tracking-uri", "./mlruns"], "is not supported"),
        (["resnet18", "--tracking-uri", "file:///tmp/mlruns"], "is not supported"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code, _, err = run_main(sweep, [*argv, "--storage", str(tmp_path / "ray")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("python -m worm_tune.sweep: error: ")
    assert message in err
    assert not (tmp_path / "ray").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tracking-uri", "http://127.0.0.1:9"], "tracking URI 'http://127.0.0.1:9' is unreachable"),
        (["--tracking-uri", "sqlite:////nonexistent-folder/mlflow.db"], "folder '/nonexistent-folder' does not exist"),
        (["--set", "data.dataset=cifar10", "--set", "data.data_dir=MISSING"], "cifar10 not found in"),
    ],
)
def test_unusable_store_or_missing_dataset_fails_before_any_trial(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], message: str
) -> None:
    extra = [e.replace("MISSING", str(tmp_path / "no-data")) for e in extra]
    argv = ["resnet18", "--quick", *SWEEP_TINY, "--storage", str(tmp_path / "ray"), "--name", "bad"]
    if "--tracking-uri" not in extra:
        argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    code, _, err = run_main(sweep, [*argv, *extra], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "ray" / "bad").exists()


def test_a_space_without_an_optuna_table(capsys: pytest.CaptureFixture[str], tmp_path: Path, where: list[str]) -> None:
    space = tmp_path / "plain.toml"
    space.write_text('[base]\n"data.dataset" = "digits"\n')
    code, _, err = run_main(sweep, [str(space), "--search", "optuna", *where], capsys)
    assert code == 2 and "has no [optuna] table; use --search grid" in err


def test_exit_code_2_from_the_real_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worm_tune.sweep", "resnet18", "--set", "optim.lr=-1", "--storage", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()
        == ["python -m worm_tune.sweep: error: search space resnet18: optim.lr=-1.0 is invalid: must be > 0"]
        or "optim.lr=-1.0 is invalid" in proc.stderr.strip()
    )
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuchsweep"], "no sweep named 'nosuchsweep'"),
        (["s", "--metric", "loss"], "metric must be one of"),
        (["s", "--seeds", "a,b"], "--seeds 'a,b' is invalid"),
        (["s", "--top-k", "0"], "--top-k 0 is invalid"),
        (["s", "--retrain-epochs", "0"], "--retrain-epochs 0 is invalid"),
        (["s", "--resume"], "--resume needs --name"),
        (["s", "--tracking-uri", "http://127.0.0.1:9"], "is unreachable"),
    ],
)
def test_bad_final_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], where: list[str], argv: list[str], message: str
) -> None:
    if "--tracking-uri" in argv:
        where = where[:2]
    code, _, err = run_main(final, [*argv, *where], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("python -m worm_tune.final: error: ") and message in err
