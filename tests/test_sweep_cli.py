"""``worm_tune.sweep`` and ``worm_tune.final`` command lines: dry runs and every bad-input path.

Each bad input must fail before any trial starts (no Ray experiment, no MLflow run), with one
line on stderr and exit code 2. A dry run makes the checks of data and weights a run makes first.
Every flag a message suggests, here or in ``run`` and ``analysis``, is one its command takes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis import cli as analysis_cli
from tests.helpers import SWEEP_TINY
from worm_tune.cli import final, launch, run, sweep
from worm_tune.config import DataConfig
from worm_tune.data import DataError, load_data
from worm_tune.hub import from_hub
from worm_tune.tune import store
from worm_tune.tune.plan import SETTINGS_FILE, SweepSettings, make_plan


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
    # The paper's grid on digits: a dry run loads the data and weights a run would, and CIFAR-10 is not here.
    digits = ["--set", "data.dataset=digits", "--set", "model.pretrained=false"]
    code, out, err = run_main(sweep, ["vgg11_bn", *digits, "--dry-run", *where], capsys)
    assert code == 0, err
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[3:]]
    header = [c.strip() for c in out.splitlines()[1].strip("|").split("|")]
    delta = header.index("worm.delta")
    assert {r[delta] for r in rows if r[1] == "earlybird"} == {"-"}
    assert {r[delta] for r in rows if r[1] == "worm"} == {"0.02", "0.05", "0.1"}


def test_dry_run_of_an_optuna_search(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    argv = ["resnet18", "--quick", "--search", "optuna", "--num-samples", "5", "--objective", "final_acc", "--dry-run"]
    code, out, _ = run_main(sweep, [*argv, *where], capsys)
    assert code == 0
    assert "36 trials" in out  # 5 candidates on 6 seeds, and 6 EarlyBird baselines
    assert "5 Optuna (TPE) candidates of worm at p=0.5 s=0.04, each on seeds 0-5" in out
    assert "objective: the paired mean difference in final_acc (worm - earlybird, max)" in out


def test_set_pins_a_field_in_the_dry_run(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run_main(sweep, ["resnet18", "--quick", "--set", "worm.delta=0.02", "--dry-run", *where], capsys)
    assert code == 0 and "12 trials" in out.splitlines()[0] and "0.01" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["resnet50"],
            "unknown search space 'resnet50'; known spaces: bert, digits_study, pruning_study, resnet18, vgg11_bn,"
            " vgg16_bn, vit, vit_study (or a path to a .toml file)",
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
        (["resnet18", "--seeds-per-trial", "2"], "--seeds-per-trial, --objective and --sampler-seed apply to"),
        (["resnet18", "--quick", "--search", "optuna", "--seeds-per-trial", "0"], "--seeds-per-trial 0 is invalid"),
        (["resnet18", "--quick", "--search", "optuna", "--scheduler", "asha"], "--scheduler asha does not apply"),
        (["resnet18", "--quick", "--search", "optuna", "--no-share"], "--no-share does not apply to --search optuna"),
        (["resnet18", "--search", "optuna"], "search.ratio has 3 values (0.3, 0.5, 0.7): pin one with --set"),
        (["vit", "--quick", "--search", "optuna"], "profile 'quick' of 'vit' has 2 cases (weights, heads)"),
        (["resnet18", "--cpus-per-trial", "0"], "--cpus-per-trial 0.0 is invalid: must be > 0"),
        (["resnet18", "--gpus-per-trial", "-1"], "--gpus-per-trial -1.0 is invalid"),
        (["resnet18", "--max-concurrent", "0"], "--max-concurrent 0 is invalid"),
        (["resnet18", "--max-failures", "-2"], "--max-failures -2 is invalid"),
        (["resnet18", "--name", "a/b"], "--name 'a/b' is invalid"),
        (["resnet18", "--resume"], "no sweep of space 'resnet18'"),
        (["resnet18", "--resume", "--name", "nope"], "no sweep named 'nope'"),
        (["resnet18", "--resume", "--quick"], "--resume continues a sweep with its saved settings; drop --quick"),
        (["resnet18", "--resume", "--no-share"], "--resume continues a sweep with its saved settings; drop --no-share"),
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
        (["s", "--num-seeds", "0"], "--num-seeds 0 is invalid"),
        (["s", "--num-seeds", "x"], "argument --num-seeds: invalid int value: 'x'"),
        (["s", "--seeds", "7", "--num-seeds", "2"], "--seeds and --num-seeds both given"),
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


# -- a dry run checks what a run checks first ---------------------------------------------------


def test_a_dry_run_fails_on_missing_data_as_the_run_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: list[str]
) -> None:
    argv = ["resnet18", "--quick", "--set", "data.dataset=cifar10", "--set", f"data.data_dir={tmp_path / 'none'}"]
    real = run_main(sweep, [*argv, *where, "--name", "real"], capsys)
    dry = run_main(sweep, [*argv, *where, "--dry-run"], capsys)
    assert real[0] == dry[0] == 2 and dry[1] == ""
    assert dry[2] == real[2] and real[2].count("\n") == 1 and "cifar10 not found in" in real[2]


# -- final: the ranking shows what the sweep varied; the reruns run fresh seeds, with partners -----


def _write_sweep(where: list[str], space: str) -> dict[str, Any]:
    """The MLflow runs of a finished sweep, written without running it: the quick resnet18 profile's
    seeds 0 and 1 (EarlyBird, WORM at delta 0.01 and 0.03), final_acc best for WORM at 0.03. Its
    parent's ``space`` param names ``space`` (the quick profile), whose ``[final]`` table final reads."""
    uri = where[3]
    settings = SweepSettings(space="resnet18", name="done", storage=where[1], tracking_uri=uri, profile="quick")
    configs = [cfg for cfg in make_plan(settings).configs() if cfg.seed < 2]
    exp = store.experiment_id(uri, "resnet18")
    params = {"name": "done", "storage": where[1], "space": space, "profile": "quick"}
    parent = store.start_parent_run(uri, exp, "done", "sweep", {}, params)
    client = store.client(uri)
    score = {"earlybird": 0.5, "worm0.01": 0.6, "worm0.03": 0.7}
    runs = {}
    for cfg in configs:
        child = client.create_run(exp, tags={store.PARENT_TAG: parent, "group_hash": cfg.replace({"seed": 0}).hash()})
        store.log_params(uri, child.info.run_id, cfg.to_flat())
        key = cfg.method + (f"{cfg.get('worm.delta'):g}" if cfg.method == "worm" else "")
        client.log_metric(child.info.run_id, "final_acc", score[key] + cfg.seed / 100)
        client.set_terminated(child.info.run_id, "FINISHED")
        runs[cfg.hash()] = child.info.run_name
    store.end_run(uri, parent, "FINISHED")
    return {"configs": configs, "runs": runs}


