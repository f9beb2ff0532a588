"""Crash safety: a sync killed with SIGKILL at any stage leaves readable outputs, each file
either its previous or its next version, and the next run completes and equals a clean run.

Kill points are deterministic: each child process gets IMT_ETL_TEST_CRASH_AT (see
imt_etl.faultpoints). All children run at once against one emulator in this process, each on a
copy of the previous run's output folder, as do the recovery runs after them. The children are
forked from a multiprocessing forkserver that imported the package once (sync_child.PRELOAD).
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import (  # noqa: E402
    assert_all_readable,
    assert_same_outputs,
    change_data,
    emulator_for,
    fingerprint,
    output_files,
    same_file,
)
from sync_child import PRELOAD, run_in_child  # noqa: E402

pytestmark = pytest.mark.slow  # eight runs in child processes (four of them whole)

# name -> kill point of an incremental sync (two changed records, one per batch). The atomic
# writes of such a sync go: 1-3 state (snapshot, design, sync state), 4-6 quality/, then, at the
# same time, the run's process writes 13 instrument tables, 8 analysis tables and report/ while
# a forked process writes the FHIR NDJSON in bundle (dependency) order (CodeSystem,
# ResearchStudy, Patient, ResearchSubject, Encounter, Questionnaire, QuestionnaireResponse,
# Observation), then bundles and manifest; the summary comes last. A kill point in the FHIR
# process kills the run's process too. The FHIR writer's scratch folder state/fhir-spool/ (sorted
# runs of serialised resources) exists only during a run: the next run clears it.
CASES = {
    "during-extraction": "extract-batch:1",
    "validated": "after-validation",
    "inside-a-table-write": "atomic-write/instruments:6",
    "inside-the-fhir-writes": "atomic-write/fhir:4",
}


@pytest.fixture(scope="module")
def fork_context():
    """The forkserver context, its server started now: it imports PRELOAD (seconds) on the
    other core while the clean outputs are computed here. Stopped (and reaped) after this
    module's runs rather than orphaned when pytest exits."""
    from multiprocessing import forkserver, resource_tracker

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()  # returns at once: the server preloads in the background
    yield context

    # Private, but what the standard library's own tests use to stop both servers.
    for server in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(server, "_stop", None)
        if stop is not None:
            stop()


def spawn(context, url: str, out: Path, token: str, run_time, point: str | None
          ) -> tuple[multiprocessing.Process, Path]:
    """An incremental sync of `out` in a child process that dies at `point` (None: never)."""
    stderr = out.with_name(f"{out.name}.{'crash' if point else 'recover'}.stderr")
    child = context.Process(target=run_in_child, args=(
        url, str(out), token, run_time.isoformat(), "incremental", point, str(stderr)))
    child.start()
    return child, stderr


def finish(children: dict[str, tuple[multiprocessing.Process, Path]]
           ) -> dict[str, tuple[int | None, str]]:
    results = {}
    for name, (child, stderr) in children.items():
        child.join(timeout=300)
        if child.exitcode is None:  # hung: stop it, and the assertions report it
            child.kill()
            child.join()
        results[name] = (child.exitcode, stderr.read_text(errors="replace"))
    return results


def is_temp(name: str) -> bool:
    return Path(name).name.startswith(".") and name.endswith(".tmp")


def is_scratch(name: str) -> bool:
    # The FHIR writer's spool, and its lists for a success that a killed run never reached
    # (the next run removes them: last_success.discard_pending).
    return name.startswith("state/fhir-spool/") or (
        name.startswith("state/last-success/") and name.endswith(".pending"))


