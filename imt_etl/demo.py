"""The demo: the bundled reference project served by the emulator on loopback, synced for real."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imt_etl.redcap.emulator import DEMO_TOKEN, RedcapEmulator
from imt_etl.redcap.project_xml import read_project_xml


@contextmanager
def emulated_project(project_xml: Path | None = None, token: str = DEMO_TOKEN
                     ) -> Iterator[tuple[str, str]]:
    """Serve a project XML (default: the reference study) on 127.0.0.1; yields (url, token)."""
    if project_xml is None:
        from imt_etl.studies.imt import load_reference_project

        project = load_reference_project()
    else:
        project = read_project_xml(project_xml)
    with RedcapEmulator(project, token=token, host="127.0.0.1", port=0) as emulator:
        yield emulator.url, token
