"""Batched record export (never splitting a record) and the full-or-incremental sync plan.

Batches are cut on record ids, and one export call returns every row of each record it names,
so all rows of a record (all events, all repeat instances) always arrive in the same batch.

After the last batch the ids returned are compared with the ids asked for:
- a row for a record that was not asked for is an error (RedcapError): the export or the server
  is broken and nothing it returned can be trusted;
- a record asked for that returned no row is not an error: it was deleted between listing and
  export (REDCap silently ignores unknown ids). It is logged and reported in
  `RecordExtraction.missing_ids`, and an incremental merge treats it as deleted, exactly as a
  full export would.

Incremental syncs and the watermark: REDCap has no clock endpoint, so the watermark is the
caller's run start (`now`, REDCap server local time; an aware datetime is converted to this
machine's local zone, which must match the server's) minus `overlap`. The overlap covers clock
skew between the two machines, REDCap's minute-precision log times and writes racing the export;
re-exporting a record twice is harmless because the merge replaces whole records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from imt_etl.errors import RedcapError
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.sync_state import WATERMARK_FORMAT, SyncState

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = timedelta(hours=1)

Progress = Callable[[int, int], None]


class RecordSource(Protocol):
    """What extraction needs from a client (RedcapClient, or a test double)."""

    def record_ids(self, *, date_begin: datetime | None = None) -> list[str]: ...

    def export_batch(
        self, record_ids: Sequence[str], fields: list[str] | None = None,
        forms: list[str] | None = None,
    ) -> list[dict[str, str]]: ...

    def deleted_since(self, begin: datetime) -> list[str]: ...


def batched(ids: Sequence[str], size: int) -> list[list[str]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1 (got {size})")
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


class RecordExtraction(Iterator[list[dict[str, str]]]):
    """Iterate to get one list of flat rows per batch; afterwards read the id bookkeeping."""

    def __init__(
        self,
        client: RecordSource,
        record_id_field: str,
        *,
        batch_size: int,
        record_ids: Sequence[str] | None = None,
        progress: Progress | None = None,
        fields: list[str] | None = None,
        forms: list[str] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1 (got {batch_size})")
        self.client = client
        self.record_id_field = record_id_field
        self.batch_size = batch_size
        self.progress = progress
        self.fields, self.forms = fields, forms
        self.requested: list[str] | None = (
            None if record_ids is None else list(dict.fromkeys(map(str, record_ids)))
        )
        self.returned_ids: list[str] = []
        self.missing_ids: list[str] = []
        self.rows_returned = 0
        self.finished = False
        self._batches = self._run()

    def __iter__(self) -> RecordExtraction:
        return self

    def __next__(self) -> list[dict[str, str]]:
        return next(self._batches)

    def _run(self) -> Iterator[list[dict[str, str]]]:
        if self.requested is None:
            self.requested = self.client.record_ids()
        batches = batched(self.requested, self.batch_size)
        seen: dict[str, None] = {}
        for done, batch in enumerate(batches, start=1):
            rows = self.client.export_batch(batch, fields=self.fields, forms=self.forms)
            self._check_batch(batch, rows)
            seen.update(dict.fromkeys(row[self.record_id_field] for row in rows))
            self.rows_returned += len(rows)
            if self.progress is not None:
                self.progress(done, len(batches))
            yield rows
        self.returned_ids = list(seen)
        self.missing_ids = [rid for rid in self.requested if rid not in seen]
        if self.missing_ids:
            log.warning(
                "%d record(s) listed but not returned (deleted during the run?): %s",
                len(self.missing_ids), ", ".join(self.missing_ids[:20]),
            )
        self.finished = True

    def _check_batch(self, batch: list[str], rows: list[dict[str, str]]) -> None:
        asked = set(batch)
        for row in rows:
            rid = row.get(self.record_id_field)
            if rid is None:
                raise RedcapError(
                    f"a row of the batch starting at record {batch[0]!r} has no "
                    f"{self.record_id_field!r} field"
                )
            if rid not in asked:
                raise RedcapError(
                    f"record {rid!r} was returned but not asked for "
                    f"(batch of {len(batch)} starting at record {batch[0]!r})"
                )


def extract_records(
    client: RecordSource,
    dictionary: DataDictionary,
    *,
    batch_size: int,
    record_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
    fields: list[str] | None = None,
    forms: list[str] | None = None,
) -> RecordExtraction:
    """Export records in batches of `batch_size` record ids (all records when ids are None)."""
    return RecordExtraction(
        client, dictionary.record_id_field, batch_size=batch_size, record_ids=record_ids,
        progress=progress, fields=fields, forms=forms,
    )


@dataclass(frozen=True)
class SyncPlan:
    """What to export this run, and the watermark to save once the run has succeeded.

    `record_ids` are the records to export (all of them when full); `deleted_ids` the records to
    drop from the previous snapshot; `all_record_ids` every record that exists now, so that a
    merge can also drop records whose deletion the log no longer shows.
    """

    mode: Literal["full", "incremental"]
    record_ids: list[str]
    deleted_ids: list[str]
    watermark: str
    all_record_ids: list[str] = field(default_factory=list)
    since: str | None = None

    def next_state(self, project: str, finished_at: datetime) -> SyncState:
        return SyncState(project=project, last_success=finished_at, watermark=self.watermark)


def redcap_local(now: datetime) -> datetime:
    """`now` as a naive REDCap-local time (aware values converted to this machine's zone)."""
    return now.astimezone().replace(tzinfo=None) if now.tzinfo is not None else now


def plan_sync(
    client: RecordSource,
    state: SyncState | None,
    now: datetime,
    *,
    project: str | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> SyncPlan:
    """Full when there is no usable state, else only records changed or deleted since it."""
    watermark = (redcap_local(now) - overlap).replace(microsecond=0)
    new_mark = watermark.strftime(WATERMARK_FORMAT)
    all_ids = client.record_ids()
    reason = _full_sync_reason(state, project)
    if reason or state is None:
        log.info("full sync: %s", reason)
        return SyncPlan("full", all_ids, [], new_mark, all_ids)
    since = state.watermark_time()
    existing = set(all_ids)
    # A record changed since the watermark but deleted since the listing is left to the
    # extraction (reported missing); one deleted and then re-created is not deleted.
    changed = client.record_ids(date_begin=since)
    deleted = [rid for rid in client.deleted_since(since) if rid not in existing]
    log.info(
        "incremental sync since %s: %d changed, %d deleted of %d records",
        state.watermark, len(changed), len(deleted), len(all_ids),
    )
    return SyncPlan("incremental", changed, deleted, new_mark, all_ids, since=state.watermark)


def _full_sync_reason(state: SyncState | None, project: str | None) -> str | None:
    if state is None:
        return "no previous successful sync"
    if project is not None and state.project != project:
        return f"the saved state is for project {state.project!r}, not {project!r}"
    try:
        state.watermark_time()
    except ValueError:
        return f"the saved watermark {state.watermark!r} is not a REDCap time"
    return None
