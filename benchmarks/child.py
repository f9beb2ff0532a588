"""One measurement in its own process (so its peak RSS is its own): prints one JSON line.

    python -m benchmarks.child MODE URL OUT_DIR      (the token is read from stdin, never argv)

MODE: full | incremental (pipeline.run), baseline (PyCap to parquet), stages (stage throughput).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path

from benchmarks.workload import BATCH_SIZE, settings


def peak_rss_mb() -> float:
    """This process's high-water mark plus its largest worker's (the FHIR build workers,
    imt_etl.batchpool): an upper bound of the run's memory, since the copy-on-write pages a
    forked worker shares with its parent are counted in both."""
    # Linux reports ru_maxrss in KiB; RUSAGE_CHILDREN is the largest waited-for child's.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + workers) / 1024


class MemorySampler:
    """Peak of this process's and its workers' proportional set size (PSS), read from
    /proc/<pid>/smaps_rollup every `interval` s: resident memory with each shared page
    counted once across the processes, which `peak_rss_mb` cannot do. Linux only (None
    elsewhere); a spike shorter than the interval can be missed."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = Path(f"/proc/{os.getpid()}/smaps_rollup").exists()

    def __enter__(self) -> MemorySampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _pss_kib(os.getpid()) + sum(
                _pss_kib(child) for child in _children(os.getpid())))
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float | None:
        return self.peak_kib / 1024 if self.available else None


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):  # the worker exited meanwhile
        pass
    return 0


def measure(mode: str, url: str, token: str, out_dir: Path) -> dict:
    if mode in ("full", "incremental"):
        from imt_etl import pipeline

        started = time.perf_counter()
        summary = pipeline.run(settings(url, token, out_dir), incremental=mode == "incremental")
        return {"seconds": time.perf_counter() - started, "mode": summary.mode,
                "records": summary.records, "records_changed": summary.records_changed,
                "durations": summary.durations_s}
    if mode == "baseline":
        from benchmarks.baseline import export_to_parquet

        return export_to_parquet(url, token, out_dir / "baseline.parquet", BATCH_SIZE)
    if mode == "stages":
        from benchmarks.stages import stage_throughput

        return stage_throughput(url, token, out_dir)
    raise SystemExit(f"unknown mode {mode!r}")


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    mode, url, out_dir = argv
    token = sys.stdin.readline().strip()
    with MemorySampler() as memory:
        result = measure(mode, url, token, Path(out_dir))
    # The figure compared with the target: shared pages once (PSS), else the upper bound.
    result["peak_rss_upper_mb"] = peak_rss_mb()
    result["peak_rss_mb"] = memory.peak_mb or result["peak_rss_upper_mb"]
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
