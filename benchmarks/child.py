"""One measurement in its own process (so its peak RSS is its own): prints one JSON line.

    python -m benchmarks.child MODE URL OUT_DIR      (the token is read from stdin, never argv)

MODE: full | incremental (pipeline.run), baseline (PyCap to parquet), stages (stage throughput).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
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
    result = measure(mode, url, token, Path(out_dir))
    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
