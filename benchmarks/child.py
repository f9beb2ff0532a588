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
        self.phase = "start"  # set by `mark_phases`: the peak of each phase is kept too
        self.phase_peaks_kib: dict[str, int] = {}
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
            now = _pss_kib(os.getpid()) + sum(_pss_kib(c) for c in _children(os.getpid()))
            self.peak_kib = max(self.peak_kib, now)
            phase = self.phase
            self.phase_peaks_kib[phase] = max(self.phase_peaks_kib.get(phase, 0), now)
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


def mark_phases(memory: MemorySampler) -> None:
    """Name the pipeline's phases for the sampler, by wrapping the functions that start them
    (benchmark-only instrumentation: the run itself is unchanged)."""
    from imt_etl import outputs, pipeline

    def starts(module, name: str, phase: str, after: str | None = None) -> None:
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            memory.phase = phase
            try:
                return original(*args, **kwargs)
            finally:
                if after:
                    memory.phase = after

        setattr(module, name, wrapper)

    starts(pipeline, "extract", "extract")
    starts(pipeline, "tidy", "tidy")
    starts(outputs, "validate_and_report", "validate")
    # FHIR set-up and build follow the measurement table; the FHIR files are merged by a
    # forked process during the analysis tables and after them.
    starts(outputs, "measurement_table", "measurement table", after="FHIR build")
    starts(outputs, "write_analysis", "analysis tables + FHIR merge", after="FHIR merge")


def measure(mode: str, url: str, token: str, out_dir: Path,
            memory: MemorySampler | None = None) -> dict:
    if mode in ("full", "incremental"):
        from imt_etl import pipeline

        if memory is not None:
            mark_phases(memory)

        started = time.perf_counter()
        summary = pipeline.run(settings(url, token, out_dir), incremental=mode == "incremental")
        got = {"seconds": time.perf_counter() - started, "mode": summary.mode,
               "records": summary.records, "records_changed": summary.records_changed,
               "durations": summary.durations_s,
               "fhir_seconds": summary.stages.get("fhir", {}).get("seconds")}
        if memory is not None and memory.available:
            got["peak_pss_mb_by_phase"] = {k: round(v / 1024) for k, v in
                                           memory.phase_peaks_kib.items()}
        return got
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
        result = measure(mode, url, token, Path(out_dir), memory)
    # The figure compared with the target: shared pages once (PSS), else the upper bound.
    result["peak_rss_upper_mb"] = peak_rss_mb()
    result["peak_rss_mb"] = memory.peak_mb or result["peak_rss_upper_mb"]
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
