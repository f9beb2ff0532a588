"""A real FHIR R4 server (sekmet-fhir, SQLite) on loopback for publishing tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_sekmet(workdir: Path) -> Iterator[str]:
    """Start `sekmet serve` with a fresh database in `workdir`; yield its FHIR base URL."""
    exe = Path(sys.executable).parent / "sekmet"
    if not exe.exists():
        pytest.fail(f"sekmet-fhir is a dev dependency but {exe} is missing: run `make test`")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    env = dict(
        os.environ,
        SEKMET_DB=str(workdir / "fhir.db"),
        SEKMET_BASE_URL=base,
        SEKMET_CONFIG=str(workdir / "no-config.yaml"),  # must not exist: use the defaults
    )
    log_path = workdir / "sekmet.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(proc, base, log_path)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sekmet exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(f"{base}/metadata", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"sekmet not ready after {STARTUP_TIMEOUT}s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def sekmet_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a sekmet server shared by one test module (use distinct ids per test)."""
    with running_sekmet(tmp_path_factory.mktemp("sekmet")) as base:
        yield base
