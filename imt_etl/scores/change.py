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
