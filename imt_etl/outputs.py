"""Everything a run writes after extraction: validation and quality report, analysis tables,
study report and FHIR files, each a plain function over the tidy tables.

Layout under the output folder: quality/ (findings, quarantine, HTML), parquet/ (instrument and
analysis tables, codebook), report/ (study report), fhir/ (NDJSON per type, bundles/).
Analysis tables and FHIR need the study's mappings (`mappings/<study>/`); a project without them
still gets validated, typed instrument tables and the quality report.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import pandas as pd

from imt_etl import last_success
from imt_etl.config import MAPPINGS_ROOT, SCHEMAS_ROOT, OutputConfig
from imt_etl.faultpoints import maybe_crash
from imt_etl.fhir.mappings import StudyMapping, load_study_mapping
from imt_etl.privacy import drop_identifiers, pseudonym
from imt_etl.redcap.tidy import ProjectMeta, TidyResult
from imt_etl.summary import InstrumentCounts, RunSummary
from imt_etl.tables.parquet import write_frame
from imt_etl.validate import ValidationResult, validate_project, write_quality_report
from imt_etl.validate.rules import StudyRules, load_rules

log = logging.getLogger(__name__)


def instruments_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "parquet" / "instruments"


def fhir_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "fhir"


@dataclass
class StudyConfig:
    """The configuration data of a study: its mapping (optional) and validation rules."""

    mapping: StudyMapping | None
    rules: StudyRules | None


def load_study_config(study: str, meta: ProjectMeta, *, mappings_root: Path = MAPPINGS_ROOT,
                      schemas_root: Path = SCHEMAS_ROOT) -> StudyConfig:
    """The study's mapping (`<mappings_root>/<study>/`) and rules (`<schemas_root>/<study>/`)."""
    mapping_dir = Path(mappings_root) / study
    rules_file = Path(schemas_root) / study / "rules.yaml"
    mapping = load_study_mapping(mapping_dir, meta.dictionary) if mapping_dir.is_dir() else None
    rules = load_rules(rules_file) if rules_file.is_file() else None
    if mapping is None:
        log.warning("no mappings in %s: FHIR and analysis tables are skipped", mapping_dir)
    return StudyConfig(mapping, rules)


def validate_and_report(tidy: TidyResult, meta: ProjectMeta, rules: StudyRules | None,
                        out_dir: Path, summary: RunSummary) -> ValidationResult:
    """Validate, write the quality report, and record per-instrument counts."""
    result = validate_project(tidy, meta, rules)
    for path in write_quality_report(result, out_dir, last_success.previous_findings(out_dir)):
        summary.add_file(path, out_dir)
    for form, counts in result.counts.items():
        summary.instruments[form] = InstrumentCounts(
            rows_extracted=counts["extracted"], rows_valid=counts["valid"],
            rows_quarantined=counts["quarantined"], warnings=counts["warnings"],
        )
    summary.stages["validation"] = {
        "errors": len(result.errors), "warnings": len(result.warnings),
        "seconds": round(result.seconds, 3),
    }
    maybe_crash("after-validation")
    return result


def pseudonymiser(settings: OutputConfig) -> Callable[[str], str]:
    return partial(pseudonym, key=settings.pseudonym_key, study=settings.study)


def write_plain_instrument_tables(result: ValidationResult, meta: ProjectMeta,
                                  settings: OutputConfig, summary: RunSummary) -> None:
    """Valid rows, typed, identifiers dropped: the instrument tables of an unmapped project."""
    out_dir = Path(settings.out_dir)
    pseudonymise = pseudonymiser(settings)
    for form, frame in result.valid.items():
        kept = drop_identifiers(frame, meta.dictionary, allow=settings.allowed_identifiers)
        # The record id is an identifier too: the participant's pseudonym replaces it.
        kept.insert(0, "participant", kept.pop("record_id").map(pseudonymise).astype("string"))
        path = write_frame(instruments_dir(out_dir) / f"{form}.parquet", kept,
                           frame.attrs.get("columns"), {"instrument": form})
        summary.add_file(path, out_dir)


