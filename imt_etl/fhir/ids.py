"""Deterministic FHIR resource ids: uuid5 of (kind, study, record, event, form, instance, field)."""

from __future__ import annotations

import json
import uuid

# Fixed forever: changing it changes every id and makes re-publishing duplicate resources.
# It is uuid5(NAMESPACE_URL, "urn:imt-etl:fhir-resource-ids"); tests check the derivation.
NAMESPACE = uuid.UUID("33ee380c-7e0b-5e10-9e26-2cb9758d516c")

Part = str | int | None


def _normalise(part: Part) -> str | None:
    # bool is an int subclass: True would silently become "True"; refuse it instead.
    if isinstance(part, bool) or not isinstance(part, str | int | None):
        raise TypeError(f"id part must be str, int or None, not {type(part).__name__}")
    # 3 and "3" name the same repeat instance, whichever way the caller holds it.
    return str(part) if isinstance(part, int) else part


def resource_id(kind: str, *parts: Part) -> str:
    """The id of a resource of type `kind` named by `parts` (a 36-character uuid string).

    The name hashed is the JSON list [kind, *parts], so ("a|b", "c") and ("a", "b|c") differ
    and None ("no instance") differs from "" and from "None".
    """
    if not kind:
        raise ValueError("resource kind is empty")
    name = json.dumps([kind, *(_normalise(p) for p in parts)], ensure_ascii=False)
    return str(uuid.uuid5(NAMESPACE, name))


def record_resource_id(
    kind: str,
    study: str,
    record: str,
    event: str = "",
    instrument: str = "",
    instance: int | str | None = None,
    field: str = "",
) -> str:
    """Id of a resource derived from REDCap data at (record, event, instrument, instance, field).

    Leave the trailing parts empty for coarser resources (a Patient needs only the record).
    """
    return resource_id(kind, study, record, event, instrument, instance, field)


def questionnaire_id(study: str, form: str, version: str) -> str:
    return resource_id("Questionnaire", study, form, version)


def questionnaire_response_id(
    study: str, record: str, event: str, form: str, instance: int | str | None
) -> str:
    return record_resource_id("QuestionnaireResponse", study, record, event, form, instance)


def observation_id(
    study: str, record: str, event: str, form: str, instance: int | str | None, field: str
) -> str:
    return record_resource_id("Observation", study, record, event, form, instance, field)


def patient_id(study: str, record: str) -> str:
    return record_resource_id("Patient", study, record)


def research_subject_id(study: str, record: str) -> str:
    return record_resource_id("ResearchSubject", study, record)


def encounter_id(study: str, record: str, event: str) -> str:
    return record_resource_id("Encounter", study, record, event)


def research_study_id(study: str) -> str:
    return resource_id("ResearchStudy", study)
