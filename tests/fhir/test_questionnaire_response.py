"""QuestionnaireResponse from REDCap rows: typed answers, hiding, missing codes, round trip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import fhirkit
import orjson
import pytest

from imt_etl.errors import FhirBuildError
from imt_etl.fhir import ids
from imt_etl.fhir.questionnaire import build_questionnaire, item_type
from imt_etl.fhir.questionnaire_response import (
    NULL_FLAVOR,
    answers_to_redcap,
    build_questionnaire_response,
    is_missing_code_system,
)
from imt_etl.fhir.validation import validate_r4, validate_r4b_model
from imt_etl.redcap.dictionary import Choice, DataDictionary, parse_choices
from imt_etl.studies.imt import load_reference_project, reference_errors

BASE = "https://example.org/fhir"
AUTHORED = "2024-05-01T10:00:00+02:00"
MISSING = (Choice("UNK", "Unknown"), Choice("XX", "Lab lost it"))
V = "text_validation_type_or_show_slider_number"

FIELDS = [
    {"field_name": "s", "field_type": "text"},
    {"field_name": "n", "field_type": "text", V: "integer"},
    {"field_name": "x", "field_type": "text", V: "number"},
    {"field_name": "x2", "field_type": "text",
     V: "number_2dp_comma_decimal"},
    {"field_name": "d", "field_type": "text", V: "date_dmy"},
    {"field_name": "dt", "field_type": "text",
     V: "datetime_ymd"},
    {"field_name": "dts", "field_type": "text",
     V: "datetime_seconds_ymd"},
    {"field_name": "tm", "field_type": "text", V: "time"},
    {"field_name": "note", "field_type": "notes", "section_header": "More"},
    {"field_name": "r", "field_type": "radio", "select_choices_or_calculations": "1, A | 2, B"},
    {"field_name": "yn", "field_type": "yesno"},
    {"field_name": "tf", "field_type": "truefalse"},
    {"field_name": "cb", "field_type": "checkbox",
     "select_choices_or_calculations": "1, A | 2, B | 3, C"},
    {"field_name": "sl", "field_type": "slider"},
    {"field_name": "c", "field_type": "calc", "select_choices_or_calculations": "[n] * 2"},
    {"field_name": "file", "field_type": "file"},
    {"field_name": "info", "field_type": "descriptive"},
    {"field_name": "shown", "field_type": "text", "branching_logic": "[yn] = '1'"},
    {"field_name": "unticked", "field_type": "text", "branching_logic": "[cb(3)] = '0'"},
    {"field_name": "nomiss", "field_type": "text", "field_annotation": "@NOMISSING"},
]
ROW = {
    "record_id": "7", "s": "hello", "n": "-3", "x": "2.50", "x2": "1,25", "d": "2024-02-29",
    "dt": "2024-07-01 08:05", "dts": "2024-01-15 23:59:07", "tm": "07:30", "note": "line1\nline2",
    "r": "2", "yn": "0", "tf": "1", "cb___1": "1", "cb___2": "0", "cb___3": "1", "sl": "55",
    "c": "-6", "file": "scan.pdf", "shown": "stale value", "unticked": "also hidden",
    "nomiss": "UNK", "f_complete": "2",
}


def dictionary() -> DataDictionary:
    rows = [{"field_name": "record_id", "field_type": "text"}, *FIELDS]
    return DataDictionary.from_metadata({"form_name": "f", **r} for r in rows)


@pytest.fixture(scope="module")
def small():
    dd = dictionary()
    q = build_questionnaire(dd, "f", canonical_base=BASE, version="2").resource
    return dd, q


def make(small, row, **kwargs):
    dd, q = small
    options = {"subject_ref": "Patient/p", "authored": AUTHORED, "id": "qr1",
               "missing_codes": MISSING, "timezone": "Europe/Warsaw", **kwargs}
    return build_questionnaire_response(q, row, dd, "f", **options)


def answers(qr: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    stack = list(qr.get("item", []))
    while stack:
        item = stack.pop()
        if "answer" in item:
            out[item["linkId"]] = item["answer"]
        stack.extend(item.get("item", []))
    return out


def test_answers_are_typed_per_item(small):
    got = answers(make(small, ROW))
    cs = f"{BASE}/CodeSystem"
    assert got["s"] == [{"valueString": "hello"}]
    assert got["n"] == [{"valueInteger": -3}]
    assert got["x"] == [{"valueDecimal": 2.5}]
    assert got["x2"] == [{"valueDecimal": 1.25}]
    assert got["d"] == [{"valueDate": "2024-02-29"}]
    assert got["dt"] == [{"valueDateTime": "2024-07-01T08:05:00+02:00"}]  # summer time
    assert got["dts"] == [{"valueDateTime": "2024-01-15T23:59:07+01:00"}]
    assert got["tm"] == [{"valueTime": "07:30:00"}]
    assert got["note"] == [{"valueString": "line1\nline2"}]
    assert got["r"] == [{"valueCoding": {"system": f"{cs}/r", "code": "2", "display": "B"}}]
    assert got["yn"] == [{"valueCoding": {"system": f"{cs}/redcap-yesno", "code": "0",
                                          "display": "No"}}]
    assert got["tf"][0]["valueCoding"]["code"] == "1"
    assert [a["valueCoding"]["code"] for a in got["cb"]] == ["1", "3"]
    assert got["sl"] == [{"valueInteger": 55}]
    assert got["c"] == [{"valueDecimal": -6}]
    assert got["file"] == [{"valueAttachment": {"title": "scan.pdf"}}]
    assert got["nomiss"] == [{"valueString": "UNK"}]  # @NOMISSING: a value, not a code
    assert "info" not in got and "record_id" not in got


def test_items_hidden_by_enable_when_are_omitted(small, caplog):
    with caplog.at_level("WARNING"):
        got = answers(make(small, ROW))
    assert "shown has a value but its enableWhen hides it" in caplog.text
    assert "shown" not in got  # [yn] is 0
    assert "unticked" not in got  # cb(3) is ticked
    shown = answers(make(small, {**ROW, "yn": "1", "cb___3": "0"}))
    assert shown["shown"] == [{"valueString": "stale value"}]
    assert shown["unticked"] == [{"valueString": "also hidden"}]


def test_groups_mirror_the_questionnaire_and_empty_ones_are_left_out(small):
    qr = make(small, ROW)
    assert [i["linkId"] for i in qr["item"]][-1] == "section-1"
    assert [i["linkId"] for i in qr["item"][-1]["item"]][:3] == ["note", "r", "yn"]
    bare = make(small, {"record_id": "7", "s": "only"})
    assert [i["linkId"] for i in bare["item"]] == ["s"]
    assert bare["status"] == "in-progress"
    empty = make(small, {"record_id": "7", "s": "", "cb___1": "0"})
    assert "item" not in empty


def test_header_fields(small):
    qr = make(small, ROW, encounter_ref="Encounter/e")
    assert qr["resourceType"] == "QuestionnaireResponse"
    assert qr["questionnaire"] == f"{BASE}/Questionnaire/f|2"
    assert (qr["id"], qr["status"], qr["authored"]) == ("qr1", "completed", AUTHORED)
    assert qr["subject"] == {"reference": "Patient/p"}
    assert qr["encounter"] == {"reference": "Encounter/e"}
    assert make(small, ROW, status="amended")["status"] == "amended"
    assert validate_r4(qr) == [] and validate_r4b_model(qr) == []


def test_missing_data_codes_become_codings(small):
    row = {"record_id": "7", "n": "UNK", "r": "XX", "cb___unk": "1", "cb___1": "1"}
    got = answers(make(small, row))
    assert got["n"] == [{"valueCoding": {"system": NULL_FLAVOR, "code": "UNK",
                                         "display": "Unknown"}}]
    assert got["r"] == [{"valueCoding": {
        "system": f"{BASE}/CodeSystem/redcap-missing-data-codes", "code": "XX",
        "display": "Lab lost it"}}]
    assert [a["valueCoding"]["code"] for a in got["cb"]] == ["1", "UNK"]
    assert is_missing_code_system(got["r"][0]["valueCoding"]["system"])
    assert not is_missing_code_system(f"{BASE}/CodeSystem/r")
    dd, q = small
    qr = make(small, row)
    assert answers_to_redcap(qr, q) == {"n": "UNK", "r": "XX", "cb___unk": "1", "cb___1": "1"}
    assert validate_r4(qr) == []


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("n", "8O", "an integer"), ("x", "1.2.3", "a number"), ("d", "2026-02-30", "date"),
    ("dt", "2024-01-01T10:00+01:00", "timezone-free"), ("tm", "25:00", "time"),
    ("r", "3", "one of the codes"), ("yn", "2", "one of the codes"),
])
def test_values_that_do_not_fit_raise(small, field, value, problem):
    with pytest.raises(FhirBuildError, match=problem) as caught:
        make(small, {"record_id": "7", field: value}, record="007")
    assert (caught.value.record, caught.value.field) == ("007", field)


def test_authored_needs_a_timezone(small):
    with pytest.raises(FhirBuildError, match="timezone"):
        make(small, ROW, authored="2024-05-01T10:00:00")


def test_inverse_restores_redcap_values(small):
    _, q = small
    back = answers_to_redcap(make(small, ROW), q, timezone="Europe/Warsaw")
    expected = {k: v for k, v in ROW.items()
                if v not in ("", "0") and k not in ("record_id", "f_complete", "shown", "unticked")}
    expected["yn"] = "0"  # a yes/no "0" is an answer; only checkbox "0"s mean "not ticked"
    expected["x"] = "2.5"  # numbers round-trip by value; fixed-dp validations keep their digits
    assert back == expected
    # Another offset for the same instant is converted back to REDCap's local time.
    moved = {"resourceType": "QuestionnaireResponse", "item": [
        {"linkId": "dt", "answer": [{"valueDateTime": "2024-07-01T06:05:00Z"}]}]}
    assert answers_to_redcap(moved, q, timezone="Europe/Warsaw") == {"dt": "2024-07-01 08:05"}


# --- the reference project -------------------------------------------------------------------


def _form_has_data(values: dict[str, str], columns: list[str]) -> bool:
    return any(values.get(c, "") not in ("", "0") or (values.get(c) == "0" and "___" not in c)
               for c in columns)


@pytest.fixture(scope="module")
def reference():
    """Every QuestionnaireResponse of the reference data, with the values it came from."""
    project = load_reference_project()
    dd = project.dictionary
    questionnaires = {
        form: build_questionnaire(dd, form, canonical_base=BASE, version="1.0.0").resource
        for form in dd.forms
    }
    missing = parse_choices("missing_data_codes", project.missing_data_codes)
    built, failed = [], []
    for row in project.rows:
        forms = [row.repeat_instrument] if row.repeat_instrument else (
            project.forms_for_event(row.event))
        for form in forms:
            columns = [c for f in dd.form_fields(form) if f.name != dd.record_id_field
                       for c in f.export_columns] + [f"{form}_complete"]
            if not _form_has_data(row.values, columns):
                continue
            qr_id = ids.questionnaire_response_id("imt", row.record, row.event, form,
                                                  row.repeat_instance)
            try:
                qr = build_questionnaire_response(
                    questionnaires[form], row.values, dd, form,
                    subject_ref=f"Patient/{ids.patient_id('imt', row.record)}",
                    encounter_ref=f"Encounter/{ids.encounter_id('imt', row.record, row.event)}",
                    authored=AUTHORED, id=qr_id, missing_codes=missing,
                    timezone="Europe/Warsaw", record=row.record)
            except FhirBuildError as exc:
                failed.append((row.record, row.event, form, row.repeat_instance, exc.field))
                continue
            built.append((qr, form, {c: row.values[c] for c in columns if c in row.values}))
    return project, questionnaires, built, failed


def test_reference_misfits_are_exactly_the_planted_type_errors(reference):
    _, _, built, failed = reference
    planted = {(e.record, e.event, e.instrument, e.repeat_instance, e.field)
               for e in reference_errors() if e.intended_rule.startswith("dict.")}
    assert len(planted) == 3
    assert set(failed) == planted
    assert len(built) > 3000


def test_reference_ids_are_distinct(reference):
    _, _, built, _ = reference
    assert len({qr["id"] for qr, _, _ in built}) == len(built)


def _shape(value: Any) -> Any:
    """The structure of a resource without its values: same shape, same validity by construction."""
    if isinstance(value, dict):
        return tuple((k, _shape(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_shape(v) for v in value)
    return type(value).__name__


def test_reference_responses_pass_both_validators(reference):
    _, _, built, _ = reference
    shapes: dict[Any, dict[str, Any]] = {}
    for qr, _, _ in built:
        # fhirkit on every response checks each value's format (dates, codes, numbers) ...
        assert [i.message for i in fhirkit.validate(orjson.dumps(qr))
                if i.severity == "error"] == [], qr["id"]
        shapes.setdefault(_shape(qr), qr)
    # ... and each distinct structure also goes through the HL7 schema and the R4B models.
    assert len(shapes) > 50
    for qr in shapes.values():
        assert validate_r4(qr) == [], qr["id"]
        assert validate_r4b_model(qr) == [], qr["id"]


def _same(field_type: str, expected: str, got: str | None) -> bool:
    if got == expected:
        return True
    if got is None or field_type not in ("decimal",):
        return False
    return Decimal(got) == Decimal(expected)  # "2.60" comes back as "2.6"


def test_round_trip_every_field_of_every_row(reference):
    project, questionnaires, built, _ = reference
    dd = project.dictionary
    compared = 0
    for qr, form, values in built:
        back = answers_to_redcap(qr, questionnaires[form], timezone="Europe/Warsaw")
        expected = {c: v for c, v in values.items()
                    if v != "" and not c.endswith("_complete") and not (
                        "___" in c and v == "0")}
        assert set(back) == set(expected), (qr["id"], set(back) ^ set(expected))
        for column, value in expected.items():
            kind = item_type(dd.field(column.split("___")[0]))
            assert _same(kind, value, back[column]), (qr["id"], column, value, back[column])
            compared += 1
    assert compared > 25_000
