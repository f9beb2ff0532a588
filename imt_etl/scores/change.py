"""Percent change from baseline and the five-level change category used in the ADL training study.

Source: the supervised ADL/resistance/stability training study in IIM (ISRCTN35925199; see
/work/shared/reference/studies.md section 2 and terminology.md "Scoring rules" rule 7): % change
over weeks 0-24 stratified as improved > 20 % (clinically meaningful), improved > 0 and <= 20 %,
unchanged, deteriorated > 0 and <= 20 %, deteriorated > 20 %. Direction depends on the measure.

Conventions chosen here (not stated by the study): percent change = (follow-up - baseline) /
|baseline| x 100, so a negative baseline (MIP recorded as a negative pressure) keeps its sign
meaning; "unchanged" means exactly 0 % after rounding to 9 decimals; baseline 0 gives no percent
change (None) unless follow-up is also 0, which is "unchanged"; a missing value gives None.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd

from imt_etl.scores._common import as_number, as_optional_number, edge_round


class ChangeCategory(StrEnum):
    """Machine codes of the five change categories; CHANGE_LABELS holds the display labels."""

    IMPROVED_MAJOR = "improved_major"
    IMPROVED_MINOR = "improved_minor"
    UNCHANGED = "unchanged"
    DETERIORATED_MINOR = "deteriorated_minor"
    DETERIORATED_MAJOR = "deteriorated_major"


def change_labels(threshold: float = 20.0) -> dict[ChangeCategory, str]:
    """Display labels for each code at the given threshold (default 20 %)."""
    t = f"{threshold:g}%"
    return {
        ChangeCategory.IMPROVED_MAJOR: f"improved >{t}",
        ChangeCategory.IMPROVED_MINOR: f"improved <={t}",
        ChangeCategory.UNCHANGED: "unchanged",
        ChangeCategory.DETERIORATED_MINOR: f"deteriorated <={t}",
        ChangeCategory.DETERIORATED_MAJOR: f"deteriorated >{t}",
    }


CHANGE_LABELS = change_labels()


def percent_change(baseline: float | None, followup: float | None) -> float | None:
    """(followup - baseline) / |baseline| x 100; None if missing or baseline is 0."""
    base = as_optional_number(baseline, "baseline")
    follow = as_optional_number(followup, "followup")
    if base is None or follow is None or base == 0:
        return None
    return (follow - base) / abs(base) * 100.0


def change_category(
    baseline: float | None,
    followup: float | None,
    higher_is_better: bool,
    threshold: float = 20.0,
) -> ChangeCategory | None:
    """Five-level category of the change from baseline (a ChangeCategory, which is a str)."""
    limit = as_number(threshold, "threshold")
    if limit <= 0:
        raise ValueError(f"threshold must be > 0 %, got {limit:g}")
    base = as_optional_number(baseline, "baseline")
    follow = as_optional_number(followup, "followup")
    if base is None or follow is None:
        return None
    if base == 0:
        # Relative change from 0 is undefined; only "no change at all" can be classified.
        return ChangeCategory.UNCHANGED if follow == 0 else None
    pct = (follow - base) / abs(base) * 100.0
    gain = edge_round(pct if higher_is_better else -pct)
    if gain > limit:
        return ChangeCategory.IMPROVED_MAJOR
    if gain > 0:
        return ChangeCategory.IMPROVED_MINOR
    if gain == 0:
        return ChangeCategory.UNCHANGED
    if gain >= -limit:
        return ChangeCategory.DETERIORATED_MINOR
    return ChangeCategory.DETERIORATED_MAJOR


# Vectorised twins of percent_change and change_category, for float arrays where NaN is a
# missing value. They apply the same formula with the same float operations in the same order,
# so results are bit-identical; anything the scalar functions refuse (an infinite value) or
# round (a percentage near a bin edge) is passed to the scalar function itself.

CATEGORY_ORDER = tuple(ChangeCategory)  # change_category_codes returns indices into this
# edge_round moves a percentage by at most half a unit in its 9th decimal: a gain further than
# this from every bin edge lands in the same bin rounded or not.
_EDGE_MARGIN = 1e-6


def _check_finite(baseline: np.ndarray, followup: np.ndarray, scalar, *args) -> None:
    """Raise the scalar function's error for the first pair holding an infinite value."""
    bad = np.isinf(baseline) | np.isinf(followup)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        scalar(float(baseline[i]), float(followup[i]), *args)
        raise AssertionError("unreachable: the scalar function refuses infinite values")


