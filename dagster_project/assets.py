"""Assets: the REDCap extraction of a project, then one table asset per instrument (a factory).

Every asset is partitioned by project (one partition per configured REDCap project).
"""

# No `from __future__ import annotations` here: Dagster resolves config and resource types
# from the runtime annotations of asset functions.
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_project.resources import ProjectsResource, RedcapSource
from dagster_project.stage import (
    EXTRACT_GROUP,
    INSTRUMENT_GROUP,
    StageAsset,
    StageRun,
    run_stage,
)
from imt_etl import pipeline
from imt_etl.errors import ConfigError

SNAPSHOT = "redcap_snapshot"


class SyncConfig(dg.Config):
    """Full export of every record, or only records created, modified or deleted since the
    last successful sync of the project."""

    incremental: bool = False


def snapshot_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=SNAPSHOT,
        group_name=EXTRACT_GROUP,
        partitions_def=partitions,
        description="The project's records exported from REDCap in batches (full, or incremental "
        "since the last successful sync) and merged into the raw snapshot. The sync state "
        "advances only when this succeeds; every later asset is rebuilt from this snapshot.",
    )
    def redcap_snapshot(
        context: dg.AssetExecutionContext, config: SyncConfig, projects: ProjectsResource,
        redcap: RedcapSource,
    ) -> dg.MaterializeResult:
        def body(run: StageRun) -> dict[str, Any]:
            with redcap.connect(run.project) as conn:
                extraction = pipeline.extract(
                    conn.client, run.out_dir, project=conn.project_name,
                    batch_size=conn.batch_size, incremental=config.incremental,
                    now=datetime.now(UTC),
                )
            pipeline.save_extraction(extraction, run.out_dir, conn.project_name,
                                     datetime.now(UTC))
            records = len(extraction.snapshot.record_ids)
            run.log.info("%s: %s sync, %d records", conn.project_name, extraction.plan.mode,
                         records)
            return {
                "mode": extraction.plan.mode,
                "records": records,
                "records_exported": len(extraction.plan.record_ids),
                "records_deleted": len(extraction.plan.deleted_ids),
                "records_missing_during_export": len(extraction.missing_ids),
                "rows_exported": extraction.rows_exported,
                "batches": extraction.batches,
                "out_dir": dg.MetadataValue.path(str(run.out_dir)),
            }

        return run_stage(context, projects, [], body)

    return redcap_snapshot


def _instrument_body(form: str):
    def body(run: StageRun) -> dict[str, Any]:
        meta, snapshot = pipeline.load_extraction_inputs(run.out_dir)
        if form not in meta.dictionary.forms:
            raise ConfigError(f"instrument {form!r} is not in the project's data dictionary "
                              f"(it has {meta.dictionary.forms})")
        result = pipeline.tidy_form(meta, snapshot, form)
        path = pipeline.write_instrument_table(result, form, run.out_dir)
        frame = result.tables[form]
        rid = meta.dictionary.record_id_field
        return {
            "rows": len(frame),
            "records": int(frame[rid].nunique()) if rid in frame.columns else 0,
            "columns": len(frame.columns),
            "type_issues": sum(1 for i in result.issues if i.instrument == form),
            "path": dg.MetadataValue.path(str(path)),
        }

    return body


def instrument_asset(form: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The typed parquet table of one REDCap instrument, rebuilt from the raw snapshot."""
    return StageAsset(
        name=f"instrument_{form}",
        group=INSTRUMENT_GROUP,
        description=f"Typed table of the REDCap instrument `{form}`: every extracted row (record "
        "x event x repeat instance), kept in the project's private state/instruments/; the "
        "validated, pseudonymised table for analysts is written by `analysis_tables`.",
        deps=(SNAPSHOT,),
        body=_instrument_body(form),
    ).build(partitions, [form])
