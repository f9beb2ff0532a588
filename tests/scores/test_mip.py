"""Evans & Whitelaw 2009 predicted MIP/MEP and LLN at a few ages for both sexes, % predicted."""

import math

import pytest

from imt_etl.scores import (
    lln_mip,
    mip_below_lln,
    mip_magnitude,
    percent_predicted_mep,
    percent_predicted_mip,
    predicted_mep,
    predicted_mip,
)

# (sex, age, predicted MIP, LLN MIP, predicted MEP), worked by hand from the equations:
# male MIP 120 - 0.41a, LLN 62 - 0.15a, MEP 174 - 0.83a; female MIP 108 - 0.61a, LLN 62 - 0.50a,
# MEP 131 - 0.86a.
CASES = [
    ("male", 40, 103.6, 56.0, 140.8),
    ("male", 65, 93.35, 52.25, 120.05),
    ("female", 40, 83.6, 42.0, 96.6),
    ("female", 65, 68.35, 29.5, 75.1),
]


@pytest.mark.parametrize(("sex", "age", "mip", "lln", "mep"), CASES)
def test_reference_equations(sex, age, mip, lln, mep):
    assert predicted_mip(sex, age) == pytest.approx(mip)
    assert lln_mip(sex, age) == pytest.approx(lln)
    assert predicted_mep(sex, age) == pytest.approx(mep)


def test_percent_predicted_uses_the_magnitude_of_negative_mip():
    assert percent_predicted_mip(-83.6, "female", 40) == pytest.approx(100.0)
    assert percent_predicted_mip(83.6, "F", 40) == pytest.approx(100.0)
    assert percent_predicted_mip(-51.8, "M", 40) == pytest.approx(50.0)
    assert percent_predicted_mip(None, "male", 40) is None
    assert percent_predicted_mip(math.nan, "male", 40) is None
    assert mip_magnitude(-72) == 72.0


def test_percent_predicted_mep():
    assert percent_predicted_mep(70.4, "male", 40) == pytest.approx(50.0)
    assert percent_predicted_mep(None, "male", 40) is None
    with pytest.raises(ValueError, match="mep must be a positive"):
        percent_predicted_mep(-70, "male", 40)


def test_below_lln():
    # male 40: LLN 56 cmH2O
    assert mip_below_lln(-55.9, "male", 40) is True
    assert mip_below_lln(-56.0, "male", 40) is False
    assert mip_below_lln(None, "male", 40) is None


@pytest.mark.parametrize("sex", ["x", "", 1, None, "males"])
def test_bad_sex_is_rejected(sex):
    with pytest.raises(ValueError, match="sex must be"):
        predicted_mip(sex, 40)


@pytest.mark.parametrize("age", [17, 121, -3])
def test_age_outside_adult_range_is_rejected(age):
    with pytest.raises(ValueError, match="age must be between 18 and 120"):
        lln_mip("female", age)


def test_missing_age_is_rejected():
    with pytest.raises(ValueError, match="age must be a number"):
        predicted_mep("male", None)
