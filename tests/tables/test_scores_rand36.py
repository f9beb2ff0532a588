"""RAND-36 scales computed in advance for all visits equal the per-visit scalar path."""

import math
import random
from datetime import date

from imt_etl import scores
from imt_etl.tables.config import ScoresConfig
from imt_etl.tables.scores import _SCALAR, _as_int, _rand36_in_advance


def test_rand36_in_advance_equals_the_scalar_path():
    cfg = ScoresConfig(rand36_items=tuple(f"q{i}" for i in range(1, 37)))
    rng = random.Random(3)
    odd = ["abc", "2.7", 2.7, "inf", math.inf, 7, "7", "", date(2020, 1, 1), True, 10**30, "00003"]
    visits = []
    for n in range(2000):
        values = {}
        for i in range(1, 37):
            r = rng.random()
            if r < 0.2:
                continue
            code = rng.choice(sorted(scores.rand36.RECODE[i]))
            values[f"q{i}"] = str(code) if n % 2 else code
            if r > 0.995:
                values[f"q{i}"] = rng.choice(odd)
        visits.append(values)
    visits += [{}, {"q36": "3"}]
    got = _rand36_in_advance(cfg, visits)
    fast = 0
    for values, result in zip(visits, got, strict=True):
        if result is _SCALAR:
            continue
        fast += 1
        rand = {i: _as_int(values.get(f"q{i}")) for i in range(1, 37)}
        want = scores.rand36_scales(rand) if any(v is not None for v in rand.values()) else None
        assert result == want
    assert 1500 < fast < len(visits)