def measurement_table(result: ValidationResult, meta: ProjectMeta, mapping: StudyMapping
                      ) -> pd.DataFrame:
    """The long measurement table (one row per record, event, instance and measure) that both
    the analysis tables and the FHIR Observations are built from."""
    from imt_etl.tables.build import default_config, measurement_rows

    return measurement_rows(result.valid, mapping, default_config(meta, mapping))


def write_analysis(result: ValidationResult, meta: ProjectMeta, mapping: StudyMapping,
                   settings: OutputConfig, summary: RunSummary,
                   rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Analysis tables under parquet/ and the study report under report/; returns the long
    measurement table they were built from (`rows` when given, else computed here)."""
    from imt_etl.report.study import write_study_report
    from imt_etl.tables.build import analysis_tables, default_config, write_tables

    out_dir = Path(settings.out_dir)
    config = default_config(meta, mapping)
    if rows is None:
        rows = measurement_table(result, meta, mapping)
    built = analysis_tables(result.valid, meta, mapping, pseudonymise=pseudonymiser(settings),
                            config=config, rows=rows)
    for path in write_tables(built, out_dir / "parquet", mapping).values():
        summary.add_file(path, out_dir)
    maybe_crash("after-tables")
    report = write_study_report(built, config, out_dir / "report", title=mapping.study.title)
    summary.add_file(report, out_dir)
    summary.stages["tables"] = {name: len(t.frame) for name, t in built.items()}
    return rows


def write_fhir(result: ValidationResult, meta: ProjectMeta, mapping: StudyMapping,
               settings: OutputConfig, summary: RunSummary, run_time: datetime,
               rows: pd.DataFrame | None = None) -> None:
    """NDJSON per resource type and transaction bundles, with DELETEs for vanished resources.
    `rows`: the long measurement table (`measurement_table`; else computed per batch)."""
    with fhir_alongside(result, meta, mapping, settings, summary, run_time, rows):
        pass


@contextmanager
def fhir_alongside(result: ValidationResult, meta: ProjectMeta, mapping: StudyMapping,
                   settings: OutputConfig, summary: RunSummary, run_time: datetime,
                   rows: pd.DataFrame | None = None) -> Iterator[None]:
    """`write_fhir` around the caller's own work: the record batches are built by the caller
    and `settings.workers - 1` forked workers, then one forked process merges them into NDJSON
    and bundles while the body of the `with` runs (with `settings.workers` 1, or where fork is
    unavailable, the caller merges after the body).

    Built and serialised a batch of `settings.fhir_batch_records` records at a time
    (imt_etl.fhir.spool): memory holds one batch's resources per process, never the study's.
    Every resource of a participant depends only on that participant, so batches are
    independent and the output is the same bytes whichever process built which batch.
    """
    from imt_etl.batchpool import BatchPool
    from imt_etl.fhir.context import FhirContext, patient_ref
    from imt_etl.fhir.export import RecordBatches, record_fhir, study_fhir
    from imt_etl.fhir.reuse import (
        PreviousFhir,
        columns_digest,
        record_fingerprints,
        tagger,
        write_pending_stamps,
    )
    from imt_etl.fhir.spool import Spool
    from imt_etl.fhir.study import record_ids
    from imt_etl.fhir.writer import SpooledWrite, write_spooled
    from imt_etl.tables.build import default_config

    out_dir = Path(settings.out_dir)
    config = default_config(meta, mapping)
    ctx = FhirContext(mapping=mapping, run_time=run_time, pseudonymise=pseudonymiser(settings),
                      arm_names=dict(config.arm_labels), event_labels=dict(config.event_labels),
                      allowed_identifiers=config.allowed_identifiers | settings.allowed_identifiers)
    folder = fhir_dir(out_dir)
    seconds: dict[str, float] = {}  # where the FHIR time goes (summary.stages["fhir"])
    clock = time.perf_counter()
    with Spool(last_success.spool_dir(out_dir)) as spool:
        study = study_fhir(result.valid, meta, ctx)
        spool.add(r for items in study.resources.values() for r in items)
        frames = _input_frames(result.valid, result.raw, rows)
        key = fhir_run_key(meta, settings, ctx, study.questionnaires, columns_digest(frames))
        records = record_ids(result.valid)
        previous = PreviousFhir.open(folder, last_success.folder(out_dir), key)
        prints: dict[str, bytes] | None = None  # None: taken per batch, by the builders
        reused: set[bytes] = set()
        if previous is not None:  # which records changed decides what is built
            prints = record_fingerprints(key, frames, records)
            reused = previous.fingerprints() & set(prints.values())
        changed = [r for r in records if prints is None or prints[r] not in reused]
        if reused:
            log.info("FHIR: %d of %d records unchanged since the last run: their resources "
                     "are reused", len(records) - len(changed), len(records))
        size = settings.fhir_batch_records
        # Row positions found before the workers fork; each process cuts the batches it builds.
        batches = RecordBatches(result.valid, result.raw,
                                {r: i // size for i, r in enumerate(changed)}, rows)

        def build(n: int) -> dict[str, tuple[Path, int]]:
            valid, raw, table = batches[n]
            mine = changed[n * size:(n + 1) * size]
            # Nothing to reuse (first run, new key): the fingerprints that the next run will
            # compare are taken here, batch by batch in parallel; a record's rows are all in
            # its batch, in the same order, so they equal those of the whole tables.
            own = prints if prints is not None else record_fingerprints(
                key, _input_frames(valid, raw, table), mine)
            tag_of = tagger({patient_ref(ctx, r): own[r] for r in mine})
            built = record_fhir(valid, raw, meta, ctx, study.questionnaires, table)
            return spool.write_runs((r for items in built.values() for r in items),
                                    f"b{n:06d}", tag_of)

        seconds["set_up"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with BatchPool(len(batches), build, settings.workers, name="FHIR build") as pool:
            for runs in pool.results():
                spool.adopt(runs)
        seconds["build"] = time.perf_counter() - clock

        def write(_: int) -> SpooledWrite:
            ids = spool.folder / "fhir-ids.txt"
            written = write_spooled(
                spool, folder, bundle_size=settings.bundle_size,
                previous_ids=last_success.previous_fhir_id_stream(out_dir), ids_out=ids,
                reuse=previous, reused=reused,
            )
            write_pending_stamps(last_success.pending_fhir_files(out_dir), key, folder,
                                 written.counts)
            # Complete and fsynced: handed to last_success.record_success in one rename.
            os.replace(ids, last_success.pending_fhir_ids(out_dir))
            return written

        # The merge into NDJSON and bundles is one sequential pass: a forked process does it
        # while the caller's body (the analysis tables) runs; in the caller when not forking.
        with BatchPool(1, write, settings.workers, name="FHIR write",
                       caller_helps=False) as writer:
            yield
            clock = time.perf_counter()
            written = writer.results()[0]
        seconds["merge_after_body"] = time.perf_counter() - clock
    manifest = written.manifest
    summary.files_written.extend(
        [f"fhir/{kind}.ndjson" for kind in written.counts]
        + [f"fhir/bundles/{b.file}" for b in manifest.bundles] + ["fhir/bundles/manifest.json"]
    )
    summary.stages["fhir"] = {
        "resources": written.counts, "deletions": written.deletions,
        "bundles": len(manifest.bundles), "observations_amended": written.amended,
        # Records whose resources were built this run; the others' came from the last run.
        "records_built": len(changed), "records_reused": len(records) - len(changed),
        # set-up, build (every process), and the wait for the merge after the caller's body
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "unsupported_branching_logic": [
            {"field": u.field, "logic": u.logic, "reason": u.reason}
            for u in study.unsupported_logic
        ],
    }


def fhir_run_key(meta: ProjectMeta, settings: OutputConfig, ctx, questionnaires,
                 columns: list) -> str:
    """Everything besides a record's own rows that its resources depend on (fhir.reuse)."""
    from imt_etl.fhir.reuse import run_key
    from imt_etl.redcap.meta_store import meta_to_json

    context = {name: getattr(ctx, name) for name in (
        "study_status", "birth_date", "arm_names", "event_labels", "subject_fields",
        "gender_field", "gender_codes", "allowed_identifiers")}
    context["allowed_identifiers"] = sorted(ctx.allowed_identifiers)
    context["today"] = ctx.today().isoformat()  # ResearchSubject status depends on the date
    context["columns"] = columns
    return run_key(
        config_folders=[Path(settings.mappings_root), Path(settings.schemas_root) / settings.study],
        design=meta_to_json(meta), pseudonym_key=settings.pseudonym_key, context=context,
        questionnaires=questionnaires)


def _input_frames(valid, raw, table) -> list[tuple[str, pd.DataFrame | None]]:
    """Every table `record_fhir` reads, named (for fingerprints, imt_etl.fhir.reuse)."""
    return ([(f"valid/{k}", v) for k, v in sorted(valid.items())]
            + [(f"raw/{k}", v) for k, v in sorted(raw.items())] + [("table", table)])


def shift_dates_if_configured(result: ValidationResult, meta: ProjectMeta,
                              mapping: StudyMapping | None, settings: OutputConfig,
                              summary: RunSummary) -> ValidationResult:
    """Per-participant date shifting (imt_etl.dateshift) when the study or the run asks for it;
    after validation, so the quality report shows the dates as entered in REDCap."""
    from imt_etl.dateshift import max_shift_days, shift_result_dates

    max_days = max_shift_days(mapping.study.settings if mapping else {},
                              settings.date_shift_max_days)
    if not max_days:
        return result
    shifted, count = shift_result_dates(result, meta.dictionary, settings.pseudonym_key,
                                        settings.study, max_days)
    summary.stages["date_shifting"] = {"max_days": max_days, "dates_shifted": count}
    log.info("dates shifted per participant (up to %d days): %d values", max_days, count)
    return shifted


def build_outputs(tidy: TidyResult, meta: ProjectMeta, settings: OutputConfig, summary: RunSummary,
                  run_time: datetime) -> ValidationResult:
    """Every output after extraction, in dependency order, with per-stage durations."""
    out_dir = Path(settings.out_dir)
    study = load_study_config(settings.study, meta, mappings_root=settings.mappings_root,
                              schemas_root=settings.schemas_root)
    clock = time.perf_counter()
    result = validate_and_report(tidy, meta, study.rules, out_dir, summary)
    summary.durations_s["validate"] = round(time.perf_counter() - clock, 3)
    result = shift_dates_if_configured(result, meta, study.mapping, settings, summary)
    if study.mapping is None:
        write_plain_instrument_tables(result, meta, settings, summary)
        return result
    clock = time.perf_counter()
    rows = measurement_table(result, meta, study.mapping)
    tables_s = time.perf_counter() - clock
    # FHIR is built first (settings.workers processes), then merged into files by a forked
    # process while this one writes the tables; "fhir" is the FHIR time beyond the tables:
    # set-up, build, and whatever of the merge outlasts the tables.
    clock = time.perf_counter()
    with fhir_alongside(result, meta, study.mapping, settings, summary, run_time, rows):
        fhir_s = time.perf_counter() - clock
        clock = time.perf_counter()
        write_analysis(result, meta, study.mapping, settings, summary, rows)
        tables_s += time.perf_counter() - clock
        clock = time.perf_counter()
    summary.durations_s["tables"] = round(tables_s, 3)
    summary.durations_s["fhir"] = round(fhir_s + time.perf_counter() - clock, 3)
    return result

