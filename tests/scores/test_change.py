"""Percent change and the five-level change category at every boundary."""

import math

import pandas as pd
import pytest

from imt_etl.scores import (
    CHANGE_LABELS,
    ChangeCategory,
    change_categories,
    change_category,
    change_labels,
    percent_change,
)


def test_percent_change_relative_to_baseline():
    assert percent_change(50, 60) == 20.0
    assert percent_change(80, 60) == -25.0
    # negative baseline: divide by |baseline| so the sign still says "value went up/down"
    assert percent_change(-80, -100) == -25.0
    assert percent_change(0, 5) is None
    assert percent_change(None, 5) is None
    assert percent_change(5, math.nan) is None


# baseline 100, higher is better: every boundary of the default 20 % threshold
HIGHER = [
    (121, "improved_major"),
    (120.0001, "improved_major"),
    (120, "improved_minor"),
    (100.0001, "improved_minor"),
    (100, "unchanged"),
    (99.9999, "deteriorated_minor"),
    (80, "deteriorated_minor"),
    (79.9999, "deteriorated_major"),
    (0, "deteriorated_major"),
]


@pytest.mark.parametrize(("followup", "code"), HIGHER)
def test_boundaries_when_higher_is_better(followup, code):
    assert change_category(100, followup, higher_is_better=True) == code


@pytest.mark.parametrize(("followup", "code"), HIGHER)
def test_boundaries_mirror_when_lower_is_better(followup, code):
    mirrored = 200 - followup  # same distance from 100 in the other direction
    assert change_category(100, mirrored, higher_is_better=False) == code


def test_float_noise_does_not_cross_the_edge():
    # (1.8 - 1.5) / 1.5 * 100 == 20.000000000000004 in floating point; by hand it is exactly 20
    assert change_category(1.5, 1.8, higher_is_better=True) == "improved_minor"
    assert change_category(1.5, 1.2, higher_is_better=False) == "improved_minor"


def test_zero_or_missing_baseline():
    assert change_category(0, 0, higher_is_better=True) == "unchanged"
    assert change_category(0, 3, higher_is_better=True) is None
    assert change_category(None, 3, higher_is_better=True) is None
    assert change_category(3, math.nan, higher_is_better=False) is None


def test_custom_threshold_and_bad_threshold():
    assert change_category(100, 111, True, threshold=10) == "improved_major"
    assert change_category(100, 110, True, threshold=10) == "improved_minor"
    with pytest.raises(ValueError, match="threshold must be > 0"):
        change_category(100, 110, True, threshold=0)
    with pytest.raises(ValueError, match="baseline must be a number"):
        change_category("100", 110, True)


def test_codes_and_labels():
    assert [c.value for c in ChangeCategory] == [
        "improved_major",
        "improved_minor",
        "unchanged",
        "deteriorated_minor",
        "deteriorated_major",
    ]
    assert CHANGE_LABELS[ChangeCategory.IMPROVED_MAJOR] == "improved >20%"
    assert CHANGE_LABELS[ChangeCategory.DETERIORATED_MINOR] == "deteriorated <=20%"
    assert change_labels(10)[ChangeCategory.IMPROVED_MINOR] == "improved <=10%"


def test_vectorised_categories():
    base = pd.Series([100.0, 100.0, None, 0.0], index=["a", "b", "c", "d"])
    follow = pd.Series([130.0, 90.0, 5.0, 0.0], index=["a", "b", "c", "d"])
    result = change_categories(base, follow, higher_is_better=True)
    assert result.tolist()[:2] == ["improved_major", "deteriorated_minor"]
    assert result.isna().tolist() == [False, False, True, False]
    assert result["d"] == "unchanged"
    with pytest.raises(ValueError, match="same index"):
        change_categories(base, follow.reset_index(drop=True), True)
