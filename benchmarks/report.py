"""Render a benchmark run as the markdown table of RESULTS.md and rewrite that table in place."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
RAW = HERE / "results.json"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def _rows(run: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) for every figure of issue 8."""
    by_n = {s["participants"]: s["summary"] for s in run["sizes"]}
    largest = max(by_n)
    rows: list[tuple[str, str, str, str]] = []
    for n, s in by_n.items():
        top = n == largest
        if "incremental_fraction" not in s:  # baseline and full sync only at this size
            rows += _full_only_rows(n, s, top)
            continue
        rows += [
            (f"full sync, {n:,} participants (s)", _n(s["full_s"]), "", ""),
            (f"baseline (PyCap -> parquet), {n:,} (s)", _n(s["baseline_s"]), "", ""),
            (f"full sync / baseline, {n:,}", f"{s['ratio']:.1f}x",
             "<= 2x at 10,000" if top else "", _verdict(s["ratio"] <= 2) if top else ""),
            (f"rows/s extracted, {n:,}", _n(s["extract_rows_per_s"]), "", ""),
            (f"cells/s validated, {n:,}", _n(s["validate_cells_per_s"]), "", ""),
            (f"FHIR resources/s built, {n:,}", _n(s["fhir_build_per_s"]), "", ""),
            (f"FHIR resources/s serialised (one core), {n:,}", _n(s["fhir_serialise_per_s"]),
             ">= 100,000", _verdict(s["fhir_serialise_per_s"] >= 100_000)),
            (f"FHIR resources/s written (NDJSON + bundles), {n:,}", _n(s["fhir_write_per_s"]),
             "", ""),
            (f"rows/s written to parquet, {n:,}", _n(s["parquet_rows_per_s"]), "", ""),
            (f"incremental (1 % changed) / full, {n:,}", f"{s['incremental_fraction']:.0%}",
             "<= 5 %", _verdict(s["incremental_fraction"] <= 0.05)),
            *_memory_rows(n, s, top),
            (f"emulator export rate, {n:,} (rows/s)", _n(s["emulator_rows_per_s"]),
             "> rows/s extracted", _verdict(s["emulator_rows_per_s"] > s["extract_rows_per_s"])),
        ]
    if len(by_n) > 1:
        small = min(by_n)
        growth = by_n[largest]["peak_rss_mb"] / by_n[small]["peak_rss_mb"]
        rows.append((f"peak RSS growth {small:,} -> {largest:,}", f"{growth:.1f}x", "<= 2.5x",
                     _verdict(growth <= 2.5)))
    return rows


def _full_only_rows(n: int, s: dict, top: bool) -> list[tuple[str, str, str, str]]:
    return [
        (f"full sync, {n:,} participants (s)", _n(s["full_s"]), "", ""),
        (f"baseline (PyCap -> parquet), {n:,} (s)", _n(s["baseline_s"]), "", ""),
        (f"full sync / baseline, {n:,}", f"{s['ratio']:.1f}x",
         "<= 2x at 10,000" if top else "", _verdict(s["ratio"] <= 2) if top else ""),
        *_memory_rows(n, s, top),
        (f"emulator export rate, {n:,} (rows/s)", _n(s["emulator_rows_per_s"]), "", ""),
    ]


def _memory_rows(n: int, s: dict, top: bool) -> list[tuple[str, str, str, str]]:
    rows = [(f"peak resident memory of a full sync (PSS, pipeline + workers), {n:,} (MB)",
             _n(s["peak_rss_mb"]), "<= 1,536 at 10,000" if top else "",
             _verdict(s["peak_rss_mb"] <= 1536) if top and n >= 10_000 else "")]
    if "peak_rss_upper_mb" in s:
        rows.append((f"upper bound: peak RSS of the pipeline + of its largest worker, {n:,} (MB)",
                     _n(s["peak_rss_upper_mb"]), "", ""))
    return rows


def _stage_lines(run: dict) -> list[str]:
    lines = ["", "Stage seconds of the full syncs (pipeline's own run summary, median; FHIR "
             "workers build beside the tables, so `fhir` is the FHIR time beyond them):", "",
             "| participants | rows | " + " | ".join(_STAGES) + " | total |",
             "|---|---|" + "---|" * (len(_STAGES) + 1)]
    for size in run["sizes"]:
        durations = [r["durations"] for r in size["full"]]
        cells = []
        for stage in _STAGES:
            values = sorted(d.get(stage, 0.0) for d in durations)
            cells.append(f"{values[len(values) // 2]:.1f}")
        lines.append(f"| {size['participants']:,} | {size['rows']:,} | " + " | ".join(cells)
                     + f" | {size['summary']['full_s']:.1f} |")
    return lines


_STAGES = ("extract", "tidy", "validate", "tables", "fhir")


def render(run: dict) -> str:
    m = run["machine"]
    reps = ", ".join(f"{s['reps']} at {s['participants']:,}" for s in run["sizes"])
    lines = [
        f"Measured {m['date']} on {m['cores']} cores, {m['memory']} RAM, Python {m['python']}, "
        f"{m['platform']}; {m.get('workers', '1')} FHIR build process(es) "
        "(`--workers`, default one per core).",
        f"Command: `{run['command']}` ({run['total_s'] / 60:.1f} min in all; repeats: {reps}; "
        "values are medians of the repeats, ratios are taken within a repeat).", "",
        "| figure | value | target | |", "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(run)]
    lines += [f"| {s['participants']:,} participants | not run: {s['reason']} | | **missed** |"
              for s in run.get("skipped", [])]
    return "\n".join(lines + _stage_lines(run))


def write_results(run: dict, table: str, results: Path = RESULTS) -> None:
    """Replace the text between the markers (the rest of RESULTS.md is hand-written)."""
    text = results.read_text() if results.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    results.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    RAW.write_text(json.dumps(run, indent=1) + "\n")
