"""The REDCap token never leaks: whole CLI runs (a good one through faults, a rejected token, a
dead server) at DEBUG; stdout, stderr, every log record and every output file are scanned."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import pytest

from imt_etl import cli, commands
from imt_etl.config import TOKEN_ENV, Settings
from imt_etl.privacy import KEY_ENV
from imt_etl.redcap.faults import FaultProfile

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import emulator_for, output_files  # noqa: E402

pytestmark = pytest.mark.slow  # one whole run at DEBUG


class Capture(logging.Handler):
    """Every record, formatted with its traceback, before any redacting filter touches it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture()
def captured_cli(monkeypatch):
    """cli.main with fast retries and a capturing handler first on the root logger."""
    capture = Capture()
    configure = cli._configure_logging

    def configure_and_capture(args):
        configure(args)
        logging.getLogger().handlers.insert(0, capture)  # first: sees records unredacted

    monkeypatch.setattr(cli, "_configure_logging", configure_and_capture)
    monkeypatch.setattr(commands, "Settings", functools.partial(
        Settings, max_retries=4, backoff_base=0.005, backoff_max=0.05, timeout=2.0))
    monkeypatch.setenv(KEY_ENV, "reliability-tests-pseudonym-key")
    yield capture
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                       if h is not capture]


def test_the_token_appears_nowhere(reference_project, token, captured_cli, capsys, monkeypatch,
                                   tmp_path):
    wrong = "F00D" * 8
    flaky = FaultProfile(error_500=0.05, error_429=0.05, reset=0.05, truncated=0.05,
                         malformed=0.05, retry_after=0, seed=5)
    codes = {}
    with emulator_for(reference_project, token, flaky) as server:
        sync = ["sync", "--url", server.url, "--project-name", "imt", "-v", "--batch-size", "5"]
        monkeypatch.setenv(TOKEN_ENV, token)
        codes["good"] = cli.main([*sync, "--out", str(tmp_path / "good"), "--json"])
        monkeypatch.setenv(TOKEN_ENV, wrong)
        codes["rejected"] = cli.main([*sync, "--out", str(tmp_path / "rejected")])
    with emulator_for(reference_project, token, FaultProfile(error_500=1.0)) as dead:
        monkeypatch.setenv(TOKEN_ENV, token)
        codes["dead"] = cli.main(["sync", "--url", dead.url, "-v", "--out",
                                  str(tmp_path / "good")])
    out, err = capsys.readouterr()
    assert codes == {"good": 0, "rejected": 3, "dead": 3}
    logs = "\n".join(captured_cli.lines)
    # The scan is meaningful: retries, HTTP details and errors were all logged and printed.
    assert "retry 1 of 4" in logs and "HTTP 403" in err and "HTTP 500" in err
    files = output_files(tmp_path)
    assert len(files) > 60 and any(f.startswith("good/fhir/") for f in files)
    for secret in (token, wrong):
        for variant in (secret, secret.lower(), secret.encode().hex()):
            assert variant not in out and variant not in err and variant not in logs
            for name in files:
                assert variant.encode() not in (tmp_path / name).read_bytes(), name
