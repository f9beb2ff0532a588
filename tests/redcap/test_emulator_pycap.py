"""PyCap 2.7 against a live emulator on loopback: every call the pipeline makes, unchanged."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
from redcap import Project

sys.path.insert(0, str(Path(__file__).parent))
from emulator_fixtures import (  # noqa: E402
    TOKEN,
    Clock,
    classic_project,
    longitudinal_project,
    running,
)


@pytest.fixture(scope="module")
def classic():
    with running(classic_project()) as emu:
        yield Project(emu.url, TOKEN)


@pytest.fixture(scope="module")
def longi():
    with running(longitudinal_project()) as emu:
        yield Project(emu.url, TOKEN)


def test_classic_flat_json_shape_and_order(classic):
    rows = classic.export_records()
    assert [(r["study_id"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"])
            for r in rows] == [("2", "", ""), ("2", "adverse_event", "1"),
                               ("2", "adverse_event", "2"), ("10", "", "")]
    first = rows[0]
    assert list(first) == [
        "study_id", "redcap_repeat_instrument", "redcap_repeat_instance", "age", "sex",
        "symptoms___1", "symptoms___2", "symptoms___x_1", "enrolment_complete", "visit_date",
        "mip", "consented", "visit_complete", "ae_term", "ae_grade", "adverse_event_complete",
    ]
    assert first["symptoms___1"] == "1" and first["symptoms___2"] == "0"
    # A form without data on its own row shows the gray status "0"; other rows' forms are "".
    assert first["visit_complete"] == "0" and first["adverse_event_complete"] == ""
    assert rows[1]["enrolment_complete"] == "" and rows[1]["symptoms___1"] == ""
    assert rows[1]["ae_grade"] == "2" and rows[2]["ae_term"] == "cough, dry"


def test_classic_csv_and_df(classic):
    text = classic.export_records(format_type="csv")
    assert text.splitlines()[3].startswith("2,adverse_event,2,")
    assert '"cough, dry"' in text
    df = classic.export_records(format_type="df")
    assert df.index.name == "study_id" and len(df) == 4


def test_filters_records_fields_forms(classic):
    rows = classic.export_records(records=["10"], fields=["age"])
    # PyCap adds the record id field; the repeat columns come with it.
    assert rows == [{"study_id": "10", "redcap_repeat_instrument": "",
                     "redcap_repeat_instance": "", "age": "51"}]
    rows = classic.export_records(forms=["adverse_event"])
    # With the record id asked for, every record's own row stays (blank for these forms).
    assert [(r["study_id"], r["redcap_repeat_instance"], r["ae_term"]) for r in rows] == \
        [("2", "", ""), ("2", "1", "rash"), ("2", "2", "cough, dry"), ("10", "", "")]
    assert set(rows[0]) == {"study_id", "redcap_repeat_instrument", "redcap_repeat_instance",
                            "ae_term", "ae_grade", "adverse_event_complete"}


def test_labels_and_checkbox_labels(classic):
    row = classic.export_records(records=["2"], raw_or_label="label")[0]
    assert row["sex"] == "Female" and row["symptoms___1"] == "Checked"
    assert row["symptoms___2"] == "Unchecked" and row["enrolment_complete"] == "Complete"
    ae = classic.export_records(records=["2"], raw_or_label="label")[2]
    assert ae["ae_grade"] == "Unknown"  # a missing-data code shows its label
    assert ae["redcap_repeat_instrument"] == "Adverse Event"
    row = classic.export_records(records=["2"], raw_or_label="label",
                                 export_checkbox_labels=True)[0]
    assert row["symptoms___1"] == "Cough" and row["symptoms___2"] == ""
    header = classic.export_records(format_type="csv", fields=["symptoms"],
                                    raw_or_label_headers="label").splitlines()[0]
    assert "Symptoms (choice=Cough)" in header and "Repeat Instrument" in header


def test_dags_column(classic):
    rows = classic.export_records(export_data_access_groups=True)
    assert list(rows[0])[3] == "redcap_data_access_group"
    assert [r["redcap_data_access_group"] for r in rows] == ["site_a"] * 3 + ["site_b"]


def test_eav(classic):
    rows = classic.export_records(record_type="eav", records=["2"])
    assert {"record": "2", "redcap_repeat_instrument": "", "redcap_repeat_instance": "",
            "field_name": "symptoms", "value": "x-1"} in rows
    assert all(r["value"] != "" for r in rows)
    assert {"record": "2", "redcap_repeat_instrument": "adverse_event",
            "redcap_repeat_instance": "2", "field_name": "ae_term",
            "value": "cough, dry"} in rows


def test_metadata_field_names_info_version(classic):
    meta = classic.export_metadata()
    assert len(meta) == 10 and len(meta[0]) == 18 and meta[0]["field_name"] == "study_id"
    assert [m["field_name"] for m in classic.export_metadata(forms=["visit"])] == \
        ["visit_date", "mip", "consented"]
    names = classic.export_field_names()
    assert {"original_field_name": "symptoms", "choice_value": "x-1",
            "export_field_name": "symptoms___x_1"} in names
    assert "note" not in {n["original_field_name"] for n in names}
    info = classic.export_project_info()
    assert info["is_longitudinal"] == 0 and info["has_repeating_instruments_or_events"] == 1
    assert info["missing_data_codes"].startswith("UNK")
    assert str(classic.export_version()) == "14.5.10"
    assert classic.export_repeating_instruments_events() == [
        {"form_name": "adverse_event", "custom_form_label": ""}]


def test_classic_has_no_event_mapping(classic):
    with pytest.raises(requests.RequestException, match="classic projects"):
        classic.export_instrument_event_mappings()
    assert classic.is_longitudinal is False


def test_bad_token_is_403():
    with running(classic_project()) as emu:
        with pytest.raises(requests.RequestException, match="permissions"):
            Project(emu.url, "X" * 32).export_records()
        answer = requests.post(emu.url, data={"token": "X" * 32, "content": "record",
                                              "format": "json"}, timeout=5)
        assert answer.status_code == 403
        assert answer.json() == {"error": "You do not have permissions to use the API"}
        answer = requests.post(emu.url, data={"token": TOKEN, "content": "nope",
                                              "format": "csv"}, timeout=5)
        assert answer.status_code == 400 and answer.text.startswith("ERROR:")


def test_longitudinal_rows_events_and_repeats(longi):
    rows = longi.export_records()
    keys = [(r["study_id"], r["redcap_event_name"], r["redcap_repeat_instrument"],
             r["redcap_repeat_instance"]) for r in rows]
    assert keys == [
        ("1", "baseline_arm_1", "", ""), ("1", "baseline_arm_1", "adverse_event", "1"),
        ("1", "follow_up_arm_1", "", "1"), ("1", "follow_up_arm_1", "", "2"),
        ("3", "baseline_arm_2", "", ""),
    ]
    # Forms not designated to the event are blank, including their status.
    assert rows[4]["visit_complete"] == "" and rows[4]["enrolment_complete"] == "0"
    assert rows[3]["visit_complete"] == "0" and rows[3]["enrolment_complete"] == ""
    follow = longi.export_records(events=["follow_up_arm_1"], fields=["mip"])
    assert [r["mip"] for r in follow] == ["61", "70"]
    label = longi.export_records(records=["3"], raw_or_label="label")[0]
    assert label["redcap_event_name"] == "Baseline (Arm 2: Placebo)"


def test_longitudinal_design_contents(longi):
    assert longi.is_longitudinal is True
    assert longi.export_instrument_event_mappings(arms=["2"]) == [
        {"arm_num": 2, "unique_event_name": "baseline_arm_2", "form": "enrolment"}]
    assert [e["unique_event_name"] for e in longi.export_events(arms=["1"])] == \
        ["baseline_arm_1", "follow_up_arm_1"]
    assert longi.export_arms() == [{"arm_num": 1, "name": "Drug"},
                                   {"arm_num": 2, "name": "Placebo"}]
    assert longi.export_repeating_instruments_events() == [
        {"event_name": "baseline_arm_1", "form_name": "adverse_event", "custom_form_label": "AE"},
        {"event_name": "follow_up_arm_1", "form_name": "", "custom_form_label": ""},
    ]
    df = longi.export_records(format_type="df")
    assert df.index.names == ["study_id", "redcap_event_name"]


def test_import_update_delete_and_log():
    clock = Clock()
    with running(classic_project(), clock) as emu:
        proj = Project(emu.url, TOKEN)
        clock.advance(hours=1)
        assert proj.import_records([{"study_id": 11, "age": 70, "symptoms___2": "1"},
                                    {"study_id": "2", "redcap_repeat_instrument": "adverse_event",
                                     "redcap_repeat_instance": 3, "ae_term": "fall"}]) == \
            {"count": 2}
        rows = proj.export_records(records=["11"])
        assert rows[0]["age"] == "70" and rows[0]["enrolment_complete"] == "0"
        # normal: blanks keep stored values; overwrite: blanks erase them.
        proj.import_records([{"study_id": "11", "age": ""}])
        assert proj.export_records(records=["11"])[0]["age"] == "70"
        proj.import_records([{"study_id": "11", "age": ""}], overwrite="overwrite")
        assert proj.export_records(records=["11"])[0]["age"] == ""
        assert proj.import_records(
            pd.DataFrame([{"study_id": "12", "age": 1}]).set_index("study_id"),
            import_format="df", return_content="ids") == ["12"]
        clock.advance(minutes=5)
        assert proj.delete_records(["11", "12"]) == 2
        assert [r["study_id"] for r in proj.export_records()] == ["2", "2", "2", "2", "10"]
        deleted = proj.export_logging(log_type="record_delete")
        assert [(e["record"], e["action"]) for e in deleted] == [
            ("12", "Delete record 12 (API)"), ("11", "Delete record 11 (API)")]
        assert deleted[0]["timestamp"] == "2026-01-05 10:05"
        since = proj.export_logging(log_type="record", begin_time=clock.now)
        assert {e["record"] for e in since} == {"11", "12"}
        edits = proj.export_logging(log_type="record_edit", record="2")
        assert edits and "ae_term = 'fall'" in edits[0]["details"]


def test_import_errors_write_nothing():
    with running(classic_project()) as emu:
        proj = Project(emu.url, TOKEN)
        with pytest.raises(requests.RequestException, match="not found in the project"):
            proj.import_records([{"study_id": "5", "bogus": "1"}])
        with pytest.raises(requests.RequestException, match="not a valid category"):
            proj.import_records([{"study_id": "5", "age": "3"}, {"study_id": "6", "sex": "9"}])
        with pytest.raises(requests.RequestException, match="not a repeating instrument"):
            proj.import_records([{"study_id": "5", "redcap_repeat_instance": "2", "age": "1"}])
        with pytest.raises(requests.RequestException, match="not an integer"):
            proj.import_records([{"study_id": "5", "age": "old"}])
        with pytest.raises(requests.RequestException, match="do not exist"):
            proj.delete_records(["404"])
        assert [r["study_id"] for r in proj.export_records(fields=["study_id"])] == \
            ["2", "2", "2", "10"]


def test_csv_import_and_date_range():
    clock = Clock()
    with running(longitudinal_project(), clock) as emu:
        proj = Project(emu.url, TOKEN)
        start = clock.advance(days=1)
        assert proj.export_records(date_begin=start) == []
        clock.advance(minutes=1)
        csv_text = "study_id,redcap_event_name,redcap_repeat_instance,mip\n" \
                   "3,baseline_arm_2,,\n1,follow_up_arm_1,3,80\n"
        with pytest.raises(requests.RequestException, match="does not belong"):
            proj.import_records("study_id,redcap_event_name,mip\n3,baseline_arm_2,1\n",
                                import_format="csv")
        assert proj.import_records(csv_text, import_format="csv") == {"count": 2}
        changed = proj.export_records(date_begin=start, fields=["study_id"])
        # Record 3's row had nothing new: only record 1 changed.
        assert {r["study_id"] for r in changed} == {"1"}
        assert proj.export_records(date_begin=start, date_end=start) == []
        df = pd.read_csv(io.StringIO(proj.export_records(format_type="csv", records=["1"])))
        assert list(df["redcap_repeat_instance"].fillna(0).astype(int)) == [0, 1, 1, 2, 3]
