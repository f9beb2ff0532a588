"""Shared by the reliability tests: compare output folders, fingerprint them, scan them."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from imt_etl.config import Settings
from imt_etl.redcap.emulator import RedcapEmulator
from imt_etl.redcap.faults import FaultProfile

# Files that legitimately differ between two runs over the same data: run timings and times,
# and the lock file (holder pid).
# fhir-files.json records the NDJSON files' sizes, times and inodes (imt_etl.fhir.reuse).
VOLATILE = {"run-summary.json", "state/sync-state.json", "state/.lock",
            "state/last-success/fhir-files.json"}


def emulator_for(project, token: str, faults: FaultProfile | None = None) -> RedcapEmulator:
    """An emulator over its own copy of `project`, records loaded 30 days ago (not started)."""
    loaded = datetime.now() - timedelta(days=30)
    return RedcapEmulator(copy.deepcopy(project), token=token, faults=faults, load_time=loaded)


def change_data(emulator) -> None:
    """One edit, one edit in a repeating/other event, one deletion: what an incremental sees."""
    emulator.store.set_values("002", {"mip_kh2_best": "99"}, event="baseline_arm_1")
    emulator.store.set_values("010", {"fss_1": "6"}, event="month_3_arm_1")
    emulator.store.delete_records(["005"])


# A test pseudonym key (the pipeline refuses to run without one).
TEST_KEY = b"reliability-tests-pseudonym-key"


def fast_settings(url: str, token: str, out_dir: Path, **extra) -> Settings:
    """Retry settings that keep a faulty run to seconds (the defaults are for real servers).

    Pass the same `run_time` to runs whose outputs are compared: statuses depend on it.
    """
    values = dict(redcap_url=url, token=token, out_dir=out_dir, project_name="imt",
                  batch_size=3, max_retries=8, backoff_base=0.005, backoff_max=0.05,
                  timeout=2.0, pseudonym_key=TEST_KEY)
    values.update(extra)
    return Settings(**values)


def output_files(out_dir: Path) -> list[str]:
    """Every file under out_dir (relative, sorted), temp files included."""
    return sorted(p.relative_to(out_dir).as_posix() for p in Path(out_dir).rglob("*")
                  if p.is_file())


def fingerprint(out_dir: Path) -> dict[str, tuple[bytes, int]]:
    """(content, mtime_ns) of every file: equal fingerprints mean nothing was touched.

    The lock file is not an output: every run rewrites its holder line, so only its presence
    counts.
    """
    def entry(name: str) -> tuple[bytes, int]:
        path = Path(out_dir) / name
        return (b"", 0) if name == "state/.lock" else (path.read_bytes(), path.stat().st_mtime_ns)

    return {name: entry(name) for name in output_files(out_dir)}


def assert_same_outputs(got_dir: Path, expected_dir: Path) -> int:
    """Same output files with the same contents (parquet and JSON compared parsed, data and
    schema metadata alike); returns how many files were compared."""
    got = [n for n in output_files(got_dir) if n not in VOLATILE and not _temp(n)]
    expected = [n for n in output_files(expected_dir) if n not in VOLATILE and not _temp(n)]
    assert sorted(set(got) ^ set(expected)) == []
    differing = [n for n in expected if not same_file(Path(got_dir) / n, Path(expected_dir) / n)]
    assert differing == [], differing
    return len(expected)


def same_file(a: Path, b: Path) -> bool:
    """Same contents: parquet data and schema metadata, parsed (ND)JSON, other files bytes."""
    if not (a.exists() and b.exists()):
        return False
    if a.read_bytes() == b.read_bytes():
        return True  # the same bytes parse the same: only different bytes need parsing
    if a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        return ta.schema.equals(tb.schema, check_metadata=True) and ta.equals(tb)
    if a.suffix == ".json":
        return json.loads(a.read_text()) == json.loads(b.read_text())
    if a.suffix == ".ndjson":
        return [json.loads(x) for x in a.read_text().splitlines()] == [
            json.loads(x) for x in b.read_text().splitlines()]
    return a.read_bytes() == b.read_bytes()


def _temp(name: str) -> bool:
    """A temp file of imt_etl.io left by a killed write (hidden, ends in .tmp): not an output."""
    return Path(name).name.startswith(".") and name.endswith(".tmp")


def assert_all_readable(out_dir: Path) -> None:
    """Every parquet reads and every JSON parses (what a reader of a crashed folder needs)."""
    for name in output_files(out_dir):
        path = Path(out_dir) / name
        if name.endswith(".parquet"):
            pq.read_table(path)
        elif name.endswith(".json"):
            json.loads(path.read_text())
