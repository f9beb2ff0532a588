"""Acceptance: for every real REDCap project XML with its REDCap CSV, the emulator's export matches.

The pairs live in tests/data/redcap_xml/ (see SOURCES.md there): a CSV that real REDCap exported
from the same project. Row for row, column for column, and byte for byte (REDCap's quoting).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
from redcap import Project

from imt_etl.redcap.emulator_store import ProjectStore, handle_request
from imt_etl.redcap.project_xml import read_project_xml

sys.path.insert(0, str(Path(__file__).parent))
from emulator_fixtures import TOKEN, XML_DIR, running  # noqa: E402

PAIRS = sorted(p for p in XML_DIR.glob("*.xml") if p.with_suffix(".csv").exists())


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_fixtures_present():
    assert PAIRS, f"no XML+CSV pairs in {XML_DIR}"


@pytest.mark.parametrize("xml_path", PAIRS, ids=lambda p: p.stem)
def test_flat_csv_matches_real_redcap(xml_path: Path):
    expected = xml_path.with_suffix(".csv").read_text(encoding="utf-8")
    with running(read_project_xml(xml_path)) as emu:
        # Through PyCap, which asks for every field and form status explicitly.
        got = Project(emu.url, TOKEN).export_records(format_type="csv")
    want_rows, got_rows = _cells(expected), _cells(got)
    assert got_rows[0] == want_rows[0]
    assert len(got_rows) == len(want_rows)
    for i, (g, w) in enumerate(zip(got_rows, want_rows, strict=True)):
        assert g == w, f"row {i}: {dict(zip(want_rows[0], g, strict=False))}"
    assert got == expected  # REDCap's quoting (fputcsv) and line ends too


@pytest.mark.parametrize("xml_path", PAIRS, ids=lambda p: p.stem)
def test_unfiltered_export_and_json_agree(xml_path: Path):
    store = ProjectStore(read_project_xml(xml_path))
    base = {"token": TOKEN, "content": "record"}
    csv_body = handle_request(store, {**base, "format": "csv"}, TOKEN).body.decode()
    assert csv_body == xml_path.with_suffix(".csv").read_text(encoding="utf-8")
    import orjson

    rows = orjson.loads(handle_request(store, {**base, "format": "json"}, TOKEN).body)
    table = _cells(csv_body)
    assert [list(r.values()) for r in rows] == table[1:]
    assert list(rows[0]) == table[0]


def test_dag_project_exports_groups():
    project = read_project_xml(XML_DIR / "redcapr_dag.xml")
    with running(project) as emu:
        proj = Project(emu.url, TOKEN)
        rows = proj.export_records(export_data_access_groups=True)
        plain = proj.export_records()
    assert list(rows[0])[1] == "redcap_data_access_group"
    assert {r["record_id"]: r["redcap_data_access_group"] for r in rows} == project.record_dags
    assert "redcap_data_access_group" not in plain[0]
