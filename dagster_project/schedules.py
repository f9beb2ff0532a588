"""Sync jobs (full, incremental) over every asset, and their nightly and hourly schedules.

Cron and timezone come from the environment at load time: IMT_ETL_FULL_CRON (default
"0 2 * * *"), IMT_ETL_INCREMENTAL_CRON (default "15 * * * *": off the hour, so it never starts
together with the nightly full sync) and IMT_ETL_TIMEZONE (default "Europe/Warsaw").

Two runs of one project must not overlap (they would race on its sync state). Runs are not
skipped here; the run queue holds the second one back: `make dagster` writes a dagster.yaml with
a concurrency limit of 1 per value of the `dagster/partition` tag (see dev.py).
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Iterator
from typing import Any

import dagster as dg

from dagster_project.assets import SNAPSHOT

# define_asset_job returns an unresolved job, which dagster exports no public type for.
AssetJob = Any

FULL_JOB = "sync_full"
INCREMENTAL_JOB = "sync_incremental"
DEFAULT_FULL_CRON = "0 2 * * *"
DEFAULT_INCREMENTAL_CRON = "15 * * * *"
DEFAULT_TIMEZONE = "Europe/Warsaw"


def sync_config(incremental: bool) -> dict:
    return {"ops": {SNAPSHOT: {"config": {"incremental": incremental}}}}


def sync_jobs() -> tuple[AssetJob, ...]:
    """The full and the incremental sync: every asset of one project (partition) per run
    (partitioning comes from the assets)."""
    full = dg.define_asset_job(
        FULL_JOB, selection=dg.AssetSelection.all(),
        config=sync_config(False),
        description="Export every record of a project again and rebuild all its outputs.",
    )
    incremental = dg.define_asset_job(
        INCREMENTAL_JOB, selection=dg.AssetSelection.all(),
        config=sync_config(True),
        description="Export only records created, modified or deleted since the project's last "
        "successful sync (a full sync when there is none), then rebuild its outputs.",
    )
    return full, incremental


def timezone() -> str:
    name = os.environ.get("IMT_ETL_TIMEZONE", DEFAULT_TIMEZONE).strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise dg.DagsterInvalidDefinitionError(
            f"IMT_ETL_TIMEZONE {name!r} is not an IANA time zone (e.g. Europe/Warsaw)"
        ) from exc
    return name


def _cron(variable: str, default: str) -> tuple[str, str]:
    return variable, os.environ.get(variable, "").strip() or default


def _schedule(name: str, job: AssetJob, cron_setting: tuple[str, str],
              tz: str, projects: list[str], description: str) -> dg.ScheduleDefinition:
    variable, cron = cron_setting
    try:
        return _build_schedule(name, job, cron, tz, projects, description)
    except dg.DagsterInvalidDefinitionError as exc:
        raise dg.DagsterInvalidDefinitionError(
            f"{variable} {cron!r} is not a valid cron expression"
        ) from exc


def _build_schedule(name: str, job: AssetJob, cron: str, tz: str,
                    projects: list[str], description: str) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=tz,
                 description=description, default_status=dg.DefaultScheduleStatus.STOPPED)
    def _sync(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        for project in projects:
            yield dg.RunRequest(run_key=f"{name}:{project}:{tick}", partition_key=project)

    return _sync


def sync_schedules(full: AssetJob,
                   incremental: AssetJob,
                   projects: list[str]) -> list[dg.ScheduleDefinition]:
    """Nightly full and hourly incremental sync of every project (stopped until switched on)."""
    tz = timezone()
    return [
        _schedule("nightly_full_sync", full, _cron("IMT_ETL_FULL_CRON", DEFAULT_FULL_CRON), tz,
                  projects, "Full sync of every project, nightly: catches anything an "
                  "incremental sync cannot see (e.g. deletions the log no longer lists)."),
        _schedule("hourly_incremental_sync", incremental,
                  _cron("IMT_ETL_INCREMENTAL_CRON", DEFAULT_INCREMENTAL_CRON), tz, projects,
                  "Incremental sync of every project, hourly."),
    ]
