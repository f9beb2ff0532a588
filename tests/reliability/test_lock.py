"""One run per output folder: a second concurrent run is refused clearly (LockError, exit 6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from imt_etl import cli, pipeline
from imt_etl.config import TOKEN_ENV, Settings
from imt_etl.errors import LockError
from imt_etl.lock import OutputLock, lock_path, read_holder

HOLDER = textwrap.dedent("""
    import sys, time
    from imt_etl.lock import OutputLock
    with OutputLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
""")


@pytest.fixture()
def held_by_other_process(tmp_path):
    """Another process holding the lock on tmp_path; yields its Popen."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    yield child
    if child.poll() is None:
        child.stdin.close()
        child.wait(timeout=10)


def settings_for(out) -> Settings:
    # Nothing may reach this URL: the lock is checked before any other work.
    return Settings(redcap_url="http://127.0.0.1:9/api/", token="A" * 32, out_dir=out,
                    pseudonym_key=b"k" * 16)


def test_a_second_run_is_refused_naming_folder_and_holder(held_by_other_process, tmp_path):
    with pytest.raises(LockError) as info:
        pipeline.run(settings_for(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and f"pid {held_by_other_process.pid}" in message
    assert read_holder(tmp_path)["pid"] == held_by_other_process.pid
    assert info.value.exit_code == 6


def test_the_cli_exits_6_with_one_clear_line(held_by_other_process, tmp_path, capsys,
                                             monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "A" * 32)
    monkeypatch.setenv("IMT_ETL_PSEUDONYM_KEY", "k" * 16)
    code = cli.main(["sync", "--url", "http://127.0.0.1:9/api/", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 6
    assert "imt-etl: error:" in err and str(tmp_path) in err and "Traceback" not in err
    assert str(held_by_other_process.pid) in err


def test_a_killed_holder_frees_the_lock_at_once(held_by_other_process, tmp_path):
    os.kill(held_by_other_process.pid, signal.SIGKILL)
    held_by_other_process.wait(timeout=10)
    with OutputLock(tmp_path) as lock:  # no stale lock to clean up by hand
        assert lock.held and read_holder(tmp_path)["pid"] == os.getpid()
    assert read_holder(tmp_path) == {}  # released: nobody is named as holder any more


def test_waiting_for_the_lock(held_by_other_process, tmp_path):
    started = time.monotonic()
    with pytest.raises(LockError, match="after waiting 0.3 s"):
        OutputLock(tmp_path, wait=0.3, poll=0.05).acquire()
    assert time.monotonic() - started >= 0.3
    held_by_other_process.stdin.close()  # the holder finishes: the waiter gets the lock
    with OutputLock(tmp_path, wait=10, poll=0.05) as lock:
        assert lock.held


def test_two_locks_in_one_process_exclude_each_other_too(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(LockError):
            OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path):
        pass
    assert lock_path(tmp_path).exists()
