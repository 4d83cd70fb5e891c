"""``python -m worm_tune.run --help``: each field's line is read off the field's metadata."""

import pytest

from worm_tune.cli.run import build_parser
from worm_tune.config import TrialConfig, field_specs


@pytest.fixture
def help_text(monkeypatch: pytest.MonkeyPatch) -> str:
    """The help with each field's text on one line (no wrapping), whitespace runs made single spaces."""
    monkeypatch.setenv("COLUMNS", "1000")
    return " ".join(build_parser().format_help().split())


def test_a_field_shows_its_help_range_and_default(help_text: str) -> None:
    assert "--search-ratio FLOAT pruning ratio p: the fraction pruned; a number in (0, 1); default 0.5" in help_text
    assert (
        "--seed INT random seed; an integer in [0, 18446744073709551615] (what torch accepts); default 0" in help_text
    )


def test_every_field_shows_its_spec(help_text: str) -> None:
    cfg = TrialConfig()
    for key, spec in field_specs().items():
        flag = "--" + key.replace(".", "-").replace("_", "-")
        described = "; ".join(p for p in (spec.help, spec.allowed, f"default {cfg.get(key)!r}") if p)
        assert f"{flag} " in help_text and described in help_text, key
