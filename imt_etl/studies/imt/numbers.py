"""Numbers formatted the way REDCap stores them (half-up rounding, no trailing zeros)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def num(value: float, places: int = 1) -> str:
    """A number as REDCap shows it: rounded half up, without trailing zeros ("4.0" -> "4")."""
    text = str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
