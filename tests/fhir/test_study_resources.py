"""Study resources: validity, pseudonymity, statuses, Encounters, references, determinism."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from imt_etl.fhir import context as refs
from imt_etl.fhir.study import (
    RESEARCH_STUDY_EXT,
    RESOURCE_ORDER,
    build_study_resources,
    to_research_subject,
    visit_keys,
)
from imt_etl.fhir.validation import validate_r4, validate_r4b_model
from imt_etl.redcap.tidy import ProjectMeta
from imt_etl.studies.imt.design import EVENTS
from tests.fhir.reference_data import (
    reference_build,
    reference_context,
    reference_mapping,
    reference_tidy,
)

NON_OBSERVATION = ("ResearchStudy", "CodeSystem", "Patient", "ResearchSubject", "Encounter")


@pytest.fixture(scope="module")
def built():
    return reference_build()


def test_counts_and_order(built):
    assert tuple(built) == RESOURCE_ORDER
    counts = {k: len(v) for k, v in built.items()}
    assert counts["ResearchStudy"] == counts["CodeSystem"] == 1
    assert counts["Patient"] == counts["ResearchSubject"] == 33
    # one Encounter per participant visit: screening, baseline, months 3, 6 and 12 (dropouts fewer)
    assert 33 * 4 < counts["Encounter"] <= 33 * 5
    assert counts["Observation"] > 20000


def test_every_non_observation_resource_is_valid(built):
    for rtype in NON_OBSERVATION:
        for resource in built[rtype]:
            assert validate_r4(resource) == [], (rtype, resource["id"])
            assert validate_r4b_model(resource) == [], (rtype, resource["id"])


def test_ids_are_unique_and_every_reference_resolves(built):
    ids = {f"{r['resourceType']}/{r['id']}" for rs in built.values() for r in rs}
    assert len(ids) == sum(len(v) for v in built.values())
    # derivedFrom points at the QuestionnaireResponse of each instrument row (built elsewhere)
    ctx = reference_context()
    responses = {
        refs.questionnaire_response_ref(ctx, r, e, form, None if i is pd.NA else int(i))
        for form, df in reference_tidy().tables.items()
        for r, e, i in zip(df.record_id, df.redcap_event_name, df.redcap_repeat_instance,
                           strict=True)
    }
    found = 0
    for resources in built.values():
        for resource in resources:
            for ref in _references(resource):
                found += 1
                assert ref in ids or ref in responses, (resource["resourceType"], ref)
    # subject and derivedFrom on every Observation, encounter on the visit ones
    assert found > 2 * len(built["Observation"]) + len(built["Encounter"])


def _references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference":
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def test_patients_are_pseudonymous(built, reference_project):
    names = {r.values.get(k) for r in reference_project.rows
             for k in ("first_name", "last_name", "mrn", "email", "phone", "dob")} - {None}
    text = json.dumps(built["Patient"] + built["ResearchSubject"] + built["Encounter"])
    assert not [n for n in names if n in text]
    for patient in built["Patient"]:
        assert set(patient) <= {"resourceType", "id", "identifier", "gender", "birthDate"}
        assert patient["identifier"] == [{"system": "https://imt-etl.org/fhir/participant",
                                          "value": patient["identifier"][0]["value"]}]
        assert patient["identifier"][0]["value"].startswith("P-")
        assert patient["gender"] in ("male", "female")
        assert "birthDate" not in patient
    first = built["Patient"][0]
    assert first["gender"] == "male"  # record 001: sex 2 = male
    assert first["id"] == refs.patient_id(reference_context(), "001")


def test_birth_year_only_when_configured(reference_project):
    tables = {f: df[df.record_id == "001"] for f, df in reference_tidy().tables.items()}
    ctx = reference_context(birth_date="year")
    meta = ProjectMeta.from_definition(reference_project)
    patient = build_study_resources(tables, reference_mapping(), meta, ctx=ctx)["Patient"][0]
    assert patient["birthDate"] == "1962"
    assert validate_r4(patient) == []


def test_research_study(built):
    study = built["ResearchStudy"][0]
    assert study["identifier"] == [{"system": "https://clinicaltrials.gov", "value": "NCT07274267"}]
    assert study["status"] == "active"
    assert study["arm"] == [{"name": "Arm 1"}]
    assert study["title"] == reference_mapping().study.title


def test_research_subjects_use_r4_individual_and_statuses(built):
    subjects = built["ResearchSubject"]
    assert all("individual" in s and "subject" not in s for s in subjects)
    assert all(s["assignedArm"] == s["actualArm"] == "Arm 1" for s in subjects)
    statuses = {s["status"] for s in subjects}
    assert statuses <= {"on-study", "off-study", "withdrawn", "ineligible"}
    assert "off-study" in statuses  # the reference data is complete by the run date
    completion = reference_tidy().tables["study_completion"]
    withdrawn = set(completion[completion.withdrawn == "1"].record_id)
    ctx = reference_context()
    by_id = {s["id"]: s for s in subjects}
    for record in withdrawn:
        assert by_id[refs.research_subject_id(ctx, record)]["status"] == "withdrawn"


def test_research_subject_status_rules():
    ctx = reference_context()  # run date 2026-11-01
    day = datetime(2025, 1, 1).date()
    assert to_research_subject("9", {"withdrawn": "1", "withdrawal_date": day,
                                     "consent_date": day}, 1, ctx)["status"] == "withdrawn"
    assert to_research_subject("9", {"eligible": 0.0}, 1, ctx)["status"] == "ineligible"
    later = datetime(2027, 1, 1).date()
    on = to_research_subject("9", {"consent_date": day, "completion_date": later}, None, ctx)
    assert on["status"] == "on-study" and "assignedArm" not in on
    assert on["period"] == {"start": "2025-01-01"}
    off = to_research_subject("9", {"consent_date": day, "completion_date": day}, 1, ctx)
    assert off["status"] == "off-study" and off["period"]["end"] == "2025-01-01"


def test_encounters(built):
    enc = built["Encounter"][0]
    ctx = reference_context()
    assert enc["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "AMB", "display": "ambulatory"}  # one Coding (R4)
    assert enc["status"] == "finished"
    assert enc["extension"] == [{"url": RESEARCH_STUDY_EXT, "valueReference": {
        "reference": refs.research_study_ref(ctx)}}]
    assert enc["id"] == refs.encounter_id(ctx, "001", "screening_arm_1")
    assert enc["period"] == {"start": "2024-08-12", "end": "2024-08-12"}
    # the home-training period is not a visit: no Encounter, and its Observations refer to none
    keys = visit_keys(reference_tidy().tables, [e.unique_event_name for e in EVENTS])
    assert not [k for k in keys if k[1] == "training_arm_1"]
    assert keys[:2] == [("001", "screening_arm_1"), ("001", "baseline_arm_1")]
    diary = [o for o in built["Observation"]
             if o["code"]["coding"][0]["code"] == "imt-session-load"]
    assert diary and all("encounter" not in o for o in diary)


def test_event_labels_become_encounter_type(reference_project):
    tables = {f: df[df.record_id == "002"] for f, df in reference_tidy().tables.items()}
    labels = {e.unique_event_name: e.event_name for e in EVENTS}
    ctx = reference_context(event_labels=labels)
    meta = ProjectMeta.from_definition(reference_project)
    enc = build_study_resources(tables, reference_mapping(), meta, ctx=ctx)["Encounter"]
    assert [e["type"] for e in enc[:2]] == [[{"text": "Screening (run-in start)"}],
                                            [{"text": "Baseline"}]]


def test_building_twice_gives_identical_output(reference_project):
    tables = {f: df[df.record_id.isin({"001", "005"})] for f, df in reference_tidy().tables.items()}
    meta = ProjectMeta.from_definition(reference_project)
    first = build_study_resources(tables, reference_mapping(), meta, ctx=reference_context())
    second = build_study_resources(tables, reference_mapping(), meta, ctx=reference_context())
    assert json.dumps(first) == json.dumps(second)
    other_time = refs.FhirContext(reference_mapping(), datetime(2026, 12, 1, tzinfo=UTC),
                                  reference_context().pseudonymise)
    third = build_study_resources(tables, reference_mapping(), meta, ctx=other_time)
    assert json.dumps(third) == json.dumps(first)  # the run time is not written anywhere


def test_pseudonym_drives_ids(reference_project):
    tables = {f: df[df.record_id == "001"] for f, df in reference_tidy().tables.items()}
    meta = ProjectMeta.from_definition(reference_project)
    a = build_study_resources(tables, reference_mapping(), meta, ctx=reference_context())
    other = refs.FhirContext(reference_mapping(), reference_context().run_time, lambda r: "Q" + r)
    b = build_study_resources(tables, reference_mapping(), meta, ctx=other)
    assert a["Patient"][0]["id"] != b["Patient"][0]["id"]
    assert b["Patient"][0]["identifier"][0]["value"] == "Q001"


def test_context_rejects_a_naive_run_time():
    with pytest.raises(ValueError, match="timezone"):
        refs.FhirContext(reference_mapping(), datetime(2026, 1, 1), str)


def test_record_values_are_each_fields_first_value_over_the_rows():
    from imt_etl.fhir.study import _missing, _RecordValues

    tables = reference_tidy().tables
    expected: dict[str, dict] = {}  # the definition, row by row
    for df in tables.values():
        for row in df.to_dict("records"):
            into = expected.setdefault(str(row["record_id"]), {})
            for name, value in row.items():
                if name not in into and not _missing(value):
                    into[name] = value
    values = _RecordValues(tables)
    for record, fields in expected.items():
        view = values.of(record)
        assert dict(view) == fields
        assert view.get("no_such_field") is None
    assert dict(values.of("no-such-record")) == {}
