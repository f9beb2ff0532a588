"""Fault profiles: parsing, determinism, and what the HTTP layer does with each fault."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from imt_etl.errors import ConfigError
from imt_etl.redcap.faults import Fault, FaultProfile

sys.path.insert(0, str(Path(__file__).parent))
from emulator_fixtures import TOKEN, classic_project, running  # noqa: E402

VERSION = {"token": TOKEN, "content": "version"}
RECORDS = {"token": TOKEN, "content": "record", "format": "json"}


def test_from_string_and_validation():
    profile = FaultProfile.from_string("500=0.1, 429=0.05,reset=0.05,retry_after=3,seed=7")
    assert (profile.error_500, profile.error_429, profile.reset) == (0.1, 0.05, 0.05)
    assert profile.retry_after == 3 and profile.seed == 7 and profile.active
    assert not FaultProfile.from_string("").active
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        FaultProfile.from_string("teapot=0.1")
    with pytest.raises(ConfigError, match="not a number"):
        FaultProfile.from_string("500=lots")
    with pytest.raises(ConfigError, match="add up"):
        FaultProfile(error_500=0.7, reset=0.5)


def test_decisions_are_deterministic_and_follow_the_rates():
    a = FaultProfile(error_500=0.2, reset=0.1, seed=42)
    b = FaultProfile(error_500=0.2, reset=0.1, seed=42)
    seq_a = [a.decide() for _ in range(2000)]
    assert seq_a == [b.decide() for _ in range(2000)]
    assert 300 < seq_a.count(Fault.ERROR_500) < 500
    assert 120 < seq_a.count(Fault.RESET) < 280
    a.reseed()
    assert [a.decide() for _ in range(50)] == seq_a[:50]
    other = FaultProfile(error_500=0.2, reset=0.1, seed=43)
    assert [other.decide() for _ in range(200)] != seq_a[:200]


def _post(url: str, data: dict, timeout: float = 5) -> requests.Response:
    return requests.post(url, data=data, timeout=timeout)


@pytest.mark.parametrize(("key", "status"), [("error_500", 500), ("error_503", 503),
                                             ("error_429", 429)])
def test_error_faults_answer_with_status(key: str, status: int):
    with running(classic_project(), faults=FaultProfile(**{key: 1.0}, retry_after=4)) as emu:
        answer = _post(emu.url, RECORDS)
    assert answer.status_code == status
    if status in (429, 503):
        assert answer.headers["Retry-After"] == "4"


def test_reset_truncated_malformed():
    with running(classic_project(), faults=FaultProfile(reset=1.0)) as emu:
        with pytest.raises(requests.ConnectionError):
            _post(emu.url, VERSION)
    with running(classic_project(), faults=FaultProfile(truncated=1.0)) as emu:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _post(emu.url, RECORDS).content  # noqa: B018 - reading the body is the point
    with running(classic_project(), faults=FaultProfile(malformed=1.0)) as emu:
        answer = _post(emu.url, RECORDS)
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.JSONDecodeError):
            answer.json()


def test_slow_and_timeout():
    with running(classic_project(), faults=FaultProfile(slow=1.0, slow_seconds=0.2)) as emu:
        answer = _post(emu.url, VERSION)
        assert answer.text == "14.5.10" and answer.elapsed.total_seconds() >= 0.2
    with running(classic_project(), faults=FaultProfile(timeout=1.0, timeout_seconds=5)) as emu:
        with pytest.raises(requests.Timeout):
            _post(emu.url, VERSION, timeout=0.3)


def test_mixed_profile_replays_the_same_statuses():
    def statuses() -> list[int]:
        profile = FaultProfile(error_500=0.3, error_429=0.2, seed=5)
        with running(classic_project(), faults=profile) as emu:
            return [_post(emu.url, VERSION).status_code for _ in range(25)]

    first = statuses()
    assert first == statuses()
    assert {200, 500, 429} <= set(first)
