"""Smoke test of the benchmark harness at a tiny size, so `make bench` cannot rot unnoticed."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import child, report, run
from benchmarks.workload import make_project, serve


def in_process(mode, url, token, out_dir):
    # Same measurements as the subprocess children, minus ~3 s of imports each.
    result = child.measure(mode, url, token, out_dir)
    result["peak_rss_mb"] = child.peak_rss_mb()
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    size = run.bench_size(5, 1, workdir, runner=in_process)
    return {"command": "pytest", "machine": run.machine(), "sizes": [size], "total_s": 1.0}


def test_every_figure_is_measured_and_consistent(tiny_run):
    size = tiny_run["sizes"][0]
    full, incremental = size["full"][0], size["incremental"][0]
    assert full["mode"] == "full" and full["records"] == 5
    assert incremental["mode"] == "incremental" and incremental["records_changed"] == 1
    assert size["baseline"][0]["rows"] == size["rows"] == size["stages"]["rows"]
    assert size["emulator"]["rows"] == size["rows"]
    summary = size["summary"]
    assert summary["peak_rss_mb"] > 50  # a real process measured, not this one's zero
    for key in ("ratio", "fhir_serialise_per_s", "validate_cells_per_s", "parquet_rows_per_s",
                "incremental_fraction"):
        assert summary[key] > 0, key


def test_results_table_is_rewritten_between_markers_only(tiny_run, tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\nhand-written\n\n{report.BEGIN}\nold table\n{report.END}\n"
                       "\n## Profile notes\nkept\n")
    monkeypatch.setattr(report, "RAW", tmp_path / "results.json")
    table = report.render(tiny_run)
    report.write_results(tiny_run, table, results)
    text = results.read_text()
    assert "old table" not in text and "hand-written" in text and "kept" in text
    assert "| full sync / baseline, 5 |" in text and "Command: `pytest`" in text
    assert json.loads((tmp_path / "results.json").read_text())["sizes"][0]["participants"] == 5


def test_changed_records_are_one_percent_and_at_least_one():
    with serve(make_project(5)) as (emulator, _):
        assert len(run.change_records(emulator, 0.01)) == 1
        records = emulator.store.record_ids()
        edited = [r for r in records if any(
            "enrollment_notes" in row.values and "benchmark" in row.values["enrollment_notes"]
            for row in emulator.store.rows_of(r))]
        assert len(edited) == 1


def test_a_child_process_measures_itself(tmp_path):
    with serve(make_project(2)) as (emulator, token):
        got = run.run_child("baseline", emulator.url, token, tmp_path)
    assert got["rows"] > 0 and got["seconds"] > 0 and got["peak_rss_mb"] > 50
    assert (tmp_path / "baseline.parquet").exists()


def test_a_large_size_measures_baseline_and_full_only_and_still_renders(tiny_run, tmp_path):
    size = run.bench_size(3, 1, tmp_path, runner=in_process, extras=False)
    assert "incremental" not in size and "stages" not in size
    assert size["summary"]["ratio"] > 0 and size["summary"]["peak_rss_mb"] > 50
    table = report.render({**tiny_run, "sizes": [tiny_run["sizes"][0], size]})
    assert "| full sync / baseline, 3 |" in table and "| peak RSS growth 3 -> 5 |" in table
    assert "incremental (1 % changed) / full, 3" not in table


def test_too_big_projects_from_the_largest_size_done():
    done = [{"participants": 1000, "summary": {"peak_rss_mb": 1.0, "full_s": 60.0}}]
    assert run.too_big(10_000, done, runs=2, budget_min=30) is None  # 20 min projected
    assert "exceeds the 12 min budget" in run.too_big(10_000, done, runs=2, budget_min=12)


def test_too_big_projects_the_disk_a_size_needs(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    done = [{"participants": 1000, "disk_mb": free_mb / 5,
             "summary": {"peak_rss_mb": 1.0, "full_s": 1.0}}]
    assert run.too_big(2000, done, workdir=tmp_path) is None
    assert "GB of output and FHIR spool" in run.too_big(10_000, done, workdir=tmp_path)


def test_disk_needed_counts_the_spool_as_the_ndjson_again(tmp_path):
    (tmp_path / "fhir").mkdir()
    (tmp_path / "fhir" / "Patient.ndjson").write_bytes(b"x" * 1_000_000)
    (tmp_path / "table.parquet").write_bytes(b"y" * 500_000)
    assert run.disk_needed_mb(tmp_path) == 2.5


@pytest.mark.skipif(not child.MemorySampler().available, reason="needs /proc smaps_rollup")
def test_the_memory_sampler_counts_a_workers_pages():
    import multiprocessing
    import time

    def hold(ready, release):
        block = bytearray(300 * 1024 * 1024)  # written, so resident in the worker only
        ready.set()
        release.wait(5)
        del block

    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    with child.MemorySampler(interval=0.02) as memory:
        time.sleep(0.1)
        alone = memory.peak_mb
        worker = context.Process(target=hold, args=(ready, release))
        worker.start()
        assert ready.wait(10)
        time.sleep(0.2)
        release.set()
        worker.join()
    assert memory.peak_mb - alone > 250


def test_the_profile_script_profiles_a_run(tmp_path, capsys):
    from benchmarks import profile

    profile.main(["2", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "'fhir':" in printed and "build_outputs" in printed


def test_the_output_digest_is_stable_and_sees_a_changed_byte(tmp_path):
    from benchmarks import digest

    first = digest.digest_runs(3, tmp_path / "a", runner=in_process)
    second = digest.digest_runs(3, tmp_path / "b", runner=in_process)
    assert len(first["full"]) > 20 and first["full"] != first["incremental"]
    assert digest.differences(second, first) == []
    second["full"]["fhir/Patient.ndjson"] = "0" * 64
    assert digest.differences(second, first) == ["full: fhir/Patient.ndjson"]
