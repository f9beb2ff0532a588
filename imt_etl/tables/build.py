"""Build every analysis table from the valid instrument tables and write them as parquet."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from imt_etl.fhir.mappings import StudyMapping
from imt_etl.measures import measurements
from imt_etl.redcap.tidy import ProjectMeta
from imt_etl.tables.adherence import training_tables
from imt_etl.tables.change import change_from_baseline
from imt_etl.tables.codebook import codebook
from imt_etl.tables.common import AnalysisTable, Pseudonymise, identity
from imt_etl.tables.config import AnalysisConfig, study_analysis_config
from imt_etl.tables.instruments import analysis_instruments
from imt_etl.tables.long import observations_long
from imt_etl.tables.parquet import write_frame
from imt_etl.tables.scores import scores_tables
from imt_etl.tables.wide import visits_wide

log = logging.getLogger(__name__)


def default_config(meta: ProjectMeta, mapping: StudyMapping) -> AnalysisConfig:
    """The study's `analysis.yaml` beside its mappings, else events as visits with no periods,
    training or scores."""
    configured = study_analysis_config(mapping.folder)
    if configured is not None:
        return configured
    repeating = {r.event for r in meta.repeating}
    events = tuple(e for e in meta.event_arms if e not in repeating)
    return AnalysisConfig(event_labels={e: e for e in meta.event_arms}, event_weeks={},
                          visit_events=events)


def _plain_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Shallow copies without `attrs`: pandas deep-copies attrs on every operation (slow).

    The DataFrame constructor starts with empty attrs; frame.copy() would deep-copy them first."""
    return {form: pd.DataFrame(frame, copy=False) for form, frame in tables.items()}


def analysis_tables(
    tables: Mapping[str, pd.DataFrame],
    meta: ProjectMeta,
    mapping: StudyMapping,
    *,
    pseudonymise: Pseudonymise = identity,
    config: AnalysisConfig | None = None,
    rows: pd.DataFrame | None = None,
) -> dict[str, AnalysisTable]:
    """All analysis tables in memory, keyed by name (the codebook last). Pass only valid rows.

    `rows`: the long measurement table from `measurement_rows`, when the caller keeps it."""
    config = config or default_config(meta, mapping)
    repeating = {r.form for r in meta.repeating if r.form}
    timings: dict[str, float] = {}
    out: dict[str, AnalysisTable] = {}

    def timed(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started

    started = time.perf_counter()
    for table in analysis_instruments(
        tables, meta.dictionary, mapping=mapping, pseudonymise=pseudonymise,
        event_labels=config.event_labels, allowed_identifiers=config.allowed_identifiers,
    ).values():
        out[table.name] = table
    timed("instruments", started)
    started = time.perf_counter()
    tables = _plain_tables(tables)
    long = observations_long(tables, mapping, pseudonymise=pseudonymise,
                             event_labels=config.event_labels, event_weeks=config.event_weeks,
                             rows=rows)
    out[long.name] = long
    timed("observations_long", started)
    started = time.perf_counter()
    wide = visits_wide(long.frame, mapping, repeating)
    out[wide.name] = wide
    out["change_from_baseline"] = change_from_baseline(wide.frame, mapping, config, repeating)
    timed("visits_wide+change", started)
    started = time.perf_counter()
    if config.training is not None:
        weeks, deviations = training_tables(tables, config.training, pseudonymise=pseudonymise)
        out[weeks.name], out[deviations.name] = weeks, deviations
    if config.scores is not None:
        scored, agreement = scores_tables(tables, mapping, config, pseudonymise=pseudonymise)
        out[scored.name], out[agreement.name] = scored, agreement
    timed("adherence+scores", started)
    out["codebook"] = codebook(out.values())
    log.info("analysis tables built: %s",
             ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return out


def measurement_rows(tables: Mapping[str, pd.DataFrame], mapping: StudyMapping,
                     config: AnalysisConfig) -> pd.DataFrame:
    """The long measurement table as `analysis_tables` computes it, to share with FHIR."""
    return measurements(_plain_tables(tables), mapping, event_labels=config.event_labels,
                        event_weeks=config.event_weeks)


def write_tables(built: Mapping[str, AnalysisTable], out_dir: Path,
                 mapping: StudyMapping) -> dict[str, Path]:
    """Write each table atomically to `<out_dir>/<name>.parquet` with column descriptions."""
    paths: dict[str, Path] = {}
    for name, table in built.items():
        meta = {**table.meta(), "study_id": mapping.study.study_id,
                "mapping_version": mapping.study.version}
        paths[name] = write_frame(Path(out_dir) / f"{name}.parquet", table.frame,
                                  table.columns, meta)
    return paths


def build_analysis_tables(
    tables: Mapping[str, pd.DataFrame],
    meta: ProjectMeta,
    mapping: StudyMapping,
    *,
    pseudonymise: Pseudonymise = identity,
    out_dir: Path,
    config: AnalysisConfig | None = None,
) -> dict[str, Path]:
    """Build and write every analysis table under `out_dir` (e.g. out/parquet); name -> path."""
    built = analysis_tables(tables, meta, mapping, pseudonymise=pseudonymise, config=config)
    return write_tables(built, out_dir, mapping)
