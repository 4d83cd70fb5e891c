"""Do WORM and EarlyBird find the same ticket? Their tickets compared pair by pair, against chance.

A pair is a truncating variant's trial and its setting's EarlyBird trial of the same seed
(:func:`analysis.compare.pairs`): same initial weights, same data order, so if truncation only
hastens the search, the two tickets coincide. How alike two tickets are is the **Jaccard index of
their pruned units** (the units either prunes, and of those the share both prune); how alike they
are *by chance* is measured on EarlyBird's own tickets of two different seeds of the setting. That
scale, not 0, is the baseline: tickets of one network pruned at one ratio share many units
whatever the seed (two random masks that each prune half the units score a Jaccard of 1/3), so only a
pair closer than two seeds' tickets says the variant found EarlyBird's ticket.

Tickets are read from MLflow (:func:`analysis.load.ticket`); a Ray folder holds none.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis import load
from analysis.compare import EB, pairs
from analysis.stats import MIN_PAIRS, N_BOOT, bootstrap_mean
from worm_tune.ticket.methods import BASELINE
from worm_tune.tickets import KEEP, Ticket
from worm_tune.usage import format_table

TITLE = "## Tickets: does WORM find EarlyBird's ticket?"
SAME = "the same ticket"
CLOSE = f"close to {EB}'s ticket of the same seed"
NOT_CLOSER = "no closer than two seeds' tickets"


# -- two tickets -----------------------------------------------------------------------------


def _same_network(a: Ticket, b: Ticket) -> None:
    """Raise when two tickets cannot be compared unit by unit."""
    shapes_differ = a.masks.keys() != b.masks.keys() or any(a.masks[k].shape != b.masks[k].shape for k in a.masks)
    layers_differ = a.layers is not None and b.layers is not None and a.layers != b.layers
    if shapes_differ or layers_differ:
        raise ValueError("the tickets mask different networks (their masks differ in names, shapes or layers)")


def _flat(t: Ticket) -> np.ndarray:
    return np.concatenate([np.asarray(m, dtype=bool).ravel() for m in t.masks.values()]) if t.masks else np.array([])


def jaccard_pruned(a: Ticket, b: Ticket) -> float:
    """|P_a ∩ P_b| / |P_a ∪ P_b| over the pruned units P (1.0 when neither prunes anything).

    Pruned units, not kept ones: at a pruning ratio p, what the method *chose* is the pruned share,
    and the kept units' Jaccard would be dominated by the many units any ticket keeps at small p.
    """
    _same_network(a, b)
    pa, pb = ~_flat(a), ~_flat(b)
    union = int((pa | pb).sum())
    return int((pa & pb).sum()) / union if union else 1.0


def _layer_masks(t: Ticket, layers: tuple[int, ...] | None) -> list[np.ndarray]:
    """A ticket's masks one per layer: a structured ticket's ``keep`` split by ``layers`` (whole when
    unknown), an unstructured ticket's tensors in order."""
    if set(t.masks) == {KEEP}:
        keep = np.asarray(t.masks[KEEP], dtype=bool).ravel()
        return np.split(keep, np.cumsum(layers)[:-1]) if layers else [keep]
    return [np.asarray(m, dtype=bool).ravel() for m in t.masks.values()]


def layer_names(t: Ticket) -> list[str]:
    """Names of :func:`kept_per_layer`'s entries: 1-based layer indices for a structured ticket (``all``
    when its layers are unknown), parameter names for an unstructured one."""
    if set(t.masks) == {KEEP}:
        return [str(i + 1) for i in range(len(t.layers))] if t.layers else ["all"]
    return list(t.masks)


def kept_per_layer(a: Ticket, b: Ticket) -> list[float]:
    """Per layer, of the units ``a`` keeps, the fraction ``b`` keeps too.

    NaN for a layer ``a`` prunes whole: there is no unit of ``a``'s to share, and neither 0 nor 1
    would be true; means over layers or pairs skip it (the Jaccard still counts those units).
    """
    _same_network(a, b)
    layers = a.layers or b.layers
    out = []
    for ka, kb in zip(_layer_masks(a, layers), _layer_masks(b, layers), strict=True):
        kept = int(ka.sum())
        out.append(int((ka & kb).sum()) / kept if kept else math.nan)
    return out


