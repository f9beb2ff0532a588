"""Deterministic FHIR resource ids: uuid5 of (kind, study, record, event, form, instance, field)."""

from __future__ import annotations

import hashlib
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
    name = _ENCODER.encode([kind, *[p if type(p) is str else _normalise(p) for p in parts]])
    return _uuid5(name)


# One encoder: json.dumps(..., ensure_ascii=False) builds a new one per call (a hot spot when
# every Observation gets an id). Same output as json.dumps with those arguments.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_NAMESPACE_BYTES = NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """str(uuid.uuid5(NAMESPACE, name)) without building UUID objects (RFC 4122 section 4.3)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
