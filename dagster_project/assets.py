"""Assets: one extraction of the project, then one table asset per instrument (a factory)."""

# No `from __future__ import annotations` here: Dagster resolves config and resource types
# from the runtime annotations of asset functions.
import time
from datetime import UTC, datetime

import dagster as dg

from dagster_project.resources import OutputResource, RedcapSource
from imt_etl import pipeline

EXTRACT_GROUP = "extract"
INSTRUMENT_GROUP = "instruments"


class SyncConfig(dg.Config):
    incremental: bool = False


@dg.asset(
    group_name=EXTRACT_GROUP,
    description="All records exported from REDCap in batches (full or incremental), merged into "
    "the raw snapshot; the sync state advances only when this succeeds.",
)
def redcap_snapshot(
    context: dg.AssetExecutionContext, config: SyncConfig, redcap: RedcapSource,
    output: OutputResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    with redcap.connect() as conn:
        extraction = pipeline.extract(
            conn.client, output.path(), project=conn.project_name, batch_size=conn.batch_size,
            incremental=config.incremental, now=datetime.now(UTC),
        )
    pipeline.save_extraction(extraction, output.path(), conn.project_name, datetime.now(UTC))
    records = len(extraction.snapshot.record_ids)
    context.log.info("%s sync: %d records", extraction.plan.mode, records)
    return dg.MaterializeResult(metadata={
        "mode": extraction.plan.mode,
        "records": records,
        "records_exported": len(extraction.plan.record_ids),
        "records_deleted": len(extraction.plan.deleted_ids),
        "rows_exported": extraction.rows_exported,
        "batches": extraction.batches,
        "duration_s": round(time.perf_counter() - started, 3),
    })


def instrument_asset(form: str) -> dg.AssetsDefinition:
    """The typed parquet table of one REDCap instrument, rebuilt from the raw snapshot."""

    @dg.asset(
        name=f"instrument_{form}",
        group_name=INSTRUMENT_GROUP,
        deps=[redcap_snapshot],
        description=f"Typed table of the REDCap instrument `{form}` (one row per record x event "
        "x repeat instance), written to parquet/instruments/.",
    )
    def _table(output: OutputResource) -> dg.MaterializeResult:
        meta, snapshot = pipeline.load_extraction_inputs(output.path())
        if form not in meta.dictionary.forms:
            raise dg.Failure(f"instrument {form!r} is no longer in the project's data dictionary")
        result = pipeline.tidy_form(meta, snapshot, form)
        path = pipeline.write_instrument_table(result, form, output.path())
        return dg.MaterializeResult(metadata={
            "rows": len(result.tables[form]),
            "columns": len(result.tables[form].columns),
            "type_issues": sum(1 for i in result.issues if i.instrument == form),
            "path": dg.MetadataValue.path(str(path)),
        })

    return _table


def build_assets(forms: list[str]) -> list[dg.AssetsDefinition]:
    return [redcap_snapshot, *(instrument_asset(form) for form in forms)]
