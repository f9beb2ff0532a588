"""The real Definitions load and resolve; the whole graph materializes against the emulator."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pandas as pd
import pytest

from dagster_project.definitions import build_definitions, defs
from dagster_project.schedules import sync_config


def test_real_definitions_resolve_every_job_schedule_and_sensor():
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {"redcap_snapshot", "instrument_training_diary", "sync_summary"} <= keys
    # snapshot + 13 instruments of the reference study + validation, analysis, FHIR, summary
    assert len(keys) == 18
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"sync_full", "sync_incremental"} <= jobs
    for name in ("sync_full", "sync_incremental"):
        job = defs.resolve_job_def(name)
        assert job.partitions_def.get_partition_keys() == ["imt-demo"]
        incremental = name == "sync_incremental"
        config = job.get_run_config_for_partition_key("imt-demo")
        assert config["ops"] == sync_config(incremental)["ops"]
    repository = defs.get_repository_def()  # resolves every definition and resource binding
    schedules = {s.name: s for s in repository.schedule_defs}
    assert set(schedules) == {"nightly_full_sync", "hourly_incremental_sync"}
    assert schedules["nightly_full_sync"].execution_timezone == "Europe/Warsaw"
    assert schedules["hourly_incremental_sync"].cron_schedule == "15 * * * *"
    for schedule in schedules.values():
        assert repository.get_job(schedule.job_name).name in jobs
    sensors = {s.name: s for s in repository.sensor_defs}
    assert set(sensors) == {"redcap_change_sensor"}
    assert sensors["redcap_change_sensor"].job_name == "sync_incremental"
    assert set(sensors["redcap_change_sensor"].required_resource_keys) == {"projects", "redcap"}
    groups = {defs.resolve_assets_def(k).group_names_by_key[k] for k in
              defs.resolve_all_asset_keys()}
    assert groups == {"redcap_extract", "instrument_tables", "validation", "analysis", "fhir",
                      "run_reports"}


def test_schedules_request_every_project_and_take_cron_and_timezone_from_env(
        monkeypatch, tmp_path):
    monkeypatch.setenv("IMT_ETL_TIMEZONE", "America/New_York")
    monkeypatch.setenv("IMT_ETL_INCREMENTAL_CRON", "*/30 * * * *")
    projects_file = str(_two_projects(tmp_path))
    built = build_definitions(projects_file, ["enrollment"])
    hourly = built.resolve_schedule_def("hourly_incremental_sync")
    assert hourly.cron_schedule == "*/30 * * * *"
    assert hourly.execution_timezone == "America/New_York"
    context = dg.build_schedule_context(repository_def=built.get_repository_def(),
                                        scheduled_execution_time=datetime(2026, 11, 3, 14, 30))
    requests = list(hourly.evaluate_tick(context).run_requests)
    assert sorted(r.partition_key for r in requests) == ["a", "b"]
    assert len({r.run_key for r in requests}) == 2
    monkeypatch.setenv("IMT_ETL_TIMEZONE", "Mars/Olympus")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="IMT_ETL_TIMEZONE"):
        build_definitions(projects_file, ["enrollment"])
    monkeypatch.setenv("IMT_ETL_TIMEZONE", "UTC")
    monkeypatch.setenv("IMT_ETL_FULL_CRON", "every night")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="IMT_ETL_FULL_CRON"):
        build_definitions(projects_file, ["enrollment"])


def _two_projects(tmp_path):
    from tests.dagster.conftest import write_projects_file

    return write_projects_file(tmp_path / "p.yaml", [
        {"name": "a", "emulator": "reference", "out_dir": str(tmp_path / "a")},
        {"name": "b", "emulator": "reference", "out_dir": str(tmp_path / "b")},
    ])


def test_materialize_the_whole_graph_against_the_emulator(live_project_file, small_project,
                                                          tmp_path):
    emulator, projects_file = live_project_file
    forms = small_project.dictionary.forms
    built = build_definitions(str(projects_file), forms)
    instance = dg.DagsterInstance.ephemeral()
    result = built.resolve_job_def("sync_full").execute_in_process(
        partition_key="site-a", instance=instance)
    assert result.success
    out = tmp_path / "out" / "site-a"
    snapshot = result.asset_materializations_for_node("redcap_snapshot")[0].metadata
    assert snapshot["records"].value == 12 and snapshot["mode"].text == "full"
    summary = result.asset_materializations_for_node("sync_summary")[0].metadata
    per_instrument = summary["rows_per_instrument"].value
    assert set(per_instrument) == set(forms)
    for form in forms:
        on_disk = pd.read_parquet(out / "state" / "instruments" / f"{form}.parquet")
        meta = result.asset_materializations_for_node(f"instrument_{form}")[0].metadata
        assert meta["rows"].value == per_instrument[form] == len(on_disk)
        assert meta["project"].text == "site-a" and meta["duration_s"].value >= 0
    assert per_instrument["enrollment"] == 12
    assert summary["total_rows"].value == sum(per_instrument.values())
    assert summary["run_duration_s"].value > 0
    checks = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert len(checks) == len(forms) and all(c.passed for c in checks.values())
    diary_check = checks["instrument_training_diary"].metadata
    assert diary_check["quarantined"].value >= 1  # the planted breaths value (dict.range)
    assert diary_check["rows"].value == diary_check["valid"].value + diary_check[
        "quarantined"].value
    quality = result.asset_materializations_for_node("quality_report")[0].metadata
    # The generator plants the shipped project's 12 deliberate errors at any size.
    assert quality["errors"].value == 12 and quality["quarantined_rows"].value > 0
    fhir = result.asset_materializations_for_node("fhir_resources")[0].metadata
    assert fhir["resources_written"].value > 8000
    assert summary["quarantined_rows"].value == quality["quarantined_rows"].value
    assert summary["resources_written"].value == fhir["resources_written"].value
    for output in ("quality/index.html", "report/index.html", "fhir/Observation.ndjson",
                   "parquet/change_from_baseline.parquet"):
        assert (out / output).is_file(), output

    # An incremental run picks up a deletion and the tables follow.
    emulator.store.delete_records(["003"])
    incremental = built.resolve_job_def("sync_incremental").execute_in_process(
        partition_key="site-a", instance=instance)
    assert incremental.success
    meta = incremental.asset_materializations_for_node("redcap_snapshot")[0].metadata
    assert meta["mode"].text == "incremental" and meta["records"].value == 11
    enrollment = pd.read_parquet(out / "parquet" / "instruments" / "enrollment.parquet")
    assert len(enrollment) == 11 and "record_id" not in enrollment.columns
