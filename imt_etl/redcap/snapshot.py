"""The raw snapshot: every flat REDCap row of the last successful sync, kept for incremental syncs.

An incremental sync exports only changed records; merging them into this snapshot (and dropping
deleted records) gives the same rows a full export would, from which every table is rebuilt.
Stored as parquet with all columns as strings, exactly as REDCap sent them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imt_etl.io import write_parquet_atomic

SNAPSHOT_FILE = "raw-records.parquet"


# Kept even when empty: tidy reads their presence (a DAG column means the project has DAGs).
_ALWAYS_KEPT = frozenset({"redcap_event_name", "redcap_repeat_instrument",
                          "redcap_repeat_instance", "redcap_data_access_group"})


def compact(row: dict[str, str], keep: frozenset[str] = _ALWAYS_KEPT) -> dict[str, str]:
    """A flat row without its empty values (a missing key reads as "", as tidy reads it):
    ~90 % of a flat export's cells are empty, so this is most of the snapshot's memory."""
    return {k: v for k, v in row.items() if v != "" or k in keep}


@dataclass
class RawSnapshot:
    """Flat rows (dicts of strings, empty values left out) grouped by record id, in first-seen
    record order; `columns` are the export's columns in order."""

    record_id_field: str
    rows_by_record: dict[str, list[dict[str, str]]]
    columns: list[str] = field(default_factory=list)

    @classmethod
    def from_rows(cls, record_id_field: str, rows: Iterable[dict[str, str]]) -> RawSnapshot:
        grouped: dict[str, list[dict[str, str]]] = {}
        columns: dict[str, None] = {}
        keys: object = None
        for row in rows:
            if row.keys() != keys:  # every row of an export has the same keys: checked once
                keys = row.keys()
                columns.update(dict.fromkeys(row))
            grouped.setdefault(str(row[record_id_field]), []).append(compact(row))
        return cls(record_id_field, grouped, list(columns))

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
        incoming = RawSnapshot.from_rows(self.record_id_field, changed_rows)
        gone = set(deleted_ids) | (set(changed_ids) - set(incoming.rows_by_record))
        merged = {rid: rows for rid, rows in self.rows_by_record.items() if rid not in gone}
        columns = list(dict.fromkeys((self.columns if merged else []) + incoming.columns))
        merged.update(incoming.rows_by_record)
        return RawSnapshot(self.record_id_field, merged, columns)

    def save(self, state_dir: Path) -> Path:
        rows = self.rows()
        columns = self._all_columns(rows) or [self.record_id_field]
        table = pa.table(dict(zip(columns, _string_arrays(rows, columns), strict=True)))
        table = table.replace_schema_metadata({"record_id_field": self.record_id_field})
        return write_parquet_atomic(Path(state_dir) / SNAPSHOT_FILE, table)

    def _all_columns(self, rows: list[dict[str, str]]) -> list[str]:
        """`columns`, then any other key of the rows in first-seen order."""
        if set().union(*rows) <= set(self.columns):  # the usual case: a set check, no scan
            return list(dict.fromkeys(self.columns))
        return list(dict.fromkeys(self.columns + [key for row in rows for key in row]))

    @classmethod
    def load(cls, state_dir: Path, record_id_field: str) -> RawSnapshot | None:
        """The saved snapshot, or None when there is none yet (the first sync must be full)."""
        path = Path(state_dir) / SNAPSHOT_FILE
        if not path.exists():
            return None
        table = pq.read_table(path)
        if table.num_rows and record_id_field not in table.column_names:
            raise KeyError(record_id_field)  # as reading it from a row would
        grouped: dict[str, list[dict[str, str]]] = {}
        # Batch by batch and column by column, only non-empty cells converted to Python: the
        # full rows of a whole project never exist at once.
        for batch in table.to_batches(max_chunksize=2000):
            rows: list[dict[str, str]] = [{} for _ in range(batch.num_rows)]
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if name in _ALWAYS_KEPT:
                    for row, value in zip(rows, column.to_pylist(), strict=True):
                        row[name] = value
                    continue
                # A null is kept, as compact() keeps None (None != "").
                present = pc.fill_null(pc.not_equal(column, ""), True)
                at = np.flatnonzero(present.to_numpy(zero_copy_only=False)).tolist()
                for i, value in zip(at, column.filter(present).to_pylist(), strict=True):
                    rows[i][name] = value
            record_ids = batch.column(record_id_field).to_pylist()
            for record, mine in _grouped(record_ids, rows).items():
                grouped.setdefault(record, []).extend(mine)
        return cls(record_id_field, grouped, table.column_names if table.num_rows else [])


def _grouped(record_ids: Iterable[str], rows: Iterable[dict[str, str]]
             ) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for record, row in zip(record_ids, rows, strict=True):
        grouped.setdefault(str(record), []).append(row)
    return grouped


def _string_arrays(rows: list[dict[str, str]], columns: Sequence[str]) -> list[pa.Array]:
    """One string array per column of compact rows, "" where a row lacks the key.

    Only the values present (~10 % of cells) are converted to arrow, once, into one flat array;
    each column is then gathered from it in C (the index past the end reads a trailing "")."""
    position = {name: i for i, name in enumerate(columns)}
    keys = list(chain.from_iterable(rows))
    values = pa.array(list(chain.from_iterable(map(dict.values, rows))) + [""], type=pa.string())
    column_of = np.fromiter(map(position.__getitem__, keys), dtype=np.int64, count=len(keys))
    row_of = np.repeat(np.arange(len(rows), dtype=np.int64),
                       np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
    order = np.argsort(column_of, kind="stable")
    bounds = np.searchsorted(column_of[order], np.arange(len(columns) + 1))
    arrays = []
    for c in range(len(columns)):
        cells = order[bounds[c]:bounds[c + 1]]
        take = np.full(len(rows), len(keys), dtype=np.int64)
        take[row_of[cells]] = cells
        arrays.append(values.take(pa.array(take)))
    return arrays
