"""``final`` as a confirmation: its verdict on made-up per-seed summaries, the EarlyBird partner of a
config, the spaces' ``[final]`` and ``[analysis]`` tables, and how a network is logged (tiny modules
on a SQLite store). No Ray: seconds.

The p-values with a known answer are the exact two-sided Wilcoxon signed-rank p, computed here by
enumerating the 2^n sign patterns (an independent method), on differences with distinct magnitudes.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from analysis.compare import variant_label
from analysis.confirm import confirmation
from worm_tune.cli import final, sweep
from worm_tune.config import TRUNCATION_FIELDS, TrialConfig
from worm_tune.tune import model_logging
from worm_tune.tune.plan import pair_key
from worm_tune.tune.spaces import FinalSpec, Objective, SpaceError, load_space

SEARCH = Objective.parse("search_epochs")
ACCURACY = Objective.parse("final_acc")


def exact_wilcoxon(differences: list[float]) -> float:
    """Two-sided exact p: the share of sign patterns whose smaller rank sum is at most the observed one."""
    ranks = {abs(d): r for r, d in enumerate(sorted(differences, key=abs), 1)}
    positive = sum(ranks[abs(d)] for d in differences if d > 0)
    total = len(differences) * (len(differences) + 1) // 2
    observed = min(positive, total - positive)
    patterns = list(itertools.product((0, 1), repeat=len(differences)))
    sums = [sum(r for r, sign in zip(range(1, len(differences) + 1), p, strict=True) if sign) for p in patterns]
    return min(1.0, 2 * sum(s <= observed for s in sums) / len(patterns))


def sides(metric: str, differences: list[float], seeds: range) -> tuple[dict, dict]:
    """Per-seed summaries of a pick and its partner whose ``metric`` differs by ``differences`` (and, when
    the metric is another, whose search lengths differ by -1 on each seed)."""
    partner = {s: {"search_epochs": 8.0, metric: 10.0} for s in seeds}
    pick = {s: {"search_epochs": 7.0, metric: 10.0 + d} for s, d in zip(seeds, differences, strict=True)}
    return pick, partner


def test_a_significant_difference_in_the_ranked_direction_is_confirmed() -> None:
    differences = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]  # WORM searches shorter on every seed
    pick, partner = sides("search_epochs", differences, range(6, 12))
    (line,) = confirmation("WORM δ=0.03 r=0.003", pick, partner, SEARCH, set(range(6)))
    found = re.fullmatch(
        r"confirmation on 6 fresh seeds \(one pre-stated test\): WORM δ=0.03 r=0.003 minus EarlyBird, "
        r"search_epochs -3.5 \[(\S+), (\S+)\], Wilcoxon p=(\S+): confirmed",
        line,
    )
    assert found, line  # mean -21 / 6 = -3.5
    lo, hi, p = map(float, found.groups())
    assert -6 <= lo <= -3.5 <= hi <= -1  # every resampled mean lies within the values
    assert p == float(f"{exact_wilcoxon(differences):.2g}") == 0.031  # 2 / 64


def test_the_other_direction_and_no_evidence_are_not_confirmed() -> None:
    worse = [-0.01, -0.02, -0.03, -0.04, -0.05, -0.06]  # WORM loses accuracy on every seed
    pick, partner = sides("final_acc", worse, range(6))
    lines = confirmation("WORM δ=0.03 r=0.003", pick, partner, ACCURACY, set())
    assert lines[0].endswith(": not confirmed: EarlyBird is better")
    assert "minus EarlyBird, final_acc -3.50 pp [" in lines[0]  # accuracies in percentage points, as the report
    # The search length follows, secondary: -1 on 6 seeds, a tie each time in magnitude.
    assert lines[1].startswith("secondary: WORM δ=0.03 r=0.003 minus EarlyBird, search_epochs -1 [")
    mixed = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0]
    pick, partner = sides("search_epochs", mixed, range(6))
    (line,) = confirmation("WORM", pick, partner, SEARCH, {0, 1, 9})
    assert line.startswith("confirmation on 6 seeds (2 of them the sweep's) (one pre-stated test): ")
    assert line.endswith(f": not confirmed (p={exact_wilcoxon(mixed):.2g})")


def test_tied_pairs_do_not_count_towards_a_test() -> None:
    """Seven pairs, two of them ties: five non-zero differences, too few for a test (Wilcoxon drops zeros)."""
    differences = [0.0, -1.0, -2.0, 0.0, -3.0, -4.0, -5.0]
    pick, partner = sides("search_epochs", differences, range(10, 17))
    (line,) = confirmation("WORM", pick, partner, SEARCH, set(range(10)))
    values = "s10 +0, s11 -1, s12 -2, s13 +0, s14 -3, s15 -4, s16 -5"
    assert line == (
        "confirmation on 7 fresh seeds (one pre-stated test): WORM minus EarlyBird, "
        f"search_epochs per seed: {values}: too few pairs to test (5 non-zero < 6)"
    )


def test_a_seed_missing_on_either_side_is_not_a_pair() -> None:
    pick, partner = sides("search_epochs", [-1.0, -2.0, -3.0], range(3))
    del partner[1]
    (line,) = confirmation("WORM", pick, partner, SEARCH, set())
    assert "per seed: s0 -1, s2 -3: too few pairs to test (2 non-zero < 6)" in line
    assert line.startswith("confirmation on 2 fresh seeds")


def test_the_earlybird_partner_is_the_same_setting_without_worm_knobs() -> None:
    worm = TrialConfig().replace({"method": "worm", "worm.delta": 0.03, "worm.factor": 0.01, "seed": 4}).validate()
    earlybird = TrialConfig().replace({"seed": 4}).validate()
    found = final.partner(worm)
    assert found.method == "earlybird" and pair_key(found) == pair_key(worm)
    assert found.hash() == earlybird.hash()  # the sweep's own EarlyBird trial of that seed
    assert final.partner(earlybird).hash() == earlybird.hash()  # EarlyBird is its own
    # The sweep's own EarlyBird setting of the pair when given, WORM's knobs as that sweep set them.
    pinned = earlybird.replace({"worm.delta": 0.03, "seed": 0})
    other = earlybird.replace({"search.ratio": 0.7, "seed": 0})
    assert final.partner(worm, [other, pinned]).hash() == pinned.replace({"seed": 4}).hash() != found.hash()
    assert all(found.get(k) == TrialConfig().get(k) for k in TRUNCATION_FIELDS)
    assert variant_label(worm.to_flat()) == "WORM δ=0.03 r=0.01" and variant_label(earlybird.to_flat()) == "EarlyBird"


# -- the spaces' [final] and [analysis] tables ---------------------------------------------------


def test_the_shipped_spaces_state_their_final_and_margin() -> None:
    quick = load_space("resnet18", "quick")
    assert quick.final.seeds == 6 and quick.final.top_k == 1  # 6 pairs: a Wilcoxon test is possible
    assert quick.final.retrain_epochs is not None and load_space("resnet18").final.retrain_epochs is not None
    assert load_space("digits_study").margin == 0.01
    assert load_space("vit").final == FinalSpec() and load_space("vit").margin is None


def _space(tmp_path: Path, tables: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(tables + '[base]\n"data.dataset" = "digits"\n"model.pretrained" = false\n')
    return path


def test_a_profile_overrides_the_final_table_key_by_key(tmp_path: Path) -> None:
    path = _space(tmp_path, "[final]\nseeds = 8\ntop_k = 2\n[profiles.q]\nfinal = { seeds = 3 }\n")
    assert load_space(str(path)).final == FinalSpec(seeds=8, top_k=2)
    assert load_space(str(path), "q").final == FinalSpec(seeds=3, top_k=2)
    assert load_space(str(path), "q").pin({"seed": 1}).final == FinalSpec(seeds=3, top_k=2)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ("[final]\nseed = 6\n", "final: unknown key 'seed'; allowed: retrain_epochs, seeds, top_k"),
        ("[final]\nseeds = 0\n", "final.seeds=0 is invalid: must be a positive integer"),
        ("[final]\nretrain_epochs = 2.5\n", "final.retrain_epochs=2.5 is invalid: must be a positive integer"),
        ("final = 3\n", "final must be a table"),
        ("[analysis]\nmargins = 0.01\n", "analysis: unknown key 'margins'; allowed: margin"),
        ("[analysis]\nmargin = 1\n", "analysis.margin=1 is invalid: must be a number in (0, 1)"),
        ("[analysis]\nmargin = true\n", "analysis.margin=True is invalid"),
    ],
)
def test_a_bad_final_or_analysis_table_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tables: str, message: str
) -> None:
    path = _space(tmp_path, tables)
    with pytest.raises(SpaceError, match=re.escape(message)):
        load_space(str(path))
    where = ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert sweep.main([str(path), "--dry-run", *where]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_margin_is_read(tmp_path: Path) -> None:
    assert load_space(str(_space(tmp_path, "[analysis]\nmargin = 0.02\n"))).margin == 0.02


# -- networks in MLflow: exported with a dynamic batch, or pickled in one line where export fails --


class _Tiny(nn.Module):
    """A linear layer: exports as is."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _Branching(_Tiny):
    """A branch on the input's values, which torch.export cannot trace into a graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if float(x.sum()) > 0 else -self.fc(x)


@pytest.mark.parametrize(("network", "exported"), [(_Tiny, True), (_Branching, False)])
def test_a_network_is_logged_exported_or_said_to_be_pickled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    network: type[nn.Module],
    exported: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.get_run(client.create_run(client.create_experiment("e")).info.run_id)
    torch.manual_seed(0)
    model = network()
    model_uri = model_logging.log_model(uri, model, torch.zeros(1, 4), run)
    # Nothing but MLflow's store set-up (INFO lines) reaches the terminal: no warning, no partial graph
    # of a failed export; a fallback says so in one line of its own.
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip() and " INFO " not in line]
    if exported:
        assert lines == []
    else:
        assert len(lines) == 1 and "torch.export failed" in lines[0] and "logged pickled instead" in lines[0], lines
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model_id = model_uri.removeprefix("models:/")
    data = {Path(f.path).name for f in client.list_logged_model_artifacts(model_id, "data")}
    assert ("model.pt2" in data) == exported
    loaded = mlflow.pytorch.load_model(model_uri)
    batch = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))  # not the example's batch of 2
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))
