"""Best-of-trials selection and two-device agreement (difference, mean, Bland-Altman bias and LoA).

Sources: best of at least three acceptable manoeuvres (the largest value) for maximal respiratory
pressures - ATS/ERS Statement on respiratory muscle testing, Am J Respir Crit Care Med
2002;166:518-624, and Laveneziana P, et al. ERS statement on respiratory muscle testing at rest and
during exercise, Eur Respir J 2019;53:1801214. Agreement: Bland JM, Altman DG. Statistical methods
for assessing agreement between two methods of clinical measurement. Lancet 1986;1:307-310
(bias = mean difference; 95 % limits of agreement = bias +/- 1.96 x SD of the differences, SD with
n - 1 denominator).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imt_etl.scores._common import as_optional_number

# Bland & Altman 1986: 95 % limits of agreement use 1.96 standard deviations.
LOA_Z = 1.96


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman summary of paired differences (a - b) over the complete pairs."""

    n: int
    bias: float
    sd: float
    lower_loa: float
    upper_loa: float


def best_of(trials: Iterable[float | None], *, magnitude: bool = True) -> float | None:
    """Best trial: largest |value| (magnitude=True, for MIP recorded negative) or largest value.

    Missing trials are skipped; None when no trial was recorded. With magnitude=True the result
    is the magnitude (>= 0), so MIP from devices with different sign conventions compares directly.
    """
    values = [as_optional_number(t, f"trial {i}") for i, t in enumerate(trials, start=1)]
    present = [abs(v) if magnitude else v for v in values if v is not None]
    return max(present) if present else None


def device_difference(a: float | None, b: float | None) -> float | None:
    """a - b for one pair of readings; None if either is missing."""
    x, y = as_optional_number(a, "a"), as_optional_number(b, "b")
    return None if x is None or y is None else x - y


def device_mean(a: float | None, b: float | None) -> float | None:
    """(a + b) / 2 for one pair of readings (the Bland-Altman x axis); None if either is missing."""
    x, y = as_optional_number(a, "a"), as_optional_number(b, "b")
    return None if x is None or y is None else (x + y) / 2.0


def bland_altman(a: Sequence[float | None], b: Sequence[float | None]) -> BlandAltman:
    """Bias and 95 % limits of agreement of a - b; pairs with a missing side are dropped."""
    if len(a) != len(b):
        raise ValueError(f"a and b must have the same length, got {len(a)} and {len(b)}")
    diffs = [d for d in map(device_difference, a, b) if d is not None]
    if len(diffs) < 2:
        raise ValueError(f"Bland-Altman needs at least 2 complete pairs, got {len(diffs)}")
    bias = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - bias) ** 2 for d in diffs) / (len(diffs) - 1))
    # Bland & Altman 1986: limits of agreement = bias +/- 1.96 SD.
    return BlandAltman(len(diffs), bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd)
