"""Test helper: the reference project's RecordRows as flat export rows, tidied and mapped."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from imt_etl.fhir.context import FhirContext
from imt_etl.fhir.mappings import StudyMapping, load_study_mapping
from imt_etl.fhir.study import build_study_resources
from imt_etl.redcap.model import (
    EVENT_KEY,
    REPEAT_INSTANCE_KEY,
    REPEAT_INSTRUMENT_KEY,
    ProjectDefinition,
    RecordRow,
)
from imt_etl.redcap.tidy import ProjectMeta, TidyResult, tidy_instruments

MAPPING_DIR = Path(__file__).resolve().parents[2] / "mappings" / "imt"


def flat_row(project: ProjectDefinition, row: RecordRow) -> dict[str, str]:
    """One REDCap flat export row: keys, values, and "0" for the unticked checkbox options.

    As REDCap exports them: checkbox options of the row's forms are "0" unless ticked.
    """
    dictionary = project.dictionary
    out = {dictionary.record_id_field: row.record}
    if project.is_longitudinal:
        out[EVENT_KEY] = row.event
    out[REPEAT_INSTRUMENT_KEY] = row.repeat_instrument
    out[REPEAT_INSTANCE_KEY] = "" if row.repeat_instance is None else str(row.repeat_instance)
    forms = [row.repeat_instrument] if row.repeat_instrument else project.forms_for_event(row.event)
    for form in forms:
        for f in dictionary.form_fields(form):
            if f.is_checkbox:
                out.update(dict.fromkeys(f.export_columns, "0"))
    out.update(row.values)
    return out


def flat_rows(project: ProjectDefinition) -> list[dict[str, str]]:
    return [flat_row(project, row) for row in project.rows]


def tidy_reference(project: ProjectDefinition) -> TidyResult:
    return tidy_instruments(flat_rows(project), ProjectMeta.from_definition(project))


@cache
def reference_mapping() -> StudyMapping:
    from imt_etl.studies.imt.design import load_dictionary

    return load_study_mapping(MAPPING_DIR, load_dictionary())


RUN_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_pseudonym(record: str) -> str:
    """A stand-in for imt_etl.privacy.pseudonym (keyed HMAC): readable, deterministic."""
    return f"P-{record}"


test_pseudonym.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def reference_context(**options: Any) -> FhirContext:
    return FhirContext(reference_mapping(), RUN_TIME, test_pseudonym, **options)


@cache
def reference_tidy() -> TidyResult:
    from imt_etl.studies.imt import load_reference_project

    return tidy_reference(load_reference_project())


@cache
def reference_build() -> dict[str, list[dict[str, Any]]]:
    """The study resources of the whole reference project (built once per test session)."""
    from imt_etl.studies.imt import load_reference_project

    meta = ProjectMeta.from_definition(load_reference_project())
    return build_study_resources(reference_tidy().tables, reference_mapping(), meta,
                                 ctx=reference_context())
