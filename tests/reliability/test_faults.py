"""A flaky REDCap server: a 20 % fault rate changes nothing in the outputs; a dead one stops the
run after bounded retries with nothing written and the sync state where it was."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import pytest

from imt_etl import pipeline
from imt_etl.errors import RedcapError
from imt_etl.redcap.faults import FaultProfile

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import (  # noqa: E402
    assert_same_outputs,
    change_data,
    emulator_for,
    fast_settings,
    fingerprint,
)

# 20 % of requests fail, in every way the emulator knows. Timeouts make the server wait 1.5 s,
# longer than the client's 0.4 s; slow answers (0.1 s) arrive within it. 429 and 503 carry
# "Retry-After: 0" to keep the test fast (honouring larger values: tests/redcap/test_retry.py).
# Seed 146 injects all eight kinds during the full sync.
MIX = dict(error_500=0.04, error_503=0.03, error_429=0.03, reset=0.03, truncated=0.03,
           malformed=0.02, timeout=0.01, slow=0.01)
TIMEOUT = 0.4
ALL_KINDS = {"500", "503", "429", "reset", "truncated", "malformed", "timeout", "slow"}


def flaky(seed: int) -> FaultProfile:
    return FaultProfile(**MIX, retry_after=0, timeout_seconds=1.5, slow_seconds=0.1, seed=seed)


# Read the rendered messages, not record.msg/args: a handler installed by an earlier test in the
# session (Dagster's) may have rendered a record's msg in place and cleared its args.
FAULT_LINE = re.compile(r"\bfault (\S+) injected on content=")
RETRY_LINE = re.compile(r"; retry \d+ of \d+ in ")


def faults_seen(caplog) -> list[str]:
    return [m.group(1) for r in caplog.records if (m := FAULT_LINE.search(r.getMessage()))]


def retries_seen(caplog) -> int:
    return sum(1 for r in caplog.records if RETRY_LINE.search(r.getMessage()))


def flaky_run(url, token, out, caplog, **kwargs):
    """Run with one-record batches (many requests, many faults); (summary, faults, retries, s)."""
    caplog.clear()
    started = time.perf_counter()
    summary = pipeline.run(fast_settings(url, token, out, batch_size=1, timeout=TIMEOUT),
                           **kwargs)
    elapsed = time.perf_counter() - started
    return summary, faults_seen(caplog), retries_seen(caplog), elapsed


def test_a_20_percent_fault_rate_gives_the_same_outputs_as_a_clean_server(
        full_reference_project, token, full_clean_outputs, tmp_path, caplog):
    assert abs(sum(MIX.values()) - 0.20) < 1e-9
    reference_project = full_reference_project
    before, after = full_clean_outputs
    with emulator_for(reference_project, token, flaky(seed=146)) as server, \
            caplog.at_level(logging.INFO, logger="imt_etl"):
        full, full_faults, full_retries, full_s = flaky_run(server.url, token, tmp_path, caplog)
        assert full.status == "success" and full.records == len(reference_project.record_ids())
        assert assert_same_outputs(tmp_path, before) >= 15  # 13 tables, snapshot, design
        change_data(server)
        inc, inc_faults, inc_retries, inc_s = flaky_run(server.url, token, tmp_path, caplog,
                                                        incremental=True)
    assert inc.mode == "incremental" and inc.records_deleted == 1
    assert inc.records == len(reference_project.record_ids()) - 1
    assert_same_outputs(tmp_path, after)
    # The faults really happened, of every kind, and each (but a slow answer) was retried.
    assert set(full_faults) == ALL_KINDS
    for faults, retries in ((full_faults, full_retries), (inc_faults, inc_retries)):
        assert retries == len([f for f in faults if f != "slow"])
    print(f"\nfull: {len(full_faults)} faults {sorted(full_faults)}, {full_retries} retries, "
          f"{full_s:.2f}s; incremental: {len(inc_faults)} faults {sorted(inc_faults)}, "
          f"{inc_retries} retries, {inc_s:.2f}s")


@pytest.mark.parametrize("incremental", [False, True])
def test_a_dead_server_fails_clearly_and_touches_nothing(reference_project, token, previous_run,
                                                         caplog, incremental):
    before = fingerprint(previous_run)
    with emulator_for(reference_project, token, FaultProfile(error_500=1.0)) as server, \
            caplog.at_level(logging.INFO, logger="imt_etl"):
        started = time.perf_counter()
        with pytest.raises(RedcapError) as info:
            pipeline.run(fast_settings(server.url, token, previous_run, max_retries=3),
                         incremental=incremental)
        elapsed = time.perf_counter() - started
    assert info.value.status == 500 and "Internal Server Error" in str(info.value)
    assert "export project info failed after 4 attempts" in caplog.text  # names the call
    assert len(faults_seen(caplog)) == 4 and retries_seen(caplog) == 3  # 1 try + 3 retries
    assert elapsed < 2.0
    assert fingerprint(previous_run) == before  # no file added, changed or even rewritten
    assert token not in str(info.value) and token not in caplog.text
    print(f"\ndead server: {len(faults_seen(caplog))} attempts, failed after {elapsed:.2f}s")


def test_a_dead_server_on_a_first_run_leaves_only_the_lock_file(reference_project, token,
                                                                 tmp_path):
    dead = FaultProfile(error_503=1.0, retry_after=0)
    with emulator_for(reference_project, token, dead) as server:
        with pytest.raises(RedcapError) as info:
            pipeline.run(fast_settings(server.url, token, tmp_path, max_retries=2))
    assert info.value.status == 503
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [
        "state/.lock"
    ]
