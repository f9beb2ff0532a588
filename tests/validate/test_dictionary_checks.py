"""Each dictionary-derived check, on a small project designed here: one pass, one fail."""

from __future__ import annotations

import pandas as pd
import pytest

from imt_etl.redcap.dictionary import DataDictionary
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.validate import build_schema, validate_project
from imt_etl.validate.dictionary_schema import run_schema

FIELDS = [
    # name, type, validation, min, max, choices, required, branching, identifier
    ("pid", "text", "", "", "", "", "", "", ""),
    ("n_int", "text", "integer", "0", "10", "", "", "", ""),
    ("n_num", "text", "number", "0.5", "2.5", "", "", "", ""),
    ("d", "text", "date_ymd", "2024-01-01", "2024-12-31", "", "", "", ""),
    ("dt", "text", "datetime_ymd", "2024-01-01 00:00", "2024-12-31 23:59", "", "", "", ""),
    ("mail", "text", "email", "", "", "", "", "", "y"),
    ("tel", "text", "phone", "", "", "", "", "", "y"),
    ("zip", "text", "zipcode", "", "", "", "", "", ""),
    ("colour", "radio", "", "", "", "1, Red | 2, Blue", "y", "", ""),
    ("ok", "yesno", "", "", "", "", "", "", ""),
    ("tf", "truefalse", "", "", "", "", "", "", ""),
    ("boxes", "checkbox", "", "", "", "1, A | 2, B", "", "", ""),
    ("slide", "slider", "", "", "", "Low | High", "", "", ""),
    ("why", "text", "", "", "", "", "y", "[ok] = '1'", ""),
]


def _dictionary() -> DataDictionary:
    return DataDictionary.from_metadata([
        {"field_name": n, "form_name": "form_a", "field_type": t,
         "text_validation_type_or_show_slider_number": v, "text_validation_min": lo,
         "text_validation_max": hi, "select_choices_or_calculations": ch, "required_field": rq,
         "branching_logic": bl, "identifier": ident, "field_label": n.upper()}
        for n, t, v, lo, hi, ch, rq, bl, ident in FIELDS
    ])


META = ProjectMeta(dictionary=_dictionary())
GOOD = {"n_int": "5", "n_num": "1.5", "d": "2024-06-01", "dt": "2024-06-01 10:00",
        "mail": "a@example.org", "tel": "(415) 555-2671", "zip": "12345", "colour": "1",
        "ok": "0", "tf": "1", "boxes___1": "1", "slide": "50"}


def _findings(**changes: str) -> pd.DataFrame:
    row = {"pid": "1", **GOOD, **changes}
    result = validate_project(tidy_instruments([row], META), META)
    return result.findings


def test_good_row_passes():
    assert _findings().empty


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("n_int", "5x", "dict.integer"),
    ("n_int", "11", "dict.range"),
    ("n_int", "-1", "dict.range"),
    ("n_num", "abc", "dict.number"),
    ("n_num", "2.6", "dict.range"),
    ("d", "2024-13-01", "dict.date"),
    ("d", "2025-01-01", "dict.range"),
    ("dt", "2024-06-01", "dict.datetime"),
    ("dt", "2023-12-31 23:00", "dict.range"),
    ("mail", "not-an-address", "dict.email"),
    ("tel", "12345", "dict.phone"),
    ("zip", "1234", "dict.zipcode"),
    ("colour", "3", "dict.choice"),
    ("ok", "2", "dict.choice"),
    ("tf", "yes", "dict.choice"),
    ("boxes___1", "x", "dict.choice"),
    ("slide", "101", "dict.range"),
    ("colour", "", "dict.required"),
])
def test_each_check_fails_on_a_bad_value(field, value, rule):
    found = _findings(**{field: value})
    assert list(zip(found["rule_id"], found["field"], found["severity"], strict=True)) == [
        (rule, field, "error")]


def test_required_field_hidden_by_branching_is_not_missing():
    assert _findings(ok="0", why="").empty  # hidden: not required
    shown = _findings(ok="1", why="")
    assert list(shown["rule_id"]) == ["dict.required"]
    assert _findings(ok="1", why="because").empty


def test_value_in_hidden_field_is_a_warning():
    found = _findings(ok="0", why="left over")
    assert list(zip(found["rule_id"], found["severity"], strict=True)) == [
        ("dict.branching_hidden_value", "warning")]
    result = validate_project(tidy_instruments([{"pid": "1", **GOOD, "why": "x"}], META), META)
    assert result.counts["form_a"] == {"extracted": 1, "valid": 1, "quarantined": 0,
                                       "warnings": 1, "errors": 0}


def test_unique_key_and_identifiers():
    spec = build_schema(META, "form_a")
    assert spec.identifiers == ("mail", "tel")
    assert spec.schema.columns["mail"].metadata == {"field": "mail", "identifier": True}
    table = tidy_instruments([{"pid": "1", **GOOD}, {"pid": "2", **GOOD}], META).tables["form_a"]
    assert run_schema(spec, table) == []
    duplicated = table.assign(record_id=pd.Series(["1", "1"], dtype="string"))
    found = run_schema(spec, duplicated)
    assert [(f.rule_id, f.record_id) for f in found] == [("dict.unique_key", "1")] * 2


def test_slider_uses_its_own_min_max():
    fields = [("pid", "text", "", "", ""), ("s", "slider", "number", "1", "7")]
    dictionary = DataDictionary.from_metadata([
        {"field_name": n, "form_name": "f", "field_type": t,
         "text_validation_type_or_show_slider_number": v, "text_validation_min": lo,
         "text_validation_max": hi} for n, t, v, lo, hi in fields])
    meta = ProjectMeta(dictionary=dictionary)
    ok = validate_project(tidy_instruments([{"pid": "1", "s": "7"}], meta), meta)
    bad = validate_project(tidy_instruments([{"pid": "1", "s": "8"}], meta), meta)
    assert ok.findings.empty
    assert list(bad.findings["rule_id"]) == ["dict.range"]
