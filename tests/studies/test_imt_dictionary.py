"""The IMT reference data dictionary and design: loadable, complete, every REDCap feature used."""

from __future__ import annotations

import csv

import pytest

from imt_etl.redcap.dictionary import CSV_HEADERS, DataDictionary
from imt_etl.redcap.logic import parse_logic, referenced_fields
from imt_etl.studies.imt import design

FORMS = [
    "enrollment", "respiratory_muscle_strength", "spirometry", "diaphragm_ultrasound",
    "six_minute_walk", "fatigue_severity_scale", "sf36", "myositis_core_set", "imt_prescription",
    "training_diary", "phone_followup", "adverse_events", "study_completion",
]


@pytest.fixture(scope="module")
def dictionary() -> DataDictionary:
    with open(design.DICTIONARY_PATH, newline="", encoding="utf-8") as handle:
        return DataDictionary.from_csv_rows(csv.DictReader(handle))


def test_csv_has_redcap_import_headers():
    with open(design.DICTIONARY_PATH, newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == CSV_HEADERS


def test_instruments_in_order_record_id_first(dictionary):
    assert dictionary.forms == FORMS
    assert dictionary.record_id_field == "record_id"
    assert dictionary.fields[0].form == "enrollment"


def test_every_field_type_and_validation_is_used(dictionary):
    types = {f.field_type for f in dictionary.fields}
    assert {"text", "notes", "dropdown", "radio", "checkbox", "yesno", "truefalse", "calc",
            "slider", "descriptive"} <= types
    validations = {f.validation for f in dictionary.fields if f.field_type == "text"}
    assert {"date_ymd", "datetime_ymd", "integer", "number", "email"} <= validations
    ranged = [f for f in dictionary.fields if f.validation_min and f.validation_max]
    assert len(ranged) > 30
    assert any(f.required for f in dictionary.fields)
    assert any(f.section_header for f in dictionary.fields)
    assert any(f.note for f in dictionary.fields)
    annotations = " ".join(f.annotation for f in dictionary.fields)
    for tag in ("@HIDDEN-SURVEY", "@DEFAULT", "@NOW", "@TODAY", "@READONLY"):
        assert tag in annotations


def test_identifiers_flagged(dictionary):
    flagged = {f.name for f in dictionary.fields if f.identifier}
    assert flagged == {"first_name", "last_name", "mrn", "phone", "email", "dob"}
    assert dictionary.field("email").validation == "email"
    assert dictionary.field("dob").validation == "date_ymd"


def test_criteria_and_eligibility(dictionary):
    enrollment = {f.name: f for f in dictionary.form_fields("enrollment")}
    inclusion = [n for n in enrollment if n.startswith("inc_")]
    exclusion = [n for n in enrollment if n.startswith("exc_")]
    assert len(inclusion) == 5 and len(exclusion) == 6
    assert all(enrollment[n].field_type == "yesno" for n in inclusion + exclusion)
    eligible = parse_logic(enrollment["eligible"].choices_or_calc)
    assert referenced_fields(eligible) == set(inclusion + exclusion)
    assert len(dictionary.field("iim_subtype").choices) >= 7


def test_matrix_groups(dictionary):
    fss = [f for f in dictionary.fields if f.matrix_group == "fss"]
    assert [f.name for f in fss] == [f"fss_{i}" for i in range(1, 10)]
    assert all([c.code for c in f.choices] == [str(i) for i in range(1, 8)] for f in fss)
    sf36 = [f for f in dictionary.form_fields("sf36") if f.name != "sf36_date"]
    assert [f.name for f in sf36] == [f"sf36_{i:02d}" for i in range(1, 37)]
    groups = {f.matrix_group for f in sf36 if f.matrix_group}
    assert groups == {"sf36_pf", "sf36_rp", "sf36_re", "sf36_ew", "sf36_gh"}
    # Fields of one matrix group must share their choices and sit next to each other.
    for group in groups | {"fss"}:
        members = [i for i, f in enumerate(dictionary.fields) if f.matrix_group == group]
        assert members == list(range(members[0], members[-1] + 1))
        assert len({dictionary.fields[i].choices_or_calc for i in members}) == 1


@pytest.mark.parametrize(("item", "codes"), [
    (1, 5), (2, 5), (3, 3), (12, 3), (13, 2), (19, 2), (20, 5), (21, 6), (22, 5), (23, 6),
    (31, 6), (32, 5), (33, 5), (36, 5),
])
def test_sf36_response_codes_follow_rand36(dictionary, item, codes):
    field = dictionary.field(f"sf36_{item:02d}")
    assert [c.code for c in field.choices] == [str(i) for i in range(1, codes + 1)]


def test_all_logic_parses_and_references_known_fields(dictionary):
    names = {f.name for f in dictionary.fields}
    for f in dictionary.fields:
        for text in (f.branching_logic, f.choices_or_calc if f.field_type == "calc" else ""):
            if text:
                assert referenced_fields(parse_logic(text, field=f.name)) <= names, f.name
    assert dictionary.field("diary_symptoms_other").branching_logic == "[diary_symptoms(5)] = '1'"
    assert dictionary.field("mwt_n_stops").branching_logic == "[mwt_stops] = '1'"
    assert dictionary.field("fvc_pct_pred").branching_logic == "[pred_available] = '1'"


def test_checkbox_and_slider(dictionary):
    symptoms = dictionary.field("diary_symptoms")
    assert symptoms.export_columns == [f"diary_symptoms___{i}" for i in range(1, 6)]
    slider = dictionary.field("mwt_effort")
    assert slider.field_type == "slider" and slider.choices_or_calc.count("|") == 2


def test_design_events_mapping_and_repeating():
    project = design.empty_project()
    assert [a.name for a in project.arms] == ["Arm 1"]
    assert [e.unique_event_name for e in project.events] == [
        "screening_arm_1", "baseline_arm_1", "training_arm_1", "month_3_arm_1",
        "month_6_arm_1", "month_12_arm_1",
    ]
    offsets = [e.day_offset for e in project.events]
    assert offsets == sorted(offsets) and offsets[0] == -90 and offsets[-1] == 365
    training = project.events[2]
    assert (training.day_offset - training.offset_min, training.day_offset + training.offset_max) \
        == (0, 90)
    assert project.forms_for_event("screening_arm_1")[0] == "enrollment"
    assert project.forms_for_event("baseline_arm_1")[-1] == "imt_prescription"
    assert project.forms_for_event("training_arm_1") == [
        "training_diary", "phone_followup", "adverse_events"]
    assert project.repeating_forms("training_arm_1") == set(design.REPEATING_FORMS)
    for event in design.ASSESSMENT_EVENTS:
        assert set(design.ASSESSMENT_FORMS) <= set(project.forms_for_event(event))
    assert project.forms_for_event("month_12_arm_1")[-1] == "study_completion"
    mapped_forms = {form for _, _, form in project.form_event_mapping}
    assert mapped_forms == set(FORMS)
    assert project.missing_data_codes == "UNK, Unknown | NASK, Not asked | NA, Not applicable"


def test_form_date_fields_exist(dictionary):
    for form, name in design.FORM_DATE_FIELDS.items():
        assert dictionary.field(name).form == form
        assert dictionary.field(name).validation == "date_ymd"
