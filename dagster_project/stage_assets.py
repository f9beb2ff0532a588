"""The stages after the instrument tables, each a `@stage_asset` body; list new ones in STAGES.

Validation, FHIR and analysis stages are added here as they land: write the body (call the
library, return counts as metadata; name a count `quarantined_rows` or `resources_written` and
the run summary adds it up), then add it to STAGES before `sync_summary`, and add its name to
`sync_summary`'s deps so the summary waits for it.
"""

# No `from __future__ import annotations`: see stage.py.
import time
from typing import Any

import dagster as dg

from dagster_project.stage import (
    INSTRUMENTS,
    REPORT_GROUP,
    StageAsset,
    StageRun,
    instrument_key,
)

# Metadata counts the summary totals over every upstream asset that reports them.
TOTALLED = ("rows", "quarantined_rows", "resources_written")


def _latest_metadata(run: StageRun, key: dg.AssetKey) -> dict[str, Any] | None:
    records = run.context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[run.project.name]), limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def _run_duration(run: StageRun) -> float | None:
    record = run.context.instance.get_run_record_by_id(run.context.run.run_id)
    started = record.start_time if record is not None else None
    return None if started is None else round(time.time() - started, 3)


def sync_summary_body(run: StageRun) -> dict[str, Any]:
    """Counts per instrument and totals of the latest materializations of this project."""
    per_instrument: dict[str, int] = {}
    totals = dict.fromkeys(TOTALLED, 0)
    upstream = [instrument_key(form) for form in run.forms] + [
        dg.AssetKey(stage.name) for stage in STAGES if stage.name != "sync_summary"
    ]
    for key in upstream:
        metadata = _latest_metadata(run, key)
        if metadata is None:
            continue
        if key.path[0].startswith("instrument_"):
            per_instrument[key.path[0].removeprefix("instrument_")] = int(metadata.get("rows", 0))
        for name in TOTALLED:
            value = metadata.get(name)
            if isinstance(value, int | float):
                totals[name] += int(value)
    table = "\n".join(
        ["| instrument | rows |", "|---|---:|"]
        + [f"| {form} | {rows} |" for form, rows in per_instrument.items()]
    )
    return {
        "instruments": dg.MetadataValue.md(table),
        "rows_per_instrument": dg.MetadataValue.json(per_instrument),
        "total_rows": totals["rows"],
        "quarantined_rows": totals["quarantined_rows"],
        "resources_written": totals["resources_written"],
        "run_duration_s": _run_duration(run),
    }


sync_summary = StageAsset(
    name="sync_summary",
    group=REPORT_GROUP,
    description="The run at a glance for one project: rows per instrument table, quarantined "
    "rows, FHIR resources written, and how long the run took.",
    deps=(INSTRUMENTS,),
    body=sync_summary_body,
)

# Built in this order after the snapshot and the instrument tables.
STAGES: list[StageAsset] = [sync_summary]
