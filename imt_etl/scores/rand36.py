"""RAND-36 (SF-36 v1.0 items, RAND scoring): item recoding to 0-100 and the eight scale means.

Source: Hays RD, Sherbourne CD, Mazel RM. The RAND 36-Item Health Survey 1.0. Health Econ
1993;2:217-227, and the RAND "36-Item Short Form Survey (SF-36) Scoring Instructions"
(rand.org/health-care/surveys_tools/mos/36-item-short-form/scoring.html), as summarised in
/work/shared/reference/terminology.md "Scoring rules" rule 3: each item is recoded so that 100 is
the best state, and a scale is the mean of the recoded items the respondent answered (blank items
are left out, there is no minimum number of answered items). Item 2 (health change) belongs to no
scale. PCS/MCS are not computed: they need norm-based coefficients that are not sourced here.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from imt_etl.scores._common import as_number, is_missing

# Recoding tables (RAND scoring instructions, Table 1): response code -> 0-100 value.
_FIVE_DOWN = {1: 100.0, 2: 75.0, 3: 50.0, 4: 25.0, 5: 0.0}
_THREE_UP = {1: 0.0, 2: 50.0, 3: 100.0}
_TWO_UP = {1: 0.0, 2: 100.0}
_SIX_DOWN = {1: 100.0, 2: 80.0, 3: 60.0, 4: 40.0, 5: 20.0, 6: 0.0}
_SIX_UP = {1: 0.0, 2: 20.0, 3: 40.0, 4: 60.0, 5: 80.0, 6: 100.0}
_FIVE_UP = {1: 0.0, 2: 25.0, 3: 50.0, 4: 75.0, 5: 100.0}

_GROUPS: tuple[tuple[tuple[int, ...], dict[int, float]], ...] = (
    ((1, 2, 20, 22, 34, 36), _FIVE_DOWN),
    (tuple(range(3, 13)), _THREE_UP),
    (tuple(range(13, 20)), _TWO_UP),
    ((21, 23, 26, 27, 30), _SIX_DOWN),
    ((24, 25, 28, 29, 31), _SIX_UP),
    ((32, 33, 35), _FIVE_UP),
)
RECODE: dict[int, dict[int, float]] = {item: table for items, table in _GROUPS for item in items}

# Scale membership (RAND scoring instructions, Table 2).
SCALES: dict[str, tuple[int, ...]] = {
    "physical_functioning": tuple(range(3, 13)),
    "role_physical": (13, 14, 15, 16),
    "role_emotional": (17, 18, 19),
    "energy_fatigue": (23, 27, 29, 31),
    "emotional_wellbeing": (24, 25, 26, 28, 30),
    "social_functioning": (20, 32),
    "pain": (21, 22),
    "general_health": (1, 33, 34, 35, 36),
}
HEALTH_CHANGE_ITEM = 2


def rand36_recode(item_number: int, response: int | None) -> float | None:
    """Recode one RAND-36 item response (the printed answer code) to 0-100; None if missing."""
    valid = type(item_number) is int or (  # a plain int first: the ABC check is slow
        isinstance(item_number, numbers.Integral) and not isinstance(item_number, bool))
    if not valid or item_number not in RECODE:
        raise ValueError(f"RAND-36 item number must be an integer 1-36, got {item_number!r}")
    if is_missing(response):
        return None
    table = RECODE[int(item_number)]
    code = as_number(response, f"RAND-36 item {item_number} response")
    if not code.is_integer() or int(code) not in table:
        raise ValueError(
            f"RAND-36 item {item_number} response must be one of {sorted(table)}, got {response!r}"
        )
    return table[int(code)]


def rand36_scales(responses: Mapping[int, int | None]) -> dict[str, float | None]:
    """The eight RAND-36 scale scores (0-100): mean of the answered recoded items, None if none."""
    unknown = sorted(k for k in responses if k not in RECODE)
    if unknown:
        raise ValueError(f"RAND-36 responses have unknown item numbers {unknown} (expected 1-36)")
    recoded = {item: rand36_recode(item, value) for item, value in responses.items()}
    scores: dict[str, float | None] = {}
    for scale, items in SCALES.items():
        answered = [recoded[i] for i in items if recoded.get(i) is not None]
        # RAND: a scale is the average of the items the respondent answered.
        scores[scale] = sum(answered) / len(answered) if answered else None
    return scores


def rand36_scales_array(responses: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """rand36_scales over the rows of an (n, 36) float array (column j = item j + 1, NaN =
    missing): the scales (NaN where None) and, per row, whether it was scored. A row holding a
    response rand36_scales refuses is not scored (NaN, False): pass it to the scalar function.

    Equal to the scalar function bit for bit: recoded values are whole numbers, so each sum is
    exact in any order, and the mean is the same single division."""
    codes = np.asarray(responses, dtype=float)
    if codes.ndim != 2 or codes.shape[1] != len(RECODE):
        raise ValueError(f"RAND-36 needs an (n, {len(RECODE)}) array, got {codes.shape}")
    recoded = np.full(codes.shape, np.nan)
    scored = np.ones(len(codes), dtype=bool)
    for item, table in RECODE.items():
        column = codes[:, item - 1]
        known = np.zeros(len(codes), dtype=bool)
        for code, value in table.items():
            hit = column == code
            recoded[hit, item - 1] = value
            known |= hit
        scored &= known | np.isnan(column)
    scales: dict[str, np.ndarray] = {}
    for scale, items in SCALES.items():
        block = recoded[:, [i - 1 for i in items]]
        answered = ~np.isnan(block)
        count = answered.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(answered, block, 0.0).sum(axis=1) / count
        mean[(count == 0) | ~scored] = np.nan
        scales[scale] = mean
    return scales, scored
