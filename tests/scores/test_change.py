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


def _pairs() -> tuple[list[float], list[float]]:
    """Baseline/follow-up pairs covering every bin edge, float noise, zero, sign, NaN and huge."""
    import random

    rng = random.Random(7)
    bases = [100.0, 0.3 * 5, 1.5, -80.0, 0.0, -0.0, math.nan, 7.0, 1e-300, 1e300, 3.0, -1.5]
    base, follow = [], []
    for b in bases:
        for pct in (-40, -20.000000001, -20, -19.9999999999, -1e-12, 0, 1e-12, 19.999999999,
                    20, 20.0000000001, 40):
            for f in (b * (1 + pct / 100), b + abs(b) * pct / 100, math.nan, 0.0, -b):
                base.append(b)
                follow.append(f)
    for _ in range(5000):
        b = rng.choice([rng.uniform(-200, 200), float(rng.randint(-50, 50)), math.nan])
        f = rng.choice([rng.uniform(-200, 200), b * rng.choice([0.8, 1.2, 1.0, 0.79, 1.21]),
                        b + rng.choice([0.3, -0.3, 0.0]), math.nan])
        base.append(b)
        follow.append(f)
    return base, follow


def test_vectorised_twins_equal_the_scalar_functions():
    import numpy as np

    from imt_etl.scores.change import CATEGORY_ORDER, change_category_codes, percent_changes

    base, follow = _pairs()
    got = percent_changes(np.array(base), np.array(follow))
    for b, f, g in zip(base, follow, got, strict=True):
        want = percent_change(b, f)
        if want is None:
            assert math.isnan(g), (b, f, g)
        else:  # bit-identical, sign of zero included
            assert math.copysign(1, g) == math.copysign(1, want) and g == want, (b, f, g, want)
    for better in (True, False):
        for threshold in (20.0, 5.0):
            codes = change_category_codes(np.array(base), np.array(follow), better, threshold)
            for b, f, c in zip(base, follow, codes, strict=True):
                want = change_category(b, f, better, threshold)
                assert (None if c < 0 else CATEGORY_ORDER[c]) == want, (b, f, better, threshold)


def test_vectorised_twins_refuse_what_the_scalar_refuses():
    import numpy as np

    from imt_etl.scores.change import change_category_codes, percent_changes

    with pytest.raises(ValueError, match="followup must be finite"):
        percent_changes(np.array([1.0, math.nan]), np.array([2.0, math.inf]))
    with pytest.raises(ValueError, match="baseline must be finite"):
        change_category_codes(np.array([-math.inf]), np.array([1.0]), True)
    with pytest.raises(ValueError, match="threshold"):
        change_category_codes(np.array([1.0]), np.array([1.0]), True, 0)
