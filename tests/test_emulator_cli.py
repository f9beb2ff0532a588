"""`imt-etl redcap-emulator` as a user starts it: a real process that PyCap can talk to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from redcap import Project

from imt_etl.redcap.emulator import new_token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_emulator_command_serves_the_reference_project():
    port, token = free_port(), new_token()
    script = Path(sys.executable).with_name("imt-etl")
    env = {**os.environ, "REDCAP_API_TOKEN": token}
    proc = subprocess.Popen([str(script), "redcap-emulator", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/"
        deadline = time.monotonic() + 30
        while True:
            try:
                info = Project(url, token).export_project_info()
                break
            except Exception:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the emulator did not answer within 30 s"
                time.sleep(0.2)
        assert info["project_title"].startswith("IMT")
        records = Project(url, token).export_records(fields=["record_id"])
        assert len({r["record_id"] for r in records}) == 33
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert token not in err
