"""Fixtures of the reliability tests: clean reference outputs before and after a data change,
computed once and copied into each test's folder."""

from __future__ import annotations

import logging
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imt_etl import pipeline
from imt_etl.redcap.emulator import new_token

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import change_data, emulator_for, fast_settings  # noqa: E402


@pytest.fixture(autouse=True)
def imt_etl_logs_reach_caplog():
    """These tests count retries and faults from log records: undo whatever earlier tests in the
    session (Dagster runs, in-process CLI calls) did to the package's loggers."""
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("imt_etl") and isinstance(logger, logging.Logger):
            logger.disabled, logger.propagate = False, True
            logger.handlers[:] = []
    logging.getLogger("imt_etl").setLevel(logging.NOTSET)
    # A handler left on the root logger by an in-process Dagster run rewrites records in place.
    logging.root.handlers[:] = [h for h in logging.root.handlers
                                if type(h).__module__.startswith("_pytest")]


@pytest.fixture(scope="session")
def reference_project():
    """A 12-participant project from the reference generator (same design, deliberate errors
    included): every reliability test runs the whole pipeline several times, and this keeps a
    run near a second instead of ten."""
    from imt_etl.studies.imt.generator import generate_project

    return generate_project(n_participants=12, seed=2024)


@pytest.fixture(scope="session")
def token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def run_time() -> datetime:
    """One run time for every compared run (statuses depend on it)."""
    return datetime.now(UTC).replace(microsecond=0)


def clean_runs(project, token, run_time, root: Path) -> tuple[Path, Path]:
    """(before, after): a clean full sync of `project`, and a copy of it brought up to date by
    a clean incremental sync after change_data (what every recovered run must equal)."""
    before, after = root / "before", root / "after"
    with emulator_for(project, token) as emulator:
        pipeline.run(fast_settings(emulator.url, token, before, run_time=run_time))
        shutil.copytree(before, after)
        change_data(emulator)
        pipeline.run(fast_settings(emulator.url, token, after, run_time=run_time),
                     incremental=True)
    return before, after


@pytest.fixture(scope="session")
def clean_outputs(reference_project, token, run_time, tmp_path_factory) -> tuple[Path, Path]:
    return clean_runs(reference_project, token, run_time, tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="session")
def full_reference_project():
    """The shipped 33-participant project: enough requests for every kind of fault to occur."""
    from imt_etl.studies.imt import load_reference_project

    return load_reference_project()


@pytest.fixture(scope="session")
def full_clean_outputs(full_reference_project, token, run_time, tmp_path_factory):
    return clean_runs(full_reference_project, token, run_time,
                      tmp_path_factory.mktemp("clean-full"))


@pytest.fixture()
def previous_run(clean_outputs, tmp_path) -> Path:
    """A fresh copy of the clean outputs before the change: a previous run's folder."""
    out = tmp_path / "out"
    shutil.copytree(clean_outputs[0], out)  # copy2 keeps mtimes: fingerprints stay comparable
    return out
