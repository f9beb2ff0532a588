"""The stages after the instrument tables, each a `@stage_asset` body; list new ones in STAGES.

Validation, FHIR and analysis stages are added here as they land: write the body (call the
library, return counts as metadata; name a count `quarantined_rows` or `resources_written` and
the run summary adds it up), then add it to STAGES before `sync_summary`, and add its name to
`sync_summary`'s deps so the summary waits for it.
"""

# No `from __future__ import annotations`: see stage.py.
import os
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_project.stage import (
    ANALYSIS_GROUP,
    FHIR_GROUP,
    INSTRUMENTS,
    REPORT_GROUP,
    VALIDATE_GROUP,
    StageAsset,
    StageRun,
    instrument_key,
)
from imt_etl import last_success, outputs, pipeline
from imt_etl.config import OutputConfig
from imt_etl.privacy import key_from_env
from imt_etl.summary import RunSummary, now_iso

FHIR_BASE_ENV = "IMT_ETL_FHIR_BASE"

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
    deps=(INSTRUMENTS, "quality_report", "analysis_tables", "fhir_resources"),
    body=sync_summary_body,
)

def _output_config(run: StageRun) -> OutputConfig:
    """Where this project's outputs go and its study configuration; the key from the env."""
    return OutputConfig(out_dir=run.out_dir, study=run.project.study,
                        pseudonym_key=key_from_env())


def _validated(run: StageRun) -> tuple[Any, Any, OutputConfig, RunSummary]:
    config = _output_config(run)
    meta, snapshot = pipeline.load_extraction_inputs(run.out_dir)
    summary = RunSummary(project=run.project.name, study=config.study, mode="dagster",
                         started_at=now_iso())
    study = outputs.load_study_config(config.study, meta, mappings_root=config.mappings_root,
                                      schemas_root=config.schemas_root)
    result = outputs.validate_and_report(pipeline.tidy(meta, snapshot), meta, study.rules,
                                         run.out_dir, summary)
    result = outputs.shift_dates_if_configured(result, meta, study.mapping, config, summary)
    return meta, (result, study), config, summary


def quality_report_body(run: StageRun) -> dict[str, Any]:
    """Validate every instrument; quarantine failing rows; write the data-quality report."""
    _, (result, _), _, summary = _validated(run)
    table = "\n".join(
        ["| instrument | extracted | valid | quarantined | warnings |", "|---|---:|---:|---:|---:|"]
        + [f"| {form} | {c.rows_extracted} | {c.rows_valid} | {c.rows_quarantined} | "
           f"{c.warnings} |" for form, c in summary.instruments.items()]
    )
    return {
        "errors": len(result.errors), "warnings": len(result.warnings),
        "quarantined_rows": int(sum(len(q) for q in result.quarantined.values())),
        "instruments": dg.MetadataValue.md(table),
        "report": dg.MetadataValue.path(str(run.out_dir / "quality" / "index.html")),
    }


def analysis_tables_body(run: StageRun) -> dict[str, Any]:
    """Analysis-ready parquet (valid rows only, pseudonymised) and the study report."""
    meta, (result, study), config, summary = _validated(run)
    if study.mapping is None:
        outputs.write_plain_instrument_tables(result, meta, config, summary)
        return {"tables": len(summary.files_written), "mapping": "none"}
    outputs.write_analysis(result, meta, study.mapping, config, summary)
    return {"tables": dg.MetadataValue.json(summary.stages.get("tables", {})),
            "report": dg.MetadataValue.path(str(run.out_dir / "report" / "index.html"))}


def fhir_resources_body(run: StageRun) -> dict[str, Any]:
    """FHIR R4 NDJSON per resource type and transaction bundles (DELETEs for removed data)."""
    meta, (result, study), config, summary = _validated(run)
    if study.mapping is None:
        return {"resources_written": 0, "mapping": "none"}
    outputs.write_fhir(result, meta, study.mapping, config, summary,
                       datetime.now(UTC).replace(microsecond=0))
    fhir = summary.stages["fhir"]
    last_success.record_success(run.out_dir)
    return {"resources_written": int(sum(fhir["resources"].values())),
            "resources": dg.MetadataValue.json(fhir["resources"]),
            "deletions": fhir["deletions"], "bundles": fhir["bundles"]}


def fhir_publish_body(run: StageRun) -> dict[str, Any]:
    """POST the bundles to the FHIR server named by IMT_ETL_FHIR_BASE."""
    from imt_etl.fhir.publish import publish_bundles

    report = publish_bundles(run.out_dir / "fhir" / "bundles", os.environ[FHIR_BASE_ENV])
    return {"bundles": len(report.outcomes), "entries": report.entries,
            "server": report.base_url}


quality_report = StageAsset(
    name="quality_report", group=VALIDATE_GROUP, deps=(INSTRUMENTS,), body=quality_report_body,
    description="Dictionary and study-rule validation of every instrument: failing rows are "
    "quarantined with their reasons (never dropped); quality/index.html and findings parquet.",
)
analysis_tables = StageAsset(
    name="analysis_tables", group=ANALYSIS_GROUP, deps=("quality_report",),
    body=analysis_tables_body,
    description="Analysis-ready parquet from the valid rows (instrument tables, long, wide, "
    "change from baseline, adherence, scores, codebook) and the study report.",
)
fhir_resources = StageAsset(
    name="fhir_resources", group=FHIR_GROUP, deps=("quality_report",), body=fhir_resources_body,
    description="FHIR R4 resources from the valid rows: NDJSON per type and transaction "
    "bundles (PUT by id; DELETE for resources of removed records).",
)
fhir_publish = StageAsset(
    name="fhir_publish", group=FHIR_GROUP, deps=("fhir_resources",), body=fhir_publish_body,
    description="The transaction bundles POSTed to the FHIR server at $IMT_ETL_FHIR_BASE.",
)


def stages() -> list[StageAsset]:
    """The stages in build order; publishing only when a FHIR server is configured."""
    chosen = [quality_report, analysis_tables, fhir_resources]
    if os.environ.get(FHIR_BASE_ENV, "").strip():
        chosen.append(fhir_publish)
    return [*chosen, sync_summary]


# Built in this order after the snapshot and the instrument tables.
STAGES: list[StageAsset] = stages()
