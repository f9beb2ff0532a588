"""Several projects from one file as partitions: parallel multiprocess runs, failures stay local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from dagster_project.projects import ProjectSpec, load_projects_file
from imt_etl.errors import ConfigError
from tests.dagster.conftest import write_projects_file

ROOT = Path(__file__).resolve().parents[2]
# Forkserver with the project preloaded: a step process starts in ~1 s instead of ~10 s of
# imports, and the three runs' step processes all fork from the same server.
MULTIPROCESS = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 2,
    "start_method": {"forkserver": {"preload_modules": ["dagster_project.definitions"]}},
}}}}
# One partition's run of the full sync (snapshot and one table, to stay quick), as a run worker.
RUN_ONE = f"""
import json, sys
import dagster as dg
from dagster_project.definitions import full_sync_job

instance = dg.DagsterInstance.get()
with dg.execute_job(dg.reconstructable(full_sync_job), instance, run_config={MULTIPROCESS!r},
                    tags={{"dagster/partition": sys.argv[1]}},
                    asset_selection=[dg.AssetKey("redcap_snapshot"),
                                     dg.AssetKey("instrument_enrollment")]) as result:
    failures = [(e.step_key, e.step_failure_data.error.message)
                for e in result.all_events if e.is_step_failure]
    print(json.dumps({{"success": result.success, "run_id": result.run_id,
                      "failures": failures}}))
"""


def test_projects_file_is_parsed_with_defaults(tmp_path, monkeypatch):
    (tmp_path / "x.xml").write_text("<ODM/>", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        "out_root: /data/out\nprojects:\n"
        "  - {name: krakow, url: 'https://redcap.example.org/api/', token_env: TOK_K}\n"
        "  - {name: demo, emulator: x.xml, batch_size: 5, out_dir: /elsewhere}\n",
        encoding="utf-8",
    )
    krakow, demo = load_projects_file(path)
    assert krakow == ProjectSpec(name="krakow", out_dir="/data/out/krakow",
                                 url="https://redcap.example.org/api/", token_env="TOK_K")
    assert demo.emulator == str(tmp_path / "x.xml") and demo.batch_size == 5
    assert demo.out_dir == "/elsewhere"
    monkeypatch.delenv("TOK_K", raising=False)
    with pytest.raises(ConfigError, match="'krakow': environment variable TOK_K"):
        krakow.token()


@pytest.mark.parametrize(("text", "message"), [
    ("projects: []", "is empty"),
    ("name: x", "top-level `projects:` list"),
    ("projects: [{name: a, url: u, emulator: reference}]", "exactly one of `url` or `emulator`"),
    ("projects: [{name: 'a b', emulator: reference}]", "name 'a b'"),
    ("projects: [{name: a, emulator: reference, token: s3cret}]", "unknown key"),
    ("projects: [{name: a, emulator: reference}, {name: a, url: u}]", "'a' is repeated"),
    ("projects: [{name: a, url: u, batch_size: 0}]", "batch_size"),
    ("projects: [{name: a, url: u, token_env: 'my token'}]", "token_env"),
    ("projects: [", "not valid YAML"),
])
def test_bad_projects_files_are_refused_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_projects_file(path)


# A token the emulator rejects, distinctive enough to search every stored byte for.
BAD_TOKEN = "DEADBEEF" * 4


@pytest.mark.slow
def test_projects_run_in_parallel_with_multiprocess_and_a_bad_token_fails_alone(
        live_small, dagster_home, tmp_path, monkeypatch):
    emulator, _ = live_small  # serves site-bad, whose token it refuses
    monkeypatch.setenv("IMT_TEST_BAD_TOKEN", BAD_TOKEN)
    out = tmp_path / "out"
    projects_file = write_projects_file(tmp_path / "projects.yaml", [
        {"name": "site-a", "emulator": "reference", "out_dir": str(out / "site-a")},
        {"name": "site-b", "emulator": "reference", "out_dir": str(out / "site-b")},
        {"name": "site-bad", "url": emulator.url, "token_env": "IMT_TEST_BAD_TOKEN",
         "out_dir": str(out / "site-bad")},
    ])
    # Run and step processes rebuild the job from the environment, so the file goes there.
    monkeypatch.setenv("IMT_ETL_PROJECTS", str(projects_file))
    # One OS process per run, as Dagster's run launcher does (execute_job is not thread-safe).
    runs = {p: subprocess.Popen([sys.executable, "-c", RUN_ONE, p], stdout=subprocess.PIPE,
                                text=True, cwd=ROOT)
            for p in ("site-a", "site-b", "site-bad")}
    results = {}
    for project, process in runs.items():
        stdout, _ = process.communicate(timeout=150)
        results[project] = json.loads(stdout.strip().splitlines()[-1])

    assert results["site-a"]["success"] and results["site-b"]["success"]
    assert not results["site-bad"]["success"]
    for project in ("site-a", "site-b"):
        enrollment = out / project / "state" / "instruments" / "enrollment.parquet"
        assert len(pd.read_parquet(enrollment)) == 33
    assert not (out / "site-bad" / "parquet").exists()
    [(step, message)] = results["site-bad"]["failures"]
    assert step == "redcap_snapshot"
    assert "REDCap project 'site-bad'" in message and "HTTP 403" in message
    assert BAD_TOKEN not in message
    # Nor anywhere Dagster keeps what happened: event log and run storage, compute logs, outputs.
    stored = [p for root in (dagster_home, out) for p in root.rglob("*") if p.is_file()]
    assert len(stored) > 10
    assert [p for p in stored if BAD_TOKEN.encode() in p.read_bytes()] == []

    # The runs overlapped in time: they ran side by side, not one after the other.
    with dg.DagsterInstance.get() as instance:
        records = [instance.get_run_record_by_id(r["run_id"]) for r in results.values()]
        steps = instance.get_records_for_run(results["site-a"]["run_id"]).records
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert spans[1][0] < spans[0][1] and spans[2][0] < spans[1][1]
    # ... and each ran its steps in their own processes (the multiprocess executor).
    assert any(r.event_log_entry.dagster_event and
               r.event_log_entry.dagster_event.event_type_value == "STEP_WORKER_STARTED"
               for r in steps)


def test_the_example_projects_file_loads():
    specs = load_projects_file(ROOT / "dagster_project" / "projects.example.yaml")
    assert [s.name for s in specs] == ["site-krakow", "site-warsaw"]
    assert specs[0].out_dir == "out/dagster/site-krakow"
    assert specs[1].out_dir == "out/dagster/warsaw" and specs[1].batch_size == 20