@pytest.fixture(scope="module")
def crash_runs(fork_context, reference_project, token, run_time, clean_outputs,
               tmp_path_factory):
    """Kill one sync per case, then run each folder again; everything observed, by case."""
    before, _ = clean_outputs
    root = tmp_path_factory.mktemp("crash")
    folders = {name: root / name for name in CASES}
    previous = {}
    for name, out in folders.items():
        shutil.copytree(before, out)
        previous[name] = fingerprint(out)
    with emulator_for(reference_project, token) as server:
        change_data(server)
        killed = finish({name: spawn(fork_context, server.url, folders[name], token, run_time,
                                     point)
                         for name, point in CASES.items()})
        # What a reader sees after the crash, kept for the assertions below.
        snapshot_root = root / "after-crash"
        for name, out in folders.items():
            shutil.copytree(out, snapshot_root / name)
        recovered = finish({name: spawn(fork_context, server.url, folders[name], token,
                                        run_time, None)
                            for name in CASES})
    return folders, previous, killed, snapshot_root, recovered


@pytest.mark.parametrize("name", list(CASES))
def test_a_killed_run_leaves_previous_or_next_versions_only(crash_runs, clean_outputs, name):
    _, previous, killed, snapshot_root, _ = crash_runs
    code, err = killed[name]
    assert code == -signal.SIGKILL, err  # it really died at its kill point
    out = snapshot_root / name
    before, after = clean_outputs
    assert_all_readable(out)
    files = [n for n in output_files(out) if not is_temp(n) and not is_scratch(n)]
    assert sorted(files) == sorted(previous[name])  # nothing missing, nothing half-made
    new = sorted(n for n in files if n != "state/.lock"
                 and not same_file(out / n, before / n))
    stray = [n for n in new if not same_file(out / n, after / n)
             and n not in ("state/sync-state.json",)]
    assert stray == []  # every changed file is exactly its next version
    expected_new = {
        "during-extraction": [],
        "snapshot-saved": ["state/project-meta.json", "state/raw-records.parquet"],
    }
    if name in expected_new:
        assert [n for n in new if n != "state/project-meta.json"] == [
            n for n in expected_new[name] if n != "state/project-meta.json"]
    elif name == "validated":
        assert "state/sync-state.json" in new and not any(n.startswith("parquet/") for n in new)
        assert any(n.startswith("quality/") for n in new)
    elif name == "inside-a-table-write":
        # (FHIR files may be new too: a forked process writes them at the same time.)
        assert len([n for n in new if n.startswith("parquet/instruments/")]) == 5
        assert not any(n.startswith("parquet/") and not n.startswith("parquet/instruments/")
                       for n in new)  # the analysis tables come after the instrument tables
    else:  # FHIR files 1-3: CodeSystem, ResearchStudy (unchanged by the edits), Patient (one gone)
        fhir = {n for n in new if n.startswith("fhir/")}
        assert fhir and fhir <= {"fhir/CodeSystem.ndjson", "fhir/ResearchStudy.ndjson",
                                 "fhir/Patient.ndjson"}
    temps = [n for n in output_files(out) if is_temp(n)]
    # A kill between a temp file's completion and its rename leaves that temp file, and the other
    # writing process (tables or FHIR) may have one of its own open at that moment.
    if CASES[name].startswith("atomic-write"):
        assert 1 <= len(temps) <= 2 and any(
            Path(t).parent.name == CASES[name].split("/")[1].split(":")[0] for t in temps)
    else:
        assert temps == []


# Known gaps (strict: a fix makes these pass and the marker must go). Two outputs are diffs
# against the previous run's outputs: the quality report's "since the previous run" trend reads
# quality/findings.parquet, FHIR DELETE entries compare with the previous fhir/*.ndjson. A run
# killed after rewriting those files makes the next run diff against its half-new outputs: the
# trend says "0 new" and the DELETEs of the deleted record's resources are never emitted.
# Fixed by comparing with state/last-success (imt_etl.last_success), not the live outputs.
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_GAPS[n], strict=True))
    if n in KNOWN_GAPS else n for n in CASES
])
def test_the_next_run_completes_and_equals_a_clean_run(crash_runs, clean_outputs, name):
    folders, _, _, _, recovered = crash_runs
    code, err = recovered[name]
    assert code == 0, err
    assert_same_outputs(folders[name], clean_outputs[1])
    # The temp file a killed write left is gone: the next run (holding the lock) removed it.
    assert [n for n in output_files(folders[name]) if is_temp(n)] == []
