"""Run the scale benchmarks and rewrite the results table in benchmarks/RESULTS.md.

    python benchmarks/run.py [--quick] [--sizes 1000,10000] [--reps 1,1] [--no-write]

Each full sync, incremental sync, baseline and stage run is its own subprocess (so its peak RSS
is its own) against one emulator per size served on loopback by this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import render, write_results  # noqa: E402
from benchmarks.workload import BATCH_SIZE, change_records, make_project, serve  # noqa: E402

log = logging.getLogger("benchmarks")
ROOT = Path(__file__).resolve().parent.parent
INCREMENTAL_FRACTION = 0.01
BUDGET_MIN = 12  # the issue: all of `make bench` in < 15 min on 2 cores


def run_child(mode: str, url: str, token: str, out_dir: Path) -> dict:
    """One measurement in a fresh interpreter; the token goes over stdin, never argv."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", mode, url, str(out_dir)],
        input=token + "\n", capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {mode!r} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def emulator_rate(emulator, batch_size: int = BATCH_SIZE, every: int = 1) -> dict[str, float]:
    """The emulator's own flat JSON export (no HTTP, no client), in the pipeline's batches;
    `every` > 1 times every n-th batch only (a rate per row: a sample spread over the project
    gives the same figure in less of the time budget)."""
    from imt_etl.redcap.emulator_store import export_records

    store = emulator.store
    ids = store.record_ids()
    rows = size = 0
    started = time.perf_counter()
    for start in range(0, len(ids), batch_size * every):
        response = export_records(store, {"content": "record", "format": "json", "type": "flat",
                                          "records": ids[start:start + batch_size]})
        size += len(response.body)
        rows += response.body.count(b'{"')
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds,
            "mb_per_s": size / seconds / 1e6}


def bench_size(n: int, reps: int, workdir: Path, runner=None, *, extras: bool = True) -> dict:
    """Every figure at one project size; baseline and full sync alternate within each repeat.

    `runner` replaces `run_child` (the smoke test runs the measurements in-process);
    `extras=False` measures only baseline and full sync (no incremental, no stage run).
    """
    run_child = runner or globals()["run_child"]
    started = time.perf_counter()
    project = make_project(n)
    result: dict = {"participants": n, "rows": len(project.rows), "reps": reps,
                    "generate_s": time.perf_counter() - started}
    with serve(project) as (emulator, token):
        result["emulator"] = emulator_rate(emulator, every=1 if extras else 5)
        full, baseline = [], []
        for rep in range(reps):
            out = workdir / f"n{n}-full-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            baseline.append(run_child("baseline", emulator.url, token, workdir / f"n{n}-base"))
            full.append(run_child("full", emulator.url, token, out))
            log.info("n=%d rep %d: full %.1f s, baseline %.1f s", n, rep,
                     full[-1]["seconds"], baseline[-1]["seconds"])
        result["full"], result["baseline"] = full, baseline
        result["disk_mb"] = disk_needed_mb(workdir / f"n{n}-full-{reps - 1}")
        if not extras:
            result["summary"] = summarise(result)
            _clean(workdir, n)
            return result
        incremental = []
        for _ in range(reps):
            changed = change_records(emulator, INCREMENTAL_FRACTION, seed=len(incremental))
            got = run_child("incremental", emulator.url, token, workdir / f"n{n}-full-{reps - 1}")
            got["changed"] = len(changed)
            incremental.append(got)
        result["incremental"] = incremental
        result["stages"] = run_child("stages", emulator.url, token, workdir / f"n{n}-stages")
    result["summary"] = summarise(result)
    _clean(workdir, n)
    return result


def disk_needed_mb(out_dir: Path) -> float:
    """What a full sync's output folder needs on disk at its peak: the files it ends with plus
    the FHIR spool, which holds about the NDJSON's bytes again until the merge ends."""
    files = [p for p in Path(out_dir).rglob("*") if p.is_file()]
    ndjson = sum(p.stat().st_size for p in files if p.suffix == ".ndjson")
    return (sum(p.stat().st_size for p in files) + ndjson) / 1e6


