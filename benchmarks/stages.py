"""Stage-by-stage throughput of one full sync, each stage timed on its own in one process."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.workload import settings
from imt_etl import pipeline
from imt_etl.config import OutputConfig
from imt_etl.fhir.context import FhirContext
from imt_etl.fhir.export import record_batches, record_fhir, study_fhir
from imt_etl.fhir.ndjson import dumps
from imt_etl.fhir.spool import Spool
from imt_etl.fhir.writer import write_spooled
from imt_etl.outputs import load_study_config, pseudonymiser
from imt_etl.redcap.client import RedcapClient
from imt_etl.tables.build import analysis_tables, default_config, measurement_rows, write_tables
from imt_etl.validate import validate_project

# One process builds every batch here: this figure is the single-core build rate.
BATCH_RECORDS = OutputConfig(out_dir=Path(".")).fhir_batch_records


def _clock() -> float:
    return time.perf_counter()


def stage_throughput(url: str, token: str, out_dir: Path) -> dict[str, float]:
    """Seconds and item counts per stage; rates are derived by the caller."""
    shutil.rmtree(out_dir, ignore_errors=True)
    config = settings(url, token, out_dir)
    now = datetime.now(UTC)
    got: dict[str, float] = {}
    start = _clock()
    extraction = pipeline.extract(RedcapClient.from_settings(config), out_dir, project="imt",
                                  batch_size=config.batch_size, incremental=False, now=now)
    got["extract_s"], got["rows"] = _clock() - start, extraction.rows_exported
    start = _clock()
    tidy = pipeline.tidy(extraction.meta, extraction.snapshot)
    got["tidy_s"] = _clock() - start
    got["cells"] = sum(t.shape[0] * t.shape[1] for t in tidy.tables.values())
    study = load_study_config(config.study, extraction.meta)
    start = _clock()
    result = validate_project(tidy, extraction.meta, study.rules)
    got["validate_s"] = _clock() - start
    assert study.mapping is not None, "the benchmark project is the mapped reference study"
    start = _clock()
    built = analysis_tables(result.valid, extraction.meta, study.mapping,
                            pseudonymise=pseudonymiser(config),
                            config=default_config(extraction.meta, study.mapping))
    got["tables_build_s"] = _clock() - start
    start = _clock()
    write_tables(built, out_dir / "parquet", study.mapping)
    for form in tidy.tables:
        pipeline.write_instrument_table(tidy, form, out_dir)
    got["parquet_write_s"] = _clock() - start
    got["parquet_rows"] = (sum(len(t.frame) for t in built.values())
                           + sum(len(t) for t in tidy.tables.values()))
    ctx = FhirContext(mapping=study.mapping, run_time=now, pseudonymise=pseudonymiser(config))
    rows = measurement_rows(result.valid, study.mapping,
                            default_config(extraction.meta, study.mapping))
    # As outputs.write_fhir: build a batch of records, serialise it, spool it; then merge.
    build = serialise = spooled = 0.0
    count = 0

    def add(resources: list[dict]) -> None:
        nonlocal serialise, spooled, count
        start = _clock()
        for resource in resources:
            dumps(resource)
        serialise += _clock() - start
        start = _clock()
        count += spool.add(resources)
        spooled += _clock() - start

    with Spool(out_dir / "fhir-spool") as spool:
        start = _clock()
        study_level = study_fhir(result.valid, extraction.meta, ctx)
        build += _clock() - start
        add([r for items in study_level.resources.values() for r in items])
        for valid, raw, table in record_batches(result.valid, result.raw, BATCH_RECORDS,
                                                rows):
            start = _clock()
            built = record_fhir(valid, raw, extraction.meta, ctx, study_level.questionnaires,
                                table)
            build += _clock() - start
            add([r for items in built.values() for r in items])
        start = _clock()
        write_spooled(spool, out_dir / "fhir", bundle_size=config.bundle_size)
        written = _clock() - start
    got["fhir_build_s"], got["resources"] = build, count
    got["fhir_serialise_s"] = serialise
    got["ndjson_write_s"] = spooled  # serialise + sorted runs on disk
    got["bundles_write_s"] = written  # merge into NDJSON, bundles and manifest
    return got
