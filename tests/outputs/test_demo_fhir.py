"""Every FHIR resource `make demo` writes is valid R4 (two independent validators and the R4B
models), coded from the verified table or the project CodeSystem, with resolvable references."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from imt_etl.fhir.terminology import SYSTEM_URLS, load_terminology, ucum_problem
from imt_etl.fhir.validation import validate_r4, validate_r4b_model

LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
TERMINOLOGY = Path(__file__).parents[2] / "mappings" / "terminology"


def resources(out: Path) -> list[dict]:
    return [orjson.loads(line) for path in sorted((out / "fhir").glob("*.ndjson"))
            for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def written(demo_out):
    return resources(demo_out)


def test_every_resource_passes_both_independent_r4_validators(written):
    problems = {f"{r['resourceType']}/{r['id']}": p for r in written if (p := validate_r4(r))}
    assert problems == {}
    assert Counter(r["resourceType"] for r in written).keys() >= {
        "Patient", "ResearchStudy", "ResearchSubject", "Encounter", "Observation",
        "Questionnaire", "QuestionnaireResponse", "CodeSystem"}


def test_every_resource_loads_as_its_r4b_model(written):
    problems = {f"{r['resourceType']}/{r['id']}": p for r in written
                if (p := validate_r4b_model(r))}
    assert problems == {}


def test_codes_are_verified_or_local_and_units_are_ucum(written):
    local = next(r for r in written if r["resourceType"] == "CodeSystem")
    local_codes = {c["code"] for c in local["concept"]}
    terminology = load_terminology(TERMINOLOGY)
    verified = {(SYSTEM_URLS[r.system], r.code) for r in terminology.codes if r.usable}
    for obs in (r for r in written if r["resourceType"] == "Observation"):
        parts = [obs, *obs.get("component", [])]
        for part in parts:
            for coding in part["code"]["coding"]:
                if coding["system"] == local["url"]:
                    assert coding["code"] in local_codes, coding
                else:
                    assert coding["system"] in (LOINC, SNOMED), coding
                    assert (coding["system"], coding["code"]) in verified, coding
            quantity = part.get("valueQuantity")
            if quantity:
                assert quantity["system"] == UCUM and ucum_problem(quantity["code"]) is None


def test_every_reference_resolves_within_the_output(written):
    ids = {f"{r['resourceType']}/{r['id']}" for r in written}
    canonicals = {f"{r['url']}|{r['version']}" for r in written if r["resourceType"] ==
                  "Questionnaire"}
    unresolved = set()

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref not in ids:
                unresolved.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for resource in written:
        walk(resource)
        if resource["resourceType"] == "QuestionnaireResponse":
            assert resource["questionnaire"] in canonicals
    assert unresolved == set()


def test_no_identifier_or_record_id_reaches_fhir(demo_out, reference_project, written):
    identifiers = {f.name for f in reference_project.dictionary.fields if f.identifier}
    secrets = {value for row in reference_project.rows for name, value in row.values.items()
               if name in identifiers and len(value) >= 5}
    text = (demo_out / "fhir" / "Patient.ndjson").read_text() + json.dumps(written[:2000])
    assert secrets and not [s for s in secrets if s in text]
