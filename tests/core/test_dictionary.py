"""Data dictionary parsing: types, choices, checkbox expansion and clear errors."""

import pytest

from imt_etl.errors import DictionaryError
from imt_etl.redcap.dictionary import (
    CSV_HEADERS,
    METADATA_KEYS,
    DataDictionary,
    checkbox_column,
    parse_choices,
)


def row(name, form, ftype, choices="", **extra):
    base = dict.fromkeys(METADATA_KEYS, "")
    base.update(field_name=name, form_name=form, field_type=ftype,
                select_choices_or_calculations=choices, **extra)
    return base


def sample() -> DataDictionary:
    return DataDictionary.from_metadata([
        row("record_id", "enrollment", "text"),
        row("sex", "enrollment", "radio", "1, Female | 2, Male"),
        row("intro", "enrollment", "descriptive"),
        row("symptoms", "diary", "checkbox", "1, Dizziness | 2, Chest pain | -9, Other"),
        row("ok", "diary", "yesno", identifier="y", required_field="y"),
        row("bmi", "diary", "calc", "[w]/([h]^2)"),
    ])


def test_forms_fields_and_record_id():
    d = sample()
    assert d.record_id_field == "record_id"
    assert d.forms == ["enrollment", "diary"]
    assert [f.name for f in d.form_fields("diary")] == ["symptoms", "ok", "bmi"]


def test_choices_and_fixed_choices():
    d = sample()
    assert d.field("sex").choice_label("2") == "Male"
    assert d.field("ok").choice_label("0") == "No"
    assert d.field("ok").identifier and d.field("ok").required


def test_export_columns_expand_checkboxes_and_add_complete():
    assert sample().export_columns() == [
        "record_id", "sex", "enrollment_complete",
        "symptoms___1", "symptoms___2", "symptoms____9", "ok", "bmi", "diary_complete",
    ]
    assert sample().export_columns(["diary"])[0] == "record_id"
    assert checkbox_column("f", "A-b") == "f___a_b"


def test_metadata_round_trip_keeps_key_order():
    d = sample()
    rows = d.to_metadata()
    assert list(rows[0]) == list(METADATA_KEYS)
    assert DataDictionary.from_metadata(rows) == d


def test_csv_headers_map_to_metadata():
    csv_row = dict(zip(CSV_HEADERS, ["age", "demo", "", "text"] + [""] * 14, strict=True))
    assert DataDictionary.from_csv_rows([csv_row]).field("age").field_type == "text"


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([row("a", "f", "text"), row("a", "f", "text")], "'a': field name appears twice"),
        ([row("a", "f", "textbox")], "unknown field type 'textbox'"),
        ([row("a", "f", "text"), row("c", "f", "radio", "1 Yes | 2, No")], "'1 Yes' is not"),
        ([row("a", "f", "text"), row("c", "f", "radio", "")], "no choices"),
        ([row("a", "f", "text"), row("c", "f", "calc", " ")], "no calculation"),
        ([row("a", "", "text")], "no form_name"),
        ([], "no fields"),
    ],
)
def test_malformed_dictionaries_name_the_field(rows, fragment):
    with pytest.raises(DictionaryError) as err:
        DataDictionary.from_metadata(rows)
    assert fragment in str(err.value)


def test_duplicate_choice_code_is_an_error():
    with pytest.raises(DictionaryError, match="appears twice"):
        parse_choices("x", "1, a | 1, b")
