"""FHIR built by forked workers, batch by batch, is the same bytes as one process building it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from imt_etl.batchpool import can_fork
from imt_etl.config import OutputConfig
from imt_etl.outputs import fhir_alongside, measurement_table, write_fhir
from imt_etl.summary import RunSummary
from tests.outputs.fhir_helpers import file_bytes, validated

RUN_TIME = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
KEY = b"parallel-test-pseudonym-key-0001"


@pytest.fixture(scope="module")
def small(small_project):
    return validated(small_project)


def _write(project, out: Path, **config) -> tuple[dict[str, bytes], RunSummary]:
    result, meta, mapping = project
    summary = RunSummary(project="p", study="imt", mode="full", started_at="")
    write_fhir(result, meta, mapping, OutputConfig(out_dir=out, pseudonym_key=KEY, **config),
               summary, RUN_TIME, measurement_table(result, meta, mapping))
    return file_bytes(out / "fhir"), summary


@pytest.mark.skipif(not can_fork(), reason="workers fork only on Linux")
def test_workers_and_small_batches_give_the_same_bytes(small, tmp_path):
    one, one_summary = _write(small, tmp_path / "one")  # one process, one batch of 50
    # 12 records in batches of 2: six batches shared by the caller and two workers.
    many, many_summary = _write(small, tmp_path / "many", workers=3, fhir_batch_records=2)
    assert one.keys() == many.keys() and len(one) > 10
    assert [name for name in one if one[name] != many[name]] == []
    timing = {"seconds"}  # where the time went differs, nothing else may
    assert ({k: v for k, v in one_summary.stages["fhir"].items() if k not in timing}
            == {k: v for k, v in many_summary.stages["fhir"].items() if k not in timing})
    assert sum(one_summary.stages["fhir"]["resources"].values()) > 1000


def test_the_callers_failure_alongside_stops_the_fhir_writer_and_is_raised(small, tmp_path):
    """The FHIR files are merged by a forked process while the caller's body runs: a body that
    fails stops it. Files it finished are whole (atomic writes, their next version); nothing
    is recorded as a success, so the next run does not build on them (last_success)."""
    import json
    import multiprocessing

    result, meta, mapping = small
    summary = RunSummary(project="p", study="imt", mode="full", started_at="")
    config = OutputConfig(out_dir=tmp_path, pseudonym_key=KEY, workers=2, fhir_batch_records=3)
    with pytest.raises(RuntimeError, match="tables failed"), \
            fhir_alongside(result, meta, mapping, config, summary, RUN_TIME):
        raise RuntimeError("tables failed")
    assert "fhir" not in summary.stages
    assert multiprocessing.active_children() == []  # the writer was stopped and reaped
    for path in (tmp_path / "fhir").rglob("*.ndjson") if (tmp_path / "fhir").exists() else ():
        assert all(json.loads(line) for line in path.read_text().splitlines())
    assert not (tmp_path / "state" / "last-success" / "fhir-ids.txt").exists()
