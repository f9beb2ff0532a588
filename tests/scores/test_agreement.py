"""Best-of-trials and device agreement (Bland-Altman) worked by hand."""

import math

import pytest

from imt_etl.scores import best_of, bland_altman, device_difference, device_mean


def test_best_of_takes_largest_magnitude_and_skips_missing():
    assert best_of([-80, -95, None, -90]) == 95.0
    assert best_of([80, math.nan, 92]) == 92.0
    assert best_of([None, math.nan]) is None
    assert best_of([]) is None


def test_best_of_without_magnitude_takes_largest_signed_value():
    assert best_of([-80, -95, -90], magnitude=False) == -80.0
    assert best_of([3.1, 3.4, 3.3], magnitude=False) == 3.4


def test_best_of_rejects_non_numbers():
    with pytest.raises(ValueError, match="trial 2 must be a number"):
        best_of([80, "90"])


def test_pair_difference_and_mean():
    assert device_difference(100, 92) == 8.0
    assert device_mean(100, 92) == 96.0
    assert device_difference(None, 92) is None
    assert device_mean(100, math.nan) is None


def test_bland_altman_hand_example_drops_incomplete_pairs():
    # differences 2, -1, 3, 0 -> bias 1; squared deviations 1+4+4+1 = 10; SD = sqrt(10/3)
    result = bland_altman([100, 90, 80, 70, None], [98, 91, 77, 70, 60])
    sd = math.sqrt(10 / 3)
    assert result.n == 4
    assert result.bias == pytest.approx(1.0)
    assert result.sd == pytest.approx(sd)
    assert result.lower_loa == pytest.approx(1 - 1.96 * sd)
    assert result.upper_loa == pytest.approx(1 + 1.96 * sd)
    assert result.lower_loa == pytest.approx(-2.578454, abs=1e-6)


def test_bland_altman_input_errors():
    with pytest.raises(ValueError, match="same length"):
        bland_altman([1, 2], [1])
    with pytest.raises(ValueError, match="at least 2 complete pairs, got 1"):
        bland_altman([1, None], [1, 2])
