"""Per-participant date shifting of the validated tables, before any shareable output is built.

Every date and date-time field of the data dictionary is moved by the participant's own constant
offset (`imt_etl.privacy.date_shift_days`: keyed by the pseudonym key, in ±1…max_days, never 0),
in both the typed tables and REDCap's strings (which the QuestionnaireResponses are built from).
All intervals within a participant stay exact to the day (ages, days since baseline, training
adherence); calendar dates and between-participant alignment do not survive, by design.

Validation and the quality report run before shifting: they check (and show the data manager)
the dates as entered in REDCap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd

from imt_etl.errors import ConfigError
from imt_etl.privacy import date_shift_days, shift_date
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.tidy import field_kind
from imt_etl.validate.run import ValidationResult


def date_fields(dictionary: DataDictionary) -> set[str]:
    """Fields typed date or date-time by their validation (date_ymd, datetime_seconds_dmy, ...)."""
    return {f.name for f in dictionary.fields if field_kind(f) in ("date", "datetime")}


def max_shift_days(study_settings: Mapping[str, Any], override: int | None = None) -> int:
    """The configured maximum shift in days; 0 when shifting is off.

    `override` (OutputConfig.date_shift_max_days) wins when given; otherwise the study's
    `date_shifting: {max_days: N}` in mappings/<study>/study.yaml (absent: off).
    """
    if override is not None:
        value, where = override, "date_shift_max_days"
    else:
        config = study_settings.get("date_shifting")
        if config is None:
            return 0
        if not isinstance(config, Mapping) or set(config) - {"max_days", "enabled"}:
            raise ConfigError("study.yaml date_shifting: expected {max_days: N} (and optionally "
                              f"enabled: false), got {config!r}")
        if config.get("enabled", True) is False:
            return 0
        value, where = config.get("max_days"), "study.yaml date_shifting.max_days"
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: expected a whole number of days (0: off), got {value!r}")
    return value


def _shift_column(values: pd.Series, days: pd.Series, *, text: bool) -> pd.Series:
    shift = _shift_text if text else shift_date
    shifted = [shift(v, d) for v, d in zip(values, days, strict=True)]
    return pd.Series(shifted, index=values.index, name=values.name).astype(values.dtype)


def _shift_text(value: Any, days: int) -> Any:
    # Raw strings of quarantined rows may not parse; they never reach a shareable output.
    try:
        return shift_date(value, days)
    except ValueError:
        return value


def shift_frame(frame: pd.DataFrame, fields: set[str], offsets: Mapping[str, int],
                *, text: bool = False) -> pd.DataFrame:
    """A copy of `frame` with its date columns moved by each row's participant offset."""
    columns = [c for c in frame.columns if c in fields]
    if not columns or frame.empty:
        return frame
    days = frame["record_id"].astype(str).map(offsets)
    out = frame.copy()
    for column in columns:
        out[column] = _shift_column(frame[column], days, text=text)
    out.attrs = frame.attrs
    return out


def shift_result_dates(result: ValidationResult, dictionary: DataDictionary, key: bytes,
                       study: str, max_days: int) -> tuple[ValidationResult, int]:
    """`result` with every valid and raw date moved per participant; (result, values shifted)."""
    fields = date_fields(dictionary)
    records = {str(r) for frame in [*result.valid.values(), *result.raw.values()]
               for r in frame["record_id"].unique()}
    offsets = {r: date_shift_days(r, key, max_days=max_days, study=study) for r in records}
    valid = {form: shift_frame(frame, fields, offsets) for form, frame in result.valid.items()}
    raw = {form: shift_frame(frame, fields, offsets, text=True)
           for form, frame in result.raw.items()}
    count = sum(int(frame[c].notna().sum()) for frame in result.valid.values()
                for c in frame.columns if c in fields)
    return replace(result, valid=valid, raw=raw), count
