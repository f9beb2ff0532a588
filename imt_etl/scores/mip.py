"""Predicted MIP/MEP, lower limit of normal and % predicted MIP (Evans & Whitelaw 2009).

Source: Evans JA, Whitelaw WA. The assessment of maximal respiratory mouth pressures in adults.
Respir Care 2009;54(10):1348-1359 (pooled adult reference equations, cmH2O, age in years):
male MIP = 120 - 0.41 x age (LLN 62 - 0.15 x age);
female MIP = 108 - 0.61 x age (LLN 62 - 0.50 x age);
male MEP = 174 - 0.83 x age; female MEP = 131 - 0.86 x age. Project reference:
/work/shared/reference/terminology.md "Scoring rules" rule 4 (Black & Hyatt 1969 is deliberately not
offered: its coefficients were not verified). MIP is a negative mouth pressure on many devices, so
every comparison uses its magnitude.
"""

from __future__ import annotations

from imt_etl.scores._common import as_number, as_optional_number

# (intercept, slope per year of age), Evans & Whitelaw 2009.
_MIP = {"male": (120.0, -0.41), "female": (108.0, -0.61)}
_MIP_LLN = {"male": (62.0, -0.15), "female": (62.0, -0.50)}
_MEP = {"male": (174.0, -0.83), "female": (131.0, -0.86)}

_SEX_ALIASES = {"male": "male", "m": "male", "female": "female", "f": "female"}
# The equations were derived in adults; older ages than this are implausible input.
_MIN_AGE, _MAX_AGE = 18.0, 120.0


def normalise_sex(sex: str) -> str:
    """'male'/'m' or 'female'/'f' (any case) -> 'male' or 'female'; anything else is an error."""
    key = sex.strip().lower() if isinstance(sex, str) else None
    if key not in _SEX_ALIASES:
        raise ValueError(f"sex must be 'male' or 'female' (or 'm'/'f'), got {sex!r}")
    return _SEX_ALIASES[key]


def _equation(table: dict[str, tuple[float, float]], sex: str, age: float) -> float:
    years = as_number(age, "age")
    if not _MIN_AGE <= years <= _MAX_AGE:
        raise ValueError(
            f"age must be between {_MIN_AGE:g} and {_MAX_AGE:g} years for the adult "
            f"Evans & Whitelaw equations, got {years:g}"
        )
    intercept, slope = table[normalise_sex(sex)]
    return intercept + slope * years


def predicted_mip(sex: str, age: float) -> float:
    """Predicted MIP magnitude in cmH2O (Evans & Whitelaw 2009)."""
    return _equation(_MIP, sex, age)


def lln_mip(sex: str, age: float) -> float:
    """Lower limit of normal for MIP magnitude in cmH2O (Evans & Whitelaw 2009)."""
    return _equation(_MIP_LLN, sex, age)


def predicted_mep(sex: str, age: float) -> float:
    """Predicted MEP in cmH2O (Evans & Whitelaw 2009)."""
    return _equation(_MEP, sex, age)


def mip_magnitude(mip: float | None) -> float | None:
    """|MIP| in cmH2O: devices report the inspiratory pressure as negative or positive."""
    value = as_optional_number(mip, "mip")
    return None if value is None else abs(value)


def percent_predicted_mip(mip: float | None, sex: str, age: float) -> float | None:
    """|MIP| as % of the Evans & Whitelaw predicted value; None if mip is missing."""
    magnitude = mip_magnitude(mip)
    if magnitude is None:
        return None
    return magnitude / predicted_mip(sex, age) * 100.0


def percent_predicted_mep(mep: float | None, sex: str, age: float) -> float | None:
    """MEP as % of the Evans & Whitelaw predicted value; None if mep is missing."""
    value = as_optional_number(mep, "mep")
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"mep must be a positive pressure in cmH2O, got {value:g}")
    return value / predicted_mep(sex, age) * 100.0


def mip_below_lln(mip: float | None, sex: str, age: float) -> bool | None:
    """True if |MIP| is below the Evans & Whitelaw lower limit of normal; None if mip is missing."""
    magnitude = mip_magnitude(mip)
    return None if magnitude is None else magnitude < lln_mip(sex, age)
