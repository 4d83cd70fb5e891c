"""Tickets compared (issue 24): WORM's ticket against EarlyBird's of the same seed, on the scale of
EarlyBird's own tickets across seeds. Quick tests on hand-made tickets whose answers are worked out
by hand (or by Python sets, an independent method); one slow test reads the tickets a real sweep
logged to MLflow."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import compare, load
from analysis.stats import MIN_PAIRS
from analysis.tickets import (
    CLOSE,
    NOT_CLOSER,
    SAME,
    TITLE,
    compare_tickets,
    jaccard_pruned,
    kept_per_layer,
    load_tickets,
    per_layer,
    section,
    summarize,
)
from tests import test_footprint as footprint
from worm_tune.config import TrialConfig
from worm_tune.tickets import KEEP, TICKET_FILE, Ticket
from worm_tune.tune.store import at_store

N_BOOT = 500
#: The footprint tests' module fixtures: a real 6-trial sweep logged to MLflow, run once for this module's slow test
#: (on conftest's ``local_ray``).
where, shared = footprint.where, footprint.shared


def channels(keep: str, layers: tuple[int, ...] | None = None) -> Ticket:
    """A structured ticket from a string of 1 (kept) and 0 (pruned)."""
    return Ticket({KEEP: np.array([c == "1" for c in keep])}, "channel", 3, layers)


def pruned(t: Ticket) -> set[int]:
    return {i for i, k in enumerate(np.concatenate([m.ravel() for m in t.masks.values()])) if not k}


def set_jaccard(a: Ticket, b: Ticket) -> float:
    """Jaccard of the pruned units by Python sets: the independent method the tests check against."""
    pa, pb = pruned(a), pruned(b)
    return len(pa & pb) / len(pa | pb) if pa | pb else 1.0


# -- two tickets -----------------------------------------------------------------------------


def test_jaccard_of_the_pruned_units_by_hand() -> None:
    a, b = channels("110010", (4, 2)), channels("100100", (4, 2))
    # a prunes {2, 3, 5}, b prunes {1, 2, 4, 5}: both {2, 5}, either {1, 2, 3, 4, 5}: 2/5.
    assert jaccard_pruned(a, b) == pytest.approx(0.4) == jaccard_pruned(b, a)
    assert jaccard_pruned(a, a) == 1.0
    assert jaccard_pruned(channels("1111"), channels("1111")) == 1.0  # neither prunes: the same ticket
    assert jaccard_pruned(channels("1100"), channels("0011")) == 0.0  # a prunes {2, 3}, b {0, 1}: none shared


def test_tickets_of_different_networks_are_refused_in_one_line() -> None:
    for other in (channels("11001"), channels("110010", (3, 3))):
        with pytest.raises(ValueError, match="different networks") as info:
            jaccard_pruned(channels("110010", (4, 2)), other)
        assert "\n" not in str(info.value)
    weights = Ticket({"fc.weight": np.ones(6, dtype=bool)}, "weight", 2)
    with pytest.raises(ValueError, match="different networks"):
        kept_per_layer(channels("110010"), weights)


def test_kept_per_layer_structured_by_hand() -> None:
    a, b = channels("110010", (4, 2)), channels("100100", (4, 2))
    # Layer 1 (units 0-3): a keeps {0, 1}, b keeps {0, 3}: 1 of a's 2. Layer 2 (4-5): a keeps {4}, b none: 0 of 1.
    assert kept_per_layer(a, b) == [0.5, 0.0]
    # From b's side: layer 1, 1 of b's {0, 3}; layer 2, b keeps none: undefined (NaN), not 0 or 1.
    first, second = kept_per_layer(b, a)
    assert first == 0.5 and math.isnan(second)
    # Layers unknown (a ticket written before they were recorded): one layer, the whole mask.
    # a keeps {0, 1, 4}, b {0, 3}: 1 of 3. The layers of either side are used when one knows them.
    assert kept_per_layer(channels("110010"), channels("100100")) == [pytest.approx(1 / 3)]
    assert kept_per_layer(channels("110010"), b) == [0.5, 0.0]


def test_kept_per_layer_unstructured_one_entry_per_tensor() -> None:
    a = Ticket({"conv.weight": np.array([[1, 1], [1, 0]], bool), "fc.weight": np.array([1, 0, 1], bool)}, "weight", 2)
    b = Ticket({"conv.weight": np.array([[1, 0], [0, 0]], bool), "fc.weight": np.array([1, 1, 1], bool)}, "weight", 4)
    # conv: a keeps 3 (positions 0, 1, 2), b keeps 1 of them; fc: a keeps {0, 2}, b keeps both.
    assert kept_per_layer(a, b) == [pytest.approx(1 / 3), 1.0]
    # Pruned, flattened conv then fc: a {3, 5}, b {1, 2, 3}: {3} of {1, 2, 3, 5}.
    assert jaccard_pruned(a, b) == pytest.approx(0.25) == set_jaccard(a, b)


# -- a sweep's tickets -------------------------------------------------------------------------

SETTING = {"model.arch": "resnet18", "data.dataset": "digits", "search.ratio": 0.5}


def trial(method: str, seed: int, search_epochs: float = 6.0, **config: Any) -> dict[str, Any]:
    """One row of the trials table: a real config, converged, with its search epochs."""
    cfg = TrialConfig().replace({"method": method, "seed": seed, **SETTING, **config})
    row = {"trial_id": f"{method}-{seed}-{cfg.hash()}", "run_id": "", "status": "converged"}
    return row | {"config_hash": cfg.hash(), **cfg.to_flat(), "search_epochs": search_epochs}


def labelled(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return compare.label(load.trials_frame(rows))


def by(frame: pd.DataFrame, method: str, seed: int, **config: Any) -> str:
    mine = frame[(frame["method"] == method) & (frame["seed"] == seed)]
    for key, value in config.items():
        mine = mine[mine[key] == value]
    (trial_id,) = mine["trial_id"]
    return trial_id


def test_pairs_and_the_scale_of_chance_by_hand() -> None:
    rows = [trial("earlybird", s, 6.0) for s in range(3)] + [trial("worm", s, 5.0 + s) for s in range(3)]
    frame = labelled(rows)
    eb = {0: channels("110010", (4, 2)), 1: channels("100100", (4, 2)), 2: channels("011001", (4, 2))}
    worm = {0: channels("110010", (4, 2)), 1: channels("101100", (4, 2))}  # seed 2's WORM left no ticket
    tickets = {by(frame, "earlybird", s): t for s, t in eb.items()} | {by(frame, "worm", s): t for s, t in worm.items()}
    per_pair, chance = compare_tickets(frame, tickets)
    assert per_pair["seed"].tolist() == [0, 1]  # seed 2 has no pair of tickets
    # Seed 0: identical. Seed 1: EB prunes {1, 2, 4, 5}, WORM {1, 4, 5}: 3/4; per layer, EB keeps {0, 3}, WORM
    # both (1.0), and in layer 2 EB keeps none (NaN, skipped): kept in common 1.0.
    assert per_pair["identical"].tolist() == [True, False]
    assert per_pair["jaccard"].tolist() == [1.0, 0.75]
    assert per_pair["kept_common"].tolist() == [1.0, 1.0]
    assert per_pair["layer_names"].iloc[0] == ["1", "2"] and per_pair["layer_units"].iloc[0] == [4, 2]
    # Chance: EB's seeds two by two. Pruned: s0 {2, 3, 5}, s1 {1, 2, 4, 5}, s2 {0, 3, 4}.
    # (0, 1): {2, 5} of {1, 2, 3, 4, 5} = 2/5; (0, 2): {3} of {0, 2, 3, 4, 5} = 1/5; (1, 2): {4} of {0..5} = 1/6.
    assert list(zip(chance["seed_a"], chance["seed_b"], strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert chance["jaccard"].tolist() == pytest.approx([2 / 5, 1 / 5, 1 / 6])
    (row,) = summarize(per_pair, chance, N_BOOT).to_dict("records")
    assert row["n_pairs"] == 2 and row["identical"] == 1 and row["jaccard_mean"] == pytest.approx(0.875)
    assert math.isnan(row["jaccard_lo"])  # below MIN_PAIRS pairs: no interval
    assert row["verdict"].startswith("too few pairs (n=2")
    assert (row["chance_min"], row["chance_max"]) == pytest.approx((1 / 6, 2 / 5))
    # EB took 6 epochs; WORM 5 (seed 0) and 6 (seed 1).
    assert row["sooner"] == "found sooner on 1 of 2 seeds, at the same epoch on 1"
    # Per layer: layer 1, EB keeps s0 {0, 1} (WORM both), s1 {0, 3} (WORM both): 1.0; layer 2: s0 1.0, s1 NaN.
    (table,) = per_layer(per_pair).values()
    assert table.to_dict("list") == {"layer": ["1", "2"], "units": [4, 2], per_pair["variant"].iloc[0]: [1.0, 1.0]}


def sweep_of_tickets(seeds: int = 8, units: int = 24) -> tuple[pd.DataFrame, dict[str, Ticket]]:
    """EarlyBird's tickets of ``seeds`` seeds, each pruning half of ``units`` at random, and three WORM
    variants: δ=0.05 draws its seed's EarlyBird ticket with one or two units swapped (close), δ=0.1 draws
    the next seed's EarlyBird ticket (no closer than chance), δ=0.2 draws exactly its seed's ticket."""
    rng = np.random.default_rng(5)
    deltas = (0.05, 0.1, 0.2)
    rows = [trial("earlybird", s, 8.0) for s in range(seeds)]
    rows += [trial("worm", s, 6.0, **{"worm.delta": d}) for s in range(seeds) for d in deltas]
    frame = labelled(rows)
    eb = []
    for _ in range(seeds):
        keep = np.ones(units, bool)
        keep[rng.choice(units, units // 2, replace=False)] = False
        eb.append(keep)
    tickets = {
        by(frame, "earlybird", s): Ticket({KEEP: eb[s]}, "channel", 8, (units // 2, units // 2)) for s in range(seeds)
    }
    for s in range(seeds):
        near = eb[s].copy()
        for _ in range(1 + s % 2):  # swap one kept and one pruned unit, once or twice
            i, j = rng.choice(np.flatnonzero(near)), rng.choice(np.flatnonzero(~near))
            near[i], near[j] = False, True
        masks = {0.05: near, 0.1: eb[(s + 1) % seeds], 0.2: eb[s]}
        for d, keep in masks.items():
            tickets[by(frame, "worm", s, **{"worm.delta": d})] = Ticket(
                {KEEP: keep}, "channel", 6, (units // 2, units // 2)
            )
    return frame, tickets


def test_the_verdict_on_either_side_of_the_scale_of_chance() -> None:
    frame, tickets = sweep_of_tickets()
    per_pair, chance = compare_tickets(frame, tickets)
    summary = summarize(per_pair, chance, N_BOOT).set_index("variant")
    eb = [tickets[by(frame, "earlybird", s)] for s in range(8)]
    by_sets = [set_jaccard(a, b) for a, b in itertools.combinations(eb, 2)]  # the chance scale, independently
    assert len(chance) == 28 == len(by_sets) and chance["jaccard"].tolist() == pytest.approx(by_sets)
    worm = frame[frame["method"] == "worm"]
    variant = {d: worm.loc[worm["worm.delta"] == d, "variant"].iloc[0] for d in (0.05, 0.1, 0.2)}
    close, far, same = (summary.loc[variant[d]] for d in (0.05, 0.1, 0.2))
    assert close["n_pairs"] == 8 >= MIN_PAIRS and close["chance_max"] == pytest.approx(max(by_sets))
    assert close["jaccard_lo"] > close["chance_max"] and close["verdict"] == CLOSE
    assert far["jaccard_lo"] <= far["chance_max"] and far["verdict"] == NOT_CLOSER
    assert same["identical"] == 8 and same["verdict"] == SAME
    assert close["identical"] == 0 and far["identical"] == 0
    assert close["sooner"] == "found sooner on 8 of 8 seeds"
    # A swap of k kept units for k pruned ones leaves 12 - k of 12 pruned in common, of 12 + k: 11/13 or 10/14.
    assert sorted(set(per_pair.loc[per_pair["variant"] == variant[0.05], "jaccard"].round(6))) == pytest.approx(
        sorted({round(11 / 13, 6), round(10 / 14, 6)})
    )


def test_the_section_shows_the_summary_and_the_layers() -> None:
    frame, tickets = sweep_of_tickets()
    text = section(frame, tickets, n_boot=N_BOOT)
    assert text.startswith(TITLE)
    assert CLOSE in text and NOT_CLOSER in text and SAME in text
    assert "8 of 8" in text and "28 pairs of seeds" in text and "the same ticket; found sooner on 8 of 8 seeds" in text
    layers = text[text.index("Kept in common per layer") :]
    header = layers.splitlines()[2]
    assert all(v in header for v in ("layer", "units", *frame.loc[frame["method"] == "worm", "variant"]))
    assert sum(line.startswith("| 1 ") or line.startswith("| 2 ") for line in layers.splitlines()) == 2
    # Fewer than MIN_PAIRS pairs: each seed's value, no interval.
    few = section(frame[frame["seed"] < 3], tickets, n_boot=N_BOOT)
    assert "seed 0: " in few and "seed 2: " in few and "too few pairs (n=3 < 6)" in few


def test_without_tickets_the_section_says_so_in_one_sentence() -> None:
    frame, tickets = sweep_of_tickets(seeds=2)
    text = section(frame, {}, n_boot=N_BOOT)
    (title, sentence) = text.split("\n\n")
    assert title == TITLE and "Ray folder" in sentence and sentence.count(". ") == 0 and sentence.endswith(".")
    eb_only = {k: v for k, v in tickets.items() if k.startswith("earlybird")}
    assert "No EarlyBird/variant pair" in section(frame, eb_only, n_boot=N_BOOT)
    structured_old = {k: Ticket(t.masks, t.unit, t.epoch) for k, t in tickets.items()}  # layers unknown
    assert "Kept in common per layer" not in section(frame, structured_old, n_boot=N_BOOT)


def test_tickets_that_differ_in_one_weight_of_thousands_never_read_as_the_same() -> None:
    frame = labelled([trial("earlybird", 0), trial("worm", 0)])
    eb = np.arange(20_000) >= 10_000  # prunes weights 0-9999
    worm = eb.copy()
    worm[9_999], worm[10_000] = True, False  # keeps 9999 instead of 10000
    tickets = {by(frame, m, 0): Ticket({"fc.weight": k}, "weight", 5) for m, k in (("earlybird", eb), ("worm", worm))}
    # Pruned in common: 0-9998 (9999) of 0-10000 (10001): 0.99980004, which at 3 decimals would read 1.000.
    # Of EarlyBird's 10000 kept weights WORM keeps 9999: 99.99%, which at 1 decimal would read 100.0%.
    text = section(frame, tickets, n_boot=N_BOOT)
    assert "0.9998: seed 0: 0.9998" in text and "99.99%" in text and "0 of 1" in text
    assert "1.000" not in text and "100.0%" not in text


# -- reading tickets from MLflow ---------------------------------------------------------------


def test_load_tickets_reads_logged_tickets_and_skips_trials_without_one(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real SQLite MLflow store: a run with a ticket, a run without one (dense), a trial without a run.
    Quietly: MLflow draws a progress bar per download, which a sweep's hundred tickets would fill a terminal with."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "mlartifacts").as_uri())
    with_ticket, without = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    ticket = channels("110010", (4, 2))
    ticket.save(tmp_path / TICKET_FILE)
    with at_store(uri):
        client.log_artifact(with_ticket, str(tmp_path / TICKET_FILE))
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "run_id": [with_ticket, without, ""]})
    capfd.readouterr()
    loaded = load_tickets(uri, trials)
    assert capfd.readouterr().err == ""
    assert list(loaded) == ["a"]
    assert loaded["a"].layers == (4, 2) and np.array_equal(loaded["a"].masks[KEEP], ticket.masks[KEEP])
