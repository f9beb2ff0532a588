"""Tests for reading and writing REDCap project XML against real REDCap exports."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from imt_etl.errors import ProjectXmlError
from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.model import (
    Arm,
    DataAccessGroup,
    Event,
    ProjectDefinition,
    RecordRow,
    RepeatingSetup,
)
from imt_etl.redcap.project_xml import read_project_xml, write_project_xml

DATA = Path(__file__).parents[1] / "data" / "redcap_xml"
FIXTURES = sorted(DATA.glob("*.xml"))
# fixture stem -> (fields, arms, events, records, rows), counted by hand from each file.
COUNTS = {
    "redcapr_dag": (15, 0, 0, 3, 3),
    "redcapr_repeating_sparse": (11, 0, 0, 5, 9),
    "redcapr_arm_multiple": (3, 3, 3, 20, 56),
}
MODEL_FIELDS = ("title", "dictionary", "arms", "events", "form_event_mapping", "repeating",
                "missing_data_codes", "data_access_groups", "record_dags", "rows", "settings",
                "source_system_version")


def assert_same_project(a: ProjectDefinition, b: ProjectDefinition) -> None:
    for name in MODEL_FIELDS:
        assert getattr(a, name) == getattr(b, name), name
    # Field equality ignores parsed choices (compare=False): check them explicitly.
    assert [f.choices for f in a.dictionary.fields] == [f.choices for f in b.dictionary.fields]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_counts(path: Path) -> None:
    project = read_project_xml(path)
    fields, arms, events, records, rows = COUNTS[path.stem]
    assert len(project.dictionary.fields) == fields
    assert len(project.arms) == arms
    assert len(project.events) == events
    assert len(project.record_ids()) == records
    assert len(project.rows) == rows


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_round_trip_is_stable(path: Path) -> None:
    project = read_project_xml(path)
    written = write_project_xml(project)
    again = read_project_xml(written)
    assert_same_project(project, again)
    assert write_project_xml(again) == written


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.with_suffix(".csv").exists()],
                         ids=lambda p: p.stem)
def test_rows_match_the_csv_redcap_exported(path: Path) -> None:
    project = read_project_xml(path)
    record_id = project.record_id_field
    with path.with_suffix(".csv").open(newline="", encoding="utf-8") as fh:
        expected = []
        for line in csv.DictReader(fh):
            instance = line.pop("redcap_repeat_instance", "")
            key = (line[record_id], line.pop("redcap_event_name", ""),
                   line.pop("redcap_repeat_instrument", ""), int(instance) if instance else None)
            # The XML carries the record id only on non-repeating rows; the CSV on all.
            values = {k: v for k, v in line.items() if v and not (k == record_id and key[2])}
            expected.append((key, values))
    assert [(r.key, r.values) for r in project.rows] == expected


def test_dag_fixture() -> None:
    project = read_project_xml(DATA / "redcapr_dag.xml")
    assert project.title == "REDCapR: dag"
    assert project.data_access_groups == [DataAccessGroup("daga", "dag-a"),
                                          DataAccessGroup("dagb", "dag-b")]
    assert project.record_dags == {"331-1": "daga", "331-2": "daga", "332-3": "dagb"}
    assert not project.is_longitudinal
    d = project.dictionary
    assert d.record_id_field == "record_id"
    assert d.field("address").field_type == "notes"  # REDCap writes textarea
    assert d.field("race").field_type == "dropdown"  # and select
    assert [c.label for c in d.field("sex").choices] == ["Female", "Male"]
    assert d.field("age").choices_or_calc == "rounddown(datediff([dob],'today','y'))"
    height = d.field("height")
    assert (height.validation, height.validation_min, height.validation_max) == ("float", "130",
                                                                                 "215")
    assert d.field("telephone").note == "Include Area Code"
    assert d.field("first_name").section_header == "Contact Information"
    assert d.field("first_name").identifier and not d.field("age").identifier
    assert d.field("ethnicity").custom_alignment == "LH"
    assert not d.has_field("demographics_complete")
    assert project.settings["form_label:demographics"] == "Basic Demography Form"


def test_repeating_fixture_maps_instances() -> None:
    project = read_project_xml(DATA / "redcapr_repeating_sparse.xml")
    # The classic project's repeating setup names "event_1_arm_1"; the model uses "".
    assert project.repeating == [RepeatingSetup("", "bp", "[record_id]-[date_bp]")]
    keys = [r.key for r in project.rows if r.record == "1"]
    assert keys == [("1", "", "", None), ("1", "", "bp", 1), ("1", "", "bp", 2),
                    ("1", "", "bp", 3)]


def test_multi_arm_fixture() -> None:
    project = read_project_xml(DATA / "redcapr_arm_multiple.xml")
    assert project.arms == [Arm(1, "Arm 1"), Arm(2, "Arm 2"), Arm(3, "Arm 3")]
    assert project.events[1] == Event("event_1_arm_2", "Event 1", 2, day_offset=1)
    assert (2, "event_1_arm_2", "demographics") in project.form_event_mapping
    assert project.forms_for_event("event_1_arm_3") == ["demographics"]


def _metadata(name: str, form: str, field_type: str, **extra: str) -> dict[str, str]:
    return {"field_name": name, "form_name": form, "field_type": field_type,
            "field_label": extra.pop("label", name), **extra}


def synthetic_project() -> ProjectDefinition:
    """A longitudinal project using what the fixtures lack: checkboxes, sliders, HTML, DAGs."""
    dictionary = DataDictionary.from_metadata([
        _metadata("record_id", "enrolment", "text"),
        _metadata("consent_dt", "enrolment", "text", label="Consent <b>date</b>",
                  text_validation_type_or_show_slider_number="datetime_ymd",
                  required_field="y", field_note="24h clock"),
        _metadata("symptoms", "enrolment", "checkbox", section_header="Symptoms",
                  select_choices_or_calculations="1, Dyspnoea | 2, Cough | 99, Other <i>x</i>",
                  branching_logic="[consent_dt] <> ''\n and 1=1", matrix_group_name="",
                  field_annotation="@HIDDEN-SURVEY"),
        _metadata("borg", "enrolment", "slider",
                  select_choices_or_calculations="None | Moderate | Maximal",
                  text_validation_type_or_show_slider_number="number"),
        _metadata("info", "enrolment", "descriptive", label="Read & sign"),
        _metadata("mip", "visit", "text", text_validation_type_or_show_slider_number="number_1dp",
                  text_validation_min="0", text_validation_max="250", question_number="2a"),
        _metadata("mip_pct", "visit", "calc", select_choices_or_calculations="[mip]/100",
                  identifier="y"),
        _metadata("side", "visit", "radio", select_choices_or_calculations="L, Left | R, Right",
                  custom_alignment="RH", matrix_group_name="m1", matrix_ranking="y"),
        _metadata("ae_term", "ae", "notes"),
        _metadata("ae_ok", "ae", "yesno"),
    ])
    events = [Event("screening_arm_1", "Screening", 1), Event("week_4_arm_1", "Week 4", 1, 28, 2,
                                                              3, "W4"),
              Event("screening_arm_2", "Screening", 2, 0.5)]
    rows = [
        RecordRow("001", "screening_arm_1", values={
            "record_id": "001", "consent_dt": "2024-05-01 09:30", "symptoms___1": "1",
            "symptoms___99": "1", "borg": "40", "enrolment_complete": "2"}),
        RecordRow("001", "screening_arm_1", "ae", 1, {"ae_term": "Sore\nthroat", "ae_ok": "0"}),
        RecordRow("001", "screening_arm_1", "ae", 2, {"ae_term": "Cramp & \"pain\"",
                                                      "ae_complete": "1"}),
        RecordRow("001", "week_4_arm_1", "", 1, {"mip": "88.5", "mip_pct": "0.885"}),
        RecordRow("001", "week_4_arm_1", "", 2, {"mip": "90.1", "visit_complete": "0"}),
        RecordRow("002", "screening_arm_2", values={"record_id": "002", "symptoms___2": "1"}),
    ]
    return ProjectDefinition(
        title="IMT <pilot> & 'co'",
        dictionary=dictionary,
        arms=[Arm(1, "Training"), Arm(2, "Sham")],
        events=events,
        form_event_mapping=[(1, "screening_arm_1", "enrolment"), (1, "screening_arm_1", "ae"),
                            (1, "week_4_arm_1", "visit"), (2, "screening_arm_2", "enrolment")],
        repeating=[RepeatingSetup("screening_arm_1", "ae", "[ae_term]"),
                   RepeatingSetup("week_4_arm_1", "")],
        missing_data_codes="UNK, Unknown | NA, Not applicable",
        data_access_groups=[DataAccessGroup("site_a", "Site A"), DataAccessGroup("x1", "Other")],
        record_dags={"001": "site_a"},
        rows=rows,
        settings={"purpose": "2", "creation_datetime": "2025-02-03T04:05:06",
                  "form_label:ae": "Adverse events"},
        source_system_version="14.5.10",
    )


def test_synthetic_round_trip_and_determinism() -> None:
    project = synthetic_project()
    written = write_project_xml(project)
    assert written == write_project_xml(synthetic_project())
    assert_same_project(project, read_project_xml(written))
    text = written.decode()
    assert 'CreationDateTime="2025-02-03T04:05:06"' in text
    choices = "1, Dyspnoea | 2, Cough | 99, Other &lt;i&gt;x&lt;/i&gt;"
    assert f'redcap:CheckboxChoices="{choices}"' in text
    assert '<ItemData ItemOID="symptoms___2" Value="0"/>' in text  # unticked boxes, as REDCap
    assert 'Value="2024-05-01T09:30"' in text  # datetimes get a "T"
    assert '<redcap:RepeatingEvent redcap:UniqueEventName="week_4_arm_1"/>' in text
    assert 'StudyEventRepeatKey="2" redcap:UniqueEventName="week_4_arm_1"' in text
    assert '<TranslatedText>Consent date</TranslatedText>' in text


def test_classic_project_without_data_round_trips() -> None:
    project = replace(synthetic_project(), events=[], arms=[], form_event_mapping=[],
                      repeating=[RepeatingSetup("", "ae")], rows=[], record_dags={},
                      data_access_groups=[], settings={})
    again = read_project_xml(write_project_xml(project))
    assert_same_project(project, again)
    assert b"<ClinicalData" in write_project_xml(project)


def test_writer_rejects_rows_that_do_not_fit() -> None:
    project = synthetic_project()
    project.rows.append(RecordRow("003", "screening_arm_2", values={"mip": "1"}))
    with pytest.raises(ProjectXmlError, match="record '003'.*'visit'.*not designated"):
        write_project_xml(project)
    project.rows[-1] = RecordRow("003", "screening_arm_2", values={"nope": "1"})
    with pytest.raises(ProjectXmlError, match="unknown field 'nope'"):
        write_project_xml(project)


def test_source_may_be_path_text_or_bytes() -> None:
    path = DATA / "redcapr_dag.xml"
    by_path = read_project_xml(str(path))
    assert read_project_xml(path.read_bytes()).rows == by_path.rows
    assert read_project_xml(path.read_text(encoding="utf-8")).rows == by_path.rows


@pytest.fixture
def dag_xml() -> str:
    return (DATA / "redcapr_dag.xml").read_text(encoding="utf-8")


def test_truncated_file(dag_xml: str) -> None:
    with pytest.raises(ProjectXmlError, match="<bytes>: not well-formed XML"):
        read_project_xml(dag_xml[: len(dag_xml) // 2].encode())


def test_not_xml(tmp_path: Path) -> None:
    path = tmp_path / "export.xml"
    path.write_text("record_id,name\n1,a\n")
    with pytest.raises(ProjectXmlError, match="export.xml: not well-formed XML"):
        read_project_xml(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProjectXmlError, match="cannot be read"):
        read_project_xml(tmp_path / "absent.xml")


def test_not_odm() -> None:
    with pytest.raises(ProjectXmlError, match="expected ODM"):
        read_project_xml(b"<project><title>x</title></project>")


def test_missing_metadataversion(dag_xml: str) -> None:
    start = dag_xml.index("<MetaDataVersion")
    end = dag_xml.index("</MetaDataVersion>") + len("</MetaDataVersion>")
    with pytest.raises(ProjectXmlError, match="<MetaDataVersion> is missing from <Study>"):
        read_project_xml(dag_xml[:start] + dag_xml[end:])


def test_missing_item_def(dag_xml: str) -> None:
    broken = dag_xml.replace('<ItemDef OID="email"', '<ItemDef OID="e_mail"')
    with pytest.raises(ProjectXmlError, match="ItemDef OID='email'.*missing"):
        read_project_xml(broken)


def test_bad_checkbox_choices() -> None:
    xml = write_project_xml(synthetic_project()).decode()
    with pytest.raises(ProjectXmlError, match="field 'symptoms'.*not 'code, label'"):
        read_project_xml(xml.replace("1, Dyspnoea | 2, Cough", "1, Dyspnoea | Cough"))
    with pytest.raises(ProjectXmlError, match="checkbox field 'symptoms'.*CheckboxChoices"):
        read_project_xml(xml.replace(" redcap:CheckboxChoices=", " redcap:Other="))


def test_unknown_item_data_names_the_record(dag_xml: str) -> None:
    broken = dag_xml.replace('ItemOID="first_name" Value="bb"', 'ItemOID="nick" Value="bb"')
    with pytest.raises(ProjectXmlError, match="record '331-2'.*'nick'"):
        read_project_xml(broken)


def test_entities_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    with pytest.raises(ProjectXmlError, match="DOCTYPE/ENTITY"):
        read_project_xml(bomb)
