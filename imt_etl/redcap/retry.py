"""Bounded retries with exponential backoff and full jitter for retryable REDCap errors."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from imt_etl.errors import RedcapError

log = logging.getLogger(__name__)

T = TypeVar("T")

# A server asking for a longer pause than this is treated as asking for this long: a sync must
# finish in bounded time, and the attempt count is bounded too.
MAX_RETRY_AFTER = 300.0


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return rng.uniform(0.0, min(cap, base * (2**attempt)))


def retry_delay(
    error: BaseException, attempt: int, *, base: float, cap: float, rng: random.Random
) -> float:
    """How long to wait before the next attempt; a server's Retry-After wins over the backoff."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), MAX_RETRY_AFTER)
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, RedcapError) and error.retryable


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int,
    base: float,
    cap: float,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    what: str = "REDCap call",
) -> T:
    """Call fn; on a retryable RedcapError wait and try again, at most max_retries more times.

    Non-retryable errors (bad token, bad request) propagate at once. After the last attempt the
    last error is raised unchanged. `what` names the call in log lines; error messages are
    already token-free (the client scrubs them), so they are safe to log.
    """
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    rng = rng if rng is not None else random.Random()
    attempt = 0
    while True:
        try:
            return fn()
        except RedcapError as error:
            if not error.retryable or attempt >= max_retries:
                if error.retryable:
                    log.error("%s failed after %d attempts: %s", what, attempt + 1, error)
                raise
            delay = retry_delay(error, attempt, base=base, cap=cap, rng=rng)
            attempt += 1
            log.warning(
                "%s failed (%s); retry %d of %d in %.2fs", what, error, attempt, max_retries, delay
            )
            sleep(delay)
