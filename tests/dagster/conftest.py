"""Dagster test helpers: a projects file for live emulators, a throwaway DAGSTER_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def write_projects_file(path: Path, projects: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"projects": projects}), encoding="utf-8")
    return path


@pytest.fixture()
def live_project_file(live_small, tmp_path, monkeypatch):
    """One project `site-a` served by a live emulator of the 12-participant small_project (the
    whole graph runs several times per test: the shipped 33 would double that);
    yields (emulator, projects file)."""
    emulator, token = live_small
    monkeypatch.setenv("IMT_TEST_TOKEN_A", token)
    path = write_projects_file(tmp_path / "projects.yaml", [{
        "name": "site-a", "url": emulator.url, "token_env": "IMT_TEST_TOKEN_A",
        "batch_size": 10, "out_dir": str(tmp_path / "out" / "site-a"),
    }])
    return emulator, path


@pytest.fixture()
def dagster_home(tmp_path, monkeypatch):
    """A persistent DAGSTER_HOME in tmp (telemetry off), as multiprocess execution needs."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Create the sqlite storage now: processes starting together would race on its migration.
    import dagster as dg

    with dg.DagsterInstance.get():
        pass
    return home

