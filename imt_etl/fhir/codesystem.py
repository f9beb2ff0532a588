"""The study's own CodeSystem (R4) for the local codes its mappings use, as a plain dict."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from imt_etl.fhir.mappings import Coding, StudyMapping

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9\-.]")


def codesystem_id(mapping: StudyMapping) -> str:
    """A stable resource id: the study id, made FHIR-id safe (letters, digits, '-', '.')."""
    return _ID_UNSAFE.sub("-", f"{mapping.study.study_id}-local-codes")[:64]


def to_codesystem(mapping: StudyMapping) -> dict[str, Any]:
    """The CodeSystem resource for `mapping.local_concepts()`: complete content, one canonical URL.

    Concepts are sorted by code so that the output does not depend on file order.
    """
    info = mapping.study.codesystem
    concepts = sorted(mapping.local_concepts(), key=lambda c: c.code)
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "id": codesystem_id(mapping),
        "url": info.url,
        "version": info.version,
        "name": info.name,
        "title": info.title,
        "status": info.status,
        "experimental": False,
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
    }
    if concepts:  # FHIR forbids empty arrays
        resource["concept"] = _concepts(concepts)
    if info.publisher:
        resource["publisher"] = info.publisher
    description = info.description or _default_description(mapping)
    resource["description"] = description
    return resource


def _concepts(concepts: Sequence[Coding]) -> list[dict[str, str]]:
    return [{"code": c.code, "display": c.display, "definition": c.definition} for c in concepts]


def _default_description(mapping: StudyMapping) -> str:
    study = mapping.study
    nct = f" ({', '.join(study.trial_ids)})" if study.trial_ids else ""
    return (
        f"Local codes of study {study.title}{nct} for measures without a verified LOINC code; "
        f"mapping version {study.version}, LOINC version assumed {study.loinc_version}."
    )