@pytest.fixture
def finished_sweep(where: list[str]) -> dict[str, Any]:
    return _write_sweep(where, "resnet18")


def _tables(out: str) -> dict[str, list[list[str]]]:
    """Each Markdown table printed (a blank line apart) by its first header cell ("" the ranking, "#"
    the reruns), as rows of cells: the header, then the rows; "notes": the lines of other blocks."""
    tables: dict[str, list[list[str]]] = {"notes": []}
    for block in out.strip().split("\n\n"):
        if not block.startswith("|"):
            tables["notes"] += [[line] for line in block.splitlines()]
            continue
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
        tables[rows[0][0]] = [row for row in rows if not row[0].startswith("--")]
    return tables


# The quick profile's [final] table: 6 seeds, 3 retraining epochs, top 1; the sweep's budget is 2.
@pytest.mark.parametrize(("budget", "retrain"), [([], 3), (["--retrain-epochs", "7"], 7)])
def test_final_ranks_by_what_the_sweep_varied_and_takes_the_final_budget(
    finished_sweep: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    where: list[str],
    budget: list[str],
    retrain: int,
) -> None:
    argv = ["done", "--top-k", "2", "--seeds", "5", *budget, "--dry-run", *where]
    code, out, err = run_main(final, argv, capsys)
    assert code == 0, err
    tables = _tables(out)
    ranking, reruns = tables[""], tables["#"]
    assert ranking[0] == ["", "#", "final_acc:max (mean)", "seeds", "method", "worm.delta", "group"]
    assert [row[:6] for row in ranking[1:]] == [
        ["*", "1", "0.705", "2", "worm", "0.03"],
        ["*", "2", "0.605", "2", "worm", "0.01"],
        ["", "3", "0.505", "2", "earlybird", "-"],
    ]
    by_group = {cfg.replace({"seed": 0}).hash(): cfg for cfg in finished_sweep["configs"]}
    assert all(row[-1] in by_group for row in ranking[1:])
    # Each rerun is its source config with the new seed and the final budget; both WORM picks share
    # one EarlyBird partner (the sweep's EarlyBird setting, rank 3), run once.
    expected = {by_group[row[-1]].replace({"seed": 5, "retrain.max_epochs": retrain}).hash() for row in ranking[1:]}
    assert {row[-1] for row in reruns[1:]} == expected and len(reruns) == 4
    source = "--retrain-epochs" if budget else "the space's [final] retrain_epochs"
    assert [f"retraining budget: {retrain} epochs ({source})"] in tables["notes"]


