"""Fewer cyclic garbage collections while a run allocates millions of small objects.

With the default threshold (700 allocations) the collector ran ~12,000 times in a
400-participant run and took 16 % of it, mostly rescanning the long-lived tables; a larger
first-generation threshold keeps the same peak memory (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

RUN_THRESHOLD = (100_000, 50, 100)


@contextmanager
def fewer_collections(threshold: tuple[int, int, int] = RUN_THRESHOLD) -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)
