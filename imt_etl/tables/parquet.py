"""DataFrames to parquet with column descriptions in the schema, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from imt_etl.io import write_parquet_atomic


def frame_to_table(frame: pd.DataFrame, descriptions: dict[str, dict[str, str]] | None = None,
                   table_meta: dict[str, str] | None = None) -> pa.Table:
    """An arrow table whose fields carry a `description` (and other notes) from `descriptions`."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    descriptions = descriptions or {}
    fields = []
    for arrow_field in table.schema:
        notes = {k: str(v) for k, v in descriptions.get(arrow_field.name, {}).items() if v}
        if "label" in notes:  # `description` is the key readers (DuckDB, R arrow) show
            notes.setdefault("description", notes["label"])
        fields.append(arrow_field.with_metadata(notes) if notes else arrow_field)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    if table_meta:
        extra = {f"imt_etl.{k}": json.dumps(v) if not isinstance(v, str) else v
                 for k, v in table_meta.items()}
        schema = schema.with_metadata({**(schema.metadata or {}), **extra})
    return table.cast(schema)


def write_frame(path: Path, frame: pd.DataFrame,
                descriptions: dict[str, dict[str, str]] | None = None,
                table_meta: dict[str, str] | None = None) -> Path:
    return write_parquet_atomic(path, frame_to_table(frame, descriptions, table_meta))
