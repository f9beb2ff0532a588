"""Fatigue Severity Scale (FSS-9): mean of nine items scored 1-7.

Source: Krupp LB, LaRocca NG, Muir-Nash J, Steinberg AD. The Fatigue Severity Scale: application
to patients with multiple sclerosis and systemic lupus erythematosus. Arch Neurol
1989;46:1121-1123 (score = mean of the 9 items, range 1-7; > 4 suggests significant fatigue);
project reference: /work/shared/reference/terminology.md, "Scoring rules" rule 2.

Missing items: the original paper gives no rule. This package requires all nine items by default
(score None otherwise) because prorating a 9-item mean hides which dimension was skipped; callers
that pre-registered a prorating rule may pass max_missing=1 (mean of the answered items).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from imt_etl.scores._common import as_number, is_missing

FSS_ITEMS = 9
FSS_MIN, FSS_MAX = 1, 7
# Krupp et al. 1989: a mean score above 4 suggests significant fatigue.
FSS_FATIGUE_CUTOFF = 4.0


def fss_score(items: Sequence[int | None], *, max_missing: int = 0) -> float | None:
    """Mean of the 9 FSS items (each an integer 1-7); None if more than max_missing are missing."""
    if isinstance(items, str | bytes) or len(items) != FSS_ITEMS:
        raise ValueError(f"FSS needs exactly {FSS_ITEMS} items, got {len(items)}")
    if not 0 <= max_missing < FSS_ITEMS:
        raise ValueError(f"max_missing must be between 0 and {FSS_ITEMS - 1}, got {max_missing}")
    answered = [_check_item(i, v) for i, v in enumerate(items, start=1) if not is_missing(v)]
    if FSS_ITEMS - len(answered) > max_missing:
        return None
    # Krupp et al. 1989: score = arithmetic mean of the item responses.
    return sum(answered) / len(answered)


def fss_significant_fatigue(score: float | None) -> bool | None:
    """True if the FSS mean is above 4 (Krupp et al. 1989); None if the score is missing."""
    return None if score is None else score > FSS_FATIGUE_CUTOFF


def fss_scores(
    frame: pd.DataFrame, item_columns: Sequence[str], *, max_missing: int = 0
) -> pd.Series:
    """Row-wise fss_score over a table; NaN where a row has too many missing items."""
    if len(item_columns) != FSS_ITEMS:
        raise ValueError(f"FSS needs exactly {FSS_ITEMS} item columns, got {len(item_columns)}")
    values = frame[list(item_columns)].astype(object).to_numpy()
    scores = [fss_score(list(row), max_missing=max_missing) for row in values]
    return pd.Series(scores, index=frame.index, dtype="float64", name="fss_score")


def _check_item(position: int, value: object) -> int:
    number = as_number(value, f"FSS item {position}")
    if not number.is_integer() or not FSS_MIN <= number <= FSS_MAX:
        raise ValueError(
            f"FSS item {position} must be an integer {FSS_MIN}-{FSS_MAX}, got {value!r}"
        )
    return int(number)
