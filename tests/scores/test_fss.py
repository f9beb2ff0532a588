"""Fatigue Severity Scale: hand-worked means, missing-item rule and input checks."""

import math

import pandas as pd
import pytest

from imt_etl.scores import fss_score, fss_scores, fss_significant_fatigue


def test_mean_of_nine_items():
    # 1+2+3+4+5+6+7+4+4 = 36; 36 / 9 = 4.0
    assert fss_score([1, 2, 3, 4, 5, 6, 7, 4, 4]) == 4.0
    assert fss_score([7] * 9) == 7.0
    assert fss_score([1] * 9) == 1.0
    # 5*6 + 6*3 = 48; 48 / 9 = 5.333...
    assert fss_score([5, 5, 5, 5, 5, 5, 6, 6, 6]) == pytest.approx(48 / 9)


def test_missing_item_gives_none_by_default():
    assert fss_score([1, 2, 3, None, 5, 6, 7, 4, 4]) is None
    assert fss_score([1, 2, 3, math.nan, 5, 6, 7, 4, 4]) is None
    assert fss_score([None] * 9) is None


def test_max_missing_one_prorates_over_answered_items():
    # answered 1+2+3+5+6+7+4+4 = 32 over 8 items = 4.0
    assert fss_score([1, 2, 3, None, 5, 6, 7, 4, 4], max_missing=1) == 4.0
    assert fss_score([1, 2, None, None, 5, 6, 7, 4, 4], max_missing=1) is None


@pytest.mark.parametrize("bad", [0, 8, -1, 3.5, "3", True])
def test_out_of_range_or_non_integer_item_is_rejected(bad):
    items = [4] * 9
    items[2] = bad
    with pytest.raises(ValueError, match="FSS item 3"):
        fss_score(items)


def test_wrong_number_of_items_and_bad_max_missing():
    with pytest.raises(ValueError, match="exactly 9 items, got 8"):
        fss_score([4] * 8)
    with pytest.raises(ValueError, match="max_missing"):
        fss_score([4] * 9, max_missing=9)


def test_significant_fatigue_cutoff_is_strictly_above_four():
    assert fss_significant_fatigue(4.0) is False
    assert fss_significant_fatigue(37 / 9) is True
    assert fss_significant_fatigue(None) is None


def test_fss_scores_over_a_table_with_nullable_integers():
    cols = [f"fss_{i}" for i in range(1, 10)]
    frame = pd.DataFrame(
        [[1, 2, 3, 4, 5, 6, 7, 4, 4], [7, 7, 7, 7, 7, 7, 7, 7, None]], columns=cols
    ).astype("Int64")
    scores = fss_scores(frame, cols)
    assert scores.iloc[0] == 4.0
    assert math.isnan(scores.iloc[1])
    assert fss_scores(frame, cols, max_missing=1).iloc[1] == 7.0
