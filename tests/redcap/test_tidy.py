"""Typed instrument tables from flat rows: types, labels, checkboxes, missing codes, key shapes."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pytest

from imt_etl.errors import RedcapError
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.model import Event, ProjectDefinition, RepeatingSetup
from imt_etl.redcap.tidy import KEY_COLUMNS, ProjectMeta, tidy_instruments


def fld(name, form, ftype="text", validation="", choices="", annotation=""):
    return {"field_name": name, "form_name": form, "field_type": ftype,
            "text_validation_type_or_show_slider_number": validation,
            "select_choices_or_calculations": choices, "field_annotation": annotation,
            "field_label": name.title()}


DICT = DataDictionary.from_metadata([
    fld("study_id", "demo"),
    fld("code", "demo"),
    fld("age", "demo", validation="integer"),
    fld("weight", "demo", validation="number_1dp"),
    fld("dob", "demo", validation="date_ymd"),
    fld("seen_at", "demo", validation="datetime_seconds_ymd"),
    fld("sex", "demo", "radio", choices="1, Female | 2, Male"),
    fld("smoker", "demo", "yesno"),
    fld("symptoms", "demo", "checkbox", choices="1, Dysphagia | 2, Dyspnoea | 3, Fatigue"),
    fld("info", "demo", "descriptive"),
    fld("bmi", "demo", "calc", choices="[weight]/4"),
    fld("comment", "demo", "notes", annotation="@NOMISSING"),
    fld("mip", "visit", validation="number"),
    fld("effort", "visit", "slider"),
])


def meta(**kw) -> ProjectMeta:
    return ProjectMeta.from_definition(ProjectDefinition(title="t", dictionary=DICT, **kw))


def demo_row(rid, **values):
    row = {"study_id": rid, "code": "", "age": "", "weight": "", "dob": "", "seen_at": "",
           "sex": "", "smoker": "", "symptoms___1": "0", "symptoms___2": "0",
           "symptoms___3": "0", "bmi": "", "comment": "", "demo_complete": "",
           "mip": "", "effort": "", "visit_complete": ""}
    row.update(values)
    return row


def test_types_come_from_the_dictionary():
    rows = [demo_row("2", code="001", age="42", weight="70.5", dob="1980-02-29",
                     seen_at="2024-05-01 09:30:15", sex="1", smoker="0", bmi="17.6",
                     symptoms___2="1", demo_complete="2")]
    result = tidy_instruments(rows, meta())
    demo = result.tables["demo"]
    assert list(demo.columns[:5]) == list(KEY_COLUMNS)
    r = demo.iloc[0]
    assert r["record_id"] == "2" and r["code"] == "001"
    assert demo["code"].dtype == pd.StringDtype()
    assert demo["age"].dtype == "Int64" and r["age"] == 42
    assert demo["weight"].dtype == "Float64" and r["weight"] == 70.5
    assert demo["bmi"].dtype == "Float64"
    assert demo["dob"].dtype == pd.ArrowDtype(pa.date32()) and r["dob"] == date(1980, 2, 29)
    assert demo["seen_at"].dtype == "datetime64[ms]"
    assert r["seen_at"] == datetime(2024, 5, 1, 9, 30, 15)
    assert (r["sex"], r["sex_label"], r["smoker"], r["smoker_label"]) == ("1", "Female", "0", "No")
    assert [r["symptoms___1"], r["symptoms___2"], r["symptoms___3"]] == [False, True, False]
    assert demo["symptoms___1"].dtype == "boolean"
    assert demo.attrs["columns"]["symptoms___2"]["choice_label"] == "Dyspnoea"
    assert (r["demo_complete"], r["demo_complete_label"]) == (2, "Complete")
    assert "info" not in demo.columns and "study_id" not in demo.columns
    assert not any(c.endswith("_missing") for c in demo.columns)  # no codes defined
    # Field order follows the dictionary.
    cols = list(demo.columns)
    assert cols.index("code") < cols.index("age") < cols.index("sex") < cols.index("symptoms___1")
    assert cols[-2:] == ["demo_complete", "demo_complete_label"]
    assert result.issues == []
    assert result.tables["visit"].empty  # no visit data: no row, but the table exists
    assert list(result.tables["visit"].columns[-2:]) == ["visit_complete", "visit_complete_label"]
    # Parquet round trip keeps the DATE type.
    table = pa.Table.from_pandas(demo, preserve_index=False)
    assert table.schema.field("dob").type == pa.date32()


def test_unparseable_values_are_reported_not_guessed():
    rows = [demo_row("7", age="4x", weight="1,5", dob="31/12/2020", seen_at="2024-05-01",
                     sex="9", symptoms___1="yes", demo_complete="5")]
    result = tidy_instruments(rows, meta())
    demo, raw = result.tables["demo"], result.raw["demo"]
    assert {(i.field, i.rule) for i in result.issues} == {
        ("age", "dict.integer"), ("weight", "dict.number"), ("dob", "dict.date"),
        ("seen_at", "dict.datetime"), ("sex", "dict.choice"), ("symptoms___1", "dict.choice"),
        ("demo_complete", "dict.choice"),
    }
    for column in ("age", "weight", "dob", "seen_at", "sex", "sex_label", "symptoms___1",
                   "demo_complete"):
        assert pd.isna(demo.iloc[0][column]), column
    issue = next(i for i in result.issues if i.field == "age")
    assert (issue.record, issue.instrument, issue.value) == ("7", "demo", "4x")
    assert "'age'" in issue.message and "'7'" in issue.message
    # The raw frame keeps every original value, aligned on the same key.
    assert raw.iloc[0]["age"] == "4x" and raw.iloc[0]["dob"] == "31/12/2020"
    assert list(raw["record_id"]) == list(demo["record_id"])


def test_missing_data_codes_stay_distinct_from_empty():
    rows = [
        demo_row("1", age="UNK", dob="NA", sex="NA", comment="NA", code="", demo_complete="1",
                 symptoms___unk="1"),
        demo_row("2", age="", demo_complete="0", symptoms___unk="0", symptoms___1="1"),
    ]
    result = tidy_instruments(rows, meta(missing_data_codes="UNK, Unknown | NA, Not applicable"))
    demo = result.tables["demo"]
    one, two = demo.iloc[0], demo.iloc[1]
    assert pd.isna(one["age"]) and one["age_missing"] == "UNK"
    assert pd.isna(one["dob"]) and one["dob_missing"] == "NA"
    assert pd.isna(one["sex"]) and one["sex_missing"] == "NA" and pd.isna(one["sex_label"])
    assert pd.isna(two["age"]) and pd.isna(two["age_missing"])  # empty is not missing
    assert pd.isna(one["symptoms___1"]) and one["symptoms_missing"] == "UNK"
    assert two["symptoms___1"] == True and pd.isna(two["symptoms_missing"])  # noqa: E712
    assert one["comment"] == "NA" and "comment_missing" not in demo.columns  # @NOMISSING
    assert result.issues == []
    assert result.raw["demo"].iloc[0]["symptoms___unk"] == "1"


def test_classic_project_with_repeating_instrument():
    m = meta(repeating=[RepeatingSetup("", "visit")])
    rows = [
        demo_row("10", code="a", demo_complete="2"),
        demo_row("10", redcap_repeat_instrument="visit", redcap_repeat_instance="2",
                 mip="80", effort="55", visit_complete="2"),
        demo_row("10", redcap_repeat_instrument="visit", redcap_repeat_instance="1",
                 mip="75", visit_complete="0"),
        demo_row("9", code="b", demo_complete="0"),
    ]
    result = tidy_instruments(rows, m)
    demo, visit = result.tables["demo"], result.tables["visit"]
    assert list(demo["record_id"]) == ["9", "10"]  # numeric order, not text order
    assert demo["redcap_arm"].isna().all() and demo["redcap_event_name"].isna().all()
    assert demo["redcap_repeat_instance"].isna().all()
    assert list(visit["redcap_repeat_instance"]) == [1, 2]
    assert list(visit["redcap_repeat_instrument"]) == ["visit", "visit"]
    assert list(visit["mip"]) == [75.0, 80.0]
    assert visit["effort"].dtype == "Int64" and pd.isna(visit.iloc[0]["effort"])


def test_longitudinal_with_repeating_event_and_arms():
    events = [Event("baseline_arm_1", "Baseline", 1), Event("weekly_arm_1", "Weekly", 1),
              Event("baseline_arm_2", "Baseline", 2)]
    m = meta(events=events, repeating=[RepeatingSetup("weekly_arm_1", "")],
             form_event_mapping=[(1, "baseline_arm_1", "demo"), (1, "weekly_arm_1", "visit"),
                                 (2, "baseline_arm_2", "demo")])
    rows = [
        demo_row("1", redcap_event_name="weekly_arm_1", redcap_repeat_instance="2",
                 mip="90", visit_complete="1"),
        demo_row("1", redcap_event_name="weekly_arm_1", redcap_repeat_instance="1",
                 mip="85", visit_complete="1"),
        demo_row("1", redcap_event_name="baseline_arm_1", code="x", demo_complete="2"),
        demo_row("2", redcap_event_name="baseline_arm_2", code="y", demo_complete="2"),
    ]
    result = tidy_instruments(rows, m)
    demo, visit = result.tables["demo"], result.tables["visit"]
    assert list(zip(demo["record_id"], demo["redcap_arm"], demo["redcap_event_name"],
                    strict=True)) == [("1", 1, "baseline_arm_1"), ("2", 2, "baseline_arm_2")]
    assert list(visit["redcap_event_name"]) == ["weekly_arm_1", "weekly_arm_1"]
    assert visit["redcap_repeat_instrument"].isna().all()
    assert list(visit["redcap_repeat_instance"]) == [1, 2]
    assert not visit.duplicated(list(KEY_COLUMNS)).any()


def test_unknown_event_and_duplicate_rows_are_errors():
    m = meta(events=[Event("baseline_arm_1", "Baseline", 1)])
    with pytest.raises(RedcapError, match="unknown event"):
        tidy_instruments([demo_row("1", redcap_event_name="nope_arm_1", code="x")], m)
    with pytest.raises(RedcapError, match="two rows"):
        tidy_instruments([demo_row("1", code="x"), demo_row("1", code="y")], meta())


def test_from_api_builds_the_same_meta():
    class FakeClient:
        def metadata(self):
            return DICT.to_metadata()

        def project_info(self):
            return {"project_title": "t", "is_longitudinal": 1,
                    "has_repeating_instruments_or_events": 1, "missing_data_codes": "UNK, Unknown"}

        def events(self):
            return [{"unique_event_name": "baseline_arm_1", "arm_num": 1, "event_name": "B"}]

        def form_event_mapping(self):
            return [{"arm_num": 1, "unique_event_name": "baseline_arm_1", "form": "demo"}]

        def repeating(self):
            return [{"event_name": "baseline_arm_1", "form_name": "visit", "custom_form_label": ""}]

    got = ProjectMeta.from_api(FakeClient())
    assert got.event_arms == {"baseline_arm_1": 1}
    assert got.repeating == (RepeatingSetup("baseline_arm_1", "visit"),)
    assert got.form_event_mapping == ((1, "baseline_arm_1", "demo"),)
    assert [c.code for c in got.missing_codes] == ["UNK"]
    assert got.dictionary == DICT and got.is_longitudinal


def test_data_access_groups_become_a_column_of_every_table():
    from pathlib import Path

    from imt_etl.redcap.client import RedcapClient
    from imt_etl.redcap.emulator import RedcapEmulator, new_token
    from imt_etl.redcap.extract import extract_records

    xml = Path(__file__).parents[1] / "data" / "redcap_xml" / "redcapr_dag.xml"
    token = new_token()
    with RedcapEmulator(xml, token=token) as emulator:
        client = RedcapClient(emulator.url, token)
        meta = ProjectMeta.from_api(client)
        rows = [r for batch in extract_records(client, meta.dictionary, batch_size=2)
                for r in batch]
        expected = {rid: emulator.store.dag_of(rid) or None for rid in emulator.store.record_ids()}
    result = tidy_instruments(rows, meta)
    for frame in result.tables.values():
        assert "redcap_data_access_group" in frame.columns
        for rid, group in zip(frame["record_id"], frame["redcap_data_access_group"], strict=True):
            assert (None if pd.isna(group) else group) == expected[rid]
    assert any(expected.values())


def test_legacy_validation_names_int_and_float_are_typed():
    from imt_etl.redcap.dictionary import Field
    from imt_etl.redcap.tidy import field_kind

    assert field_kind(Field("a", "f", "text", validation="int")) == "integer"
    assert field_kind(Field("b", "f", "text", validation="float")) == "number"