def identical(a: Ticket, b: Ticket) -> bool:
    _same_network(a, b)
    return all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)


def _nanmean(values: list[float]) -> float:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


# -- reading ---------------------------------------------------------------------------------


def load_tickets(uri: str, trials: pd.DataFrame) -> dict[str, Ticket]:
    """Each trial's ticket by ``trial_id``, for the trials with an MLflow run that logged one.

    Trials without a run (read from a Ray folder) or whose run logged none (dense, or ended before
    its prune) are left out. Trials of a shared sweep that pruned together hold the same ticket file.
    """
    out = {}
    for trial_id, run_id in zip(trials["trial_id"], trials["run_id"], strict=True):
        if not isinstance(run_id, str) or not run_id:
            continue
        try:
            out[trial_id] = load.ticket(uri, run_id)
        except LookupError:
            continue
    return out


# -- comparing -------------------------------------------------------------------------------

PAIR_COLUMNS = ["setting", "variant", "seed", "eb_trial", "v_trial", "jaccard", "kept_common", "identical"]
PAIR_COLUMNS += ["kept_by_layer", "layer_names", "layer_units", "eb_search_epochs", "v_search_epochs"]
CHANCE_COLUMNS = ["setting", "seed_a", "seed_b", "trial_a", "trial_b", "jaccard"]


