"""What every analysis table shares: the table object, key columns, pseudonyms and typed frames."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

# A pseudonymisation function: REDCap record id -> participant pseudonym (identity by default).
Pseudonymise = Callable[[str], str]

STRING = pd.StringDtype()
DATE = pd.ArrowDtype(pa.date32())

# Key columns of every analysis table (REDCapTidieR-style composite key, renamed for analysts).
KEY_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "participant": {"label": "Participant pseudonym", "source_field": "record_id", "kind": "key"},
    "arm": {"label": "Study arm number", "source_field": "redcap_arm", "kind": "key"},
    "event": {"label": "REDCap event (unique name)", "source_field": "redcap_event_name",
              "kind": "key"},
    "visit": {"label": "Visit label", "source_field": "redcap_event_name", "kind": "key"},
    "instance": {"label": "Repeat instance (null on non-repeating rows)",
                 "source_field": "redcap_repeat_instance", "kind": "key"},
}


def identity(record: str) -> str:
    return record


@dataclass
class AnalysisTable:
    """One analysis table: its frame, a description per column and table-level notes."""

    name: str
    frame: pd.DataFrame
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""

    def meta(self) -> dict[str, str]:
        return {"table": self.name, "description": self.description}


def typed_frame(rows: Iterable[Mapping[str, Any]], schema: Mapping[str, Any]) -> pd.DataFrame:
    """Rows as a frame with exactly `schema`'s columns and dtypes (the same schema when empty)."""
    names = list(schema)
    return tuple_frame([tuple(map(r.get, names)) for r in rows], schema)


def tuple_frame(rows: list[tuple], schema: Mapping[str, Any]) -> pd.DataFrame:
    """Like typed_frame, for rows that are tuples in `schema`'s column order."""
    # One zip transposes the rows in C: much faster than a list comprehension per column.
    columns = zip(*rows, strict=True) if rows else [()] * len(schema)
    return pd.DataFrame({
        name: pd.Series(list(values), dtype=dtype)
        for (name, dtype), values in zip(schema.items(), columns, strict=True)
    })


def pseudonyms(records: pd.Series, pseudonymise: Pseudonymise) -> pd.Series:
    """Apply the pseudonymisation once per distinct record id (it may be a slow keyed hash)."""
    table = {r: pseudonymise(str(r)) for r in records.dropna().unique()}
    return records.map(table).astype(STRING)


def natural_order(record: str) -> tuple:
    """Record ids sort numerically when they are numbers ("2" before "10"), as REDCap shows them."""
    return (0, int(record), record) if record.isdigit() else (1, 0, record)


def plain_values(frame: pd.DataFrame) -> list[list[Any]]:
    """A frame's rows as lists of plain values (see `plain`), in column order.

    One object array instead of to_dict("records"), which is several times slower; pd.isna finds
    the missing values (None, NaN, NA, NaT) in one pass instead of a call per value."""
    values = frame.to_numpy(dtype=object)
    if not values.flags.writeable:  # a view of a single object block (copy-on-write)
        values = values.copy()
    values[pd.isna(values)] = None
    return values.tolist()


def plain(value: Any) -> Any:
    """pandas NA/NaN/NaT -> None; everything else unchanged."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value
