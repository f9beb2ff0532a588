"""Shared fixtures: the reference project loaded once, a live emulator serving a copy of it."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest

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
