"""The Dagster Definitions: project-partitioned assets, sync jobs, schedules and the sensor."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from dagster_project.assets import instrument_asset, snapshot_asset
from dagster_project.checks import build_checks
from dagster_project.deployment import instrument_names
from dagster_project.projects import (
    PROJECTS_ENV,
    ProjectSpec,
    configured_projects,
    load_projects_file,
)
from dagster_project.resources import ProjectsResource, RedcapProjectsResource, RedcapSource
from dagster_project.schedules import FULL_JOB, sync_jobs, sync_schedules
from dagster_project.sensors import build_change_sensor
from dagster_project.stage_assets import STAGES


def project_partitions(specs: list[ProjectSpec]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([spec.name for spec in specs])


def build_assets(forms: list[str], partitions: dg.PartitionsDefinition
                 ) -> list[dg.AssetsDefinition]:
    """The snapshot, one table per instrument, then the later stages (stage_assets.STAGES)."""
    return [
        snapshot_asset(partitions),
        *(instrument_asset(form, partitions) for form in forms),
        *(stage.build(partitions, forms) for stage in STAGES),
    ]


def build_definitions(projects_file: str | None = None, forms: list[str] | None = None,
                      redcap: RedcapSource | None = None) -> dg.Definitions:
    """Definitions for the configured projects ($IMT_ETL_PROJECTS or the deployment's one), or
    for the given projects file and instruments (tests)."""
    if projects_file is None:
        projects_file = os.environ.get(PROJECTS_ENV, "")
    specs = load_projects_file(Path(projects_file)) if projects_file else configured_projects()
    forms = forms if forms is not None else instrument_names()
    partitions = project_partitions(specs)
    full, incremental = sync_jobs()
    names = [spec.name for spec in specs]
    interval = int(os.environ.get("IMT_ETL_SENSOR_INTERVAL_S", "300"))
    return dg.Definitions(
        assets=build_assets(forms, partitions),
        asset_checks=build_checks(forms, partitions),
        jobs=[full, incremental],
        schedules=sync_schedules(full, incremental, names),
        sensors=[build_change_sensor(incremental, names, interval)],
        resources={
            "projects": ProjectsResource(projects_file=projects_file),
            "redcap": redcap or RedcapProjectsResource(),
        },
    )


def full_sync_job() -> dg.JobDefinition:
    """The full sync of the current environment's deployment, for `dg.reconstructable`
    (multiprocess execution rebuilds it in each step process from the same environment)."""
    return build_definitions().resolve_job_def(FULL_JOB)


defs = build_definitions()
