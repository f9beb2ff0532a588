"""Projects not designed here (REDCap project XML fixtures) get schemas with no code change."""

from __future__ import annotations

from pathlib import Path

import pytest

from imt_etl.redcap.project_xml import read_project_xml
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.validate import build_schemas, validate_project

XML_DIR = Path(__file__).resolve().parents[1] / "data" / "redcap_xml"


@pytest.mark.parametrize("path", sorted(XML_DIR.glob("*.xml")), ids=lambda p: p.stem)
def test_foreign_project_validates(path: Path, to_flat_rows):
    project = read_project_xml(path)
    meta = ProjectMeta.from_definition(project)
    schemas = build_schemas(meta)
    assert set(schemas) == set(meta.dictionary.forms)
    tidy = tidy_instruments(to_flat_rows(project), meta)
    result = validate_project(tidy, meta)
    for form, table in tidy.tables.items():
        c = result.counts[form]
        assert c["extracted"] == len(table) == c["valid"] + c["quarantined"]
    # The schemas carry the dictionary's checks, e.g. choice codes of every choice field.
    choice_fields = [f for f in meta.dictionary.fields
                     if f.field_type in ("radio", "dropdown", "yesno", "truefalse")]
    for f in choice_fields:
        assert any(info.rule == "dict.choice" and info.field == f.name
                   for info in schemas[f.form].checks.values())


def test_foreign_project_bad_value_is_quarantined(to_flat_rows):
    project = read_project_xml(XML_DIR / "redcapr_repeating_sparse.xml")
    meta = ProjectMeta.from_definition(project)
    rows = to_flat_rows(project)
    choice, target = next((f, r) for f in meta.dictionary.fields for r in rows
                          if f.field_type in ("radio", "dropdown") and r.get(f.name))
    target[choice.name] = "not-a-code"
    result = validate_project(tidy_instruments(rows, meta), meta)
    assert list(result.errors["rule_id"]) == ["dict.choice"]
    assert result.counts[choice.form]["quarantined"] == 1
