"""`dagster dev` through the wrapper: answers on loopback, lists the assets, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dagster_project.dev import INSTANCE_YAML

ROOT = Path(__file__).resolve().parents[2]
QUERY = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _asset_keys(port: int) -> set[str] | None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=QUERY,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["assetNodes"]
    except (OSError, KeyError, TypeError, ValueError):
        return None  # not up yet, or the code location is still loading
    return {"/".join(node["assetKey"]["path"]) for node in nodes}


def _ignore_sigint() -> None:
    # What a shell does to a background job: the wrapper must undo it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_dagster_dev_lists_the_assets_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMT_ETL_", "DAGSTER_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster_project.dev", "--port", str(port), "--home", str(home)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_ignore_sigint,  # noqa: PLW1509 - test only
    )
    try:
        keys = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            keys = _asset_keys(port)
            if keys:
                break
            time.sleep(0.5)
        assert keys and {"redcap_snapshot", "instrument_enrollment", "sync_summary"} <= keys
        assert (home / "dagster.yaml").read_text(encoding="utf-8") == INSTANCE_YAML

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
        deadline = time.monotonic() + 15
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(process.pid), "dagster dev left processes behind"
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
