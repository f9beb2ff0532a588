"""Bundled study projects: a registry from study id to its shipped REDCap project XML."""

from __future__ import annotations

from pathlib import Path

from imt_etl.errors import ConfigError

_HERE = Path(__file__).resolve().parent
# study id (= mappings/<study>/ and schemas/<study>/) -> its bundled demo project XML.
BUNDLED_PROJECTS: dict[str, Path] = {
    "imt": _HERE / "imt" / "imt_project.xml",
    "adl": _HERE / "adl" / "adl_project.xml",
}


def bundled_project_path(study: str) -> Path:
    """The shipped project XML of a bundled study; ConfigError names the known studies."""
    try:
        return BUNDLED_PROJECTS[study]
    except KeyError:
        raise ConfigError(f"no bundled project for study {study!r} "
                          f"(bundled: {', '.join(sorted(BUNDLED_PROJECTS))})") from None
