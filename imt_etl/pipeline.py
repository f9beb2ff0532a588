"""The stages of a run in order, as plain functions (no dagster): extract, tidy, write.

Both front ends call these: `run()` for the command line, the Dagster assets stage by stage.
The sync state is saved right after a successful extraction, together with the raw snapshot it
describes; every later output is rebuilt from that snapshot, so a failure downstream never loses
data and never needs a re-export.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imt_etl import last_success
from imt_etl.config import Settings
from imt_etl.faultpoints import maybe_crash
from imt_etl.gcpolicy import fewer_collections
from imt_etl.io import remove_stale_temp_files
from imt_etl.lock import holds_output_lock
from imt_etl.outputs import build_outputs
from imt_etl.preflight import check_study_config
from imt_etl.privacy import key_from_env
from imt_etl.redcap.client import RedcapClient
from imt_etl.redcap.extract import SyncPlan, extract_records, plan_sync
from imt_etl.redcap.meta_store import load_meta, save_meta
from imt_etl.redcap.snapshot import RawSnapshot
from imt_etl.redcap.sync_state import load_state, save_state
from imt_etl.redcap.tidy import ProjectMeta, TidyResult, tidy_instruments
from imt_etl.summary import RunSummary, now_iso
from imt_etl.tables.parquet import write_frame

log = logging.getLogger(__name__)

# progress(stage, done, total)
Progress = Callable[[str, int, int], None]


def state_dir(out_dir: Path) -> Path:
    """The sync state and raw snapshot. It holds REDCap data as exported, identifiers
    included (derived values such as age need them), so only its owner may read it."""
    folder = Path(out_dir) / "state"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    return folder


@dataclass
class Extraction:
    """What one extraction produced: the project's design, the plan and the merged snapshot."""

    meta: ProjectMeta
    plan: SyncPlan
    snapshot: RawSnapshot
    rows_exported: int
    batches: int
    missing_ids: list[str] = field(default_factory=list)


