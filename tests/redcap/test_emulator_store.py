"""The emulator's API semantics without HTTP: parameters, formats, filters, log, scale."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from imt_etl.errors import ConfigError
from imt_etl.redcap.emulator import RedcapEmulator, decode_form, run_emulator_cli
from imt_etl.redcap.emulator_store import ProjectStore, handle_request, natural_key
from imt_etl.redcap.model import RecordRow

sys.path.insert(0, str(Path(__file__).parent))
from emulator_fixtures import (  # noqa: E402
    TOKEN,
    Clock,
    classic_project,
    longitudinal_project,
)


def call(store: ProjectStore, **params):
    answer = handle_request(store, {"token": TOKEN, **params}, TOKEN)
    fmt = params.get("returnFormat") or params.get("format")
    body = orjson.loads(answer.body) if fmt == "json" and answer.body else answer.body.decode()
    return answer.status, body


def test_decode_form_lists_and_scalars():
    body = b"token=T&records%5B1%5D=b&records%5B0%5D=a&fields%5B%5D=x&fields%5B%5D=y&type=flat"
    assert decode_form(body) == {"token": "T", "records": ["a", "b"], "fields": ["x", "y"],
                                 "type": "flat"}


def test_natural_record_order():
    assert sorted(["10", "2", "b-10", "b-2", "A-1"], key=natural_key) == \
        ["2", "10", "A-1", "b-2", "b-10"]


def test_fields_without_record_id_omit_key_columns():
    # REDCap >= 6: the record id (and the event/repeat columns) only when asked for.
    store = ProjectStore(longitudinal_project())
    status, rows = call(store, content="record", format="json", **{"fields": ["mip"]})
    assert status == 200 and rows == [{"mip": "55.5"}, {"mip": "61"}, {"mip": "70"}]
    status, rows = call(store, content="record", format="json", fields="study_id,mip",
                        records=["3"])
    assert rows == [{"study_id": "3", "redcap_event_name": "baseline_arm_2",
                     "redcap_repeat_instrument": "", "redcap_repeat_instance": "", "mip": ""}]


def test_error_bodies_follow_the_format():
    store = ProjectStore(classic_project())
    assert call(store, content="record", format="json", fields=["nope"]) == \
        (400, {"error": "The following values in the parameter \"fields\" are not valid: "
                        "'nope'"})
    status, body = call(store, content="formEventMapping", format="xml")
    assert status == 400 and "<error>You cannot export form/event mappings for classic " \
        "projects</error>" in body
    status, body = call(store, content="record", format="csv", dateRangeBegin="yesterday")
    assert status == 400 and body.startswith("ERROR: ")
    answer = handle_request(store, {"content": "version"}, TOKEN)
    assert answer.status == 403 and b"<error>" in answer.body


def test_filter_logic_and_xml_records():
    store = ProjectStore(classic_project())
    status, rows = call(store, content="record", format="json",
                        filterLogic="[age] > 45 or [symptoms(x-1)] = '1'")
    assert status == 200 and [r["study_id"] for r in rows] == ["2", "10"]
    status, rows = call(store, content="record", format="json", filterLogic="[age] > 45")
    assert [r["study_id"] for r in rows] == ["10"]
    status, body = call(store, content="record", format="xml", records=["10"], fields=["age"])
    assert "<age><![CDATA[51]]></age>" in body and body.count("<item>") == 1
    assert call(store, content="record", format="json", filterLogic="[age] >")[0] == 400


def test_date_range_and_direct_store_edits():
    clock = Clock()
    store = ProjectStore(classic_project(), clock=clock, load_time=clock())
    begin = clock.advance(hours=2)
    store.set_values("10", {"age": "52"})
    clock.advance(hours=1)
    store.set_values("30", {"study_id": "30", "age": "20"})
    fmt = "%Y-%m-%d %H:%M:%S"
    status, rows = call(store, content="record", format="json", fields=["study_id"],
                        dateRangeBegin=begin.strftime(fmt))
    assert [r["study_id"] for r in rows] == ["10", "30"]
    status, rows = call(store, content="record", format="json", fields=["study_id"],
                        dateRangeBegin=begin.strftime(fmt), dateRangeEnd=begin.strftime(fmt))
    assert [r["study_id"] for r in rows] == ["10"]
    assert store.times_of("30") == (clock.now, clock.now)
    assert store.delete_records(["30"]) == 1
    status, log = call(store, content="log", format="json", logtype="record_delete")
    assert log == [{"timestamp": clock.now.strftime("%Y-%m-%d %H:%M"), "username": "api_user",
                    "action": "Delete record 30 (API)", "details": "study_id = '30'",
                    "record": "30"}]
    status, log = call(store, content="log", format="json", logtype="record",
                       endTime=begin.strftime(fmt))
    assert {e["action"] for e in log} == {"Create record 2", "Create record 10",
                                          "Update record 10 (API)"}


def test_partial_delete_of_an_instrument_instance():
    store = ProjectStore(classic_project())
    status, count = call(store, content="record", action="delete", returnFormat="json",
                         records=["2"], instrument="adverse_event", repeat_instance="1")
    assert (status, count) == (200, 1)
    assert [r.repeat_instance for r in store.rows_of("2")] == [None, 2]
    status, log = call(store, content="log", format="json", logtype="record_edit", record="2")
    assert "adverse_event" in log[0]["details"]


def test_metadata_and_project_in_csv():
    store = ProjectStore(classic_project())
    status, body = call(store, content="metadata", format="csv", fields=["sex"])
    header, row = body.splitlines()
    assert header.split(",")[:4] == ["field_name", "form_name", "section_header", "field_type"]
    assert row.startswith("sex,enrolment,,radio,Sex,") and '"1, Female | 2, Male"' in row
    status, body = call(store, content="project", format="csv")
    assert body.splitlines()[1].startswith('1,"Emulator classic",')
    status, body = call(store, content="exportFieldNames", format="json", field="symptoms")
    assert [r["export_field_name"] for r in body] == \
        ["symptoms___1", "symptoms___2", "symptoms___x_1"]


def test_import_returns_and_auto_number():
    store = ProjectStore(classic_project())
    data = orjson.dumps([{"study_id": "new", "age": "5"}]).decode()
    status, body = call(store, content="record", format="json", data=data,
                        returnContent="auto_ids", forceAutoNumber="true", returnFormat="json")
    assert body == ["11,new"] and store.has_record("11")
    status, body = call(store, content="record", format="json", data=data,
                        returnContent="nothing", returnFormat="json")
    assert (status, body) == (200, "")
    status, body = call(store, content="record", format="json", data="{oops",
                        returnFormat="json")
    assert status == 400 and "not valid JSON" in body["error"]


def test_export_scales_linearly():
    project = classic_project()
    base = project.rows[1].values
    project.rows = [RecordRow(str(i), values={**base, "study_id": str(i)})
                    for i in range(1, 5001)]
    store = ProjectStore(project)
    started = time.perf_counter()
    status, rows = call(store, content="record", format="json", records=[str(i) for i in
                                                                         range(1, 5001, 2)])
    assert status == 200 and len(rows) == 2500 and rows[-1]["study_id"] == "4999"
    status, body = call(store, content="record", format="csv")
    assert body.count("\n") == 5001
    assert time.perf_counter() - started < 3


def test_non_loopback_host_is_refused_and_cli_serves():
    with pytest.raises(ConfigError, match="loopback"):
        RedcapEmulator(classic_project(), token=TOKEN, host="0.0.0.0")
    with pytest.raises(ConfigError, match="32"):
        RedcapEmulator(classic_project(), token="short")
    xml = Path(__file__).resolve().parents[1] / "data" / "redcap_xml" / "redcapr_dag.xml"
    stop = threading.Event()
    thread = threading.Thread(target=run_emulator_cli, args=(xml, "127.0.0.1", 0, TOKEN),
                              kwargs={"stop": stop})
    thread.start()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
