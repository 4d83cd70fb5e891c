"""The paper's figures are shown beside a setting only when it ran the paper's protocol in every field
the paper fixes: one differing field (a p = 0.3 sweep, say) hides them."""

from __future__ import annotations

from typing import Any

import pytest

from analysis import paper
from worm_tune.config import TrialConfig
from worm_tune.tune.spaces import load_space

#: The paper's protocol, written out here rather than read from ``paper.PROTOCOL``, so a field
#: dropped from that constant fails a test.
PAPERS: dict[str, Any] = {
    "model.pretrained": True,
    "model.stem": "imagenet",
    "data.dataset": "cifar10",
    "data.augment": False,
    "data.train_subset": 0,
    "data.batch_size": 32,
    "optim.optimizer": "sgd",
    "optim.lr": 0.01,
    "optim.momentum": 0.9,
    "optim.weight_decay": 0.0,
    "optim.scheduler": "constant",
    "search.ratio": 0.5,
    "search.window": 5,
    "search.threshold": 0.1,
    "search.l1": 0.0,
    "search.rules": "reference",
    "speed.precision": "fp32",
    "prune.kind": "unstructured",
    "retrain.init": "searched",
    "retrain.target_acc": 0.9,
    "retrain.stop_at_target": True,
}
#: The budgets: any from the bound on matches (the paper's searches and retrainings fit in them).
BUDGETS: dict[str, int] = {"search.max_epochs": 10, "retrain.max_epochs": 5}
#: What the default grids of the CIFAR spaces lack of the protocol (their searches follow docs/method.md).
NOT_IN_DEFAULT_GRIDS = {"search.rules": "reference", "speed.precision": "fp32", "retrain.stop_at_target": True}
WORMS: dict[str, Any] = {"worm.delta": 0.05, "worm.factor": 0.003, "worm.scope": "bn", "worm.apply": "grad"}
#: For each field the paper fixes, a valid value that is not the paper's.
OTHER: dict[str, Any] = {
    "model.pretrained": False,
    "model.stem": "cifar",
    "data.dataset": "cifar100",
    "data.augment": True,
    "data.train_subset": 512,
    "data.batch_size": 64,
    "optim.optimizer": "adamw",
    "optim.lr": 0.1,
    "optim.momentum": 0.8,
    "optim.weight_decay": 5e-4,
    "optim.scheduler": "cosine",
    "search.ratio": 0.3,
    "search.window": 3,
    "search.threshold": 0.05,
    "search.l1": 1e-4,
    "search.rules": "algorithm",
    "speed.precision": "auto",  # bf16 on a GPU
    "search.max_epochs": 9,
    "prune.kind": "structured",
    "retrain.init": "reinit",
    "retrain.target_acc": 0.8,
    "retrain.stop_at_target": False,
    "retrain.max_epochs": 4,
    "worm.delta": 0.1,
    "worm.factor": 0.03,
    "worm.scope": "channel",
    "worm.apply": "update",
}


def config(method: str, arch: str = "resnet18", **changes: Any) -> dict[str, Any]:
    """A flat trial config of the paper's protocol, with ``changes`` (dotted keys spelt with ``__``)."""
    dotted = {k.replace("__", "."): v for k, v in changes.items()}
    fields = {"method": method, "model.arch": arch, **PAPERS, **BUDGETS, **WORMS, **dotted}
    return TrialConfig().replace(fields).to_flat()


def test_the_protocol_is_written_once_and_worded_from_its_values() -> None:
    assert PAPERS | WORMS | {k: paper.AtLeast(v) for k, v in BUDGETS.items()} == paper.PROTOCOL
    text = paper.PROTOCOL_TEXT
    assert "the reference code's search rules" in text and "fp32 arithmetic" in text
    assert "a search budget of at least 10 epochs" in text and "until 90% (stopping there)" in text
    assert "batch 32" in text and "lr 0.01 momentum 0.9" in text and "p = 0.5, window 5, s = 0.1" in text
    assert "δ = 0.05, r = 0.003" in text and "searched weights until 90%" in text


@pytest.mark.parametrize(("arch", "method"), sorted(paper.PAPER))
def test_the_papers_protocol_shows_its_row(arch: str, method: str) -> None:
    assert paper.paper_row(config(method, arch)) == paper.PAPER[(arch, method)]


@pytest.mark.parametrize("field", sorted(OTHER))
def test_one_field_off_the_protocol_hides_the_row(field: str) -> None:
    cfg = config("worm") | {field: OTHER[field]}
    assert paper.paper_row(cfg) is None
    if not field.startswith("worm."):
        assert paper.paper_row(config("earlybird") | {field: OTHER[field]}) is None


def test_a_longer_budget_matches_and_a_shorter_one_does_not() -> None:
    longer = config("worm", search__max_epochs=30, retrain__max_epochs=10)
    assert paper.paper_row(longer) == paper.PAPER[("resnet18", "worm")]
    shorter = config("worm", search__max_epochs=9)
    assert paper.paper_row(shorter) is None
    assert paper.mismatches(shorter) == ["search.max_epochs=9 (paper: at least 10)"]


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_the_p_05_row_is_not_printed_under_other_ratios(ratio: float) -> None:
    for method in ("earlybird", "worm"):
        assert paper.paper_row(config(method, search__ratio=ratio)) is None


def test_earlybird_ignores_worms_knobs() -> None:
    assert (
        paper.paper_row(config("earlybird", worm__delta=0.1, worm__apply="update"))
        == paper.PAPER[("resnet18", "earlybird")]
    )


def test_floats_match_within_rounding_and_a_missing_field_does_not_match() -> None:
    rounded = config("worm") | {"search.ratio": 0.7 - 0.2, "optim.lr": 0.1 * 0.1, "worm.factor": 0.001 * 3}
    assert 0.7 - 0.2 != 0.5 and paper.paper_row(rounded) == paper.PAPER[("resnet18", "worm")]
    assert paper.paper_row({k: v for k, v in config("worm").items() if k != "search.l1"}) is None
    assert paper.paper_row(config("gradclip")) is None  # the paper has no row for it
    assert paper.paper_row(config("worm", "vgg16_bn")) is None


@pytest.mark.parametrize("space", ["resnet18", "vgg11_bn"])
def test_in_the_default_grid_only_the_papers_own_settings_show_its_row(space: str) -> None:
    """The default grids search by docs/method.md's rules, in the GPU's bf16, for a fixed retraining
    budget: no row, and the report says which fields keep it away. With the paper's rules, precision
    and stop, exactly the paper's own settings show it."""
    default = load_space(space).grid()
    assert not any(paper.paper_row(cfg.to_flat()) for cfg in default)
    assert paper.closest([cfg.to_flat() for cfg in default]) == (
        "search.rules=algorithm (paper: reference); speed.precision=auto (paper: fp32); "
        "retrain.stop_at_target=False (paper: True)"
    )
    grid = [cfg.replace(NOT_IN_DEFAULT_GRIDS) for cfg in default]
    shown = [cfg for cfg in grid if paper.paper_row(cfg.to_flat()) is not None]
    assert shown and any(cfg.method == "worm" for cfg in shown) and any(cfg.method == "earlybird" for cfg in shown)
    for cfg in grid:
        papers = cfg.search.ratio == 0.5 and cfg.search.threshold == 0.1
        if cfg.method == "worm":
            papers = papers and cfg.worm.delta == 0.05 and cfg.worm.factor == 0.003
        assert (paper.paper_row(cfg.to_flat()) is not None) == papers, cfg.to_flat()
