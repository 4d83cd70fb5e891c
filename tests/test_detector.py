"""The FIFO window and the convergence rule, on hand-made mask sequences."""

import pytest
import torch

from worm_tune.ticket.detector import EarlyBirdDetector


def mask(bits: str) -> torch.Tensor:
    return torch.tensor([b == "1" for b in bits])


def test_no_distance_until_the_window_is_full() -> None:
    det = EarlyBirdDetector(window=3, threshold=0.5)
    for bits in ["1100", "1100"]:
        obs = det.push(mask(bits))
        assert obs.d_max is None and obs.d_avg is None and not obs.converged
    obs = det.push(mask("1100"))
    assert obs.d_max == 0.0 and obs.d_avg == 0.0 and obs.converged


def test_distances_are_from_the_newest_to_each_older_mask() -> None:
    det = EarlyBirdDetector(window=3, threshold=0.3)
    det.push(mask("11110000"))  # differs from newest in 4/8
    det.push(mask("11100001"))  # differs from newest in 2/8
    obs = det.push(mask("11000011"))
    assert obs.d_max == 0.5
    assert obs.d_avg == pytest.approx(0.375)
    assert not obs.converged


def test_fifo_drops_the_oldest_mask() -> None:
    det = EarlyBirdDetector(window=2, threshold=0.1)
    det.push(mask("0000"))
    det.push(mask("1111"))
    obs = det.push(mask("1111"))  # "0000" has left the window
    assert obs.d_max == 0.0 and obs.converged
    assert len(det.masks) == 2


def test_convergence_is_strictly_below_the_threshold() -> None:
    # d_max == s exactly does not converge; just below does.
    det = EarlyBirdDetector(window=2, threshold=0.25)
    det.push(mask("1100"))
    obs = det.push(mask("1000"))
    assert obs.d_max == 0.25 and not obs.converged
    det = EarlyBirdDetector(window=2, threshold=0.2500001)
    det.push(mask("1100"))
    assert det.push(mask("1000")).converged


def test_convergence_uses_d_max_not_d_avg() -> None:
    det = EarlyBirdDetector(window=3, threshold=0.3)
    det.push(mask("0000000000"))  # 5/10 from newest
    det.push(mask("1111100000"))  # 0/10
    obs = det.push(mask("1111100000"))
    assert obs.d_avg == 0.25 and obs.d_max == 0.5
    assert not obs.converged


def test_state_round_trip_keeps_the_window() -> None:
    det = EarlyBirdDetector(window=3, threshold=0.1)
    for bits in ["1010", "1100"]:
        det.push(mask(bits))
    copy = EarlyBirdDetector(window=3, threshold=0.1)
    copy.load_state_dict(det.state_dict())
    assert det.push(mask("1001")) == copy.push(mask("1001"))


def test_window_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="window"):
        EarlyBirdDetector(window=1, threshold=0.1)