def percent_changes(baseline: np.ndarray, followup: np.ndarray) -> np.ndarray:
    """percent_change over aligned float arrays (NaN = missing); NaN wherever it gives None."""
    base = np.asarray(baseline, dtype=float)
    follow = np.asarray(followup, dtype=float)
    _check_finite(base, follow, percent_change)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pct = (follow - base) / np.abs(base) * 100.0
    pct[base == 0] = np.nan
    return pct


def change_category_codes(
    baseline: np.ndarray,
    followup: np.ndarray,
    higher_is_better: bool,
    threshold: float = 20.0,
) -> np.ndarray:
    """change_category over aligned float arrays (NaN = missing): for each pair the index of its
    category in CATEGORY_ORDER, or -1 where change_category gives None."""
    limit = as_number(threshold, "threshold")
    if limit <= 0:
        raise ValueError(f"threshold must be > 0 %, got {limit:g}")
    base = np.asarray(baseline, dtype=float)
    follow = np.asarray(followup, dtype=float)
    _check_finite(base, follow, change_category, higher_is_better, limit)
    codes = np.full(base.shape, -1, dtype=np.int8)
    present = ~(np.isnan(base) | np.isnan(follow))
    code = {c: np.int8(i) for i, c in enumerate(CATEGORY_ORDER)}
    codes[present & (base == 0) & (follow == 0)] = code[ChangeCategory.UNCHANGED]
    live = present & (base != 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pct = (follow - base) / np.abs(base) * 100.0
    gain = pct if higher_is_better else -pct
    with np.errstate(invalid="ignore"):
        # An exact 0 stays 0 when rounded (the common "no change"): no need to ask the scalar.
        near = live & ((np.abs(gain - limit) < _EDGE_MARGIN)
                       | ((np.abs(gain) < _EDGE_MARGIN) & (gain != 0))
                       | (np.abs(gain + limit) < _EDGE_MARGIN))
        far = live & ~near
        codes[far & (gain == 0)] = code[ChangeCategory.UNCHANGED]
        codes[far & (gain > limit)] = code[ChangeCategory.IMPROVED_MAJOR]
        codes[far & (gain > 0) & (gain <= limit)] = code[ChangeCategory.IMPROVED_MINOR]
        codes[far & (gain < 0) & (gain >= -limit)] = code[ChangeCategory.DETERIORATED_MINOR]
        codes[far & (gain < -limit)] = code[ChangeCategory.DETERIORATED_MAJOR]
    for i in np.flatnonzero(near):
        found = change_category(float(base[i]), float(follow[i]), higher_is_better, limit)
        codes[i] = -1 if found is None else code[found]
    return codes


def change_categories(
    baseline: pd.Series,
    followup: pd.Series,
    higher_is_better: bool,
    threshold: float = 20.0,
) -> pd.Series:
    """Vectorised change_category over aligned Series; missing/undefined rows are <NA>."""
    if not baseline.index.equals(followup.index):
        raise ValueError("baseline and followup must share the same index")
    codes = [
        change_category(b, f, higher_is_better, threshold)
        for b, f in zip(baseline.astype(object), followup.astype(object), strict=True)
    ]
    values = [None if c is None else c.value for c in codes]
    return pd.Series(values, index=baseline.index, dtype="string", name="change_category")
