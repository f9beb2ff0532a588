"""Shared fixtures: the reference project, a live emulator serving a copy, and one demo run."""

from __future__ import annotations

import contextlib
import copy
import io
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


@pytest.fixture(scope="session")
def small_project() -> ProjectDefinition:
    """A 12-participant project from the reference generator: the same design (events,
    repeating instruments, deliberate errors) as the shipped 33-participant project, for tests
    of the whole pipeline that do not need the shipped data (a run takes a third of the time)."""
    from imt_etl.studies.imt.generator import generate_project

    return generate_project(n_participants=12, seed=2024)


def _serve(project: ProjectDefinition):
    """A fresh emulator over its own copy of `project` on loopback; yields (emulator, token)."""
    token = new_token()
    # Records were entered long before the first sync, as on a real server.
    loaded = datetime.now() - timedelta(days=30)
    with RedcapEmulator(copy.deepcopy(project), token=token, load_time=loaded) as emulator:
        yield emulator, token


@pytest.fixture()
def live_reference(reference_project):
    """A fresh emulator (its own copy of the data) on loopback; yields (emulator, token)."""
    yield from _serve(reference_project)


@pytest.fixture()
def live_small(small_project):
    """Like live_reference, serving the 12-participant small_project."""
    yield from _serve(small_project)


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for pattern in ("fhir/**/*.ndjson", "fhir/bundles/*.json", "parquet/**/*.parquet")
            for p in sorted(out.glob(pattern))}


def _demo(out, *extra: str) -> tuple[int, str]:
    """`imt-etl demo --out OUT ...`: (exit code, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["demo", "--out", str(out), *extra])
    return code, stdout.getvalue()


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The demo run twice into one folder (a demo is ~10 s: every demo test shares these two):
    first with --json, then with the printed summary table. (folder, files after the first run,
    files after the second, {"json": (code, stdout), "table": (code, stdout)})."""
    out = tmp_path_factory.mktemp("demo")
    printed = {"json": _demo(out, "--json")}
    assert printed["json"][0] == 0
    first = _files(out)
    printed["table"] = _demo(out)
    assert printed["table"][0] == 0
    return out, first, _files(out), printed


@pytest.fixture(scope="session")
def demo_out(demo_runs):
    return demo_runs[0]


@pytest.fixture(scope="session")
def demo_printed(demo_runs) -> dict[str, tuple[int, str]]:
    """What the two demo runs printed: "json" (--json) and "table" (no option)."""
    return demo_runs[3]
