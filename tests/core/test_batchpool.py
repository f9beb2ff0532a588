"""BatchPool: forked workers and the caller share numbered batches; failures reach the caller."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

from imt_etl.batchpool import BatchPool, WorkerFailed, can_fork
from imt_etl.errors import DictionaryError, FhirBuildError, ImtEtlError, RedcapAuthError

needs_fork = pytest.mark.skipif(not can_fork(), reason="workers fork only on Linux")
CALLER = os.getpid()


def _slow_square(n: int) -> tuple[int, int]:
    time.sleep(0.05)  # long enough for a worker to start and claim batches
    return n * n, os.getpid()


def test_one_worker_means_the_caller_does_every_batch_in_order():
    with BatchPool(5, _slow_square, workers=1) as pool:
        assert pool.forked == 0
        results = pool.results()
    assert [value for value, _ in results] == [0, 1, 4, 9, 16]
    assert {pid for _, pid in results} == {CALLER}


@needs_fork
def test_forked_workers_share_the_batches_and_results_come_in_batch_order():
    with BatchPool(20, _slow_square, workers=3) as pool:
        time.sleep(0.3)  # the caller is busy elsewhere: the workers start alone
        results = pool.results()
    assert [value for value, _ in results] == [n * n for n in range(20)]
    pids = {pid for _, pid in results}
    assert len(pids) >= 2 and CALLER in pids  # workers and the caller both worked


@needs_fork
@needs_fork
def test_a_caller_that_does_not_help_gets_one_forked_process_for_the_work():
    with BatchPool(1, _slow_square, workers=2, caller_helps=False) as pool:
        assert pool.forked == 1
        results = pool.results()
    assert results[0][0] == 0 and results[0][1] != CALLER  # done aside, never by the caller


def test_without_a_second_worker_the_caller_does_the_work_aside_itself():
    with BatchPool(1, _slow_square, workers=1, caller_helps=False) as pool:
        assert pool.forked == 0
        assert pool.results() == [(0, CALLER)]


@needs_fork
def test_a_kill_point_in_a_worker_kills_the_run_too(tmp_path, monkeypatch):
    """Crash tests kill a run where a forked process writes (imt_etl.faultpoints.also_kill)."""
    from multiprocessing import get_context

    from imt_etl.io import write_bytes_atomic

    def run() -> None:  # a "run" whose only output is written by a worker
        with BatchPool(1, lambda _: write_bytes_atomic(tmp_path / "fhir" / "a.json", b"{}"),
                       workers=2, caller_helps=False) as pool:
            pool.results()

    monkeypatch.setenv("IMT_ETL_TEST_CRASH_AT", "atomic-write/fhir:1")
    process = get_context("fork").Process(target=run)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL  # the run died as if killed, not of an error
    assert not (tmp_path / "fhir" / "a.json").exists()


def test_never_more_workers_than_batches():
    with BatchPool(2, _slow_square, workers=8) as pool:
        assert pool.forked == 1
        assert [v for v, _ in pool.results()] == [0, 1]


def _fails_in_a_worker(n: int) -> int:
    if os.getpid() != CALLER:
        raise FhirBuildError("rec-7", "mip_best", f"batch {n} cannot be built")
    time.sleep(0.05)
    return n


@needs_fork
def test_a_workers_error_is_raised_in_the_caller_with_its_type_and_message():
    with pytest.raises(FhirBuildError) as raised, BatchPool(10, _fails_in_a_worker, 2) as pool:
        time.sleep(0.3)
        pool.results()
    assert raised.value.record == "rec-7" and raised.value.field == "mip_best"
    assert "cannot be built" in str(raised.value) and raised.value.exit_code == 4


def _killed_in_a_worker(n: int) -> int:
    if os.getpid() != CALLER:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return n


@needs_fork
def test_a_killed_worker_fails_the_run_with_a_clear_error():
    with pytest.raises(WorkerFailed, match=r"exit code -9 .*out of memory"), \
            BatchPool(10, _killed_in_a_worker, 2, name="FHIR build") as pool:
        time.sleep(0.3)
        pool.results()


def _unpicklable_error(n: int) -> int:
    if os.getpid() != CALLER:
        class Local(Exception):  # a class pickle cannot find by name
            pass
        raise Local(f"odd failure in batch {n}")
    time.sleep(0.05)
    return n


@needs_fork
def test_an_unpicklable_error_still_arrives_with_its_message():
    with pytest.raises(ImtEtlError, match="Local: odd failure in batch"), \
            BatchPool(10, _unpicklable_error, 2) as pool:
        time.sleep(0.3)
        pool.results()


def test_the_callers_own_failure_stops_the_workers():
    def boom(n: int) -> int:
        raise ValueError(f"batch {n}")

    with pytest.raises(ValueError, match="batch"), BatchPool(4, boom, workers=2) as pool:
        pool.results()
    assert not pool._pipes  # every worker joined


@pytest.mark.parametrize("error", [
    FhirBuildError("r1", "f", "bad value"),
    DictionaryError("age", "not a number", "dictionary.csv"),
    RedcapAuthError("403 Forbidden", status=403),
])
def test_package_errors_survive_pickling_with_type_message_and_attributes(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert copy.__dict__ == error.__dict__ and copy.exit_code == error.exit_code
