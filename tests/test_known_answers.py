"""A report built from fixed per-seed data whose answers are worked out by hand here: Holm-adjusted
p-values within a family, the variant-against-variant table, zero differences left out of the pair
count, TOST verdicts on either side of a 1 pp margin, and accuracy compared at the same epoch.

One setting, seeds 0-7, EarlyBird and three WORM variants (δ = 0.01, 0.03, 0.05): each variant's
search-epoch difference to EarlyBird has magnitudes k·(s+1) for seed s, so no ties and no zeros, and
its sign pattern fixes the Wilcoxon statistic T+ (the sum of the ranks of the positive differences).
With 8 pairs and no ties the exact two-sided p is 2·#{sign patterns with T+ <= t} / 2^8, counted by hand
below; scipy's exact Wilcoxon (an independent implementation) must agree.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from analysis import compare, load, report, stats
from tests.test_analysis import cells, section, trial
from worm_tune import metrics

SEEDS = range(8)
MARGIN = 0.01  # 1 pp
EB_EPOCHS = [40 + s for s in SEEDS]
#: Variant minus EarlyBird in search epochs, per seed; the positive entry sets T+.
SEARCH_DIFF = {
    0.01: [-1, -2, -3, +4, -5, -6, -7, -8],  # T+ = 4: patterns with T+ <= 4 are {}, 1, 2, 3, 4, 1+2, 1+3 = 7
    0.03: [-2, -4, +6, -8, -10, -12, -14, -16],  # ranks as 1..8, T+ = 3: {}, 1, 2, 3, 1+2 = 5
    0.05: [-3, -6, -9, -12, -15, -18, -21, -24],  # T+ = 0: only the all-negative pattern
}
RAW_P = {0.01: 2 * 7 / 256, 0.03: 2 * 5 / 256, 0.05: 2 * 1 / 256}
# Holm by hand: sort the raw p's (0.05 < 0.03 < 0.01), multiply by 3, 2, 1, and carry the running maximum.
HOLM_P = {0.05: 3 * RAW_P[0.05], 0.03: max(3 * RAW_P[0.05], 2 * RAW_P[0.03])}
HOLM_P[0.01] = max(HOLM_P[0.03], 1 * RAW_P[0.01])
#: Final accuracy, variant minus EarlyBird: inside ±1 pp, below -1 pp, and straddling the margin.
FINAL_DIFF = {
    0.05: [0.001, -0.002, 0.003, -0.004, 0.0015, -0.0025, 0.0005, -0.0035],
    0.01: [-0.021, -0.022, -0.023, -0.024, -0.025, -0.026, -0.027, -0.028],
    0.03: [-0.031, 0.026, -0.021, 0.016, -0.012, 0.007, -0.033, 0.028],
}
#: Dense accuracy at search epoch e: EarlyBird's is 0.5 + 0.01·e, every variant's 0.2 pp below it at
#: every epoch. At its own stop a variant that stopped sooner reads an earlier, lower point.
MATCHED_GAP = -0.002


def eb_acc(epoch: int) -> float:
    return 0.5 + 0.01 * epoch


def rows() -> list[dict]:
    out = []
    for s in SEEDS:
        out.append(
            trial("earlybird", s, search_epochs=EB_EPOCHS[s], pre_prune_acc=eb_acc(EB_EPOCHS[s]), final_acc=0.8)
            | {"post_prune_acc": 0.5}
        )
        for delta, diff in SEARCH_DIFF.items():
            stop = EB_EPOCHS[s] + diff[s]
            # δ = 0.05 ties EarlyBird right after pruning on 5 of the 8 seeds: 3 non-zero pairs.
            post = 0.5 - 0.01 * (s + 1) if delta == 0.05 and s < 3 else 0.5
            out.append(
                trial(
                    "worm",
                    s,
                    config={"worm.delta": delta},
                    search_epochs=stop,
                    pre_prune_acc=eb_acc(stop) + MATCHED_GAP,
                    post_prune_acc=post,
                    final_acc=0.8 + FINAL_DIFF[delta][s],
                )
            )
    return out


def curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's search epochs with the dense test accuracy above, as analysis.load lays them out."""
    lines = []
    for t in trials.to_dict("records"):
        gap = 0.0 if t["method"] == "earlybird" else MATCHED_GAP
        for e in range(1, int(t["search_epochs"]) + 1):
            lines.append({"trial_id": t["trial_id"], "step": e, "phase": "search", "phase_epoch": e,
                          "test_acc": eb_acc(e) + gap})  # fmt: skip
    return pd.DataFrame(lines).reindex(columns=["trial_id", "step", "phase", "phase_epoch", *metrics.CURVES])


