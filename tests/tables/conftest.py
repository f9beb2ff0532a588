"""Fixtures: the reference project tidied once, its mapping, and the analysis tables built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from imt_etl.fhir.mappings import load_study_mapping
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.tables.build import analysis_tables, write_tables

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings" / "imt"


def flat_rows(project) -> list[dict[str, str]]:
    """The project's data as REDCap's flat export rows (strings)."""
    return [
        {"record_id": r.record, "redcap_event_name": r.event,
         "redcap_repeat_instrument": r.repeat_instrument,
         "redcap_repeat_instance": "" if r.repeat_instance is None else str(r.repeat_instance),
         **r.values}
        for r in project.rows
    ]


@pytest.fixture(scope="session")
def imt_meta(reference_project) -> ProjectMeta:
    return ProjectMeta.from_definition(reference_project)


@pytest.fixture(scope="session")
def imt_tidy(reference_project, imt_meta):
    return tidy_instruments(flat_rows(reference_project), imt_meta)


@pytest.fixture(scope="session")
def imt_mapping(imt_meta):
    return load_study_mapping(MAPPINGS, imt_meta.dictionary)


@pytest.fixture(scope="session")
def imt_tables(imt_tidy, imt_meta, imt_mapping):
    return analysis_tables(imt_tidy.tables, imt_meta, imt_mapping)


@pytest.fixture(scope="session")
def imt_parquet(imt_tables, imt_mapping, tmp_path_factory) -> dict[str, Path]:
    return write_tables(imt_tables, tmp_path_factory.mktemp("parquet"), imt_mapping)
