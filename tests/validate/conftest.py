"""Shared fixtures: the reference project (with and without its deliberate errors), tidied."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from imt_etl.redcap.model import ProjectDefinition
from imt_etl.redcap.tidy import ProjectMeta, TidyResult, tidy_instruments
from imt_etl.studies.imt import load_reference_project
from imt_etl.studies.imt.generator import generate_project
from imt_etl.validate.rules import StudyRules, study_rules


def flat_rows(project: ProjectDefinition) -> list[dict[str, str]]:
    """The project's RecordRows as flat export rows (what the API's record export returns)."""
    rid = project.record_id_field
    return [
        {rid: r.record, "redcap_event_name": r.event,
         "redcap_repeat_instrument": r.repeat_instrument,
         "redcap_repeat_instance": "" if r.repeat_instance is None else str(r.repeat_instance),
         **r.values}
        for r in project.rows
    ]


@dataclass
class Tidied:
    project: ProjectDefinition
    meta: ProjectMeta
    tidy: TidyResult


def tidied(project: ProjectDefinition) -> Tidied:
    meta = ProjectMeta.from_definition(project)
    return Tidied(project, meta, tidy_instruments(flat_rows(project), meta))


@pytest.fixture(scope="session")
def to_flat_rows():
    """flat_rows for tests (conftest modules cannot be imported under --import-mode=importlib)."""
    return flat_rows


@pytest.fixture(scope="session")
def reference() -> Tidied:
    return tidied(load_reference_project())


@pytest.fixture(scope="session")
def clean() -> Tidied:
    return tidied(generate_project(with_errors=False))


@pytest.fixture(scope="session")
def imt_rules() -> StudyRules:
    return study_rules("imt")