def test_final_dry_run_plans_fresh_seeds_with_earlybird_partners(
    finished_sweep: dict[str, Any], capsys: pytest.CaptureFixture[str], where: list[str]
) -> None:
    """Without --seeds: the space's [final] seeds (6) after the sweep's largest (1), its top 1 (WORM at
    0.03) beside its EarlyBird partner, which shows no WORM knob; no rerun repeats a sweep trial."""
    code, out, err = run_main(final, ["done", "--dry-run", *where], capsys)
    assert code == 0, err
    tables = _tables(out)
    header, rows = tables["#"][0], tables["#"][1:]
    assert header == ["#", "method", "seed", "worm.delta", "hash"]
    assert sorted((r[1], int(r[2]), r[3]) for r in rows) == sorted(
        (m, s, "0.03" if m == "worm" else "-") for m in ("earlybird", "worm") for s in range(2, 8)
    )
    assert not {r[-1] for r in rows} & set(finished_sweep["runs"])
    assert ["seeds: 2, 3, 4, 5, 6, 7 (the 6 after the sweep's largest, 1)"] in tables["notes"]
    code, out, err = run_main(final, ["done", "--num-seeds", "2", "--dry-run", *where], capsys)
    assert code == 0, err
    assert sorted({int(r[2]) for r in _tables(out)["#"][1:]}) == [2, 3]


def test_final_reuses_a_sweep_trial_instead_of_repeating_it(
    finished_sweep: dict[str, Any], capsys: pytest.CaptureFixture[str], where: list[str]
) -> None:
    """--seeds naming a sweep seed, with the sweep's budget: those reruns are the sweep's trials (same hash)."""
    argv = ["done", "--top-k", "1", "--seeds", "1,2", "--retrain-epochs", "2", "--dry-run", *where]
    code, out, err = run_main(final, argv, capsys)
    assert code == 0, err
    tables = _tables(out)
    rows = tables["#"][1:]
    assert {(r[1], r[2]) for r in rows} == {("worm", "2"), ("earlybird", "2")}
    assert not {r[-1] for r in rows} & set(finished_sweep["runs"])
    reused = {
        h: name
        for h, name in finished_sweep["runs"].items()
        if any(c.hash() == h and c.seed == 1 and c.get("worm.delta") in (0.03, 0.05) for c in finished_sweep["configs"])
    }
    assert len(reused) == 2  # the WORM 0.03 trial and its EarlyBird partner, at seed 1
    for h, name in reused.items():
        assert [f"reused from the sweep: {name} ({h})"] in tables["notes"]