@pytest.fixture(scope="module")
def sweep() -> load.Sweep:
    trials = load.trials_frame(rows())
    return load.Sweep("known", "hand-made rows", trials, curves(trials))


@pytest.fixture(scope="module")
def table(sweep: load.Sweep) -> pd.DataFrame:
    labelled = compare.label(sweep.trials)
    return compare.compare(labelled, n_boot=1000, seed=0, margin=MARGIN, curves=sweep.curves)


def row(table: pd.DataFrame, delta: float, metric: str) -> pd.Series:
    (found,) = [r for _, r in table.iterrows() if r["variant"] == f"WORM δ={delta:g} r=0.003" and r["metric"] == metric]
    return found


def test_raw_and_holm_p_values_of_a_family_of_three(table: pd.DataFrame) -> None:
    for delta, diff in SEARCH_DIFF.items():
        assert sp.wilcoxon(diff, method="exact").pvalue == pytest.approx(RAW_P[delta])  # the hand count, checked
        r = row(table, delta, "search_epochs")
        assert r["p"] == pytest.approx(RAW_P[delta]) and r["p_holm"] == pytest.approx(HOLM_P[delta])
        assert r["family_size"] == 3 and r["n_nonzero"] == 8
        assert r["family"] == "resnet18 · digits · p=0.5 · s=0.1 · search epochs vs EarlyBird"
    # δ = 0.03 is significant alone (p = 0.039) but not after Holm's correction (0.078).
    assert RAW_P[0.03] < stats.ALPHA < HOLM_P[0.03]
    assert row(table, 0.03, "search_epochs")["verdict"] == "not significant"
    assert row(table, 0.05, "search_epochs")["verdict"] == "significant"


def test_variant_against_variant_on_the_same_seeds(sweep: load.Sweep) -> None:
    versus = compare.versus(compare.label(sweep.trials), n_boot=1000, seed=0, margin=MARGIN, curves=sweep.curves)
    search = versus[(versus["knob"] == "worm.delta") & (versus["metric"] == "search_epochs")]
    by = {(r["a"], r["b"]): r for r in search.to_dict("records")}
    assert set(by) == {("WORM δ=0.01 r=0.003", "WORM δ=0.03 r=0.003"), ("WORM δ=0.01 r=0.003", "WORM δ=0.05 r=0.003"),
                       ("WORM δ=0.03 r=0.003", "WORM δ=0.05 r=0.003")}  # fmt: skip
    # b minus a, seed by seed: the difference of the two variants' differences to EarlyBird.
    d = {(a, b): np.subtract(SEARCH_DIFF[b], SEARCH_DIFF[a]) for a, b in ((0.01, 0.03), (0.01, 0.05), (0.03, 0.05))}
    # 0.03 - 0.01 = [-1, -2, 9, -12, -5, -6, -7, -8]: T+ = rank of 9 = 7; patterns with T+ <= 7 number
    # 1 + 1 + 1 + 2 + 2 + 3 + 4 + 5 = 19 (sums 0..7 from {1..8}). The other two are all negative: T+ = 0.
    raw = {(0.01, 0.03): 2 * 19 / 256, (0.01, 0.05): 2 / 256, (0.03, 0.05): 2 / 256}
    holm = {(0.01, 0.05): 3 * 2 / 256, (0.03, 0.05): max(3 * 2 / 256, 2 * 2 / 256)}
    holm[(0.01, 0.03)] = max(holm[(0.03, 0.05)], raw[(0.01, 0.03)])
    for (a, b), expected in raw.items():
        r = by[(f"WORM δ={a:g} r=0.003", f"WORM δ={b:g} r=0.003")]
        assert r["diff_mean"] == pytest.approx(d[(a, b)].mean()) and r["n_pairs"] == 8
        assert r["p"] == pytest.approx(expected) and r["p_holm"] == pytest.approx(holm[(a, b)])
        assert r["family_size"] == 3
        assert r["verdict"] == ("significant" if holm[(a, b)] < stats.ALPHA else "not significant")
    assert set(versus["metric"]) >= {"search_epochs", "final_acc", "acc_at_matched_epoch"}


