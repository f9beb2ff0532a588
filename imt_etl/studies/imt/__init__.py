"""The reference IMT trial (NCT07274267): its REDCap project, synthetic data and flaw manifests."""

from __future__ import annotations

import json
from pathlib import Path

from imt_etl.errors import ImtEtlError, ProjectXmlError
from imt_etl.redcap.model import ProjectDefinition
from imt_etl.redcap.project_xml import read_project_xml
from imt_etl.studies.imt.deliberate import DeliberateError
from imt_etl.studies.imt.design import HERE
from imt_etl.studies.imt.generator import ProtocolDeviation

XML_PATH = HERE / "imt_project.xml"
MANIFEST_PATH = HERE / "manifest.json"


def reference_project_path() -> Path:
    """The shipped REDCap project XML of the reference study (33 synthetic participants)."""
    return XML_PATH


def load_reference_project() -> ProjectDefinition:
    """The reference project, read from the shipped XML (design and data)."""
    if not XML_PATH.is_file():
        raise ProjectXmlError(str(XML_PATH), "missing: run python -m imt_etl.studies.imt.build")
    return read_project_xml(XML_PATH)


def _manifest() -> dict:
    try:
        return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImtEtlError(f"cannot read the flaw manifest {MANIFEST_PATH}: {exc}") from exc


def reference_errors() -> list[DeliberateError]:
    """The deliberate data-entry errors planted in the shipped reference data."""
    return [DeliberateError(**item) for item in _manifest()["deliberate_errors"]]


def reference_deviations() -> list[ProtocolDeviation]:
    """The deliberate protocol deviations in the shipped reference data."""
    return [ProtocolDeviation(**item) for item in _manifest()["protocol_deviations"]]