def compare_tickets(labelled: pd.DataFrame, tickets: Mapping[str, Ticket]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per pair, scale of chance) over the trials of :func:`analysis.compare.label`'s table.

    Per pair (setting, variant, seed) whose both trials have a ticket: ``jaccard`` of the pruned
    units, ``kept_common`` (the mean over layers of :func:`kept_per_layer`, EarlyBird's kept units
    the variant keeps too), ``identical``, the per-layer values with each layer's name and size, and
    each trial's ``search_epochs`` from ``labelled`` (NaN if unknown). Chance: per setting, the
    Jaccard of EarlyBird's tickets of every two different seeds.
    """
    epochs = dict(zip(labelled["trial_id"], labelled["search_epochs"].astype(float), strict=True))
    rows = []
    for p in pairs(labelled).to_dict("records"):
        eb, v = tickets.get(p["eb_trial"]), tickets.get(p["v_trial"])
        if eb is None or v is None:
            continue
        by_layer = kept_per_layer(eb, v)
        units = [m.size for m in _layer_masks(eb, eb.layers or v.layers)]
        rows.append(
            {
                "setting": p["setting"],
                "variant": p["variant"],
                "seed": p["seed"],
                "eb_trial": p["eb_trial"],
                "v_trial": p["v_trial"],
                "jaccard": jaccard_pruned(eb, v),
                "kept_common": _nanmean(by_layer),
                "identical": identical(eb, v),
                "kept_by_layer": by_layer,
                "layer_names": layer_names(eb) if eb.layers or not v.layers else layer_names(v),
                "layer_units": units,
                "eb_search_epochs": epochs.get(p["eb_trial"], math.nan),
                "v_search_epochs": epochs.get(p["v_trial"], math.nan),
            }
        )
    chance = []
    eb_trials = labelled[(labelled["method"] == BASELINE) & labelled["trial_id"].isin(list(tickets))]
    for setting, mine in eb_trials.drop_duplicates(["setting_key", "seed"]).groupby("setting", sort=True):
        for a, b in itertools.combinations(mine.sort_values("seed").to_dict("records"), 2):
            j = jaccard_pruned(tickets[a["trial_id"]], tickets[b["trial_id"]])
            chance.append([setting, a["seed"], b["seed"], a["trial_id"], b["trial_id"], j])
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), pd.DataFrame(chance, columns=CHANCE_COLUMNS)


SUMMARY_COLUMNS = ["setting", "variant", "n_pairs", "jaccard_mean", "jaccard_lo", "jaccard_hi", "identical"]
SUMMARY_COLUMNS += ["kept_common", "chance_n", "chance_mean", "chance_min", "chance_max", "sooner", "verdict"]


def summarize(per_pair: pd.DataFrame, chance: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (setting, variant): the pairs' Jaccard (mean, 95% BCa interval from
    :data:`~analysis.stats.MIN_PAIRS` pairs on), how many pairs are identical, EarlyBird's
    cross-seed Jaccard (mean, min, max), the search-epoch relation in words, and the verdict.

    The verdict: :data:`SAME` when every pair's tickets are identical; :data:`CLOSE` when the
    interval's lower end lies above the *largest* cross-seed Jaccard (closer than any two of
    EarlyBird's seeds ever were: no other seed's ticket is as near); :data:`NOT_CLOSER` otherwise.
    Below :data:`MIN_PAIRS` pairs there is no interval, so no verdict but :data:`SAME`.
    """
    rows = []
    for (setting, variant), mine in per_pair.groupby(["setting", "variant"], sort=True):
        est = bootstrap_mean(mine["jaccard"].to_numpy(float), n_boot, seed)
        scale = chance.loc[chance["setting"] == setting, "jaccard"].to_numpy(float)
        n, same = len(mine), int(mine["identical"].sum())
        chance_max = float(scale.max()) if scale.size else math.nan
        if same == n:
            word = SAME
        elif n < MIN_PAIRS:
            word = f"too few pairs (n={n} < {MIN_PAIRS}): per-seed values shown"
        elif not scale.size:
            word = f"no scale of chance: fewer than two {EB} seeds have a ticket"
        else:
            word = CLOSE if est.lo > chance_max else NOT_CLOSER
        rows.append(
            {
                "setting": setting,
                "variant": variant,
                "n_pairs": n,
                "jaccard_mean": est.value,
                "jaccard_lo": est.lo,
                "jaccard_hi": est.hi,
                "identical": same,
                "kept_common": _nanmean(mine["kept_common"].tolist()),
                "chance_n": int(scale.size),
                "chance_mean": float(scale.mean()) if scale.size else math.nan,
                "chance_min": float(scale.min()) if scale.size else math.nan,
                "chance_max": chance_max,
                "sooner": _sooner(mine),
                "verdict": word,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _sooner(mine: pd.DataFrame) -> str:
    """When the variant drew its ticket against EarlyBird, from the trials' search epochs, in words
    ("found sooner on 5 of 8 seeds, at the same epoch on 3"); "" when no pair's epochs are known."""
    a, b = mine["eb_search_epochs"].to_numpy(float), mine["v_search_epochs"].to_numpy(float)
    known = np.isfinite(a) & np.isfinite(b)
    a, b = a[known], b[known]
    if not a.size:
        return ""
    counts = {"sooner": int((b < a).sum()), "at the same epoch": int((b == a).sum()), "later": int((b > a).sum())}
    (first, k), *rest = [(word, k) for word, k in counts.items() if k]
    return ", ".join([f"found {first} on {k} of {a.size} seeds", *(f"{word} on {k}" for word, k in rest)])


def per_layer(per_pair: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per setting whose layers are known: one row per layer (``layer``, ``units``) and per variant the
    mean over its pairs of :func:`kept_per_layer` (NaN pairs skipped), so a reader sees where tickets part.

    Pairs whose tickets were written before layers were recorded (one "layer", ``all``) are left out
    of a setting that has newer ones; a setting with only such pairs has no table.
    """
    out = {}
    for setting, mine in per_pair.groupby("setting", sort=True):
        names = max(mine["layer_names"], key=len)
        if names == ["all"]:
            continue
        mine = mine[[n == names for n in mine["layer_names"]]]
        frame = pd.DataFrame({"layer": names, "units": mine["layer_units"].iloc[0]})
        for variant, theirs in mine.groupby("variant", sort=True):
            values = np.array(theirs["kept_by_layer"].tolist(), dtype=float)
            frame[variant] = [_nanmean(column.tolist()) for column in values.T]
        out[setting] = frame
    return out


# -- the report's section ----------------------------------------------------------------------


def section(labelled: pd.DataFrame, tickets: Mapping[str, Ticket], n_boot: int = N_BOOT, seed: int = 0) -> str:
    """The report's Markdown section comparing tickets (title included)."""
    if not tickets:
        return (
            f"{TITLE}\n\nNo trial's ticket is known (the sweep was read from its Ray folder, which holds no "
            "tickets, or its runs were logged before tickets were), so tickets are not compared."
        )
    per_pair, chance = compare_tickets(labelled, tickets)
    if per_pair.empty:
        return f"{TITLE}\n\nNo {EB}/variant pair of the same setting and seed has both tickets, so none is compared."
    summary = summarize(per_pair, chance, n_boot, seed)
    header = ["setting", "variant", "pairs", "Jaccard (pruned units)", "identical", "kept in common"]
    header += [f"{EB} across seeds", "verdict"]
    rows = []
    for r in summary.to_dict("records"):
        mine = per_pair[(per_pair["setting"] == r["setting"]) & (per_pair["variant"] == r["variant"])]
        verdict = "; ".join(w for w in (r["verdict"], r["sooner"]) if w)
        rows.append(
            [
                r["setting"],
                r["variant"],
                str(r["n_pairs"]),
                _jaccard_cell(r, mine),
                f"{r['identical']} of {r['n_pairs']}",
                _pct(r["kept_common"]),
                _chance_cell(r),
                verdict,
            ]
        )
    parts = [TITLE, _table(header, rows), _note()]
    for setting, frame in per_layer(per_pair).items():
        variants = [c for c in frame.columns if c not in ("layer", "units")]
        body = [[str(r["layer"]), str(r["units"]), *(_pct(r[v]) for v in variants)] for r in frame.to_dict("records")]
        parts.append(
            f"Kept in common per layer, {setting}: of the units {EB} keeps in the layer, the share each variant "
            f"keeps too (mean over pairs; - where {EB} keeps none)."
        )
        parts.append(_table(["layer", "units", *variants], body))
    return "\n\n".join(parts)


def _jaccard_cell(r: Mapping[str, object], mine: pd.DataFrame) -> str:
    """``mean [lo, hi]``, or below :data:`MIN_PAIRS` pairs the mean and each seed's value."""
    mean = float(r["jaccard_mean"])
    if r["n_pairs"] >= MIN_PAIRS:
        lo, hi = float(r["jaccard_lo"]), float(r["jaccard_hi"])
        return f"{_share(mean)} [{_share(lo)}, {_share(hi)}]" if math.isfinite(lo) else _share(mean)
    each = "; ".join(f"seed {s}: {_share(j)}" for s, j in zip(mine["seed"], mine["jaccard"], strict=True))
    return f"{_share(mean)}: {each}"


def _chance_cell(r: Mapping[str, object]) -> str:
    if not r["chance_n"]:
        return "- (fewer than two seeds)"
    low, mean, high = (_share(float(r[k])) for k in ("chance_min", "chance_mean", "chance_max"))
    return f"{mean} [{low}-{high}] ({r['chance_n']} pairs of seeds)"


def _share(v: float, percent: bool = False) -> str:
    """A fraction to 3 decimals (``percent``: as a percentage to 1), with as many more as it takes not to
    show a value below 1 as 1 (up to 9): two per-weight tickets of millions of weights that differ in a few
    score 0.99999, which is not the same ticket. ``-`` when unknown."""
    if not math.isfinite(v):
        return "-"
    places = 3  # of the fraction
    while v < 1 and round(v, places) == 1 and places < 9:
        places += 1
    return f"{v:.{places - 2}%}" if percent else f"{v:.{places}f}"


def _pct(v: float) -> str:
    return _share(v, percent=True)


def _table(header: list[str], rows: list[list[str]]) -> str:
    return format_table(header, [[c.replace("|", "\\|") for c in row] for row in rows])


def _note() -> str:
    return (
        "Each variant's ticket is compared with the ticket EarlyBird drew for the same setting and seed. "
        "**Jaccard**: of the units either ticket prunes, the share both prune (1 = the same ticket); mean "
        f"[95% BCa interval] over the pairs, or each seed's value below {MIN_PAIRS} pairs. **Kept in common**: "
        "of the units EarlyBird keeps in a layer, the share the variant keeps too, averaged over layers and "
        f"pairs. **{EB} across seeds**, the scale of chance: the Jaccard of EarlyBird's own tickets of two "
        "different seeds, mean [min-max] over every two seeds; tickets of one network at one pruning ratio "
        "share units whatever the seed, so this, not 0, is what unrelated tickets score. A variant is "
        f'"{CLOSE}" when its interval lies above the largest of these: closer to its EarlyBird partner than '
        "any two of EarlyBird's seeds are to each other."
    )