def test_tied_pairs_do_not_count_toward_the_minimum(table: pd.DataFrame) -> None:
    r = row(table, 0.05, "post_prune_acc")
    assert (r["n_pairs"], r["n_nonzero"]) == (8, 3) and math.isnan(r["p"]) and math.isnan(r["p_holm"])
    assert r["verdict"] == "too few non-zero pairs (n=3 < 6)"
    assert stats.nonzero([0.0, 0.0, -0.01, math.nan, 0.02]) == 2


def test_tost_verdicts_on_either_side_of_the_margin(table: pd.DataFrame) -> None:
    inside, below, straddling = (row(table, delta, "final_acc") for delta in (0.05, 0.01, 0.03))
    # Every |d| < 1 pp: d + 1 pp all positive and d - 1 pp all negative, so each one-sided exact p is 1/2^8.
    assert inside["equivalence"] == "equivalent within ±1 pp" and inside["tost_p"] == pytest.approx(1 / 256)
    # Every d < -1 pp: significantly below the margin (and below zero: raw p 2/2^8, the family's smallest).
    assert below["equivalence"] == "worse" and below["p_holm"] == pytest.approx(3 * 2 / 256)
    # Differences of ±1.6-3.3 pp either way: neither equivalence nor a difference can be shown.
    assert straddling["equivalence"] == "undecided" and straddling["tost_p"] > stats.ALPHA
    assert math.isnan(row(table, 0.05, "search_epochs")["tost_p"])  # TOST is for accuracies


def test_accuracy_is_compared_at_the_same_epoch(table: pd.DataFrame) -> None:
    for delta, diff in SEARCH_DIFF.items():
        matched, at_stop = row(table, delta, "acc_at_matched_epoch"), row(table, delta, "pre_prune_acc")
        # At the earlier stop (the variant's), both read the same epoch: the gap is -0.2 pp on every seed.
        assert matched["diff_mean"] == pytest.approx(MATCHED_GAP) and matched["n_pairs"] == 8
        assert matched["diff_lo"] == pytest.approx(MATCHED_GAP) == matched["diff_hi"]
        assert matched["equivalence"] == "equivalent within ±1 pp"
        # At each stop the variant reads 0.01·d epochs' worth lower on top of the gap: confounded by the stop.
        assert at_stop["diff_mean"] == pytest.approx(MATCHED_GAP + 0.01 * np.mean(diff))


def test_the_report_shows_families_tost_matched_epochs_and_variant_tables(sweep: load.Sweep, tmp_path: Path) -> None:
    text = report.write(sweep, tmp_path, n_boot=1000, seed=0, margin=MARGIN).path.read_text()
    assert stats.WILCOXON_METHOD in text and "Holm" in text
    search = cells(section(text, "Paired comparison of the search: variant minus EarlyBird, seed by seed"))
    header, body = search[0], {r[1]: dict(zip(search[0], r, strict=True)) for r in search[1:]}
    assert {"p", "Holm p", "family", "verdict"} <= set(header)
    assert body["WORM δ=0.03 r=0.003"]["p"] == f"{RAW_P[0.03]:.3g}"
    assert body["WORM δ=0.03 r=0.003"]["Holm p"] == f"{HOLM_P[0.03]:.3g}"
    assert body["WORM δ=0.03 r=0.003"]["family"] == "3 tests"
    accuracy = section(text, "Accuracy, paired: variant minus EarlyBird (exploratory)")
    lines = cells(accuracy)
    assert "equivalence (±1 pp)" in lines[0]
    matched = [r for r in lines if "dense acc. at the same epoch" in r]
    assert len(matched) == 3 and all("-0.20 pp [-0.20 pp, -0.20 pp] (n=8)" in r for r in matched)
    assert any("confounded by the stop" in cell for r in lines for cell in r)
    post = [r for r in lines if r[1] == "WORM δ=0.05 r=0.003" and r[2] == "acc. right after pruning"]
    assert len(post) == 1 and "8 (3 non-zero)" in post[0] and "(n=8): seed 0: 50.00% → 49.00%" in " ".join(post[0])
    assert "Wilcoxon's test drops the pairs that tie" in accuracy
    versus = section(text, "Variant against variant")
    assert "δ (worm.delta)" in versus and "δ=0.03 − δ=0.01" in versus
    assert (tmp_path / "versus.csv").is_file() and "(versus.csv)" in text
