"""Shared fixtures: the reference project, a live emulator serving a copy, and one demo run."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest

from imt_etl import cli
from imt_etl.redcap.emulator import RedcapEmulator, new_token
from imt_etl.redcap.model import ProjectDefinition

TEST_PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def pseudonym_key_in_environment(monkeypatch):
    """Runs read the pseudonym key from the environment, as in production."""
    monkeypatch.setenv("IMT_ETL_PSEUDONYM_KEY", TEST_PSEUDONYM_KEY)


@pytest.fixture(scope="session")
def reference_project() -> ProjectDefinition:
    from imt_etl.studies.imt import load_reference_project

    return load_reference_project()


@pytest.fixture()
def live_reference(reference_project):
    """A fresh emulator (its own copy of the data) on loopback; yields (emulator, token)."""
    token = new_token()
    # Records were entered long before the first sync, as on a real server.
    loaded = datetime.now() - timedelta(days=30)
    project = copy.deepcopy(reference_project)
    with RedcapEmulator(project, token=token, load_time=loaded) as emulator:
        yield emulator, token


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for pattern in ("fhir/**/*.ndjson", "fhir/bundles/*.json", "parquet/**/*.parquet")
            for p in sorted(out.glob(pattern))}


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    first = _files(out)
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    return out, first, _files(out)


@pytest.fixture(scope="session")
def demo_out(demo_runs):
    return demo_runs[0]
