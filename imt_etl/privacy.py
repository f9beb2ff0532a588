"""Pseudonyms, per-participant date shifting and identifier removal, all keyed by one secret.

- `pseudonym(record_id, key, study)` is "P-" + the first 10 bytes of HMAC-SHA256(key, study,
  record id) in base32: 16 readable characters, the same in every run with the same key, and
  without the key neither reversible nor guessable from the record id (record ids are short and
  sequential, so an unkeyed hash could be reversed by trying them all). 80 bits make collisions
  negligible: by the birthday bound the chance of any two of n participants sharing a pseudonym
  is about n²/2⁸¹, i.e. 4·10⁻¹⁹ for 1 000 participants and 4·10⁻¹³ for a million.
- `date_shift_days(record_id, key)` is a constant, non-zero offset per participant (from the same
  key, under a different label, so it cannot be derived from the pseudonym): shifting every date
  of a participant by it keeps all of that participant's intervals intact.
- `identifier_fields` / `drop_identifiers` remove the dictionary's identifier fields (and the
  record id) from a table unless explicitly allowed.

The key comes from the environment variable IMT_ETL_PSEUDONYM_KEY; keep it as secret as the data:
anyone holding it can recompute every pseudonym from the record ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from imt_etl.errors import ConfigError
from imt_etl.redcap.dictionary import DataDictionary

log = logging.getLogger(__name__)

KEY_ENV = "IMT_ETL_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
# For the bundled demo only (synthetic data): a published key protects nothing.
DEMO_KEY = b"imt-etl demo pseudonym key - published, protects nothing"
PSEUDONYM_PREFIX = "P-"
PSEUDONYM_BYTES = 10  # 80 bits -> 16 base32 characters, no padding
DEFAULT_MAX_SHIFT_DAYS = 182

_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")  # REDCap's raw exports


def key_from_env(env: Mapping[str, str] | None = None, *, allow_demo: bool = False) -> bytes:
    """The pseudonym key from IMT_ETL_PSEUDONYM_KEY (at least 16 bytes of text).

    `allow_demo` (the demo command only) falls back to the published DEMO_KEY with a warning.
    """
    value = (env if env is not None else os.environ).get(KEY_ENV, "").strip()
    if not value:
        if allow_demo:
            log.warning("%s is not set: using the published demo key (demo data only)", KEY_ENV)
            return DEMO_KEY
        raise ConfigError(
            f"set the pseudonym key in the environment variable {KEY_ENV} (a random secret of "
            f"at least {MIN_KEY_BYTES} characters, e.g. from `openssl rand -hex 32`); keep it: "
            "another key gives every participant a different pseudonym"
        )
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the pseudonym key in {KEY_ENV} is {len(key)} bytes long; use at least "
            f"{MIN_KEY_BYTES} random characters"
        )
    return key


def _digest(key: bytes, *parts: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"a pseudonym key must be at least {MIN_KEY_BYTES} bytes")
    # Unit separators keep ("ab", "c") and ("a", "bc") apart.
    message = "\x1f".join(parts).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()


def pseudonym(record_id: str, key: bytes, study: str) -> str:
    """The participant's pseudonym, e.g. "P-MFRGGZDFMZTWQ2LK" (stable for the same key/study)."""
    raw = _digest(key, "pseudonym", study, str(record_id))[:PSEUDONYM_BYTES]
    return PSEUDONYM_PREFIX + base64.b32encode(raw).decode("ascii")


def date_shift_days(record_id: str, key: bytes, max_days: int = DEFAULT_MAX_SHIFT_DAYS,
                    study: str = "") -> int:
    """A per-participant offset in [-max_days, -1] ∪ [1, max_days] (never 0: no true dates)."""
    if max_days < 1:
        raise ConfigError(f"the maximum date shift must be at least 1 day (got {max_days})")
    number = int.from_bytes(_digest(key, "date-shift", study, str(record_id))[:8], "big")
    # 2**64 values folded onto 2 * max_days: the modulo bias is below 1e-16.
    step = number % (2 * max_days)
    return step - max_days if step < max_days else step - max_days + 1


def shift_date(value: Any, days: int) -> Any:
    """`value` moved by `days`, keeping its type and text format; blanks come back unchanged.

    Accepts date, datetime, pandas Timestamp, and REDCap's text forms "YYYY-MM-DD",
    "YYYY-MM-DD HH:MM" and "YYYY-MM-DD HH:MM:SS". Anything else is a ValueError naming it.
    """
    if value is None or (not isinstance(value, str | date) and pd.isna(value)):
        return value  # None, NaN, NaT and pd.NA alike
    if isinstance(value, date):  # datetime and Timestamp are dates too
        return value + timedelta(days=days)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return value
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return (parsed + timedelta(days=days)).strftime(fmt)
    raise ValueError(f"cannot date-shift {value!r}: not a date, datetime or REDCap date text")


def shift_dates(values: pd.Series, days: int) -> pd.Series:
    """Every value of a column moved by `days` (datetime columns stay datetime)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values + pd.Timedelta(days=days)
    return values.map(lambda v: shift_date(v, days)).astype(values.dtype)


def identifier_fields(dictionary: DataDictionary) -> set[str]:
    """Fields flagged identifier=y in the data dictionary, plus the record id field."""
    return {f.name for f in dictionary.fields if f.identifier} | {dictionary.record_id_field}


def identifier_columns(frame: pd.DataFrame, dictionary: DataDictionary,
                       allow: Iterable[str] = ()) -> list[str]:
    """The columns of `frame` that carry an identifier field not in `allow`.

    A field shows up as `<field>`, `<field>_label`, `<field>_missing` or as checkbox options
    `<field>___<code>`; tidy's column notes (`frame.attrs["columns"][col]["field"]`) name the
    field of any other derived column.
    """
    banned = identifier_fields(dictionary) - set(allow)
    names: set[str] = set()
    for name in banned:
        names |= {name, f"{name}_label", f"{name}_missing"}
        if dictionary.has_field(name):
            names |= set(dictionary.field(name).export_columns)
    notes = frame.attrs.get("columns") or {}
    return [c for c in frame.columns
            if str(c) in names or (notes.get(c) or {}).get("field") in banned]


def drop_identifiers(frame: pd.DataFrame, dictionary: DataDictionary,
                     allow: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """A copy of `frame` without identifier columns (fields in `allow` are kept)."""
    drop = identifier_columns(frame, dictionary, allow)
    if drop:
        log.debug("dropping identifier columns %s", ", ".join(map(str, drop)))
    result = frame.drop(columns=drop)
    notes = frame.attrs.get("columns")
    if isinstance(notes, dict):  # keep the column notes of what remains, not of what went
        result.attrs["columns"] = {k: v for k, v in notes.items() if k not in drop}
    return result
