"""Early-Bird masks and the distance between them.

A mask is a bool vector over every unit of every representative layer (True = kept; units
and their scores come from :mod:`worm_tune.ticket.sites`: BN channels by |gamma|, attention weights
by magnitude, heads by norm), drawn with ONE global threshold: it keeps the
``C - floor(C * p)`` largest scores. Ties are broken by position (earlier unit kept), so the
mask is a pure function of the weights even when many scores are equal, as gammas are at
initialisation.

``rules="reference"`` draws the reference code's mask instead: it prunes every score at or below
the ascending-sorted value at index ``floor(C * p)``, so ``floor(C * p) + 1`` units when the
scores are distinct and every tied one when they are not (all of them at initialisation).
"""

from __future__ import annotations

import math

import torch

from worm_tune.config import SEARCH_RULES


def num_pruned(num_channels: int, ratio: float) -> int:
    """How many of ``num_channels`` a ratio ``p`` prunes: ``floor(C * p)``."""
    return math.floor(num_channels * ratio)


def global_mask(scores: torch.Tensor, ratio: float, rules: str = "algorithm") -> torch.Tensor:
    """Keep the ``C - floor(C * ratio)`` largest scores, ties to the lower index (``rules="algorithm"``),
    or every score above the sorted value at index ``floor(C * ratio)`` (``"reference"``)."""
    if rules not in SEARCH_RULES:
        raise ValueError(f"rules={rules!r} is invalid: expected one of {', '.join(SEARCH_RULES)}")
    scores = scores.flatten()
    if rules == "reference":
        # The value at ascending index k is the (k+1)-th smallest; k < C since ratio < 1.
        threshold = torch.kthvalue(scores, num_pruned(scores.numel(), ratio) + 1).values
        return scores > threshold
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    n_keep = scores.numel() - num_pruned(scores.numel(), ratio)
    # A stable descending sort keeps equal scores in index order, which is the tie rule.
    order = torch.sort(scores, descending=True, stable=True).indices
    keep[order[:n_keep]] = True
    return keep


def hamming(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised Hamming distance: the fraction of positions where two masks differ."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a != b).float().mean().item()
