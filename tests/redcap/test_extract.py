"""Batching by record, the record-id check, sync planning and the durable sync state."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas.testing as pd_testing
import pytest

from imt_etl.errors import RedcapError
from imt_etl.redcap.client import RedcapClient
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.extract import extract_records, plan_sync
from imt_etl.redcap.model import Arm, Event, ProjectDefinition, RecordRow, RepeatingSetup
from imt_etl.redcap.snapshot import RawSnapshot
from imt_etl.redcap.sync_state import STATE_FILE, SyncState, load_state, save_state
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments

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


# -- over real HTTP against the bundled emulator ------------------------------------------------

TOKEN = "0123456789abcdef0123456789ABCDEF"


@pytest.fixture
def emulator():
    """The emulator module (another engineer's; these tests skip until it exists)."""
    return pytest.importorskip("imt_etl.redcap.emulator")


CHECKBOX_COLUMNS = {"symptoms___1", "symptoms___2"}


def emulated_project() -> ProjectDefinition:
    dictionary = DataDictionary.from_metadata([
        {"field_name": "record_id", "form_name": "enrolment", "field_type": "text"},
        {"field_name": "site", "form_name": "enrolment", "field_type": "text"},
        {"field_name": "symptoms", "form_name": "enrolment", "field_type": "checkbox",
         "select_choices_or_calculations": "1, Dysphagia | 2, Fatigue"},
        {"field_name": "mip", "form_name": "mip", "field_type": "text",
         "text_validation_type_or_show_slider_number": "number"},
    ])
    rows = [RecordRow("001", "baseline_arm_1", values={"site": "A", "symptoms___2": "1",
                                                        "enrolment_complete": "2"})]
    for rid in ("2", "3", "10"):
        rows.append(RecordRow(rid, "baseline_arm_1", values={"site": "B",
                                                             "enrolment_complete": "1"}))
    # Record 2 has many repeat instances: it must stay within one batch.
    rows += [RecordRow("2", "week_arm_1", "mip", i, {"mip": str(60 + i), "mip_complete": "2"})
             for i in range(1, 8)]
    rows.append(RecordRow("10", "week_arm_1", "mip", 1, {"mip": "55", "mip_complete": "0"}))
    return ProjectDefinition(
        title="Emulated", dictionary=dictionary, arms=[Arm(1, "Arm 1")],
        events=[Event("baseline_arm_1", "Baseline", 1), Event("week_arm_1", "Week", 1)],
        form_event_mapping=[(1, "baseline_arm_1", "enrolment"), (1, "week_arm_1", "mip")],
        repeating=[RepeatingSetup("week_arm_1", "mip")], rows=rows,
    )


def normalise(row: dict[str, str]) -> tuple[tuple, dict[str, str]]:
    """An exported row as (key, non-empty values), unticked checkboxes dropped."""
    key = (row["record_id"], row.get("redcap_event_name", ""),
           row.get("redcap_repeat_instrument", ""), row.get("redcap_repeat_instance", ""))
    values = {k: v for k, v in row.items() if v and not k.startswith("redcap_")
              and k != "record_id" and not (k in CHECKBOX_COLUMNS and v == "0")}
    return key, values


def expected_rows(project: ProjectDefinition) -> dict[tuple, dict[str, str]]:
    return {(r.record, r.event, r.repeat_instrument,
             "" if r.repeat_instance is None else str(r.repeat_instance)): r.values
            for r in project.rows}


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def exported(client: RedcapClient, ids=None) -> list[dict[str, str]]:
    meta = ProjectMeta.from_api(client)
    return [row for batch in extract_records(client, meta.dictionary, batch_size=2,
                                             record_ids=ids) for row in batch]


def test_full_extract_over_http_equals_the_data(emulator):
    project = emulated_project()
    with emulator.RedcapEmulator(project, token=TOKEN) as emu:
        client = RedcapClient(emu.url, TOKEN, max_retries=0)
        meta = ProjectMeta.from_api(client)
        extraction = extract_records(client, meta.dictionary, batch_size=2)
        batches = list(extraction)
    assert extraction.returned_ids == ["001", "2", "3", "10"]
    assert [sorted({r["record_id"] for r in b}) for b in batches] == [["001", "2"], ["10", "3"]]
    rows = [row for batch in batches for row in batch]
    assert dict(normalise(r) for r in rows) == expected_rows(project)
    # The API's design answers give the same tables as the definition itself.
    from_api = tidy_instruments(rows, meta)
    from_def = tidy_instruments(rows, ProjectMeta.from_definition(project))
    for form in ("enrolment", "mip"):
        pd_testing.assert_frame_equal(from_api.tables[form], from_def.tables[form])
    enrolment = from_api.tables["enrolment"]
    assert list(enrolment["record_id"]) == ["001", "2", "3", "10"]
    assert list(from_api.tables["mip"]["redcap_repeat_instance"]) == [1, 2, 3, 4, 5, 6, 7, 1]


def test_incremental_sync_over_http_picks_up_changes_and_deletions(emulator):
    clock = Clock(datetime(2024, 3, 1, 8, 0))
    project = emulated_project()
    with emulator.RedcapEmulator(project, token=TOKEN, clock=clock) as emu:
        client = RedcapClient(emu.url, TOKEN, max_retries=0)
        overlap = timedelta(minutes=10)
        first = plan_sync(client, None, datetime(2024, 3, 1, 9, 0), overlap=overlap)
        assert first.mode == "full"
        snapshot = RawSnapshot.from_rows("record_id", exported(client, first.record_ids))
        state = first.next_state("emulated", datetime(2024, 3, 1, 9, 1))

        clock.now = datetime(2024, 3, 1, 10, 0)
        emu.store.set_values("3", {"site": "C"}, event="baseline_arm_1")
        emu.store.delete_records(["10"])
        second = plan_sync(client, state, datetime(2024, 3, 1, 10, 30), overlap=overlap,
                           project="emulated")
        assert (second.mode, second.record_ids, second.deleted_ids) == (
            "incremental", ["3"], ["10"])
        assert second.watermark == "2024-03-01 10:20:00"
        changed = exported(client, second.record_ids)
        merged = snapshot.merged(changed, second.record_ids, second.deleted_ids)
        full_now = RawSnapshot.from_rows("record_id", exported(client))
    assert merged.rows_by_record == full_now.rows_by_record
    assert {r["site"] for r in merged.rows_by_record["3"] if r["site"]} == {"C"}


def test_retries_over_http_survive_injected_faults(emulator, caplog):
    faults = pytest.importorskip("imt_etl.redcap.faults")
    profile = faults.FaultProfile(error_500=0.2, error_503=0.1, reset=0.1, truncated=0.1,
                                  malformed=0.1, retry_after=0, seed=3)
    project = emulated_project()
    with emulator.RedcapEmulator(project, token=TOKEN, faults=profile) as emu:
        client = RedcapClient(emu.url, TOKEN, max_retries=12, backoff_base=0.001,
                              backoff_max=0.01, timeout=5)
        with caplog.at_level(logging.WARNING, logger="imt_etl.redcap.retry"):
            rows = exported(client)
    assert dict(normalise(r) for r in rows) == expected_rows(project)
    assert "retry 1 of 12" in caplog.text  # faults were injected and survived
    assert TOKEN not in caplog.text


def test_wrong_token_over_http_is_an_auth_error(emulator):
    with emulator.RedcapEmulator(emulated_project(), token=TOKEN) as emu:
        wrong = "X" * 32
        with pytest.raises(RedcapError) as info:
            RedcapClient(emu.url, wrong, max_retries=3).metadata()
    assert info.value.status == 403 and wrong not in str(info.value)
