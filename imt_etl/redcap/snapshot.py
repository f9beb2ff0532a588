"""The raw snapshot: every flat REDCap row of the last successful sync, kept for incremental syncs.

An incremental sync exports only changed records; merging them into this snapshot (and dropping
deleted records) gives the same rows a full export would, from which every table is rebuilt.
Stored as parquet with all columns as strings, exactly as REDCap sent them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imt_etl.io import write_parquet_atomic

SNAPSHOT_FILE = "raw-records.parquet"


@dataclass
class RawSnapshot:
    """Flat rows (dicts of strings) grouped by record id, in first-seen record order."""

    record_id_field: str
    rows_by_record: dict[str, list[dict[str, str]]]

    @classmethod
    def from_rows(cls, record_id_field: str, rows: Iterable[dict[str, str]]) -> RawSnapshot:
        grouped: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            grouped.setdefault(str(row[record_id_field]), []).append(row)
        return cls(record_id_field, grouped)

    @property
    def record_ids(self) -> list[str]:
        return list(self.rows_by_record)

    def rows(self) -> list[dict[str, str]]:
        return [row for rows in self.rows_by_record.values() for row in rows]

    def merged(
        self, changed_rows: Iterable[dict[str, str]], changed_ids: Iterable[str],
        deleted_ids: Iterable[str],
    ) -> RawSnapshot:
        """A new snapshot: changed records replaced (or added), deleted records removed.

        A changed id with no rows in `changed_rows` was deleted between listing and export:
        it is removed too, as a full export would no longer return it.
        """
        incoming = RawSnapshot.from_rows(self.record_id_field, changed_rows).rows_by_record
        gone = set(deleted_ids) | (set(changed_ids) - set(incoming))
        merged = {rid: rows for rid, rows in self.rows_by_record.items() if rid not in gone}
        merged.update(incoming)
        return RawSnapshot(self.record_id_field, merged)

    def save(self, state_dir: Path) -> Path:
        rows = self.rows()
        columns = list(dict.fromkeys(key for row in rows for key in row)) or [self.record_id_field]
        table = pa.table(
            {c: pa.array([row.get(c, "") for row in rows], type=pa.string()) for c in columns}
        )
        table = table.replace_schema_metadata({"record_id_field": self.record_id_field})
        return write_parquet_atomic(Path(state_dir) / SNAPSHOT_FILE, table)

    @classmethod
    def load(cls, state_dir: Path, record_id_field: str) -> RawSnapshot | None:
        """The saved snapshot, or None when there is none yet (the first sync must be full)."""
        path = Path(state_dir) / SNAPSHOT_FILE
        if not path.exists():
            return None
        return cls.from_rows(record_id_field, pq.read_table(path).to_pylist())
