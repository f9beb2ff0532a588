"""codebook: one row per column of every analysis table (label, type, unit, codes, values)."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from imt_etl.tables.common import STRING, AnalysisTable, typed_frame
from imt_etl.tables.parquet import frame_to_table

SCHEMA = {
    "table": STRING, "column": STRING, "position": "Int64", "label": STRING, "type": STRING,
    "unit": STRING, "code_system": STRING, "code": STRING, "allowed_values": STRING,
    "source_field": STRING, "description": STRING,
}
DESCRIPTIONS = {
    "table": {"label": "Table (parquet file under out/parquet/, without .parquet)"},
    "column": {"label": "Column name"},
    "position": {"label": "Column position in the table (1-based)"},
    "label": {"label": "What the column holds"},
    "type": {"label": "Arrow/parquet type (date32 = DATE, large_string/string = text)"},
    "unit": {"label": "UCUM unit of the values"},
    "code_system": {"label": "Code system of the measure (loinc | snomed | local)"},
    "code": {"label": "Code of the measure in code_system"},
    "allowed_values": {"label": "Allowed values as 'code, label | ...'"},
    "source_field": {"label": "Source REDCap field(s)"},
    "description": {"label": "Other notes (kind of column, direction of better, instrument)"},
}
_MAIN = ("label", "unit", "code_system", "code", "allowed", "source_field")


def arrow_type(table: AnalysisTable) -> dict[str, str]:
    """The parquet column types a table is written with."""
    schema: pa.Schema = frame_to_table(table.frame).schema
    return {f.name: str(f.type) for f in schema}


def codebook(tables: Iterable[AnalysisTable]) -> AnalysisTable:
    """Describe every column of `tables` (and of the codebook itself, last)."""
    rows = []
    tables = list(tables)
    for table in tables:
        rows.extend(_rows(table))
    book = AnalysisTable("codebook", typed_frame(rows, SCHEMA), dict(DESCRIPTIONS),
                         "One row per column of every analysis table")
    book.frame = typed_frame([*rows, *_rows(book)], SCHEMA)
    return book


def _rows(table: AnalysisTable) -> list[dict]:
    types = arrow_type(table)
    out = []
    for position, column in enumerate(table.frame.columns, start=1):
        info = table.columns.get(column, {})
        notes = "; ".join(f"{k}: {v}" for k, v in info.items() if k not in _MAIN and v)
        out.append({
            "table": table.name, "column": column, "position": position,
            "label": info.get("label") or column, "type": types[column],
            "unit": info.get("unit") or None, "code_system": info.get("code_system") or None,
            "code": info.get("code") or None, "allowed_values": info.get("allowed") or None,
            "source_field": info.get("source_field") or None, "description": notes or None,
        })
    return out
