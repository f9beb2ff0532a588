"""RAND-36: recoding tables for every item group and scale means with missing items."""

import math

import pytest

from imt_etl.scores import SCALES, rand36_recode, rand36_scales

# Hand-copied from the RAND scoring instructions (terminology.md rule 3): item group -> table.
GROUPS = [
    ((1, 2, 20, 22, 34, 36), {1: 100, 2: 75, 3: 50, 4: 25, 5: 0}),
    (tuple(range(3, 13)), {1: 0, 2: 50, 3: 100}),
    (tuple(range(13, 20)), {1: 0, 2: 100}),
    ((21, 23, 26, 27, 30), {1: 100, 2: 80, 3: 60, 4: 40, 5: 20, 6: 0}),
    ((24, 25, 28, 29, 31), {1: 0, 2: 20, 3: 40, 4: 60, 5: 80, 6: 100}),
    ((32, 33, 35), {1: 0, 2: 25, 3: 50, 4: 75, 5: 100}),
]


@pytest.mark.parametrize(("items", "table"), GROUPS)
def test_recoding_table_for_each_item_group(items, table):
    for item in items:
        for response, expected in table.items():
            assert rand36_recode(item, response) == expected
        with pytest.raises(ValueError, match=f"item {item} response"):
            rand36_recode(item, max(table) + 1)


def test_every_item_is_in_exactly_one_group_and_item_2_in_no_scale():
    grouped = sorted(i for items, _ in GROUPS for i in items)
    assert grouped == list(range(1, 37))
    in_scales = sorted(i for items in SCALES.values() for i in items)
    assert in_scales == [i for i in range(1, 37) if i != 2]


def test_recode_missing_and_bad_inputs():
    assert rand36_recode(5, None) is None
    assert rand36_recode(5, math.nan) is None
    assert rand36_recode(5, 2.0) == 50.0
    for bad_item in (0, 37, "3", True):
        with pytest.raises(ValueError, match="item number"):
            rand36_recode(bad_item, 1)
    with pytest.raises(ValueError, match="item 3 response"):
        rand36_recode(3, 1.5)
    with pytest.raises(ValueError, match="item 3 response"):
        rand36_recode(3, 0)


def _example():
    responses = {i: 3 for i in range(3, 13)}
    responses.update({3: 1, 4: 2})  # PF: 0, 50, 100 x 8 -> 850 / 10 = 85
    responses.update({13: 1, 14: 2, 15: 2, 16: 2})  # RP: 0, 100, 100, 100 -> 75
    responses.update({17: 2, 18: None, 19: 1})  # RE: 100, (missing), 0 -> 50
    responses.update({23: 1, 27: 2, 29: 5, 31: 6})  # EF: 100, 80, 80, 100 -> 90
    responses.update({24: 6, 25: 5, 26: 1, 28: 4, 30: 2})  # EWB: 100, 80, 100, 60, 80 -> 84
    responses.update({20: 2, 32: 5})  # SF: 75, 100 -> 87.5
    responses.update({21: 3})  # pain: 60, item 22 absent -> 60
    responses.update({1: 3, 33: 2, 34: 4, 35: 1, 36: 2})  # GH: 50, 25, 25, 0, 75 -> 35
    responses[2] = 1  # health change: no scale
    return responses


def test_scale_means_with_missing_items():
    assert rand36_scales(_example()) == {
        "physical_functioning": 85.0,
        "role_physical": 75.0,
        "role_emotional": 50.0,
        "energy_fatigue": 90.0,
        "emotional_wellbeing": 84.0,
        "social_functioning": 87.5,
        "pain": 60.0,
        "general_health": 35.0,
    }


def test_health_change_item_does_not_move_any_scale():
    a, b = _example(), _example()
    b[2] = 5
    assert rand36_scales(a) == rand36_scales(b)


def test_scale_with_no_answered_item_is_none():
    scores = rand36_scales({21: None, 22: math.nan, 3: 3})
    assert scores["pain"] is None
    assert scores["physical_functioning"] == 100.0
    assert rand36_scales({}) == {name: None for name in SCALES}


def test_unknown_item_numbers_are_rejected():
    with pytest.raises(ValueError, match=r"unknown item numbers \[0, 40\]"):
        rand36_scales({0: 1, 40: 1, 3: 1})


def test_vectorised_scales_equal_the_scalar_function():
    import math
    import random

    import numpy as np

    from imt_etl.scores.rand36 import RECODE, rand36_scales, rand36_scales_array

    rng = random.Random(11)
    rows = []
    for n in range(3000):
        row = []
        for item in range(1, 37):
            r = rng.random()
            if r < 0.15:
                row.append(None)
            elif r < 0.16 and n % 5 == 0:  # a refused response: not a code, or not a whole number
                row.append(rng.choice([0, 7, 2.5, -1, math.inf, 99]))
            else:
                row.append(rng.choice(sorted(RECODE[item])))
        rows.append(row)
    rows.append([None] * 36)
    rows.append([None] * 35 + [3])
    got, scored = rand36_scales_array(np.array(rows, dtype=float))
    for i, row in enumerate(rows):
        try:
            want = rand36_scales(dict(enumerate(row, start=1)))
        except ValueError:
            assert not scored[i]
            assert all(math.isnan(got[s][i]) for s in got)
            continue
        assert scored[i]
        for scale, value in want.items():
            if value is None:
                assert math.isnan(got[scale][i])
            else:
                assert got[scale][i] == value, (i, scale)
