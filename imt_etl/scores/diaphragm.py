"""Diaphragm ultrasound: thickening fraction from end-inspiratory and end-expiratory thickness.

Source: Ferrari G, De Filippi G, Elia F, et al. Diaphragm ultrasound as a new index of
discontinuation from mechanical ventilation. Crit Ultrasound J 2014;6:8
(TF = (Tinsp - Texp) / Texp x 100); project reference:
/work/shared/reference/terminology.md "Scoring rules" rule 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imt_etl.scores._common import as_optional_number


def thickening_fraction(
    thickness_insp_mm: float | None, thickness_exp_mm: float | None
) -> float | None:
    """Diaphragm thickening fraction in % (both thicknesses in mm); None if either is missing."""
    insp = as_optional_number(thickness_insp_mm, "thickness_insp_mm")
    exp = as_optional_number(thickness_exp_mm, "thickness_exp_mm")
    if insp is None or exp is None:
        return None
    if exp <= 0:
        raise ValueError(f"thickness_exp_mm must be > 0 mm, got {exp:g}")
    if insp <= 0:
        raise ValueError(f"thickness_insp_mm must be > 0 mm, got {insp:g}")
    # Ferrari et al. 2014: TF (%) = (end-inspiratory - end-expiratory) / end-expiratory x 100.
    return (insp - exp) / exp * 100.0


def thickening_fraction_series(insp_mm: pd.Series, exp_mm: pd.Series) -> pd.Series:
    """Vectorised thickening_fraction: NaN where either side is missing; rejects thickness <= 0."""
    insp = pd.to_numeric(insp_mm, errors="raise").astype("float64")
    exp = pd.to_numeric(exp_mm, errors="raise").astype("float64")
    for name, values in (("thickness_exp_mm", exp), ("thickness_insp_mm", insp)):
        bad = values[values <= 0]
        if not bad.empty:
            raise ValueError(f"{name} must be > 0 mm; row {bad.index[0]!r} has {bad.iloc[0]:g}")
    # Same formula as thickening_fraction (Ferrari et al. 2014).
    result = (insp - exp) / exp * 100.0
    return result.where(np.isfinite(result)).rename("thickening_fraction_pct")
