"""Questionnaire from the data dictionary: items per field type, groups, enableWhen, calc."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest

from imt_etl.errors import DictionaryError
from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.fhir.questionnaire import (
    EXT_CALCULATED,
    EXT_ENTRY_FORMAT,
    EXT_HIDDEN,
    EXT_ITEM_CONTROL,
    EXT_MAX,
    EXT_MIN,
    EXT_REGEX,
    EXT_SLIDER_STEP,
    EXT_UNIT,
    build_questionnaire,
    questionnaire_name,
)
from imt_etl.fhir.validation import validate_r4, validate_r4b_model
from imt_etl.redcap.dictionary import DataDictionary

ROOT = Path(__file__).resolve().parents[2]
DICTIONARY_CSV = ROOT / "imt_etl" / "studies" / "imt" / "data_dictionary.csv"
BASE = "https://example.org/fhir"
RC_EXT = f"{BASE}/StructureDefinition/redcap-field"


def make_dictionary(*rows: dict[str, str]) -> DataDictionary:
    """A one-form dictionary `f` with a record id field first; rows give field_name, type etc."""
    base = [{"field_name": "record_id", "form_name": "f", "field_type": "text",
             "field_label": "Record ID"}]
    return DataDictionary.from_metadata(base + [{"form_name": "f", **r} for r in rows])


def build(*rows: dict[str, str], **kwargs: Any):
    return build_questionnaire(make_dictionary(*rows), "f", canonical_base=BASE, version="1.0",
                               **kwargs)


def items_by_link(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for item in items:
        out[item["linkId"]] = item
        out.update(items_by_link(item.get("item", [])))
    return out


def ext(item: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in item.get("extension", []) if e["url"] == url), None)


def control(item: dict[str, Any]) -> str | None:
    found = ext(item, EXT_ITEM_CONTROL)
    return found["valueCodeableConcept"]["coding"][0]["code"] if found else None


def redcap(item: dict[str, Any]) -> dict[str, Any]:
    found = ext(item, RC_EXT)
    assert found is not None
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value"))
            for e in found["extension"]}


def one_item(**row: str) -> dict[str, Any]:
    q = build({"field_name": "x", "field_label": "X", **row}).resource
    return items_by_link(q["item"])["x"]


# --- each field type ----------------------------------------------------------------------------

FIELD_TYPES = [
    # (field_type, validation, choices, expected type, expected itemControl, entryFormat)
    ("text", "", "", "string", None, None),
    ("text", "integer", "", "integer", None, None),
    ("text", "number", "", "decimal", None, None),
    ("text", "number_2dp", "", "decimal", None, None),
    ("text", "date_ymd", "", "date", None, "YYYY-MM-DD"),
    ("text", "date_dmy", "", "date", None, "DD-MM-YYYY"),
    ("text", "datetime_ymd", "", "dateTime", None, "YYYY-MM-DD HH:MM"),
    ("text", "datetime_seconds_mdy", "", "dateTime", None, "MM-DD-YYYY HH:MM:SS"),
    ("text", "time", "", "time", None, "HH:MM"),
    ("text", "email", "", "string", None, None),
    ("text", "phone", "", "string", None, None),
    ("notes", "", "", "text", None, None),
    ("radio", "", "1, A | 2, B", "choice", "radio-button", None),
    ("dropdown", "", "1, A | 2, B", "choice", "drop-down", None),
    ("yesno", "", "", "choice", "radio-button", None),
    ("truefalse", "", "", "choice", "radio-button", None),
    ("checkbox", "", "1, A | 2, B", "choice", "check-box", None),
    ("slider", "", "Low | Mid | High", "integer", "slider", None),
    ("calc", "", "1 + 1", "decimal", None, None),
    ("file", "", "", "attachment", None, None),
    ("signature", "", "", "attachment", None, None),
    ("sql", "", "", "string", None, None),
    ("descriptive", "", "", "display", None, None),
]


@pytest.mark.parametrize(("ftype", "validation", "choices", "rtype", "ctrl", "fmt"), FIELD_TYPES)
def test_field_type_to_item(ftype, validation, choices, rtype, ctrl, fmt):
    item = one_item(field_type=ftype, text_validation_type_or_show_slider_number=validation,
                    select_choices_or_calculations=choices)
    assert item["type"] == rtype
    assert item["text"] == "X"
    assert control(item) == ctrl
    entry = ext(item, EXT_ENTRY_FORMAT)
    assert (entry["valueString"] if entry else None) == fmt
    assert item.get("repeats", False) is (ftype == "checkbox")
    assert item.get("readOnly", False) is (ftype == "calc")
    if rtype == "display":
        assert "extension" not in item and "code" not in item
    else:
        assert redcap(item)["fieldType"] == ftype
        assert redcap(item).get("validation", "") == validation


def test_choices_carry_codes_in_a_per_field_system():
    item = one_item(field_type="radio", select_choices_or_calculations="1, One | 9, Nine",
                    field_annotation="@DEFAULT='9'")
    assert item["answerOption"] == [
        {"valueCoding": {"system": f"{BASE}/CodeSystem/x", "code": "1", "display": "One"}},
        {"valueCoding": {"system": f"{BASE}/CodeSystem/x", "code": "9", "display": "Nine"},
         "initialSelected": True},
    ]


@pytest.mark.parametrize(("ftype", "labels"), [("yesno", ["Yes", "No"]),
                                               ("truefalse", ["True", "False"])])
def test_yesno_and_truefalse_share_a_system(ftype, labels):
    item = one_item(field_type=ftype)
    codings = [o["valueCoding"] for o in item["answerOption"]]
    assert [c["code"] for c in codings] == ["1", "0"]
    assert [c["display"] for c in codings] == labels
    assert {c["system"] for c in codings} == {f"{BASE}/CodeSystem/redcap-{ftype}"}


def test_checkbox_is_one_repeating_choice_item():
    q = build({"field_name": "cb", "field_type": "checkbox", "field_label": "Pick",
               "select_choices_or_calculations": "1, A | 2, B | 3, C"}).resource
    assert [i["linkId"] for i in q["item"]] == ["cb"]
    assert q["item"][0]["repeats"] is True
    assert [o["valueCoding"]["code"] for o in q["item"][0]["answerOption"]] == ["1", "2", "3"]


def test_slider_extensions_and_labels():
    item = one_item(field_type="slider", select_choices_or_calculations="Low | Mid | High",
                    text_validation_min="10")
    assert ext(item, EXT_MIN) == {"url": EXT_MIN, "valueInteger": 10}
    assert ext(item, EXT_MAX) == {"url": EXT_MAX, "valueInteger": 100}
    assert ext(item, EXT_SLIDER_STEP)["valueInteger"] == 1
    assert item["item"][0]["type"] == "display"
    assert "Low | Mid | High" in item["item"][0]["text"]


@pytest.mark.parametrize(("validation", "low", "high", "key", "vlow", "vhigh"), [
    ("integer", "0", "250", "valueInteger", 0, 250),
    ("number", "0.5", "9", "valueDecimal", 0.5, 9),
    ("date_ymd", "2020-01-01", "today", "valueDate", "2020-01-01", None),
])
def test_min_max(validation, low, high, key, vlow, vhigh):
    item = one_item(field_type="text", text_validation_type_or_show_slider_number=validation,
                    text_validation_min=low, text_validation_max=high)
    assert ext(item, EXT_MIN)[key] == vlow
    assert (ext(item, EXT_MAX) or {}).get(key) == vhigh


def test_bad_min_is_a_dictionary_error():
    with pytest.raises(DictionaryError, match="'x'"):
        one_item(field_type="text", text_validation_type_or_show_slider_number="integer",
                 text_validation_min="abc")


def test_required_note_readonly_hidden_identifier_regex():
    item = one_item(field_type="text", text_validation_type_or_show_slider_number="email",
                    required_field="y", field_note="work address", identifier="y",
                    field_annotation="@READONLY @HIDDEN")
    assert item["required"] is True and item["readOnly"] is True
    assert ext(item, EXT_HIDDEN)["valueBoolean"] is True
    assert ext(item, EXT_REGEX)["valueString"].startswith("^")
    assert redcap(item)["identifier"] is True
    note = item["item"][0]
    assert (note["linkId"], note["type"], note["text"]) == ("x-note", "display", "work address")
    assert control(note) == "lower"


def test_not_an_identifier_has_no_flag_and_html_is_stripped():
    item = one_item(field_type="text", field_label="<b>Bold</b>  label", question_number="3a")
    assert "identifier" not in redcap(item)
    assert item["text"] == "Bold label"
    assert item["prefix"] == "3a"


def test_record_id_excluded_and_header_fields():
    q = build({"field_name": "a", "field_type": "text"}, form_label="My form",
              date="2026-01-02", status="draft").resource
    assert [i["linkId"] for i in q["item"]] == ["a"]
    assert q["url"] == f"{BASE}/Questionnaire/f"
    assert (q["version"], q["name"], q["title"], q["status"], q["date"]) == (
        "1.0", "F", "My form", "draft", "2026-01-02")
    assert q["subjectType"] == ["Patient"]


def test_unknown_form_is_an_error():
    with pytest.raises(DictionaryError):
        build_questionnaire(make_dictionary(), "nope", canonical_base=BASE, version="1")


@pytest.mark.parametrize(("form", "name"), [("six_minute_walk", "SixMinuteWalk"),
                                            ("sf36", "Sf36"), ("2nd_visit", "Q2ndVisit")])
def test_computable_name(form, name):
    assert questionnaire_name(form) == name


def test_sections_and_matrix_groups_nest():
    q = build(
        {"field_name": "a", "field_type": "text"},
        {"field_name": "b", "field_type": "text", "section_header": "Part <i>one</i>"},
        {"field_name": "m1", "field_type": "radio", "select_choices_or_calculations": "1, x",
         "matrix_group_name": "grid"},
        {"field_name": "m2", "field_type": "radio", "select_choices_or_calculations": "1, x",
         "matrix_group_name": "grid"},
        {"field_name": "c", "field_type": "text"},
        {"field_name": "m3", "field_type": "radio", "select_choices_or_calculations": "1, x",
         "matrix_group_name": "grid2", "section_header": "Part two"},
    ).resource
    shape = [(i["linkId"], [(c["linkId"], [g["linkId"] for g in c.get("item", [])])
                            for c in i.get("item", [])]) for i in q["item"]]
    assert shape == [
        ("a", []),
        ("section-1", [("b", []), ("matrix-grid", ["m1", "m2"]), ("c", [])]),
        ("section-2", [("matrix-grid2", ["m3"])]),
    ]
    assert q["item"][1]["text"] == "Part one"
    assert control(q["item"][1]["item"][1]) == "table"


# --- branching logic ----------------------------------------------------------------------------

LOGIC_FIELDS = (
    {"field_name": "r", "field_type": "radio", "select_choices_or_calculations": "1, A | 2, B"},
    {"field_name": "yn", "field_type": "yesno"},
    {"field_name": "n", "field_type": "text",
     "text_validation_type_or_show_slider_number": "integer"},
    {"field_name": "dec", "field_type": "text",
     "text_validation_type_or_show_slider_number": "number"},
    {"field_name": "d", "field_type": "text",
     "text_validation_type_or_show_slider_number": "date_ymd"},
    {"field_name": "t", "field_type": "text"},
    {"field_name": "cb", "field_type": "checkbox", "select_choices_or_calculations": "1, A | 2, B"},
)
R = f"{BASE}/CodeSystem/r"
CB = f"{BASE}/CodeSystem/cb"
YN = f"{BASE}/CodeSystem/redcap-yesno"

ENABLE_WHEN = [
    ("[r] = '2'", [{"question": "r", "operator": "=",
                    "answerCoding": {"system": R, "code": "2", "display": "B"}}], None),
    ("[r] <> '1'", [{"question": "r", "operator": "!=",
                     "answerCoding": {"system": R, "code": "1", "display": "A"}}], None),
    ("[yn] = '1'", [{"question": "yn", "operator": "=",
                     "answerCoding": {"system": YN, "code": "1", "display": "Yes"}}], None),
    ("[n] > 5", [{"question": "n", "operator": ">", "answerInteger": 5}], None),
    ("5 <= [n]", [{"question": "n", "operator": ">=", "answerInteger": 5}], None),
    ("[dec] >= 1.5", [{"question": "dec", "operator": ">=", "answerDecimal": 1.5}], None),
    ("[d] < '2024-01-31'", [{"question": "d", "operator": "<", "answerDate": "2024-01-31"}], None),
    ("[t] = 'abc'", [{"question": "t", "operator": "=", "answerString": "abc"}], None),
    ("[t] <> ''", [{"question": "t", "operator": "exists", "answerBoolean": True}], None),
    ("[t] = ''", [{"question": "t", "operator": "exists", "answerBoolean": False}], None),
    ("[cb(2)] = '1'", [{"question": "cb", "operator": "=",
                        "answerCoding": {"system": CB, "code": "2", "display": "B"}}], None),
    ("[cb(1)] = '0'", [{"question": "cb", "operator": "!=",
                        "answerCoding": {"system": CB, "code": "1", "display": "A"}}], None),
    ("[n] > 1 and [yn] = '1'", [
        {"question": "n", "operator": ">", "answerInteger": 1},
        {"question": "yn", "operator": "=",
         "answerCoding": {"system": YN, "code": "1", "display": "Yes"}}], "all"),
    ("[r] = '1' or [r] = '2' or [t] <> ''", [
        {"question": "r", "operator": "=",
         "answerCoding": {"system": R, "code": "1", "display": "A"}},
        {"question": "r", "operator": "=",
         "answerCoding": {"system": R, "code": "2", "display": "B"}},
        {"question": "t", "operator": "exists", "answerBoolean": True}], "any"),
]


@pytest.mark.parametrize(("logic", "expected", "behavior"), ENABLE_WHEN)
def test_supported_logic_becomes_enable_when(logic, expected, behavior):
    result = build(*LOGIC_FIELDS, {"field_name": "target", "field_type": "text",
                                   "branching_logic": logic})
    item = items_by_link(result.resource["item"])["target"]
    assert result.unsupported == []
    assert item["enableWhen"] == expected
    assert item.get("enableBehavior") == behavior
    assert "unsupportedBranchingLogic" not in redcap(item)
    assert validate_r4(result.resource) == []


UNSUPPORTED = [
    ("[n] > 1 and ([yn] = '1' or [t] <> '')", "mixed"),
    ("[baseline_arm_1][n] > 1", "cross-event"),
    ("[other] = '1'", "not a question of instrument"),
    ("datediff([d], 'today', 'd') > 3", "only [field] vs a constant"),
    ("[yn]", "not a comparison"),
    ("[r] > '1'", "ordering comparison"),
    ("[r] = '7'", "no choice '7'"),
    ("[d] > '2024-01-01 10:00'", "not a YYYY-MM-DD date"),
    ("[n] = = 1", "cannot parse"),
    ("[t(1)] = '1'", "not a choice field"),
]


@pytest.mark.parametrize(("logic", "reason"), UNSUPPORTED)
def test_unsupported_logic_is_reported_and_marked(logic, reason):
    dictionary = DataDictionary.from_metadata(
        make_dictionary(*LOGIC_FIELDS, {"field_name": "target", "field_type": "text",
                                        "branching_logic": logic}).to_metadata()
        + [{"field_name": "other", "form_name": "g", "field_type": "yesno"}])
    result = build_questionnaire(dictionary, "f", canonical_base=BASE, version="1")
    item = items_by_link(result.resource["item"])["target"]
    assert "enableWhen" not in item
    assert [(r.field, r.logic) for r in result.unsupported] == [("target", logic)]
    assert reason in result.unsupported[0].reason
    assert redcap(item)["unsupportedBranchingLogic"] == logic
    assert validate_r4(result.resource) == []


def test_unsupported_logic_on_a_display_item_is_marked_too():
    result = build({"field_name": "info", "field_type": "descriptive",
                    "branching_logic": "[elsewhere] = 1"})
    item = result.resource["item"][0]
    assert result.unsupported[0].field == "info"
    assert ext(item, RC_EXT)["extension"][0]["valueString"] == "[elsewhere] = 1"


# --- calc ---------------------------------------------------------------------------------------


def test_simple_calc_gets_a_fhirpath_expression():
    result = build({"field_name": "w", "field_type": "text",
                    "text_validation_type_or_show_slider_number": "number"},
                   {"field_name": "h", "field_type": "text",
                    "text_validation_type_or_show_slider_number": "number"},
                   {"field_name": "bmi", "field_type": "calc",
                    "select_choices_or_calculations": "round([w] / ([h] / 100) ^ 2, 1) + -abs(0)"})
    item = items_by_link(result.resource["item"])["bmi"]
    expression = ext(item, EXT_CALCULATED)["valueExpression"]
    w = "%resource.repeat(item).where(linkId='w').answer.value"
    h = "%resource.repeat(item).where(linkId='h').answer.value"
    assert expression["language"] == "text/fhirpath"
    assert expression["expression"] == (
        f"((({w} / (({h} / 100)).power(2))).round(1) + (0 - (0).abs()))")
    assert result.untranslated_calcs == []


@pytest.mark.parametrize("formula", ["mean([a], [b])", "if([a] > 1, 1, 0)",
                                     "[other_form_field] * 2", "rounddown([a], 0)"])
def test_untranslatable_calc_is_listed_and_still_read_only(formula):
    result = build({"field_name": "a", "field_type": "text"},
                   {"field_name": "b", "field_type": "text"},
                   {"field_name": "c", "field_type": "calc",
                    "select_choices_or_calculations": formula})
    item = items_by_link(result.resource["item"])["c"]
    assert item["readOnly"] is True and ext(item, EXT_CALCULATED) is None
    assert [(r.field, r.logic) for r in result.untranslated_calcs] == [("c", formula)]


# --- the reference dictionary -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    with DICTIONARY_CSV.open(newline="", encoding="utf-8") as handle:
        dictionary = DataDictionary.from_csv_rows(csv.DictReader(handle))
    mapping = load_study_mapping(ROOT / "mappings" / "imt", dictionary)
    builds = {form: build_questionnaire(dictionary, form, canonical_base=BASE, version="1.0.0",
                                        mapping=mapping, date="2026-01-01")
              for form in dictionary.forms}
    return dictionary, mapping, builds


def r4_invariant_problems(q: dict[str, Any]) -> list[str]:
    """FHIRPath invariants of R4 Questionnaire that neither validator checks (que-1..que-12)."""
    problems = []
    items = items_by_link(q.get("item", []))
    links = [i["linkId"] for i in _all(q.get("item", []))]
    if len(links) != len(set(links)):
        problems.append("que-2: duplicate linkIds")
    for link, i in items.items():
        kind = i["type"]
        if kind == "group" and not i.get("item"):
            problems.append(f"que-1: group {link} has no items")
        if kind == "display" and (i.get("item") or i.get("code") or i.get("required")
                                  or i.get("repeats") or i.get("readOnly")):
            problems.append(f"que-1/3/6/9: display {link}")
        if "answerOption" in i and kind not in ("choice", "open-choice"):
            problems.append(f"que-5: {link}")
        conditions = i.get("enableWhen", [])
        if len(conditions) > 1 and "enableBehavior" not in i:
            problems.append(f"que-12: {link}")
        for c in conditions:
            target = items.get(c["question"])
            if target is None or target["type"] in ("group", "display"):
                problems.append(f"{link}: enableWhen question {c['question']} is not a question")
            elif "answerCoding" in c:
                options = [o["valueCoding"] for o in target.get("answerOption", [])]
                key = (c["answerCoding"]["system"], c["answerCoding"]["code"])
                if key not in {(o["system"], o["code"]) for o in options}:
                    problems.append(f"{link}: answerCoding {key} is not an option of the target")
            if c["operator"] == "exists" and "answerBoolean" not in c:
                problems.append(f"que-7: {link}")
    return problems


def _all(items):
    for item in items:
        yield item
        yield from _all(item.get("item", []))


def test_every_reference_questionnaire_is_valid(reference):
    dictionary, _, builds = reference
    assert list(builds) == dictionary.forms
    for form, result in builds.items():
        q = result.resource
        assert validate_r4(q) == [], form
        assert validate_r4b_model(q) == [], form
        assert r4_invariant_problems(q) == [], form


def test_reference_logic_all_supported_and_every_field_present(reference):
    dictionary, _, builds = reference
    assert [r for b in builds.values() for r in b.unsupported] == []
    for form, result in builds.items():
        links = set(items_by_link(result.resource.get("item", [])))
        expected = {f.name for f in dictionary.form_fields(form)} - {dictionary.record_id_field}
        assert expected <= links, form
    untranslated = {r.field for b in builds.values() for r in b.untranslated_calcs}
    assert untranslated == {"eligible", "age", "fss_score"}  # if(), datediff(), mean()
    bmi = items_by_link(builds["enrollment"].resource["item"])["bmi"]
    assert ext(bmi, EXT_CALCULATED) is not None


def test_reference_codes_and_units_come_from_the_mapping(reference):
    _, mapping, builds = reference
    walk = items_by_link(builds["six_minute_walk"].resource["item"])["mwt_distance_m"]
    assert {"system": "http://loinc.org", "code": "64098-7"}.items() <= walk["code"][0].items()
    assert ext(walk, EXT_UNIT)["valueCoding"]["code"] == "m"
    checked = 0
    for result in builds.values():
        for link, item in items_by_link(result.resource.get("item", [])).items():
            measure = mapping.by_field.get(link)
            if measure is not None and measure.target != "excluded" and measure.codes:
                assert [c["code"] for c in item["code"]] == [c.code for c in measure.codes]
                checked += 1
    assert checked > 20


def test_reference_identifiers_flagged(reference):
    dictionary, _, builds = reference
    items = items_by_link(builds["enrollment"].resource["item"])
    flagged = {link for link, i in items.items()
               if i["type"] not in ("display", "group") and "identifier" in redcap(i)}
    assert flagged == {f.name for f in dictionary.fields if f.identifier}


def test_build_is_deterministic_and_does_not_share_state(reference):
    dictionary, mapping, builds = reference
    again = build_questionnaire(dictionary, "sf36", canonical_base=BASE, version="1.0.0",
                                mapping=mapping, date="2026-01-01")
    assert again.resource == builds["sf36"].resource
    mutated = copy.deepcopy(again.resource)
    mutated["item"][0]["linkId"] = "changed"
    assert builds["sf36"].resource["item"][0]["linkId"] != "changed"
    other = build_questionnaire(dictionary, "sf36", canonical_base=BASE, version="1.0.1")
    assert other.resource["id"] != again.resource["id"]
