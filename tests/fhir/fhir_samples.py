"""Small valid R4 study resources that reference each other, for writer and publish tests."""

from __future__ import annotations

from typing import Any

from imt_etl.fhir.ids import resource_id

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def codesystem(study: str) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "id": f"{study}-local-codes",
        "url": f"https://example.org/fhir/{study}/CodeSystem/local",
        "version": "1",
        "status": "active",
        "content": "complete",
        "concept": [{"code": "tis", "display": "Total impairment score"}],
    }


def research_study(study: str) -> dict[str, Any]:
    return {
        "resourceType": "ResearchStudy",
        "id": resource_id("ResearchStudy", study),
        "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT07274267"}],
        "title": f"Test study {study}",
        "status": "active",
    }


def patient_id(study: str, record: str) -> str:
    return resource_id("Patient", study, record)


def participant(study: str, record: str, observations: int = 3) -> list[dict[str, Any]]:
    """Patient, ResearchSubject, one Encounter and `observations` heart-rate Observations."""
    pid = patient_id(study, record)
    enc = resource_id("Encounter", study, record, "baseline")
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": f"https://example.org/{study}/record", "value": record}],
        },
        {
            "resourceType": "ResearchSubject",
            "id": resource_id("ResearchSubject", study, record),
            "status": "on-study",
            "study": {"reference": f"ResearchStudy/{resource_id('ResearchStudy', study)}"},
            "individual": {"reference": f"Patient/{pid}"},
            "assignedArm": "imt",
        },
        {
            "resourceType": "Encounter",
            "id": enc,
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": "2025-03-01T09:00:00+01:00", "end": "2025-03-01T11:00:00+01:00"},
        },
    ]
    out += [observation(study, record, enc, i) for i in range(observations)]
    return out


def observation(study: str, record: str, encounter: str, i: int, value: float = 70) -> dict:
    return {
        "resourceType": "Observation",
        "id": resource_id("Observation", study, record, "baseline", "vitals", i, "hr"),
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }]}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{patient_id(study, record)}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "effectiveDateTime": f"2025-03-01T09:{i % 60:02d}:00+01:00",
        "valueQuantity": {"value": value + i, "unit": "/min", "system": UCUM, "code": "/min"},
    }


def study_resources(study: str = "t", records: int = 2, observations: int = 3) -> list[dict]:
    """A whole small study: CodeSystem, ResearchStudy and `records` participants."""
    out = [codesystem(study), research_study(study)]
    for n in range(1, records + 1):
        out += participant(study, f"{n:03d}", observations)
    return out
