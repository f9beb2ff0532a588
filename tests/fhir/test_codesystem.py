"""Tests for the study's local CodeSystem resource."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imt_etl.fhir.codesystem import to_codesystem
from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.fhir.validation import validate_r4, validate_r4b_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mapping():
    return load_study_mapping(ROOT / "mappings" / "imt")


@pytest.fixture(scope="module")
def resource(mapping):
    return to_codesystem(mapping)


def test_codesystem_is_valid_r4(resource):
    assert validate_r4(resource) == []
    assert validate_r4b_model(resource) == []


def test_codesystem_header(resource, mapping):
    assert resource["url"] == mapping.study.codesystem.url
    assert resource["version"] == "1.0.0"
    assert resource["status"] == "active"
    assert resource["content"] == "complete"
    assert resource["id"] == "imt-local-codes"
    assert "NCT07274267" in resource["description"]


def test_codesystem_holds_every_local_code_once_with_definitions(resource, mapping):
    codes = [c["code"] for c in resource["concept"]]
    assert codes == sorted(set(codes))
    assert set(codes) == {c.code for c in mapping.local_concepts()}
    assert resource["count"] == len(codes)
    assert all(c["display"] and c["definition"] for c in resource["concept"])
    used = {c.code for m in mapping.measures for c in m.codes if c.system == "local"}
    assert used <= set(codes)


def test_codesystem_is_deterministic(mapping, resource):
    assert to_codesystem(mapping) == resource


def test_empty_codesystem_has_no_concept_array(tmp_path):
    study = {
        "version": "0.1", "study_id": "tiny", "title": "Tiny", "canonical_base": "https://x.org/fhir",
        "timezone": "UTC", "loinc_version": "2.78",
        "terminology": str(ROOT / "mappings" / "terminology"),
        "codesystem": {"version": "0.1", "url": "https://x.org/fhir/CodeSystem/tiny-codes"},
        "instruments": ["adverse_events.yaml"],
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    instrument = {"instrument": "adverse_events", "questionnaire_only": ["ae_term"]}
    (tmp_path / "adverse_events.yaml").write_text(yaml.safe_dump(instrument), encoding="utf-8")
    resource = to_codesystem(load_study_mapping(tmp_path))
    assert "concept" not in resource and resource["count"] == 0
    assert resource["url"] == "https://x.org/fhir/CodeSystem/tiny-codes"
    assert validate_r4(resource) == []
