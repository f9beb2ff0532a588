"""Backoff, Retry-After and bounded attempts of call_with_retries."""

from __future__ import annotations

import logging
import random

import pytest

from imt_etl.errors import RedcapAuthError, RedcapError
from imt_etl.redcap.retry import MAX_RETRY_AFTER, backoff_delay, call_with_retries


def flaky(errors: list[Exception], result: str = "ok"):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def test_retries_retryable_errors_then_succeeds():
    fn, calls = flaky([RedcapError("boom", 503, retryable=True)] * 3)
    sleeps: list[float] = []
    out = call_with_retries(fn, max_retries=5, base=1.0, cap=8.0, sleep=sleeps.append,
                            rng=random.Random(1))
    assert out == "ok" and calls["n"] == 4
    assert len(sleeps) == 3
    # Full jitter: each wait lies within [0, min(cap, base * 2**attempt)].
    for attempt, delay in enumerate(sleeps):
        assert 0 <= delay <= min(8.0, 2**attempt)


def test_gives_up_after_bounded_attempts_with_last_error():
    errors = [RedcapError(f"fail {i}", 500, retryable=True) for i in range(10)]
    fn, calls = flaky(errors)
    with pytest.raises(RedcapError, match="fail 3"):
        call_with_retries(fn, max_retries=3, base=0.1, cap=1.0, sleep=lambda s: None)
    assert calls["n"] == 4


def test_non_retryable_and_auth_errors_are_raised_at_once():
    for error in (RedcapError("bad field", 400), RedcapAuthError("no", 403)):
        fn, calls = flaky([error])
        sleeps: list[float] = []
        with pytest.raises(RedcapError):
            call_with_retries(fn, max_retries=5, base=0.1, cap=1.0, sleep=sleeps.append)
        assert calls["n"] == 1 and sleeps == []


def test_retry_after_is_honoured_and_bounded():
    error = RedcapError("slow down", 429, retryable=True)
    error.retry_after = 7.0
    huge = RedcapError("slow down", 429, retryable=True)
    huge.retry_after = 10_000.0
    fn, _ = flaky([error, huge])
    sleeps: list[float] = []
    call_with_retries(fn, max_retries=3, base=0.1, cap=1.0, sleep=sleeps.append)
    assert sleeps == [7.0, MAX_RETRY_AFTER]


def test_each_retry_is_logged(caplog):
    fn, _ = flaky([RedcapError("timeout", None, retryable=True)])
    with caplog.at_level(logging.WARNING, logger="imt_etl.redcap.retry"):
        call_with_retries(fn, max_retries=2, base=0.1, cap=1.0, sleep=lambda s: None,
                          what="export records")
    assert "export records failed" in caplog.text and "retry 1 of 2" in caplog.text


def test_backoff_grows_then_caps():
    rng = random.Random(0)
    highs = [max(backoff_delay(a, base=1, cap=10, rng=rng) for _ in range(200)) for a in range(6)]
    assert highs[0] <= 1 and highs[2] <= 4 and 8 < highs[4] <= 10 and highs[5] <= 10
