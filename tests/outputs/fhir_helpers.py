"""Shared set-up of the FHIR output tests: a project's validated tables, a folder's files."""

from __future__ import annotations

import json
from pathlib import Path

from imt_etl.outputs import load_study_config
from imt_etl.redcap.emulator_store import ProjectStore, export_records
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.validate.run import validate_project


def validated(project):
    """(validation result, design, mapping) of a project's flat JSON export (the emulator's)."""
    rows = json.loads(export_records(ProjectStore(project),
                                     {"content": "record", "format": "json"}).body)
    meta = ProjectMeta.from_definition(project)
    study = load_study_config("imt", meta)
    return validate_project(tidy_instruments(rows, meta), meta, study.rules), meta, study.mapping


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
