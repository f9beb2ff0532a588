"""The shipped reference files are what the builder makes, and load back to the same project."""

from __future__ import annotations

import pytest

import imt_etl.studies.imt as imt
from imt_etl.studies.imt.build import build, manifest_text, reference_study


@pytest.fixture(scope="module")
def study():
    return reference_study()


def test_manifest_is_up_to_date(study):
    shipped = imt.MANIFEST_PATH.read_text(encoding="utf-8")
    assert shipped == manifest_text(study), "run python -m imt_etl.studies.imt.build"


def test_manifest_round_trips(study):
    assert imt.reference_errors() == study.errors
    assert imt.reference_deviations() == study.deviations
    assert len(imt.reference_errors()) == 12


def test_shipped_xml_is_up_to_date(tmp_path):
    build(tmp_path)
    fresh = (tmp_path / "imt_project.xml").read_bytes()
    assert fresh == imt.reference_project_path().read_bytes(), (
        "run python -m imt_etl.studies.imt.build"
    )


def test_reference_project_loads_back(study):
    loaded = imt.load_reference_project()
    made = study.project
    assert loaded.dictionary.to_metadata() == made.dictionary.to_metadata()
    assert [e.unique_event_name for e in loaded.events] == [
        e.unique_event_name for e in made.events]
    assert sorted(loaded.form_event_mapping) == sorted(made.form_event_mapping)
    assert {(r.event, r.form) for r in loaded.repeating} == {
        (r.event, r.form) for r in made.repeating}
    assert loaded.missing_data_codes == made.missing_data_codes
    assert loaded.settings.get("form_label:sf36") == "SF-36 (RAND-36)"
    assert loaded.record_ids()[:3] == ["001", "002", "003"]
    assert len(loaded.rows) == len(made.rows)
    assert {r.key: r.values for r in loaded.rows} == {r.key: r.values for r in made.rows}