def test_final_of_a_sweep_whose_space_is_gone_takes_the_defaults(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _write_sweep(where, "no-such-space")
    code, out, err = run_main(final, ["done", "--dry-run", *where], capsys)
    assert code == 0, err
    tables = _tables(out)
    notes = [n[0] for n in tables["notes"]]
    assert sum("the sweep's space cannot be read" in n and "final's defaults apply" in n for n in notes) == 1
    assert "retraining budget: the sweep's" in "\n".join(notes)
    # The defaults: the top 3 (their partner among them), 6 fresh seeds.
    assert len(tables["#"]) - 1 == 3 * 6


# -- every flag a message suggests is one its command takes -------------------------------------

#: Every command's flags, by the name its messages start with.
FLAGS = {module.PROG: set(module.build_parser()._option_string_actions) for module in (run, sweep, final, analysis_cli)}
#: What a message from below the commands (data, weights, the hub) may suggest: it can reach run, sweep and final.
SHARED = FLAGS[run.PROG] & FLAGS[sweep.PROG] & FLAGS[final.PROG]


def unknown_flags(message: str) -> list[str]:
    """The ``--flags`` in ``message`` that their command does not take. A flag is for the command named
    last before it (``python -m X``, which starts every error line); before any, for every command."""
    unknown = []
    flags = SHARED
    for piece in re.split(r"(python -m [\w.]+)", message):
        if piece.startswith("python -m "):
            flags = FLAGS[piece]
            continue
        unknown += [f for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", piece) if f not in flags]
    return unknown


class _NotOnTheHub:
    """Stands in for a Hugging Face class whose files are nowhere."""

    @classmethod
    def from_pretrained(cls, checkpoint: str, **kwargs: Any) -> None:
        raise OSError(f"{checkpoint} is not a local folder and not cached")


def _messages(tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """A representative set of what the commands print on stderr when something is wrong."""
    (tmp_path / "corrupt" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "ray" / "taken").mkdir(parents=True)
    (tmp_path / "ray" / "taken" / SETTINGS_FILE).write_text("{}")
    (tmp_path / "plain.toml").write_text('[base]\n"data.dataset" = "digits"\n')
    out = ["--out", str(tmp_path / "o")]
    calls = [
        (run, ["--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), *out]),
        (run, ["--dataset", "cifar10", "--data-dir", str(tmp_path / "corrupt"), *out]),
        (run, ["--model", "bert", "--dataset", "text", "--data-dir", str(tmp_path / "none"), *out]),
        (run, ["--set", "search.ratio", *out]),
        (sweep, ["resnet18", "--quick", "--set", "data.dataset=cifar10", "--set", "data.data_dir=/x", "--dry-run"]),
        (sweep, ["resnet18", "--num-samples", "4"]),
        (sweep, ["resnet18", "--resume", "--quick"]),
        (sweep, ["resnet18", "--resume"]),
        (sweep, ["resnet18", "--name", "taken"]),
        (sweep, [str(tmp_path / "plain.toml"), "--search", "optuna"]),
        (final, ["s", "--resume"]),
        (final, ["s", "--seeds", "a"]),
        (final, ["s", "--name", "taken"]),
        (analysis_cli, ["s", "--reports", "/proc/x"]),
        (analysis_cli, ["s", "--bootstrap", "5"]),
    ]
    messages = []
    for module, argv in calls:
        assert module.main([*argv, *([] if module is run else where)]) == 2, argv
        messages.append(capsys.readouterr().err)
    below = [  # data and hub errors, as any of run, sweep and final may print them
        lambda: load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "none"))),
        lambda: load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "corrupt"))),
        lambda: load_data(DataConfig(dataset="text", data_dir=str(tmp_path / "none"))),
        lambda: from_hub(_NotOnTheHub, "nobody/no-such-bert", False, DataError),
        lambda: from_hub(_NotOnTheHub, "nobody/no-such-bert", True, DataError),
    ]
    for call in below:
        with pytest.raises(DataError) as info:
            call()
        messages.append(str(info.value))
    settings = SweepSettings(space="resnet18", name="ghost", storage=where[1], tracking_uri=where[3])
    launch.analyse(settings, tmp_path / "reports", sweep.PROG)  # the report fails: a warning with the retry
    messages.append(capsys.readouterr().err)
    return messages


def test_every_flag_a_message_suggests_is_one_its_command_takes(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    messages = _messages(tmp_path, where, capsys)
    suggested = {f for m in messages for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", m)}
    assert {
        "--set",
        "--resume",
        "--name",
        "--search",
        "--tracking-uri",
        "--reports",
    } <= suggested  # the set is representative
    assert {m: unknown_flags(m) for m in messages if unknown_flags(m)} == {}


@pytest.mark.parametrize(
    ("flags", "share"),
    [([], True), (["--no-share"], False), (["--scheduler", "asha"], False), (["--search", "optuna"], True)],
)
def test_a_grid_sweep_shares_unless_told_not_to_or_scheduled(tmp_path: Path, flags: list[str], share: bool) -> None:
    """Sharing needs every trial to run to its end as planned: ASHA stops trials. An Optuna study always
    shares: its candidates start from their EarlyBird baselines' states."""
    args = sweep.build_parser().parse_args(["resnet18", "--quick", *flags, "--storage", str(tmp_path)])
    assert sweep.settings_from_args(args).share is share
