"""Test hook: kill the process (SIGKILL) at a named point of a run, for crash-safety tests.

Set `IMT_ETL_TEST_CRASH_AT=<point>` (or `<point>:<n>` to crash on the n-th time the point is
reached; n defaults to 1) in the environment of an `imt-etl` process. Points:

- `extract-batch`        after a batch of records arrived, before the snapshot is saved
- `after-snapshot-save`  the new raw snapshot is on disk, the sync state is not yet advanced
- `after-state-save`     the sync state was advanced, no other output written yet
- `after-validation`     the quality report is written, tables and FHIR not yet
- `after-tables`         analysis tables written, study report and FHIR not yet
- `write-table`          after `pipeline.write_instrument_table` wrote a table
- `atomic-write`         inside every atomic write (imt_etl.io), temp file complete but not
                         renamed: `atomic-write:<n>` dies inside the n-th file of the process;
                         `atomic-write/<folder>:<n>` inside the n-th file in a folder of that
                         name (e.g. `atomic-write/fhir:4`), whichever process writes it: the
                         FHIR files are written by a forked process beside the tables

Unset (the normal case) the hook costs one dictionary lookup. It is not a user feature: it exists
so that tests can prove a run killed anywhere leaves readable, consistent outputs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

CRASH_ENV = "IMT_ETL_TEST_CRASH_AT"

_reached: dict[str, int] = {}
_also_kill: list[int] = []


def also_kill(pid: int) -> None:
    """In a forked worker: a kill point reached here kills `pid` (the run's process) first, so
    that the run dies of SIGKILL as a crash would kill it, not of a failed worker."""
    _also_kill.append(pid)


def maybe_crash(point: str, path: Path | None = None) -> None:
    """SIGKILL this process if the environment names `point` (and this is its n-th visit);
    `path`: the file being written, for points qualified by a folder name."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    base, _, folder = name.partition("/")
    if base != point or (folder and (path is None or folder not in Path(path).parent.parts)):
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(nth or 1):
        for pid in _also_kill:
            os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
