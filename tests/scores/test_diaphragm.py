"""Diaphragm thickening fraction (Ferrari et al. 2014) worked by hand."""

import math

import pandas as pd
import pytest

from imt_etl.scores import thickening_fraction, thickening_fraction_series


def test_thickening_fraction_hand_examples():
    # (3.0 - 2.0) / 2.0 x 100 = 50 %
    assert thickening_fraction(3.0, 2.0) == 50.0
    # (2.6 - 2.0) / 2.0 x 100 = 30 %
    assert thickening_fraction(2.6, 2.0) == pytest.approx(30.0)
    # a paralysed hemidiaphragm can thin on inspiration: (1.8 - 2.0) / 2.0 x 100 = -10 %
    assert thickening_fraction(1.8, 2.0) == pytest.approx(-10.0)
    assert thickening_fraction(2.0, 2.0) == 0.0


def test_missing_thickness_gives_none():
    assert thickening_fraction(None, 2.0) is None
    assert thickening_fraction(3.0, math.nan) is None


@pytest.mark.parametrize(
    ("insp", "exp", "name"),
    [
        (3.0, 0.0, "thickness_exp_mm"),
        (3.0, -1.0, "thickness_exp_mm"),
        (0.0, 2.0, "thickness_insp_mm"),
    ],
)
def test_non_positive_thickness_is_rejected(insp, exp, name):
    with pytest.raises(ValueError, match=name):
        thickening_fraction(insp, exp)


def test_string_input_is_rejected():
    with pytest.raises(ValueError, match="thickness_insp_mm must be a number"):
        thickening_fraction("3", 2.0)


def test_series_version_matches_scalar_and_keeps_nan():
    insp = pd.Series([3.0, 2.6, None])
    exp = pd.Series([2.0, 2.0, 2.0])
    result = thickening_fraction_series(insp, exp)
    assert result.iloc[0] == 50.0
    assert result.iloc[1] == pytest.approx(30.0)
    assert math.isnan(result.iloc[2])
    with pytest.raises(ValueError, match="thickness_exp_mm must be > 0 mm; row 1"):
        thickening_fraction_series(insp, pd.Series([2.0, 0.0, 2.0]))