def _clean(workdir: Path, n: int) -> None:
    """A size's output folders are not needed once it is measured (10,000 needs the room)."""
    for folder in workdir.glob(f"n{n}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def summarise(result: dict) -> dict[str, float]:
    """Medians over repeats; ratios are taken within each repeat, then their median."""
    full = [r["seconds"] for r in result["full"]]
    base = [r["seconds"] for r in result["baseline"]]
    full_median = statistics.median(full)
    got = {
        "full_s": full_median,
        "baseline_s": statistics.median(base),
        "ratio": statistics.median(f / b for f, b in zip(full, base, strict=True)),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in result["full"]),
        "peak_rss_upper_mb": max(r.get("peak_rss_upper_mb", r["peak_rss_mb"])
                                 for r in result["full"]),
        "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in result["baseline"]),
        "emulator_rows_per_s": result["emulator"]["rows_per_s"],
    }
    if "stages" not in result:  # a size measured without the extras
        return got
    stages = result["stages"]
    return got | {
        "incremental_s": statistics.median(r["seconds"] for r in result["incremental"]),
        "incremental_fraction": statistics.median(
            r["seconds"] for r in result["incremental"]) / full_median,
        "extract_rows_per_s": stages["rows"] / stages["extract_s"],
        "validate_cells_per_s": stages["cells"] / stages["validate_s"],
        "fhir_build_per_s": stages["resources"] / stages["fhir_build_s"],
        "fhir_serialise_per_s": stages["resources"] / stages["fhir_serialise_s"],
        "fhir_write_per_s": stages["resources"] / (stages["ndjson_write_s"]
                                                   + stages["bundles_write_s"]),
        "parquet_rows_per_s": stages["parquet_rows"] / stages["parquet_write_s"],
    }


def available_mb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    return int(meminfo.read_text().split("MemAvailable:")[1].split()[0]) / 1024


def too_big(n: int, done: list[dict], runs: int = 4, budget_min: float = BUDGET_MIN,
            workdir: Path | None = None) -> str | None:
    """Why size `n` cannot run here, projected linearly from the largest size already measured.

    A full sync holds every row and resource in memory (see RESULTS.md), so its peak RSS grows
    with the project; a run that would exhaust memory would be killed, not measured. Its output
    and FHIR spool grow too (~2.2 GB per 1,000 participants): a size that would fill the disk
    of `workdir` would fail at its end.
    """
    if not done:
        return None
    last = done[-1]
    scale = n / last["participants"]
    peak = last["summary"]["peak_rss_mb"] * scale
    free = available_mb()
    if free is not None and peak > 0.8 * free:
        return (f"projected peak RSS {peak / 1024:.1f} GiB ({last['summary']['peak_rss_mb']:.0f} "
                f"MB at {last['participants']:,} x {scale:.0f}) exceeds 80 % of the "
                f"{free / 1024:.1f} GiB available")
    disk_mb = last.get("disk_mb")
    room = shutil.disk_usage(workdir).free / 1e6 if workdir is not None else None
    if disk_mb is not None and room is not None and disk_mb * scale > 0.9 * room:
        return (f"projected {disk_mb * scale / 1000:.1f} GB of output and FHIR spool "
                f"({disk_mb:.0f} MB at {last['participants']:,} x {scale:.0f}) exceeds 90 % of "
                f"the {room / 1000:.1f} GB free in {workdir}")
    full_s = last["summary"]["full_s"]
    minutes = full_s * scale * runs / 60  # full, baseline (+ incremental, stages)
    if minutes > budget_min:
        return (f"projected {minutes:.0f} min for one repeat (full sync {full_s:.0f} s at"
                f" {last['participants']:,} x {scale:.0f}, {runs} runs) exceeds the "
                f"{budget_min:g} min budget")
    return None


def machine() -> dict[str, str]:
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    from imt_etl.config import default_workers

    return {"cores": str(os.cpu_count()), "memory": memory, "python": platform.python_version(),
            "workers": str(default_workers()),
            "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no write")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--reps", default="3,1", help="repeats per size, in --sizes order")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--full-only-from", type=int, default=10_000, metavar="N",
                        help="sizes >= N: baseline and full sync only (10000)")
    parser.add_argument("--budget-min", type=float, default=BUDGET_MIN,
                        help=f"skip a size projected to take longer (minutes, {BUDGET_MIN})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("imt_etl").setLevel(logging.WARNING)
    args = parse_args(argv)
    sizes = [20] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps = [1] if args.quick else [int(r) for r in args.reps.split(",")]
    reps += [reps[-1]] * (len(sizes) - len(reps))
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imt-bench-"))
    started = time.perf_counter()
    results: list[dict] = []
    skipped: list[dict] = []
    try:
        for n, r in zip(sizes, reps, strict=True):
            extras = n < args.full_only_from
            reason = too_big(n, results, 4 if extras else 2, args.budget_min, workdir)
            if reason:
                log.warning("n=%d not run: %s", n, reason)
                skipped.append({"participants": n, "reason": reason})
                continue
            results.append(bench_size(n, r, workdir, extras=extras))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    run = {"command": command.strip(), "machine": machine(), "sizes": results,
           "skipped": skipped, "total_s": time.perf_counter() - started}
    table = render(run)
    sys.stdout.write(table + "\n")
    if not (args.quick or args.no_write):
        write_results(run, table)
    return run


if __name__ == "__main__":
    main()
