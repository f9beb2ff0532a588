"""Findings as rows, and the split of each instrument table into valid and quarantined rows."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd

from imt_etl.errors import ImtEtlError

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)

FINDING_COLUMNS: tuple[str, ...] = (
    "rule_id", "severity", "instrument", "record_id", "event", "repeat_instrument",
    "repeat_instance", "field", "value", "message",
)
# The table columns that identify one row (the arm follows from the event).
ROW_KEY: tuple[str, ...] = (
    "record_id", "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance",
)
FINDING_KEY: tuple[str, ...] = ("record_id", "event", "repeat_instrument", "repeat_instance")


class InvariantError(ImtEtlError):
    """extracted = valid + quarantined does not hold for an instrument (a bug, never data)."""


@dataclass(frozen=True)
class Finding:
    """One failed check on one value (or one row when `field` is empty)."""

    rule_id: str
    severity: str  # "error" quarantines the row; "warning" lets it flow on
    instrument: str
    record_id: str
    event: str | None
    repeat_instrument: str | None
    repeat_instance: int | None
    field: str
    value: str
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.rule_id}: severity {self.severity!r} is not valid")


def findings_frame(findings: Iterable[Finding], event_order: dict[str, int] | None = None
                   ) -> pd.DataFrame:
    """Findings as a DataFrame with stable dtypes, sorted by record, event, instrument, instance."""
    frame = pd.DataFrame([asdict(f) for f in findings], columns=list(FINDING_COLUMNS))
    for col in FINDING_COLUMNS:
        frame[col] = frame[col].astype("Int64" if col == "repeat_instance" else "string")
    return sort_findings(frame, event_order or {})


def _natural(record: pd.Series) -> pd.Series:
    """Sort key putting numeric record ids in numeric order ("2" before "10")."""
    as_number = pd.to_numeric(record, errors="coerce")
    return as_number.fillna(float("inf"))


def sort_findings(frame: pd.DataFrame, event_order: dict[str, int]) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.DataFrame({
        "n": _natural(frame["record_id"]), "r": frame["record_id"].fillna(""),
        "e": frame["event"].map(event_order).fillna(-1), "i": frame["instrument"],
        "ri": frame["repeat_instance"].fillna(0), "f": frame["field"], "rule": frame["rule_id"],
    })
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def _text(part: pd.Series) -> list[str]:
    if isinstance(part.dtype, pd.StringDtype):  # already strings: no str() per value
        return part.to_numpy(dtype=object, na_value="").tolist()
    return ["" if v is None else str(v) for v in part.to_numpy(dtype=object, na_value=None)]


def key_strings(parts: list[pd.Series]) -> pd.Series:
    """One string per row joining the key parts; nulls become "" so classic projects match.

    Plain Python over object arrays: several times faster than pandas string concatenation
    at these sizes (thousands of rows).
    """
    joined = list(map("\x1f".join, zip(*(_text(p) for p in parts), strict=True)))
    return pd.Series(joined, index=parts[0].index, dtype=object)


def table_row_keys(table: pd.DataFrame) -> pd.Series:
    return key_strings([table[c] for c in ROW_KEY])


def finding_row_keys(findings: pd.DataFrame) -> pd.Series:
    return key_strings([findings[c] for c in FINDING_KEY])


def split_table(form: str, table: pd.DataFrame, findings: pd.DataFrame
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid, quarantined) rows of one instrument: a row with >= 1 error finding is quarantined."""
    errors = findings[(findings["instrument"] == form) & (findings["severity"] == ERROR)]
    if errors.empty:
        valid, quarantined = table, table.iloc[0:0]
        check_invariant(form, table, valid, quarantined)
        return valid, quarantined
    keys = table_row_keys(table)
    error_keys = set(finding_row_keys(errors))
    orphans = error_keys - set(keys)
    if orphans:
        # An error that matches no row would quarantine nothing: a silent drop of a finding.
        raise InvariantError(f"instrument {form!r}: error finding(s) for rows not in the table: "
                             f"{sorted(k.replace(chr(31), '/') for k in orphans)[:3]}")
    bad = keys.isin(error_keys)
    valid, quarantined = table[~bad.to_numpy()], table[bad.to_numpy()]
    check_invariant(form, table, valid, quarantined)
    return valid, quarantined


def check_invariant(form: str, extracted: pd.DataFrame, valid: pd.DataFrame,
                    quarantined: pd.DataFrame) -> None:
    """Raise InvariantError unless every extracted row is in exactly one of valid/quarantined."""
    if len(extracted) != len(valid) + len(quarantined):
        raise InvariantError(
            f"instrument {form!r}: {len(extracted)} rows extracted but {len(valid)} valid + "
            f"{len(quarantined)} quarantined"
        )
    if not valid.index.intersection(quarantined.index).empty:
        raise InvariantError(f"instrument {form!r}: a row is both valid and quarantined")