def extract(
    client: RedcapClient,
    out_dir: Path,
    *,
    project: str,
    batch_size: int,
    incremental: bool,
    now: datetime,
    progress: Progress | None = None,
) -> Extraction:
    """Plan (full or incremental), export the planned records in batches, merge the snapshot."""
    meta = ProjectMeta.from_api(client)
    folder = state_dir(out_dir)
    previous = RawSnapshot.load(folder, meta.dictionary.record_id_field) if incremental else None
    state = load_state(folder) if previous is not None else None
    if incremental and previous is None:
        log.warning("no previous snapshot in %s: running a full sync", folder)
    plan = plan_sync(client, state, now, project=project)
    on_batch = (lambda done, total: progress("extract", done, total)) if progress else None
    batches = extract_records(
        client, meta.dictionary, batch_size=batch_size, record_ids=plan.record_ids,
        progress=on_batch,
    )
    rid = meta.dictionary.record_id_field
    # Each batch is compacted as it arrives (imt_etl.redcap.snapshot.compact).
    exported = RawSnapshot(rid, {})
    for batch in batches:
        part = RawSnapshot.from_rows(rid, batch)
        for record, rows in part.rows_by_record.items():
            exported.rows_by_record.setdefault(record, []).extend(rows)
        exported.columns = list(dict.fromkeys(exported.columns + part.columns))
        maybe_crash("extract-batch")  # crash-safety test hook (imt_etl.faultpoints)
    n_rows = sum(len(rows) for rows in exported.rows_by_record.values())
    if plan.mode == "full" or previous is None:
        snapshot = exported
    else:
        merged = previous.merged(exported.rows(), plan.record_ids, plan.deleted_ids)
        merged.columns = list(dict.fromkeys(merged.columns + exported.columns))
        # Records that no longer exist go even when the log no longer shows their deletion.
        alive = set(plan.all_record_ids)
        snapshot = RawSnapshot(rid, {k: v for k, v in merged.rows_by_record.items() if k in alive},
                               merged.columns)
    n_batches = -(-len(plan.record_ids) // batch_size)
    return Extraction(meta, plan, snapshot, n_rows, n_batches, batches.missing_ids)


def save_extraction(extraction: Extraction, out_dir: Path, project: str, finished_at: datetime
                    ) -> None:
    """Persist the snapshot and design first, then advance the sync state (the commit point)."""
    folder = state_dir(out_dir)
    extraction.snapshot.save(folder)
    save_meta(extraction.meta, folder)
    maybe_crash("after-snapshot-save")
    save_state(folder, extraction.plan.next_state(project, finished_at))


def load_extraction_inputs(out_dir: Path) -> tuple[ProjectMeta, RawSnapshot]:
    """The design and snapshot saved by the last successful extraction (for later stages)."""
    folder = state_dir(out_dir)
    meta = load_meta(folder)
    if meta is None:
        from imt_etl.errors import ConfigError

        raise ConfigError(f"no extracted project in {folder}: run a sync first")
    snapshot = RawSnapshot.load(folder, meta.dictionary.record_id_field)
    return meta, snapshot or RawSnapshot(meta.dictionary.record_id_field, {})


def tidy(meta: ProjectMeta, snapshot: RawSnapshot) -> TidyResult:
    return tidy_instruments(snapshot.rows(), meta)


def write_instrument_table(result: TidyResult, form: str, out_dir: Path) -> Path:
    """All extracted rows of one instrument, typed, identifiers included: kept in the private
    state folder (state/instruments/) for the per-instrument Dagster assets and their checks;
    the analyst-facing tables (valid rows, pseudonymised) are written by imt_etl.outputs."""
    frame = result.tables[form]
    path = write_frame(
        state_dir(out_dir) / "instruments" / f"{form}.parquet", frame, frame.attrs.get("columns"),
        {"instrument": form},
    )
    maybe_crash("write-table")
    return path


@holds_output_lock  # one run per output folder at a time (imt_etl.lock)
@fewer_collections()
def run(
    settings: Settings,
    *,
    incremental: bool = False,
    client: RedcapClient | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> RunSummary:
    """One whole run: extract, save state, tidy, validate, write every output and the summary."""
    if settings.pseudonym_key is None:  # fail before any work when the key is missing
        settings = settings.with_(pseudonym_key=key_from_env())
    check_study_config(settings.study, settings.mappings_root, settings.schemas_root)
    out_dir = Path(settings.out_dir)
    stale = remove_stale_temp_files(out_dir)  # left by a killed run; we hold the lock
    if stale:
        log.info("removed %d temp file(s) left by an interrupted run", len(stale))
    if last_success.discard_pending(out_dir):
        log.info("removed the FHIR id list of an interrupted run")
    started = now or settings.run_time or datetime.now(UTC)
    summary = RunSummary(
        project=settings.project_name, study=settings.study,
        mode="incremental" if incremental else "full", started_at=now_iso(),
    )
    client = client or RedcapClient.from_settings(settings)
    clock = time.perf_counter()
    extraction = extract(
        client, out_dir, project=settings.project_name, batch_size=settings.batch_size,
        incremental=incremental, now=started, progress=progress,
    )
    summary.mode = extraction.plan.mode
    summary.durations_s["extract"] = round(time.perf_counter() - clock, 3)
    save_extraction(extraction, out_dir, settings.project_name, datetime.now(UTC))
    maybe_crash("after-state-save")

    clock = time.perf_counter()
    result = tidy(extraction.meta, extraction.snapshot)
    summary.durations_s["tidy"] = round(time.perf_counter() - clock, 3)
    summary.records = len(extraction.snapshot.record_ids)
    # Saved on disk and now in the tidy tables: not held through the outputs' peak.
    extraction.snapshot.rows_by_record.clear()
    build_outputs(result, extraction.meta, settings.outputs(), summary, started)

    summary.records_changed = len(extraction.plan.record_ids)
    summary.records_deleted = len(extraction.plan.deleted_ids)
    summary.batches = extraction.batches
    summary.stages["extract"] = {
        "rows_exported": extraction.rows_exported,
        "records_missing_during_export": extraction.missing_ids,
        "type_issues": len(result.issues),
    }
    summary.add_file(Path(out_dir) / "run-summary.json", out_dir)
    summary.finish()
    summary.write(out_dir)
    last_success.record_success(out_dir)  # the base of the next run's comparisons
    return summary


def tidy_form(meta: ProjectMeta, snapshot: RawSnapshot, form: str) -> TidyResult:
    """Tidy the snapshot for one instrument's asset (rows of other forms are skipped)."""
    return tidy_instruments(snapshot.rows(), meta, forms=[form])
