"""What a refactor must leave alone: the trial names, order and config hashes a sweep plans.

The tables in ``tests/data/pinned`` are ``--dry-run`` output at bbd8eda (and unchanged at 1099602),
less the first line (the sweep's name); ``vit.quick`` was planned anew by issue 27, which replaced
that profile (its heads and weights became cases with settings of their own). A config hash names
run folders and MLflow runs, and a trial's number and name are how users find it, so each space's
plan must reproduce them exactly.
The numbers of a real sweep are pinned in ``tests/test_sweep.py`` (``quick-sweep.json``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worm_tune.cli import sweep

PINNED = Path(__file__).parent / "data" / "pinned"


@pytest.mark.parametrize("table", sorted(PINNED.glob("*.table")), ids=lambda p: p.stem)
def test_each_space_plans_the_pinned_trials(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space, _, profile = table.stem.partition(".")
    argv = [space, *(["--quick"] if profile == "quick" else []), "--dry-run", "--name", "pin"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep pin: ")
    assert out[1:] == table.read_text().splitlines()
