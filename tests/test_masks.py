"""The global |gamma| mask, its tie rule, and the Hamming distance."""

import math

import pytest
import torch
from torch import nn

from worm_tune.ticket.masks import global_mask, hamming, num_pruned
from worm_tune.ticket.sites import ChannelSites


def test_keeps_the_largest_scores_with_one_global_threshold() -> None:
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    keep = global_mask(scores, 0.5)
    assert keep.tolist() == [True, False, True, False, True, False]


@pytest.mark.parametrize("n, ratio", [(10, 0.5), (7, 0.3), (64, 0.7), (5, 0.99), (3, 0.01)])
def test_keeps_c_minus_floor_c_p(n: int, ratio: float) -> None:
    keep = global_mask(torch.rand(n), ratio)
    assert int(keep.sum()) == n - math.floor(n * ratio)
    assert num_pruned(n, ratio) == math.floor(n * ratio)


def test_ties_break_by_position_deterministically() -> None:
    # At init every gamma is 1: the earlier channels are kept.
    keep = global_mask(torch.ones(8), 0.5)
    assert keep.tolist() == [True] * 4 + [False] * 4
    # A tie straddling the cut: of the three 0.5s only the first fits.
    keep = global_mask(torch.tensor([0.5, 0.9, 0.5, 0.1, 0.5]), 0.6)
    assert keep.tolist() == [True, True, False, False, False]


def test_threshold_is_global_not_per_layer() -> None:
    a, b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        b.weight.copy_(torch.tensor([-0.1, 0.2, -0.3, 0.4]))  # |gamma| counts, sign does not
    scores = ChannelSites([a, b]).scores()
    assert scores.tolist() == pytest.approx([1, 2, 3, 4, 0.1, 0.2, 0.3, 0.4])
    keep = global_mask(scores, 0.5)
    assert keep.tolist() == [True] * 4 + [False] * 4  # layer b loses every channel


def test_hamming_is_the_fraction_of_differing_positions() -> None:
    a = torch.tensor([True, True, False, False])
    assert hamming(a, a) == 0.0
    assert hamming(a, ~a) == 1.0
    assert hamming(a, torch.tensor([True, False, False, True])) == 0.5
    with pytest.raises(ValueError, match="shape"):
        hamming(a, torch.tensor([True]))
