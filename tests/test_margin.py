"""The equivalence margin of accuracy comparisons: ``python -m analysis --margin``, or the one the
sweep's space states (``[analysis] margin``), stated before the data is seen; and the sweep's
``--profile`` flag, which picks a space's profile by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import cli, paper
from worm_tune.cli import sweep
from worm_tune.usage import UsageError


@pytest.mark.parametrize(("text", "margin"), [("1pp", 0.01), ("0.5pp", 0.005), ("0.01", 0.01), (" 2pp ", 0.02)])
def test_a_margin_in_percentage_points_or_as_a_fraction(text: str, margin: float) -> None:
    assert cli.parse_margin(text) == pytest.approx(margin)


@pytest.mark.parametrize("text", ["0", "1", "0pp", "100pp", "-1pp", "x", "1%", "pp", "nan"])
def test_a_margin_outside_0_1_or_unreadable_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match=r"--margin .* is invalid: expected percentage points like 1pp"):
        cli.parse_margin(text)


def test_bad_margin_is_one_line_and_exit_2_before_any_sweep_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    assert cli.main(["any", "--margin", "5", "--tracking-uri", uri, "--reports", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--margin '5' is invalid" in err
    assert not (tmp_path / "absent.db").exists() and not (tmp_path / "r").exists()


def test_the_margin_a_space_states_and_none_where_it_states_none(tmp_path: Path) -> None:
    assert cli.space_margin("digits_study") == 0.01
    assert cli.space_margin("resnet18") is None
    stated = tmp_path / "stated.toml"
    stated.write_text('[base]\n"data.dataset" = "digits"\n\n[analysis]\nmargin = 0.02\n')
    assert cli.space_margin(str(stated)) == 0.02
    assert cli.space_margin(str(tmp_path / "gone.toml")) is None  # the space file is not here any more
    assert cli.space_margin(None) is None  # a final rerun has no space of its own


# -- profiles --------------------------------------------------------------------------------


def test_profile_quick_is_quick(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["resnet18", "--quick", "--name", "q", "--dry-run"]) == 0
    quick = capsys.readouterr().out
    assert "(resnet18, quick profile)" in quick
    assert sweep.main(["resnet18", "--profile", "quick", "--name", "q", "--dry-run"]) == 0
    assert capsys.readouterr().out == quick


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "nope"], "search space 'resnet18' has no profile 'nope'; profiles: default, quick, paper"),
        (["--quick", "--profile", "paper"], "--quick is --profile quick; drop one of --quick and --profile paper"),
    ],
)
def test_bad_profile_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["resnet18", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(("space", "arch"), [("resnet18", "resnet18"), ("vgg11_bn", "vgg11_bn")])
def test_the_paper_profile_is_the_papers_protocol_in_every_trial(space: str, arch: str) -> None:
    from worm_tune.tune.spaces import load_space

    grid = load_space(space, "paper").grid()
    assert {c.method for c in grid} == {"earlybird", "worm"} and len({c.seed for c in grid}) >= 5
    for cfg in grid:
        flat = cfg.to_flat()
        assert flat["model.arch"] == arch and not paper.mismatches(flat), paper.mismatches(flat)
