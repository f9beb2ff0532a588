"""Fixtures of the reliability tests: clean reference outputs before and after a data change,
computed once and copied into each test's folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from imt_etl import pipeline
from imt_etl.redcap.emulator import new_token

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import change_data, emulator_for, fast_settings  # noqa: E402


@pytest.fixture(scope="session")
def token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def clean_outputs(reference_project, token, tmp_path_factory) -> tuple[Path, Path]:
    """(before, after): clean full syncs of the reference data, then of it after change_data."""
    root = tmp_path_factory.mktemp("clean")
    with emulator_for(reference_project, token) as emulator:
        pipeline.run(fast_settings(emulator.url, token, root / "before"))
        change_data(emulator)
        pipeline.run(fast_settings(emulator.url, token, root / "after"))
    return root / "before", root / "after"


@pytest.fixture()
def previous_run(clean_outputs, tmp_path) -> Path:
    """A fresh copy of the clean outputs before the change: a previous run's folder."""
    out = tmp_path / "out"
    shutil.copytree(clean_outputs[0], out)  # copy2 keeps mtimes: fingerprints stay comparable
    return out
