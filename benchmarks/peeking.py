"""Does the interval still cover the true mean when the study peeks? Optional stopping, simulated (issue 26).

A paired study adds seeds batch by batch and stops at the first look where its 95% interval for the
mean difference (variant - EarlyBird, search epochs) excludes 0, or at the cap. Each repetition draws
one path of ``cap`` differences from a distribution whose mean is known exactly and runs that rule
twice on it: with the anytime-valid betting confidence sequence (``worm_tune.confseq``, running
intersection) and with the classical Student-t interval on the first n values, each interval making
its own stopping decision. Where the true mean is 0, every "decided" stop is a false discovery and the
classical interval's coverage falls well below 95%; the confidence sequence's does not.

Distributions: the digits study's per-seed differences (docs/digits-study/trials.csv), resampled with
replacement, for each of its 4 WORM variants; the same centred (true mean 0); a symmetric {-1, 0, +1}.

    python benchmarks/peeking.py --reps 2000
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import t as student_t

from worm_tune.confseq import betting_cs

TRIALS_CSV = Path(__file__).resolve().parents[1] / "docs" / "digits-study" / "trials.csv"
# The study's search epochs lie in [5, 16] (window 5, budget 16), so a difference lies in [-11, 11].
LO, HI = -11.0, 11.0
# The looks the CLI plans by default: 6 seeds, then 2 more at a time, at most 40.
FIRST, BATCH, CAP = 6, 2, 40
# The digits study's own sequential design: its 20 seeds first, then 4 at a time, 4 variants under one
# Bonferroni-corrected level; how many seeds each variant's interval needs to exclude 0, with room to 200.
STUDY_FIRST, STUDY_BATCH, STUDY_CAP, STUDY_VARIANTS = 20, 4, 200, 4
# A centred support's mean is 0 only up to rounding, and the grid puts bounds exactly on 0.
ROUNDING = 1e-9


@dataclass(frozen=True)
class Distribution:
    """A finite distribution: ``support`` drawn with probabilities ``probs``."""

    name: str
    support: NDArray[np.float64]
    probs: NDArray[np.float64]

    @property
    def mean(self) -> float:
        return math.fsum(self.support * self.probs)

    def centred(self) -> Distribution:
        return Distribution(f"{self.name}, centred", self.support - self.mean, self.probs)


def digits_differences(path: Path = TRIALS_CSV) -> dict[str, NDArray[np.float64]]:
    """Per-seed differences WORM - EarlyBird in search epochs, one array (by seed) per WORM variant."""
    epochs: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            key = ("EarlyBird", "") if row["method"] == "earlybird" else (row["worm.delta"], row["worm.factor"])
            epochs[key][int(row["seed"])] = float(row["search_epochs"])
    baseline = epochs.pop(("EarlyBird", ""))
    out = {}
    for (delta, factor), by_seed in sorted(epochs.items()):
        if by_seed.keys() != baseline.keys():
            raise ValueError(f"{path}: WORM δ={delta} r={factor} and EarlyBird ran different seeds")
        out[f"digits WORM δ={delta} r={factor}"] = np.array([by_seed[s] - baseline[s] for s in sorted(baseline)])
    return out


def distributions(path: Path = TRIALS_CSV) -> list[Distribution]:
    """The 9 of the benchmark: 4 digits variants as they are, the same 4 centred, and {-1, 0, +1}."""
    digits = [Distribution(name, d, np.full(len(d), 1 / len(d))) for name, d in digits_differences(path).items()]
    symmetric = Distribution("{-1, 0, +1} w.p. 1/4, 1/2, 1/4", np.array([-1.0, 0.0, 1.0]), np.array([0.25, 0.5, 0.25]))
    return [*digits, *(d.centred() for d in digits), symmetric]


def _stop(lower: NDArray, upper: NDArray) -> NDArray[np.intp]:
    """Per path, the index of the first look whose interval excludes 0, else of the last look."""
    decided = (lower > 0) | (upper < 0)
    return np.where(decided.any(axis=1), np.argmax(decided, axis=1), decided.shape[1] - 1)


def _summary(lower: NDArray, upper: NDArray, looks: NDArray, mean: float) -> dict[str, float]:
    stop = _stop(lower, upper)
    rows = np.arange(len(stop))
    covered = (lower[rows, stop] <= mean + ROUNDING) & (mean - ROUNDING <= upper[rows, stop])
    return {
        "coverage": float(covered.mean()),
        "mean_stop_n": float(looks[stop].mean()),
        "stopped_early": float((stop < len(looks) - 1).mean()),
        "mean_width_at_stop": float((upper[rows, stop] - lower[rows, stop]).mean()),
    }


def simulate(
    dist: Distribution,
    *,
    reps: int,
    first: int,
    batch: int,
    cap: int,
    lo: float,
    hi: float,
    alpha: float = 0.05,
    rng_seed: int,
) -> dict[str, Any]:
    """Coverage of the true mean at the stop, mean stopping n, the fraction stopped before the cap and
    the mean width at the stop, for the confidence sequence and the classical interval under the same
    peeking rule; and the classical interval's coverage at n = cap without peeking (the sanity check:
    about 1 - alpha). Every path is one sequence of ``cap`` draws, its CS computed once for the whole."""
    if not 2 <= first <= cap or batch < 1:
        raise ValueError(f"simulate needs 2 <= first <= cap and batch >= 1, got {first=}, {cap=}, {batch=}")
    looks = np.unique(np.append(np.arange(first, cap + 1, batch), cap))
    paths = np.random.default_rng(rng_seed).choice(dist.support, size=(reps, cap), p=dist.probs)
    mean = dist.mean

    anytime_lower, anytime_upper = np.empty((reps, len(looks))), np.empty((reps, len(looks)))
    for i, path in enumerate(paths):
        lower, upper = betting_cs(path, lo, hi, alpha=alpha)
        anytime_lower[i], anytime_upper[i] = lower[looks - 1], upper[looks - 1]

    centres = np.stack([paths[:, :n].mean(axis=1) for n in looks], axis=1)
    errors = np.stack([paths[:, :n].std(axis=1, ddof=1) / np.sqrt(n) for n in looks], axis=1)
    half = student_t.ppf(1 - alpha / 2, looks - 1) * errors
    classical_lower, classical_upper = centres - half, centres + half
    fixed = (classical_lower[:, -1] <= mean + ROUNDING) & (mean - ROUNDING <= classical_upper[:, -1])

    return {
        "distribution": dist.name,
        "true_mean": mean,
        "reps": reps,
        "looks": looks.tolist(),
        "alpha": alpha,
        "anytime": _summary(anytime_lower, anytime_upper, looks, mean),
        "classical": _summary(classical_lower, classical_upper, looks, mean),
        "classical_fixed_n": {"n": int(looks[-1]), "coverage": float(fixed.mean())},
    }


def seeds_to_decide(
    dist: Distribution,
    *,
    reps: int,
    first: int,
    batch: int,
    cap: int,
    lo: float,
    hi: float,
    alpha: float,
    rng_seed: int,
) -> dict[str, Any]:
    """How many paired seeds the confidence sequence needs to exclude 0 when seeds come in batches: the
    quartiles of the first look at which it does (over the paths that did by ``cap``), and how often it did."""
    looks = np.unique(np.append(np.arange(first, cap + 1, batch), cap))
    paths = np.random.default_rng(rng_seed).choice(dist.support, size=(reps, cap), p=dist.probs)
    stops = []
    for path in paths:
        lower, upper = betting_cs(path, lo, hi, alpha=alpha)
        decided = (lower[looks - 1] > 0) | (upper[looks - 1] < 0)
        if decided.any():
            stops.append(int(looks[np.argmax(decided)]))
    quartiles = np.percentile(stops, [25, 50, 75]).tolist() if stops else [math.nan] * 3
    return {
        "distribution": dist.name,
        "true_mean": dist.mean,
        "reps": reps,
        "alpha": alpha,
        "decided_by_cap": len(stops) / reps,
        "seeds_quartiles": quartiles,
    }


def main() -> None:
    # Imported here: _common (torch) is found only when this runs as a script; tests import simulate.
    from _common import machine, write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "peeking.json")
    args = parser.parse_args()

    start = time.perf_counter()
    results = []
    columns = ["distribution", "mean", "CS cover", "t cover", f"t n={CAP}", "CS stop n", "t stop n", "CS width"]
    print(f"{columns[0]:<34}" + "".join(f"{c:>10}" for c in columns[1:]) + "  reps", flush=True)
    for k, dist in enumerate(distributions()):
        r = simulate(dist, reps=args.reps, first=FIRST, batch=BATCH, cap=CAP, lo=LO, hi=HI, rng_seed=args.seed + k)
        results.append(r)
        cs, t = r["anytime"], r["classical"]
        numbers = [r["true_mean"], cs["coverage"], t["coverage"], r["classical_fixed_n"]["coverage"]]
        numbers += [cs["mean_stop_n"], t["mean_stop_n"], cs["mean_width_at_stop"]]
        print(f"{dist.name:<34}" + "".join(f"{v:>10.3f}" for v in numbers) + f"  {r['reps']}", flush=True)
    alpha = 0.05 / STUDY_VARIANTS
    print(f"\nseeds to exclude 0: {STUDY_FIRST} first, {STUDY_BATCH} at a time, at most {STUDY_CAP}, alpha {alpha}")
    needs = []
    for k, dist in enumerate(distributions()[:STUDY_VARIANTS]):
        r = seeds_to_decide(
            dist,
            reps=args.reps // 2,
            first=STUDY_FIRST,
            batch=STUDY_BATCH,
            cap=STUDY_CAP,
            lo=LO,
            hi=HI,
            alpha=alpha,
            rng_seed=args.seed + 100 + k,
        )
        needs.append(r)
        q = r["seeds_quartiles"]
        print(
            f"{dist.name:<34} decided {r['decided_by_cap']:.3f}, seeds {q[1]:.0f} [{q[0]:.0f}, {q[2]:.0f}]", flush=True
        )
    seconds = time.perf_counter() - start
    print(f"{seconds:.1f} s", flush=True)
    design = {"first": FIRST, "batch": BATCH, "cap": CAP, "lo": LO, "hi": HI, "reps": args.reps, "seed": args.seed}
    study = {"first": STUDY_FIRST, "batch": STUDY_BATCH, "cap": STUDY_CAP, "alpha": alpha, "reps": args.reps // 2}
    write(
        args.out,
        {
            "machine": machine(),
            "design": design,
            "results": results,
            "study_design": study,
            "seeds_to_decide": needs,
            "wall_seconds": round(seconds, 2),
        },
    )


if __name__ == "__main__":
    main()
