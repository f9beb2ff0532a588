"""Incremental FHIR: only records whose inputs changed are built again; the files are the same
bytes as building everything; anything doubtful (other key, files changed) rebuilds all."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from imt_etl import last_success
from imt_etl.config import OutputConfig
from imt_etl.fhir import export
from imt_etl.fhir.reuse import record_fingerprints
from imt_etl.outputs import measurement_table, write_fhir
from imt_etl.summary import RunSummary
from tests.outputs.fhir_helpers import file_bytes, validated

RUN_TIME = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
KEY = b"reuse-test-pseudonym-key-0000001"


def _edited(project, record: str):
    """A copy of the project with one free-text enrollment value of `record` changed."""
    edited = copy.deepcopy(project)
    row = next(r for r in edited.rows if r.record == record and "enr_datetime" in r.values)
    row.values["enrollment_notes"] = "changed for the reuse test"
    return edited


class Builds:
    """Counts the records `record_fhir` is asked to build."""

    def __init__(self, monkeypatch):
        self.records: list[str] = []
        original = export.record_fhir

        def counting(valid, *args, **kwargs):
            self.records += sorted({str(r) for f in valid.values() for r in f["record_id"]})
            return original(valid, *args, **kwargs)

        monkeypatch.setattr(export, "record_fhir", counting)


def _run(inputs, out: Path, key: bytes = KEY, workers: int = 1) -> RunSummary:
    """write_fhir and record_success; one process unless `workers` (Builds counts only here)."""
    result, meta, mapping = inputs
    summary = RunSummary(project="p", study="imt", mode="full", started_at="")
    write_fhir(result, meta, mapping, OutputConfig(out_dir=out, pseudonym_key=key,
                                                   workers=workers, fhir_batch_records=4),
               summary, RUN_TIME, measurement_table(result, meta, mapping))
    last_success.record_success(out)
    return summary


def _fhir_files(out: Path) -> dict[str, bytes]:
    return file_bytes(out / "fhir")


@pytest.fixture(scope="module")
def first(small_project):
    return validated(small_project)


@pytest.fixture(scope="module")
def second(small_project):
    return validated(_edited(small_project, "003"))


def test_only_the_changed_record_is_built_and_the_files_equal_a_fresh_build(
        first, second, tmp_path, monkeypatch):
    out = tmp_path / "incremental"
    _run(first, out)
    builds = Builds(monkeypatch)
    summary = _run(second, out)
    assert builds.records == ["003"]
    assert summary.stages["fhir"]["records_built"] == 1
    assert summary.stages["fhir"]["records_reused"] == 11

    fresh = tmp_path / "fresh"  # nothing to reuse: every record built, by two processes
    _run(second, fresh, workers=2)
    assert _fhir_files(out) == _fhir_files(fresh)


def test_unchanged_data_builds_nothing_and_changes_no_byte(first, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(first, out)
    before = _fhir_files(out)
    builds = Builds(monkeypatch)
    _run(first, out)
    assert builds.records == []
    assert _fhir_files(out) == before


def test_an_ndjson_file_touched_since_the_last_run_rebuilds_everything(
        first, second, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(first, out)
    observations = out / "fhir" / "Observation.ndjson"
    os.utime(observations, ns=(1, 1))  # e.g. restored from a backup, or a crashed later run
    builds = Builds(monkeypatch)
    _run(second, out)
    assert len(builds.records) == 12


def test_another_pseudonym_key_rebuilds_everything(first, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _run(first, out)
    builds = Builds(monkeypatch)
    _run(first, out, key=b"another-pseudonym-key-000000001")
    assert len(builds.records) == 12


def test_a_crash_before_success_is_recorded_rebuilds_everything(first, second, tmp_path,
                                                              monkeypatch):
    out = tmp_path / "out"
    _run(first, out)
    result, meta, mapping = second  # a run writes new files, then dies before record_success
    write_fhir(result, meta, mapping, OutputConfig(out_dir=out, pseudonym_key=KEY), RunSummary(
        project="p", study="imt", mode="full", started_at=""), RUN_TIME)
    builds = Builds(monkeypatch)
    _run(second, out)
    assert len(builds.records) == 12


def test_a_killed_runs_pending_lists_are_removed_by_the_next_run(first, second, tmp_path):
    out = tmp_path / "out"
    _run(first, out)
    result, meta, mapping = second  # a run writes new files, then dies before record_success
    write_fhir(result, meta, mapping, OutputConfig(out_dir=out, pseudonym_key=KEY), RunSummary(
        project="p", study="imt", mode="full", started_at=""), RUN_TIME)
    pending = [last_success.pending_fhir_ids(out), last_success.pending_fhir_files(out)]
    assert all(p.exists() for p in pending)
    # The next run starts by removing them: its record_success must promote its own lists only.
    assert sorted(last_success.discard_pending(out)) == sorted(pending)
    assert not any(p.exists() for p in pending) and last_success.discard_pending(out) == []


def test_fingerprints_follow_each_records_rows_only():
    frame = pd.DataFrame({"record_id": ["1", "2", "1", "3"], "v": [1.0, 2.0, 3.0, 4.0]})
    before = record_fingerprints("k", [("t", frame)], ["1", "2", "3"])
    changed = frame.copy()
    changed.loc[2, "v"] = 3.5  # a row of record 1
    after = record_fingerprints("k", [("t", changed)], ["1", "2", "3"])
    assert [r for r in before if before[r] != after[r]] == ["1"]
    other_key = record_fingerprints("k2", [("t", frame)], ["1", "2", "3"])
    assert all(other_key[r] != before[r] for r in before)
    assert len(set(before.values())) == 3
