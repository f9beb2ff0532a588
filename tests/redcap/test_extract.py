"""Batching by record, the record-id check, sync planning and the durable sync state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from imt_etl.errors import RedcapError
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.extract import extract_records, plan_sync
from imt_etl.redcap.sync_state import STATE_FILE, SyncState, load_state, save_state

DICTIONARY = DataDictionary.from_metadata([
    {"field_name": "record_id", "form_name": "enrolment", "field_type": "text"},
    {"field_name": "visit_date", "form_name": "visit", "field_type": "text"},
])


def rows_of(rid: str, n: int) -> list[dict[str, str]]:
    return [{"record_id": rid, "redcap_repeat_instrument": "visit",
             "redcap_repeat_instance": str(i), "visit_date": "2024-01-01"} for i in range(1, n + 1)]


class FakeSource:
    """Records as lists of rows; exports return every row of each asked record."""

    def __init__(self, records: dict[str, list[dict[str, str]]]):
        self.records = records
        self.batches: list[list[str]] = []
        self.changed_since: list[str] = []
        self.deleted: list[str] = []
        self.asked_since: list[datetime | None] = []

    def record_ids(self, *, date_begin: datetime | None = None) -> list[str]:
        self.asked_since.append(date_begin)
        return list(self.changed_since) if date_begin else list(self.records)

    def export_batch(self, record_ids: Sequence[str], fields=None, forms=None):
        self.batches.append(list(record_ids))
        return [row for rid in record_ids for row in self.records.get(rid, [])]

    def deleted_since(self, begin: datetime) -> list[str]:
        return list(self.deleted)


def test_batches_never_split_a_record():
    # Record "2" has 30 repeat rows and sits at the boundary of the first batch.
    records = {"1": rows_of("1", 1), "2": rows_of("2", 30), "3": rows_of("3", 2),
               "4": rows_of("4", 1), "5": rows_of("5", 5)}
    source = FakeSource(records)
    progress: list[tuple[int, int]] = []
    extraction = extract_records(source, DICTIONARY, batch_size=2,
                                 progress=lambda d, t: progress.append((d, t)))
    batches = list(extraction)
    assert source.batches == [["1", "2"], ["3", "4"], ["5"]]
    assert [len(b) for b in batches] == [31, 3, 5]
    owner = {}
    for index, batch in enumerate(batches):
        for row in batch:
            assert owner.setdefault(row["record_id"], index) == index
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert extraction.finished and extraction.missing_ids == []
    assert extraction.returned_ids == ["1", "2", "3", "4", "5"]
    assert extraction.rows_returned == 39


def test_record_deleted_mid_run_is_reported_not_raised(caplog):
    source = FakeSource({"1": rows_of("1", 1), "3": rows_of("3", 1)})
    extraction = extract_records(source, DICTIONARY, batch_size=10, record_ids=["1", "2", "3", "2"])
    rows = [row for batch in extraction for row in batch]
    assert len(rows) == 2
    assert source.batches == [["1", "2", "3"]]  # duplicates asked once
    assert extraction.missing_ids == ["2"]
    assert "listed but not returned" in caplog.text


def test_record_not_asked_for_is_an_error():
    class Leaky(FakeSource):
        def export_batch(self, record_ids, fields=None, forms=None):
            return super().export_batch(record_ids) + rows_of("99", 1)

    extraction = extract_records(Leaky({"1": rows_of("1", 1)}), DICTIONARY, batch_size=5)
    with pytest.raises(RedcapError, match="'99' was returned but not asked for"):
        list(extraction)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        extract_records(FakeSource({}), DICTIONARY, batch_size=0)


NOW = datetime(2024, 6, 1, 12, 0, 30)


def test_plan_is_full_without_state():
    source = FakeSource({"1": [], "2": []})
    plan = plan_sync(source, None, NOW)
    assert plan.mode == "full" and plan.record_ids == ["1", "2"] and plan.deleted_ids == []
    assert plan.watermark == "2024-06-01 11:00:30"


def test_plan_is_incremental_with_state():
    source = FakeSource({"1": [], "2": [], "4": []})
    source.changed_since = ["2", "4"]
    source.deleted = ["3", "4"]  # 4 was deleted, then re-created: not deleted
    state = SyncState("imt", datetime(2024, 5, 1, tzinfo=UTC), "2024-05-31 10:00:00")
    plan = plan_sync(source, state, NOW, project="imt", overlap=timedelta(minutes=10))
    assert plan.mode == "incremental"
    assert plan.record_ids == ["2", "4"] and plan.deleted_ids == ["3"]
    assert plan.all_record_ids == ["1", "2", "4"]
    assert plan.since == "2024-05-31 10:00:00" and plan.watermark == "2024-06-01 11:50:30"
    assert datetime(2024, 5, 31, 10) in source.asked_since
    nxt = plan.next_state("imt", NOW)
    assert nxt.watermark == plan.watermark


def test_plan_is_full_for_another_project_or_bad_watermark():
    source = FakeSource({"1": []})
    other = SyncState("other", NOW, "2024-05-31 10:00:00")
    assert plan_sync(source, other, NOW, project="imt").mode == "full"
    broken = SyncState("imt", NOW, "yesterday")
    assert plan_sync(source, broken, NOW, project="imt").mode == "full"


def test_aware_now_becomes_local_naive():
    aware = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    plan = plan_sync(FakeSource({}), None, aware, overlap=timedelta(0))
    expected = aware.astimezone().replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")
    assert plan.watermark == expected


def test_state_round_trip_and_atomic_file(tmp_path):
    assert load_state(tmp_path) is None
    state = SyncState("imt", datetime(2024, 6, 1, 12, 5, tzinfo=UTC), "2024-06-01 11:05:00")
    path = save_state(tmp_path / "state", state)
    assert path.name == STATE_FILE
    assert load_state(tmp_path / "state") == state
    assert [p.name for p in path.parent.iterdir()] == [STATE_FILE]  # no temp file left
    assert json.loads(path.read_text())["watermark"] == "2024-06-01 11:05:00"


def test_unreadable_state_means_full_sync(tmp_path, caplog):
    (tmp_path / STATE_FILE).write_text("{not json")
    assert load_state(tmp_path) is None
    (tmp_path / STATE_FILE).write_text(json.dumps(
        {"version": 1, "project": "imt", "last_success": "2024-01-01T00:00:00",
         "watermark": "01/01/2024"}))
    assert load_state(tmp_path) is None
    assert "unreadable sync state" in caplog.text
