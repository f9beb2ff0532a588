"""The supervised ADL training trial (ISRCTN35925199): two-arm demo project, synthetic data."""

from __future__ import annotations

from pathlib import Path

from imt_etl.studies.adl.design import HERE

XML_PATH = HERE / "adl_project.xml"


def project_path() -> Path:
    """The shipped REDCap project XML of the ADL demo (57 synthetic participants)."""
    return XML_PATH
