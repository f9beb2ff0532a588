"""Shared input checks for the scoring functions: missing-value detection and number coercion."""

from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

# Percentages are rounded to this many decimals before they are compared with a bin edge, so
# that float noise (0.3 / 1.5 * 100 == 20.000000000000004) cannot push a value across a boundary
# that the hand calculation puts it on.
EDGE_DECIMALS = 9


def is_missing(value: Any) -> bool:
    """True for None, NaN (float or numpy), pandas NA and NaT."""
    if type(value) is float:  # the common cases, checked without the ABC machinery below
        return value != value
    if type(value) is int:
        return False
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value)


def as_number(value: Any, name: str) -> float:
    """Return a finite float or raise ValueError naming the input; bools and strings are refused."""
    if type(value) is float and value - value == 0:  # finite plain float (the common case)
        return value
    if type(value) is int:  # float() of an int is finite (or raises OverflowError, as below)
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    result = float(value)
    if math.isinf(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def as_optional_number(value: Any, name: str) -> float | None:
    """Like as_number but None/NaN/NA map to None."""
    return None if is_missing(value) else as_number(value, name)


def check_range(value: float, low: float, high: float, name: str) -> float:
    """Raise ValueError naming the input when value is outside [low, high]."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def edge_round(percent: float) -> float:
    """Round a percentage before comparing it with a bin edge (see EDGE_DECIMALS)."""
    return round(percent, EDGE_DECIMALS)
